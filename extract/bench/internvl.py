"""`python -m extract.bench internvl`: keyframes/s of the internvl head per batch, both generation paths."""

from __future__ import annotations

import tempfile

import torch

from extract.bench.common import captioning_head, device_name, model_size_arguments, time_keyframes


def bench_internvl(args) -> None:
    """Keyframes/s of the internvl head per batch of clips: a full-size random model, or the given checkpoint."""
    from extract.heads import pick_attention, resolve_dtype
    from extract.models import random_models

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        head, what = captioning_head(
            "internvl", args, tmp, device,
            lambda: random_models.internvl(device, resolve_dtype("auto", device), pick_attention("auto"), args.layers),
            "InternVL3.5-8B architecture (InternViT-300M + Qwen3-8B), RANDOM weights", random_models.save_tiny_internvl,
            "TINY random model (not the 8B: timings only show the pipeline works)", preset=args.preset,
            max_new_tokens=args.new_tokens)
        print(f"# extract.bench internvl: {what} on {device_name(device)}, {head.media_spec.num_frames} keyframes per clip of "
              f"640x360 ({args.preset} preset: up to {head.max_tiles} tiles each), {args.new_tokens} new tokens each, "
              f"{head.model.dtype}, attention {head.model.config._attn_implementation}")
        rates = {}
        for engine in ("generate", "continuous"):
            # the engine takes every keyframe of the largest batch at once
            head.engine_name, head.engine = engine, None
            head.max_slots = max(int(b) for b in args.batches.split(",")) * head.media_spec.num_frames
            print(f"engine={engine}")
            rates[engine] = time_keyframes(head, device, args.batches)
            if engine == "continuous" and head.engine is not None:
                print(head.engine.stats.describe())
        print("keyframes/s, engine against generate: " + ", ".join(
            f"{batch} clips {rates['continuous'][batch] / rates['generate'][batch]:.2f} times"
            for batch in rates["generate"] if batch in rates["continuous"]))


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint")
    parser.add_argument("--new-tokens", type=int, default=32)
    model_size_arguments(parser, preset=True)
