"""The benchmark's analytic floor counts the same weights the real modules hold."""

import pytest
import torch

from extract.bench.floors import decoder_sizes, llava_floor
from extract.models.random_models import QWEN2_7B, QWEN3_8B


def _built(config: dict):
    from transformers import AutoConfig, AutoModelForCausalLM

    text = AutoConfig.for_model(**config)
    with torch.device("meta"):
        return text, AutoModelForCausalLM.from_config(text)


def test_decoder_weights_match_the_modules():
    for config in (QWEN2_7B, QWEN3_8B):
        text, model = _built(config)
        matrices = sum(p.numel() for name, p in model.model.layers.named_parameters() if p.dim() == 2)
        sizes = decoder_sizes(text)
        assert abs(sizes["layer_params"] - matrices) / matrices < 1e-6, config["model_type"]
        assert sizes["head_params"] == model.lm_head.weight.numel()


def test_decode_floor_is_the_weight_reads_when_bandwidth_bound():
    from transformers import LlavaOnevisionConfig

    config = LlavaOnevisionConfig(text_config=QWEN2_7B)
    sizes = decoder_sizes(config.text_config)
    prefill, decode = llava_floor(config, batch=1, prompt_tokens=100, frames=1, new_tokens=10, peaks=(1e30, 1e12))
    weights = (sizes["layer_params"] + sizes["head_params"]) * 2
    kv = sum(100 + step for step in range(10)) * sizes["layers"] * 2 * sizes["kv_dim"] * 2
    assert decode * 1e12 == pytest.approx(10 * weights + kv, rel=1e-9)
    assert prefill > 0
