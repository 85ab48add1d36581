"""`python -m extract.bench vlm_caption`: clips/hour of the vlm_caption head, the generation engine against
transformers' `generate` (one clip at a time, the head's fallback), with how the engine ran."""

from __future__ import annotations

import tempfile

import torch

from extract.bench.common import (captioning_head, device_name, model_size_arguments, moving_pattern, peak_memory,
                                  print_best_clips_per_hour, reset_peak, timed)


def bench_vlm_caption(args) -> None:
    from extract.heads import Clip, pick_attention, resolve_dtype
    from extract.models import random_models

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        head, what = captioning_head(
            "vlm_caption", args, tmp, device,
            lambda: random_models.qwen3_vl(device, resolve_dtype("auto", device), pick_attention("auto"), args.layers),
            "Qwen3-VL-8B-Instruct architecture and video processor, RANDOM weights",
            lambda folder: random_models.save_tiny_vlm("qwen3_vl", folder),
            "TINY random model, Qwen3-VL (not the 8B: timings only show the pipeline works)",
            preset=args.preset, max_new_tokens=args.new_tokens)
        media = moving_pattern(head.media_spec, seconds=args.seconds)
        prepared = head.prepare(Clip("k", "v", 0.0, args.seconds, media))
        print(f"# extract.bench vlm_caption: {what} on {device_name(device)}, {args.seconds:g} s clips of 640x360 at 30 fps: "
              f"{len(prepared['frame_times'])} frames, {prepared['inputs']['input_ids'].shape[1]} prompt tokens; "
              f"{args.new_tokens} new tokens per clip (random weights never end a caption), {head.model.dtype}")
        print(f"{'engine':<10}  {'clips':>5}  {'clips/hour':>10}  {'peak memory':>11}")
        rates = {}
        for engine in ("generate", "continuous"):
            head.engine_name = engine
            for batch in [int(b) for b in args.batches.split(",")]:
                head.engine, head.max_slots = None, batch
                clips = [Clip(f"k{i}", "v", 0.0, args.seconds, media) for i in range(batch)]
                for clip in clips:
                    clip.prepared = prepared  # a worker's share, made once: every clip is the same
                try:
                    with torch.inference_mode():
                        head.infer(clips[:1])  # warm-up (and the engine's CUDA graph capture)
                        reset_peak(device)
                        seconds = timed(head.infer, device, clips=clips)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    print(f"{engine:<10}  {batch:>5}  out of memory")
                    continue
                rates[engine, batch] = 3600 * batch / seconds
                print(f"{engine:<10}  {batch:>5}  {rates[engine, batch]:>10.0f}  {peak_memory(device) / 2**30:>9.2f} GiB")
                if engine == "continuous" and head.engine is not None:
                    print(f"{'':<10}  {head.engine.stats.describe()}")
        print_best_clips_per_hour(rates)


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", help="a transformers-format video-language checkpoint")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the generated clip (its frames follow the processor)")
    model_size_arguments(parser, preset=True)
