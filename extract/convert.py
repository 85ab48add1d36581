"""Converts an original checkpoint into the transformers format the heads load.

    python -m extract.convert llava_video SRC DST [--vision-heads 16] [--image-size 384]
    python -m extract.convert internvl2 SRC DST [--image-token-id ID]

The converters themselves are in `extract/models/convert.py`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extract.models.convert import ConversionError, convert_internvl2, convert_llava_video


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    llava = sub.add_parser("llava_video", help="lmms-lab LLaVA-Video (LLaVA-NeXT layout) -> transformers format")
    llava.add_argument("source", type=Path)
    llava.add_argument("target", type=Path)
    llava.add_argument("--vision-heads", type=int, help="attention heads of the SigLIP tower (default: width / 72)")
    llava.add_argument("--image-size", type=int, help="the tower's input size (default: from mm_vision_tower, e.g. 384)")
    internvl = sub.add_parser("internvl2", help="InternVL2 (remote-code layout) -> native transformers InternVL")
    internvl.add_argument("source", type=Path)
    internvl.add_argument("target", type=Path)
    internvl.add_argument("--image-token-id", type=int, help="id of <IMG_CONTEXT> when the tokenizer cannot be read")
    args = parser.parse_args(argv)
    try:
        if args.what == "llava_video":
            convert_llava_video(args.source, args.target, args.vision_heads, args.image_size)
        else:
            convert_internvl2(args.source, args.target, args.image_token_id)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.target}; use it with +model={'llava_video' if args.what == 'llava_video' else 'internvl'} "
          f"model.checkpoint={args.target}")


if __name__ == "__main__":
    main()
