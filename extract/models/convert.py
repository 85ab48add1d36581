"""Checkpoint converters into the transformers format the heads load (the command: `python -m extract.convert`).

`llava_video`: the original LLaVA-NeXT layout of `lmms-lab/LLaVA-Video-7B-Qwen2` (a Qwen2
`LlavaQwenForCausalLM` with a SigLIP tower, `mm_projector` and `image_newline`) into
`LlavaOnevisionForConditionalGeneration` plus its processor. Every weight is used and none is
missing, or the conversion stops.

`internvl2`: InternVL2's remote-code layout (InternViT + InternLM2 with fused `wqkv`, projector
`mlp1`) into transformers' native `InternVLForConditionalGeneration` with a Llama text model, so
the model runs without `trust_remote_code`; the source's tokenizer files are copied beside it
(InternLM2's tokenizer is remote code: the internvl head loads it with `trust_remote_code=true`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from extract.models.generation import QWEN_CHAT_TEMPLATE

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


def read_source_config(source: Path) -> dict:
    """The source checkpoint's config.json; a ConversionError when the folder has none or it is not JSON."""
    path = Path(source) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{source} is not a checkpoint folder: it has no config.json")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConversionError(f"{path} is not JSON ({exc})") from None


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


def tower_image_size(source: dict, side: int, patch: int, given: int | None = None) -> int:
    """The input size of the vision tower, which its weights do not tell (SigLIP-so400m's 27 patches of 14 px cover 378
    of its 384 px; the conv drops the rest). LLaVA-NeXT builds the tower from `mm_vision_tower`'s own config and its
    processor resizes to that size (siglip_encoder.py: 384), so: the size given, else that tower's folder's config, else
    the size its name ends with (`google/siglip-so400m-patch14-384`), when its patch grid is the weights' grid."""
    candidates = [given] if given else []
    tower = str(source.get("mm_vision_tower") or "")
    tower_config = Path(tower) / "config.json"
    if not given and tower and tower_config.is_file():
        config = json.loads(tower_config.read_text())
        candidates.append((config.get("vision_config") or config).get("image_size"))
    if not given and (match := re.search(r"-(\d+)$", tower)):
        candidates.append(int(match.group(1)))
    for size in candidates:
        if size and int(size) // patch == side:
            return int(size)
    raise ConversionError(f"the vision tower's input size is not known: {tower or 'no mm_vision_tower'} does not name one "
                          f"whose {patch} px patches make the weights' {side}x{side} grid; give it with --image-size")


def llava_video_config(source: dict, state: dict[str, torch.Tensor], vision_heads: int | None, image_token: int, video_token: int,
                       image_size: int | None = None):
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
                       "image_size": tower_image_size(source, int(round(positions.shape[0] ** 0.5)), patch_size, image_size),
                       "vision_use_head": False},
        image_token_index=image_token, video_token_index=video_token, vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=source.get("image_grid_pinpoints"),
        vision_aspect_ratio=source.get("image_aspect_ratio", "anyres_max_9"),
        tie_word_embeddings=source.get("tie_word_embeddings", False),
    )


def convert_llava_video(source: Path, target: Path, vision_heads: int | None = None, image_size: int | None = None) -> Path:
    from transformers import (AutoTokenizer, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessor,
                              LlavaOnevisionProcessor, LlavaOnevisionVideoProcessor)

    original = read_source_config(source)
    state = read_state_dict(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    # lmms-lab's tokenizers have no <image> or <video> (LLaVA-NeXT splices index -200 into the ids): the placeholders
    # the head splices at are added at the tokenizer's end, rows the authors' model never predicts (the head leaves
    # them out of its log-probabilities)
    missing = [token for token in ("<image>", "<video>") if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    image_token, video_token = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<video>")
    config = llava_video_config(original, state, vision_heads, image_token, video_token, image_size)
    for token, index in (("<image>", image_token), ("<video>", video_token)):
        if index >= config.text_config.vocab_size:
            raise ConversionError(f"{token} would be token {index}, past the embedding's {config.text_config.vocab_size} rows")
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
    # SigLIP's preprocessing, as LLaVA-NeXT's SigLipImageProcessor does it: bicubic resize, mean and std 0.5
    siglip = {"size": size, "crop_size": size, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3}
    LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(image_grid_pinpoints=config.image_grid_pinpoints, **siglip),
        video_processor=LlavaOnevisionVideoProcessor(**siglip), tokenizer=tokenizer,
        num_image_tokens=(image_size // config.vision_config.patch_size) ** 2, vision_feature_select_strategy="full",
        chat_template=QWEN_CHAT_TEMPLATE,
    ).save_pretrained(target)
    return target


_LM = r"^language_model\.model\.layers\.(\d+)\."
_VIT = r"^vision_model\.encoder\.layers\.(\d+)\."
INTERNVL2_KEY_MAP = [
    (r"^vision_model\.embeddings\.class_embedding$", "model.vision_tower.embeddings.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "model.vision_tower.embeddings.position_embeddings"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    (_VIT + r"attn\.(q|k|v)_proj\.", r"model.vision_tower.encoder.layer.\1.attention.\2_proj."),  # after the split
    (_VIT + r"attn\.proj\.", r"model.vision_tower.encoder.layer.\1.attention.projection_layer."),
    (_VIT + r"mlp\.", r"model.vision_tower.encoder.layer.\1.mlp."),
    (_VIT + r"norm1\.", r"model.vision_tower.encoder.layer.\1.layernorm_before."),
    (_VIT + r"norm2\.", r"model.vision_tower.encoder.layer.\1.layernorm_after."),
    (_VIT + r"ls1$", r"model.vision_tower.encoder.layer.\1.lambda_1"),
    (_VIT + r"ls2$", r"model.vision_tower.encoder.layer.\1.lambda_2"),
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
    (r"^language_model\.model\.tok_embeddings\.", "model.language_model.embed_tokens."),
    (_LM + r"attention\.(q|k|v)_proj\.", r"model.language_model.layers.\1.self_attn.\2_proj."),  # after the split
    (_LM + r"attention\.wo\.", r"model.language_model.layers.\1.self_attn.o_proj."),
    (_LM + r"feed_forward\.w1\.", r"model.language_model.layers.\1.mlp.gate_proj."),
    (_LM + r"feed_forward\.w3\.", r"model.language_model.layers.\1.mlp.up_proj."),
    (_LM + r"feed_forward\.w2\.", r"model.language_model.layers.\1.mlp.down_proj."),
    (_LM + r"attention_norm\.", r"model.language_model.layers.\1.input_layernorm."),
    (_LM + r"ffn_norm\.", r"model.language_model.layers.\1.post_attention_layernorm."),
    (r"^language_model\.model\.norm\.", "model.language_model.norm."),
    (r"^language_model\.output\.", "lm_head."),
]


def split_fused_projections(state: dict[str, torch.Tensor], llm: dict) -> dict[str, torch.Tensor]:
    """InternViT's `attn.qkv` into thirds; InternLM2's `wqkv` by its grouped-query layout.

    InternLM2 stores, for each key/value head, its group of query heads, then the key, then the
    value: rows are `(kv_heads, groups + 2, head_dim)`.
    """
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim, groups = llm["hidden_size"] // heads, heads // kv_heads
    out = {}
    for key, value in state.items():
        vit = re.match(r"^(vision_model\.encoder\.layers\.\d+\.attn\.)qkv\.(weight|bias)$", key)
        lm = re.match(r"^(language_model\.model\.layers\.\d+\.attention\.)wqkv\.weight$", key)
        if vit:
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                out[f"{vit.group(1)}{name}_proj.{vit.group(2)}"] = part.contiguous()
        elif lm:
            grouped = value.view(kv_heads, groups + 2, head_dim, value.shape[-1])
            out[f"{lm.group(1)}q_proj.weight"] = grouped[:, :groups].reshape(heads * head_dim, -1).contiguous()
            out[f"{lm.group(1)}k_proj.weight"] = grouped[:, -2].reshape(kv_heads * head_dim, -1).contiguous()
            out[f"{lm.group(1)}v_proj.weight"] = grouped[:, -1].reshape(kv_heads * head_dim, -1).contiguous()
        else:
            out[key] = value
    return out


def internvl2_config(source: dict, image_token: int):
    from transformers import InternVLConfig

    vision, llm = source["vision_config"], source["llm_config"]
    size, patch = vision["image_size"], vision["patch_size"]
    text = {"model_type": "llama", "attention_bias": llm.get("bias", False), "tie_word_embeddings": False,
            **{k: llm[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "rope_theta",
                                   "rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id") if llm.get(k) is not None}}
    return InternVLConfig(
        vision_config={"model_type": "internvl_vision", "hidden_size": vision["hidden_size"],
                       "intermediate_size": vision["intermediate_size"], "num_hidden_layers": vision["num_hidden_layers"],
                       "num_attention_heads": vision["num_attention_heads"], "image_size": [size, size], "patch_size": [patch, patch],
                       "attention_bias": vision.get("qkv_bias", True), "use_qk_norm": vision.get("qk_normalization", False),
                       "layer_norm_eps": vision.get("layer_norm_eps", 1e-6), "norm_type": vision.get("norm_type", "layer_norm")},
        text_config=text, image_token_id=image_token, downsample_ratio=source.get("downsample_ratio", 0.5),
        vision_feature_layer=source.get("select_layer", -1), projector_hidden_act="gelu",
    )


TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


def convert_internvl2(source: Path, target: Path, image_token: int | None = None) -> Path:
    """The model in the native layout, plus what the internvl head needs beside it: the source's tokenizer files
    (InternLM2's need its own code: run the head with trust_remote_code=true), the chat template's name, and
    <|im_end|> as the end of generation, as the authors' model.chat stops."""
    import shutil

    from transformers import InternVLForConditionalGeneration

    original = read_source_config(source)
    if original.get("ps_version", "v2") != "v2":
        raise ConversionError("only pixel-shuffle v2 checkpoints (InternVL2 and later) map onto the native model")
    specials = _special_token_ids(source)
    image_token = image_token if image_token is not None else specials.get("<IMG_CONTEXT>")
    if image_token is None:
        raise ConversionError("no <IMG_CONTEXT> in the source's tokenizer files: give --image-token-id (92546 for InternVL2-8B)")
    config = internvl2_config(original, image_token)
    config.template = original.get("template", "internvl2_5")  # the conversation template the checkpoint was trained with
    state = split_fused_projections(read_state_dict(source), original["llm_config"])
    renamed = {rename(k, INTERNVL2_KEY_MAP): v for k, v in state.items()}
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    load_strict(model, renamed)
    if "<|im_end|>" in specials:
        model.generation_config.eos_token_id = specials["<|im_end|>"]
    model.save_pretrained(target)
    for name in [*TOKENIZER_FILES, *(p.name for p in source.glob("tokenization_*.py"))]:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
    return target


def _special_token_ids(source: Path) -> dict[str, int]:
    """Added tokens' ids, read from the tokenizer's JSON files (no tokenizer code runs)."""
    ids = {}
    config = source / "tokenizer_config.json"
    if config.is_file():
        for index, token in json.loads(config.read_text()).get("added_tokens_decoder", {}).items():
            ids[token["content"]] = int(index)
    added = source / "added_tokens.json"
    if added.is_file():
        ids.update({content: int(index) for content, index in json.loads(added.read_text()).items()})
    return ids
