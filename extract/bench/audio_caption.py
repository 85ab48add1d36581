"""`python -m extract.bench audio_caption`: clips/s of the audio_caption head per batch of windows, at the released
size with random weights."""

from __future__ import annotations

import tempfile

import torch

from extract.bench.common import moving_pattern, peak_memory, time_infer


def bench_audio_caption(args) -> None:
    """Clips/s of the audio_caption head per batch of windows, at the released size with random weights."""
    from extract.heads import Clip, build
    from extract.models.random_models import save_random_audio_captioner

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(save_random_audio_captioner(tmp))
        batches = [int(b) for b in args.batches.split(",")]
        head = build("audio_caption", {"checkpoint": folder, "tokenizer": folder, "window_batch": max(batches), "dtype": args.dtype})
        head.open(device)
        head.load(device)
        # random weights rarely say </s>: every caption gets the same length
        head.beam_search.update(min_length=args.caption_tokens + 2, max_length=args.caption_tokens + 2)
        parameters = sum(p.numel() for p in head.model.parameters()) / 1e6
        print(f"# extract.bench audio_caption: released architecture, RANDOM weights "
              f"({parameters:.1f} M parameters) on {device.type}, {head.model.bart.dtype}, {args.seconds:g} s clips (one window each), "
              f"beam {head.beam_search['num_beams']}, {args.caption_tokens}-token captions")
        media = moving_pattern(head.media_spec, seconds=args.seconds)
        print(f"{'clips':>5}  {'clips/s':>8}  {'audio s/s':>9}  {'peak memory':>11}")
        for batch in batches:
            elapsed, _ = time_infer(head, [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)], device)
            print(f"{batch:>5}  {batch / elapsed:>8.2f}  {batch * args.seconds / elapsed:>9.1f}  {peak_memory(device) / 2**30:>9.2f} GiB")


def add_arguments(parser) -> None:
    parser.add_argument("--size", choices=("full", "tiny"), default="full")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--caption-tokens", type=int, default=20)
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
