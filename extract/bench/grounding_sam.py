"""`python -m extract.bench grounding_sam`: keyframes/s of the grounding_sam head per batch."""

from __future__ import annotations

import torch

from extract.bench.common import cut_note, device_name, model_size_arguments, time_keyframes


def bench_grounding_sam(args) -> None:
    """Keyframes/s of the grounding_sam head per batch of clips: full-size random models, or the given checkpoints."""
    from extract.heads import build, resolve_dtype
    from extract.models import random_models

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    options = {"preset": args.preset, "box_threshold": 0.0, "text_threshold": 0.0, "max_detections": args.detections}
    if args.detector and args.segmenter:
        head = build("grounding_sam", {"detector": args.detector, "segmenter": args.segmenter, **options})
        head.open(device)
        head.load(device)
        what = head.model_id
    else:
        head = build("grounding_sam", options)  # the preset's models, built here with random weights
        sam = head.segmenter_id.rsplit("-", 1)[-1]  # facebook/sam-vit-huge | -base
        head.attach(*random_models.grounding_sam(device, resolve_dtype(head.dtype_name, device), args.layers, sam), device)
        what = f"grounding-dino-tiny + sam-vit-{sam} architectures ({args.preset} preset), RANDOM weights" + cut_note(args.layers)
    print(f"# extract.bench grounding_sam: {what} on {device_name(device)}, {head.media_spec.num_frames} keyframes of 640x360 "
          f"per clip, {args.detections} boxes each, {head.dtype}")
    time_keyframes(head, device, args.batches)


def add_arguments(parser) -> None:
    parser.add_argument("--detector")
    parser.add_argument("--segmenter")
    parser.add_argument("--detections", type=int, default=8)
    parser.add_argument("--preset", choices=("authors", "fast"), default="authors")
    model_size_arguments(parser)
