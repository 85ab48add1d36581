"""`python -m extract.bench run`: [probe, llava_video] through run(cfg) with the full-size random model attached."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from extract.bench.common import cut_note, device_name, make_shards, run_heads
from extract.data import resolve_shards


def _random_llava_head(layers: int | None):
    """llava_video with LLaVA-Video-7B's architecture and random weights built on the device when the run loads it."""
    from extract.heads import register, resolve_dtype
    from extract.heads.llava_video import LlavaVideo
    from extract.models import random_models

    class RandomLlava(LlavaVideo):
        name = "llava_video_random_weights"

        def open(self, device):
            tokenizer = random_models.tiny_tokenizer()
            self._use(tokenizer, random_models.llava_video_config(tokenizer, layers), resolve_dtype("auto", device), device)

        def load(self, device):
            self.attach(*random_models.llava_video(device, resolve_dtype("auto", device), "sdpa", layers), device)

    return register(RandomLlava)


def bench_run(args) -> None:
    """One run of [probe, llava_video] through run(cfg), the full-size random model attached: clips/hour end to end
    and the main loop's time waiting for data."""
    head = _random_llava_head(args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        urls = resolve_shards(args.input, None) if args.input else make_shards(scratch, args.clips, args.shards, args.seconds)
        options = {"checkpoint": "random weights", "max_new_tokens": args.new_tokens, **({"batch_size": args.batch_size} if args.batch_size else {}),
                   **({"num_frames": args.frames} if args.frames else {})}
        wall, summary = run_heads({"probe": {}, head.name: options}, urls, scratch / "out", args.workers, 4)
    [rank] = summary["ranks"]
    timing, clips = rank["timing"], rank["clips_read"]
    print(f"# extract.bench run: '+model=[probe,llava_video]' through run(cfg), LLaVA-Video-7B architecture with RANDOM weights"
          f"{cut_note(args.layers)}, {args.new_tokens} new tokens a clip (random weights never end one), {args.workers} workers, "
          f"on {device_name(torch.device('cuda' if torch.cuda.is_available() else 'cpu'))}, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>5}  {'wall s':>7}  {'loop s':>7}  {'clips/hour (loop)':>17}  {'waiting for data':>16}")
    print(f"{clips:>5}  {wall:>7.1f}  {timing['loop_s']:>7.1f}  {3600 * clips / timing['loop_s']:>17.0f}  "
          f"{timing['waiting_for_data_s']:>14.1f} s")


def add_arguments(parser) -> None:
    parser.add_argument("--input", help="a folder of shards (machines without ffmpeg's command); default: generated")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch-size", type=int, help="llava_video's batch (default: 64 on a GPU)")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--layers", type=int, help="cut the depth, for a quick check on a small machine")
    parser.add_argument("--frames", type=int, help="llava_video's frames per clip (default: its 64)")
