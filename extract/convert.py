"""Checkpoint converters into the transformers format the heads load.

    python -m extract.convert llava_video SRC DST [--vision-heads 16]

`llava_video`: the original LLaVA-NeXT layout of `lmms-lab/LLaVA-Video-7B-Qwen2` (a Qwen2
`LlavaQwenForCausalLM` with a SigLIP tower, `mm_projector` and `image_newline`) into
`LlavaOnevisionForConditionalGeneration` plus its processor. Every weight is used and none is
missing, or the conversion stops.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import torch

from extract.generation import QWEN_CHAT_TEMPLATE

# original LLaVA-NeXT name (prefix) -> transformers' LlavaOnevisionForConditionalGeneration name
LLAVA_KEY_MAP = [
    (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
    (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
    (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
    (r"^model\.image_newline$", "model.image_newline"),
    (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
    (r"^lm_head\.", "lm_head."),
]


class ConversionError(Exception):
    pass


def rename(key: str, key_map) -> str:
    for pattern, replacement in key_map:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    raise ConversionError(f"no rule for weight {key!r}")


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(folder.glob("*.safetensors"))
    if files:
        state = {}
        for path in files:
            state.update(load_file(path))
        return state
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not bins:
        raise ConversionError(f"{folder} holds no *.safetensors or pytorch_model*.bin")
    state = {}
    for path in bins:
        state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def load_strict(model, state: dict[str, torch.Tensor]) -> None:
    expected = set(model.state_dict())
    missing, unused = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unused:
        raise ConversionError(f"weights missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                              f"weights left over: {unused[:5]}{'...' if len(unused) > 5 else ''}")
    model.load_state_dict(state, strict=True, assign=True)


def llava_video_config(source: dict, state: dict[str, torch.Tensor], vision_heads: int | None, image_token: int, video_token: int):
    from transformers import LlavaOnevisionConfig

    patch = state["model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"]
    positions = state["model.vision_tower.vision_tower.vision_model.embeddings.position_embedding.weight"]
    vision_hidden, patch_size = patch.shape[0], patch.shape[-1]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"model\.vision_tower\.vision_tower\.vision_model\.encoder\.layers\.(\d+)\.", k))}
    fc1 = state["model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"]
    if vision_heads is None:
        if vision_hidden % 72:
            raise ConversionError(f"vision width {vision_hidden} is not SigLIP-so400m's: give --vision-heads")
        vision_heads = vision_hidden // 72
    text_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                 "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings",
                 "bos_token_id", "eos_token_id")
    text_config = {"model_type": "qwen2", **{k: source[k] for k in text_keys if k in source}}
    return LlavaOnevisionConfig(
        text_config=text_config,
        vision_config={"model_type": "siglip_vision_model", "hidden_size": vision_hidden, "intermediate_size": fc1.shape[0],
                       "num_hidden_layers": len(layers), "num_attention_heads": vision_heads, "patch_size": patch_size,
                       "image_size": int(round(positions.shape[0] ** 0.5)) * patch_size, "vision_use_head": False},
        image_token_index=image_token, video_token_index=video_token, vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=source.get("image_grid_pinpoints"),
        vision_aspect_ratio=source.get("image_aspect_ratio", "anyres_max_9"),
        tie_word_embeddings=source.get("tie_word_embeddings", False),
    )


def convert_llava_video(source: Path, target: Path, vision_heads: int | None = None) -> Path:
    from transformers import (AutoTokenizer, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    original = json.loads((source / "config.json").read_text())
    state = read_state_dict(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if "<video>" not in tokenizer.get_vocab():
        tokenizer.add_tokens(["<video>"], special_tokens=True)
    image_token, video_token = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<video>")
    config = llava_video_config(original, state, vision_heads, image_token, video_token)
    if video_token >= config.text_config.vocab_size:
        raise ConversionError(f"<video> would be token {video_token}, past the embedding's {config.text_config.vocab_size} rows")
    renamed = {rename(k, LLAVA_KEY_MAP): v for k, v in state.items()}
    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(config)
    load_strict(model, renamed)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(target)
    image_size = config.vision_config.image_size
    size = {"height": image_size, "width": image_size}
    tokenizer.padding_side = "left"
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, crop_size=size, image_grid_pinpoints=config.image_grid_pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size, crop_size=size), tokenizer=tokenizer,
        num_image_tokens=(image_size // config.vision_config.patch_size) ** 2, vision_feature_select_strategy="full",
        chat_template=QWEN_CHAT_TEMPLATE,
    ).save_pretrained(target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.convert", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    llava = sub.add_parser("llava_video", help="lmms-lab LLaVA-Video (LLaVA-NeXT layout) -> transformers format")
    llava.add_argument("source", type=Path)
    llava.add_argument("target", type=Path)
    llava.add_argument("--vision-heads", type=int, help="attention heads of the SigLIP tower (default: width / 72)")
    args = parser.parse_args(argv)
    try:
        convert_llava_video(args.source, args.target, args.vision_heads)
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.target}; use it with +model=llava_video model.checkpoint={args.target}")


if __name__ == "__main__":
    main()
