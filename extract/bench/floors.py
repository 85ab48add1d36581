"""What a GPU would do, on paper: lower bounds on prefill and decode from FLOPs at peak tensor throughput and
bytes at peak HBM bandwidth (estimates, labelled as such wherever they are printed)."""

from __future__ import annotations

import torch


# bf16 matrix FLOP/s and HBM bytes/s, matched on the device name. H200 and H100 (SXM): measured on this project's lent
# machines (an 8192^3 bf16 matrix product on random data; a device-to-device copy counting bytes read and written:
# 788-798 TFLOP/s on both, 4.3 TB/s on the H200, 3.0 TB/s on the H100), not the datasheets' 989 TFLOP/s and 4.8 or
# 3.35 TB/s that no program reaches; the others from the vendors' datasheets
DEVICE_PEAKS = [("H200", 790e12, 4.3e12), ("H100 NVL", 835e12, 3.9e12), ("H100 PCIe", 756e12, 2.0e12),
                ("H100", 790e12, 3.0e12), ("A100-SXM4-80GB", 312e12, 2.04e12), ("A100", 312e12, 1.56e12)]


def device_peaks(device: torch.device, args) -> tuple[float, float] | None:
    if args.peak_tflops and args.hbm_tbps:
        return args.peak_tflops * 1e12, args.hbm_tbps * 1e12
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return next(((flops, bandwidth) for key, flops, bandwidth in DEVICE_PEAKS if key in name), None)
    return None


def decoder_sizes(text) -> dict:
    """Parameter and cache sizes of a decoder-only text config (Qwen2/Qwen3/Llama layout)."""
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    q_dim, kv_dim = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    per_layer = text.hidden_size * (2 * q_dim + 2 * kv_dim) + 3 * text.hidden_size * text.intermediate_size
    return {"layer_params": per_layer * text.num_hidden_layers, "head_params": text.hidden_size * text.vocab_size,
            "q_dim": q_dim, "kv_dim": kv_dim, "layers": text.num_hidden_layers}


def encoder_flops(vision, tokens: int) -> float:
    """One image through a ViT-style encoder: 2 FLOPs per weight per token plus attention."""
    d, layers = vision.hidden_size, vision.num_hidden_layers
    return layers * (2 * tokens * (4 * d * d + 2 * d * vision.intermediate_size) + 4 * tokens * tokens * d)


def llava_floor(config, batch: int, prompt_tokens: int, frames: int, new_tokens: int, peaks: tuple[float, float],
                bytes_per_value: int = 2) -> tuple[float, float]:
    """Lower bounds (s) on prefill and decode for this work: each step takes at least its FLOPs at peak
    tensor throughput and at least its weight and KV-cache reads at peak HBM bandwidth."""
    flops_peak, bandwidth = peaks
    text, vision = decoder_sizes(config.text_config), config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    projector = 2 * patches * (vision.hidden_size * config.text_config.hidden_size + config.text_config.hidden_size ** 2)
    prefill_flops = batch * (frames * (encoder_flops(vision, patches) + projector)
                             + 2 * prompt_tokens * text["layer_params"] + 2 * text["layers"] * prompt_tokens ** 2 * text["q_dim"]
                             + 2 * text["head_params"])
    vision_params = vision.num_hidden_layers * (4 * vision.hidden_size ** 2 + 2 * vision.hidden_size * vision.intermediate_size)
    weights = (text["layer_params"] + text["head_params"] + vision_params) * bytes_per_value
    prefill = max(prefill_flops / flops_peak, weights / bandwidth)
    decode = 0.0
    for step in range(new_tokens):
        context = prompt_tokens + step
        step_flops = batch * (2 * (text["layer_params"] + text["head_params"]) + 4 * text["layers"] * context * text["q_dim"])
        step_bytes = (text["layer_params"] + text["head_params"]) * bytes_per_value \
            + batch * context * text["layers"] * 2 * text["kv_dim"] * bytes_per_value
        decode += max(step_flops / flops_peak, step_bytes / bandwidth)
    return prefill, decode
