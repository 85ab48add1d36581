"""`python -m extract.bench llava_video`: the head's generation speed per batch, engine and attention kernel,
against the floor from FLOPs and HBM bandwidth."""

from __future__ import annotations

import tempfile

import torch

from extract.bench.common import (captioning_head, device_name, model_size_arguments, moving_pattern, peak_memory,
                                  print_best_clips_per_hour, reset_peak, timed)
from extract.bench.floors import device_peaks, llava_floor


def bench_llava_video(args) -> None:
    """Generation speed of the llava_video head at a fixed output length, per batch size and attention kernel,
    against the floor from FLOPs and HBM bandwidth."""
    from extract.heads import pick_attention, resolve_dtype
    from extract.models import random_models

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peaks = device_peaks(device, args)
    attentions = args.attention.split(",") if args.attention else sorted({"sdpa", pick_attention("auto")})
    with tempfile.TemporaryDirectory() as tmp:
        for attention in attentions:
            head, what = captioning_head(
                "llava_video", args, tmp, device,
                lambda: random_models.llava_video(device, resolve_dtype("auto", device), attention, args.layers),
                "LLaVA-Video-7B-Qwen2 architecture (Qwen2-7B + SigLIP-so400m-384), RANDOM weights", random_models.save_tiny_llava_video,
                "TINY random model (not the 7B: timings only show the pipeline works)",
                preset=args.preset, num_frames=args.frames, max_new_tokens=args.new_tokens, attn_implementation=attention)
            print(f"# extract.bench llava_video: {what} on {device_name(device)}, {head.num_frames} frames ({args.preset} preset), "
                  f"{args.new_tokens} new tokens per clip, {head.model.dtype}, attention {head.model.config._attn_implementation}")
            _time_llava(head, device, args, peaks)
            _prefill_breakdown(head, device, peaks)
            del head
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)


def _time_llava(head, device: torch.device, args, peaks) -> None:
    """Both generation paths of the head side by side on the same clips: clips/hour through `head.infer` (prefill and
    decode of `new_tokens` tokens; random weights never end a caption), prefill s/clip, decode ms/step, peak memory."""
    from extract.heads import Clip

    media = moving_pattern(head.media_spec, seconds=4.0)
    floor_columns = f"  {'floor clips/h':>13}  {'of floor':>8}" if peaks else ""
    print(f"{'engine':<10}  {'clips':>5}  {'clips/hour':>10}  {'prefill s/clip':>14}  {'decode ms/step':>14}  {'peak memory':>11}{floor_columns}")
    clips_per_hour = {}
    for engine in ("generate", "continuous"):
        head.engine_name = engine
        batches = args.generate_batches if engine == "generate" and args.generate_batches else args.batches
        for batch in [int(b) for b in batches.split(",")]:
            head.engine, head.max_slots = None, batch  # the engine decodes every clip of the batch at once
            clips = [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)]
            for clip in clips:
                clip.prepared = head.prepare(clip)  # a worker's share
            prompt_tokens = len(clips[0].prepared["input_ids"])
            try:
                with torch.inference_mode():
                    head.max_new_tokens = 2
                    head.infer(clips)  # warm-up (and the engine's CUDA graph capture)
                    reset_peak(device)
                    head.max_new_tokens = 1
                    prefill = timed(head.infer, device, clips=clips)
                    head.max_new_tokens = args.new_tokens
                    total = timed(head.infer, device, clips=clips)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"{engine:<10}  {batch:>5}  out of memory")
                continue
            # too few new tokens to see past the timing noise shows as nan
            step_ms = 1000 * (total - prefill) / (args.new_tokens - 1) if args.new_tokens > 1 and total > prefill else float("nan")
            clips_per_hour[engine, batch] = 3600 * batch / total
            row = (f"{engine:<10}  {batch:>5}  {clips_per_hour[engine, batch]:>10.0f}  {prefill / batch:>14.3f}  {step_ms:>14.1f}  "
                   f"{peak_memory(device) / 2**30:>9.2f} GiB")
            if peaks:
                floor = sum(llava_floor(head.model.config, batch, prompt_tokens, head.num_frames, args.new_tokens, peaks))
                row += f"  {3600 * batch / floor:>13.0f}  {floor / total:>8.2f}"
            print(row)
            if engine == "continuous" and head.engine is not None:
                print(f"{'':<10}  {head.engine.stats.describe()}")
    print_best_clips_per_hour(clips_per_hour)


def _prefill_breakdown(head, device: torch.device, peaks) -> None:
    """Where one clip's prefill goes: the vision tower with the projector and pooling, the splice of the visual tokens
    into the prompt's embeddings, and the language model over the whole prompt (the engine's prefill), each against
    its floor (FLOPs at peak throughput or weights at peak bandwidth, whichever is longer) where the device is known."""
    from extract.bench.floors import decoder_sizes, encoder_flops
    from extract.heads import Clip, generation_engine
    from extract.models.generation import Prompt

    clip = Clip("k0", "v", 0.0, 4.0, moving_pattern(head.media_spec, seconds=4.0))
    prepared = head.prepare(clip)
    ids = prepared["input_ids"].to(device)
    pixels = prepared["pixel_values"].to(device) if "pixel_values" in prepared else head.pixel_values(prepared["frames"].to(device))
    engine = generation_engine(head)
    with torch.inference_mode():
        visual = head.visual_tokens(pixels)  # warm-up
        engine._ensure_cache(1, len(ids) + 256)

        def splice():
            embeddings = head.model.get_input_embeddings()(ids)
            embeddings[ids == head.video_token] = visual.to(embeddings.dtype)
            return embeddings

        embeddings = splice()
        parts = {"vision tower + projector + pooling": timed(head.visual_tokens, device, pixel_values=pixels),
                 "splice into the prompt": timed(splice, device),
                 "language model (engine prefill)": timed(engine._prefill, device, prompt=Prompt(embeddings), slot=0)}
    config, text = head.model.config, decoder_sizes(head.model.config.text_config)
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    tokens = len(ids)
    floors = {}
    if peaks:
        flops, bandwidth = peaks
        vision_flops = len(pixels) * (encoder_flops(vision, patches) + 2 * patches * (vision.hidden_size + text["q_dim"]) * text["q_dim"])
        lm_flops = 2 * tokens * text["layer_params"] + 2 * text["layers"] * tokens ** 2 * text["q_dim"] + 2 * text["head_params"]
        floors = {"vision tower + projector + pooling": vision_flops / flops,
                  "language model (engine prefill)": max(lm_flops / flops, 2 * text["layer_params"] / bandwidth)}
    print(f"prefill of one clip ({len(pixels)} frames, {tokens} prompt tokens), measured:")
    for part, seconds in parts.items():
        floor = f"  floor {floors[part]:.3f} s (on paper), {floors[part] / seconds:.2f} of it" if part in floors else ""
        print(f"  {part:<36} {seconds:>8.3f} s{floor}")


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", help="a transformers-format checkpoint")
    parser.add_argument("--frames", type=int, help="frames per clip (default: the preset's)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--generate-batches", help="batch sizes for transformers' generate (default: --batches)")
    parser.add_argument("--attention", help="comma-separated attn_implementation values; default sdpa and flash-attn when installed")
    parser.add_argument("--peak-tflops", type=float, help="the device's dense bf16 TFLOP/s for the floor (known for H100/H200/A100)")
    parser.add_argument("--hbm-tbps", type=float, help="the device's memory bandwidth in TB/s for the floor")
    model_size_arguments(parser, preset=True)
