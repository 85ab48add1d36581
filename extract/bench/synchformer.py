"""`python -m extract.bench synchformer`: clips/s of av_sync's synchformer method per batch, at the released size
with random weights."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from extract.bench.common import device_name, moving_pattern, peak_memory, time_infer


def bench_synchformer(args) -> None:
    """Clips/s of av_sync's synchformer method per batch, at the released size with random weights."""
    from extract.heads import Clip, build
    from extract.models.synchformer import Synchformer

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synchformer_state_dict.pth"
        torch.save(Synchformer().state_dict(), path)
        batches = [int(b) for b in args.batches.split(",")]
        head = build("av_sync", {"method": "synchformer", "checkpoint": str(path), "dtype": args.dtype, "window_batch": args.window_batch})
        head.load(device)
    model = head.model
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    media = moving_pattern(head.media_spec, seconds=args.seconds)
    windows = len(head.prepare(Clip("k", "v", 0.0, args.seconds, media))["starts"])
    print(f"# extract.bench synchformer: released architecture, RANDOM weights ({parameters:.1f} M parameters) on "
          f"{device_name(device)}, {next(model.parameters()).dtype}, torch {torch.__version__}; {args.seconds:g} s clips "
          f"({windows} window(s) of 14 x 16 frames at 224 px), {args.window_batch} windows per model call")
    print(f"{'clips':>5}  {'clips/s':>8}  {'windows/s':>9}  {'peak memory':>11}  {'prepare ms/clip':>15}")
    for batch in batches:
        elapsed, prepare = time_infer(head, [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)], device)
        print(f"{batch:>5}  {batch / elapsed:>8.3f}  {batch * windows / elapsed:>9.3f}  {peak_memory(device) / 2**30:>9.2f} GiB  "
              f"{1000 * prepare / batch:>15.0f}")


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=4.8, help="clip length: 4.8 s is one window, 8 s two")
    parser.add_argument("--batches", default="1,2")
    parser.add_argument("--window-batch", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=("auto", "float32", "bfloat16", "float16"))
