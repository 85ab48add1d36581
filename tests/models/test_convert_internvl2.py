"""InternVL2 -> native InternVL: a tiny random state dict with InternVL2's key names, converted, must
give the logits of a reference forward written here from the unconverted weights (InternViT,
pixel shuffle v2, mlp1, InternLM2 with its fused grouped-query wqkv)."""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from extract.models.convert import ConversionError, convert_internvl2

VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32,
          "patch_size": 8, "qkv_bias": True, "layer_norm_eps": 1e-6, "norm_type": "layer_norm", "qk_normalization": False}
LLM = {"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "max_position_embeddings": 256, "rope_theta": 10000.0, "bias": False}
IMAGE_TOKEN = 7


def original_state_dict(seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1, base=0.0):
        return base + scale * torch.randn(*shape, generator=g)

    c, ffn, tokens = VISION["hidden_size"], VISION["intermediate_size"], (VISION["image_size"] // VISION["patch_size"]) ** 2
    h, kv, hd = LLM["hidden_size"], LLM["num_key_value_heads"], LLM["hidden_size"] // LLM["num_attention_heads"]
    state = {"vision_model.embeddings.class_embedding": rand(1, 1, c),
             "vision_model.embeddings.position_embedding": rand(1, tokens + 1, c),
             "vision_model.embeddings.patch_embedding.weight": rand(c, 3, 8, 8), "vision_model.embeddings.patch_embedding.bias": rand(c)}
    for i in range(VISION["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        state.update({p + "attn.qkv.weight": rand(3 * c, c), p + "attn.qkv.bias": rand(3 * c), p + "attn.proj.weight": rand(c, c),
                      p + "attn.proj.bias": rand(c), p + "mlp.fc1.weight": rand(ffn, c), p + "mlp.fc1.bias": rand(ffn),
                      p + "mlp.fc2.weight": rand(c, ffn), p + "mlp.fc2.bias": rand(c), p + "norm1.weight": rand(c, base=1),
                      p + "norm1.bias": rand(c), p + "norm2.weight": rand(c, base=1), p + "norm2.bias": rand(c),
                      p + "ls1": rand(c, base=0.5), p + "ls2": rand(c, base=0.5)})
    state.update({"mlp1.0.weight": rand(4 * c, base=1), "mlp1.0.bias": rand(4 * c), "mlp1.1.weight": rand(h, 4 * c),
                  "mlp1.1.bias": rand(h), "mlp1.3.weight": rand(h, h), "mlp1.3.bias": rand(h),
                  "language_model.model.tok_embeddings.weight": rand(LLM["vocab_size"], h, scale=1.0),
                  "language_model.model.norm.weight": rand(h, base=1), "language_model.output.weight": rand(LLM["vocab_size"], h)})
    for i in range(LLM["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        state.update({p + "attention.wqkv.weight": rand((LLM["num_attention_heads"] + 2 * kv) * hd, h),
                      p + "attention.wo.weight": rand(h, h), p + "feed_forward.w1.weight": rand(LLM["intermediate_size"], h),
                      p + "feed_forward.w3.weight": rand(LLM["intermediate_size"], h),
                      p + "feed_forward.w2.weight": rand(h, LLM["intermediate_size"]),
                      p + "attention_norm.weight": rand(h, base=1), p + "ffn_norm.weight": rand(h, base=1)})
    return state


def reference_vision(sd, pixels):
    c, heads = VISION["hidden_size"], VISION["num_attention_heads"]
    x = F.conv2d(pixels, sd["vision_model.embeddings.patch_embedding.weight"], sd["vision_model.embeddings.patch_embedding.bias"], stride=8)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["vision_model.embeddings.class_embedding"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd["vision_model.embeddings.position_embedding"]
    n, tokens = x.shape[:2]
    for i in range(VISION["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        y = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6)
        q, k, v = F.linear(y, sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"]).reshape(n, tokens, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attention = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
        x = x + F.linear(attention.transpose(1, 2).reshape(n, tokens, c), sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"]) * sd[p + "ls1"]
        y = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6)
        x = x + F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"]) * sd[p + "ls2"]
    x = x[:, 1:]
    side = int((tokens - 1) ** 0.5)
    x = x.reshape(n, side, side, c)
    # InternVL's pixel_shuffle, ps_version v2, scale 0.5
    x = x.view(n, side, side // 2, c * 2).permute(0, 2, 1, 3).contiguous()
    x = x.view(n, side // 2, side // 2, c * 4).permute(0, 2, 1, 3).contiguous()
    x = x.reshape(n, -1, c * 4)
    x = F.layer_norm(x, (c * 4,), sd["mlp1.0.weight"], sd["mlp1.0.bias"], 1e-5)
    return F.linear(F.gelu(F.linear(x, sd["mlp1.1.weight"], sd["mlp1.1.bias"])), sd["mlp1.3.weight"], sd["mlp1.3.bias"])


def _rms(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + LLM["rms_norm_eps"]) * weight


def reference_logits(sd, input_ids, pixels):
    heads, kv = LLM["num_attention_heads"], LLM["num_key_value_heads"]
    hd, groups = LLM["hidden_size"] // heads, heads // kv
    x = sd["language_model.model.tok_embeddings.weight"][input_ids].clone()
    x[input_ids == IMAGE_TOKEN] = reference_vision(sd, pixels).reshape(-1, LLM["hidden_size"])
    length = x.shape[1]
    inv = 1.0 / (LLM["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.arange(length).float()[:, None] * inv[None]
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rotate(t):
        return t * cos + torch.cat([-t[..., hd // 2:], t[..., : hd // 2]], dim=-1) * sin

    causal = torch.full((length, length), float("-inf")).triu(1)
    for i in range(LLM["num_hidden_layers"]):
        p = f"language_model.model.layers.{i}."
        qkv = F.linear(_rms(x, sd[p + "attention_norm.weight"]), sd[p + "attention.wqkv.weight"]).view(1, length, kv, groups + 2, hd)
        q = qkv[..., :groups, :].reshape(1, length, heads, hd).transpose(1, 2)
        k = qkv[..., -2, :].transpose(1, 2).repeat_interleave(groups, dim=1)
        v = qkv[..., -1, :].transpose(1, 2).repeat_interleave(groups, dim=1)
        attention = torch.softmax(rotate(q) @ rotate(k).transpose(-1, -2) / hd**0.5 + causal, dim=-1) @ v
        x = x + F.linear(attention.transpose(1, 2).reshape(1, length, -1), sd[p + "attention.wo.weight"])
        y = _rms(x, sd[p + "ffn_norm.weight"])
        x = x + F.linear(F.silu(F.linear(y, sd[p + "feed_forward.w1.weight"])) * F.linear(y, sd[p + "feed_forward.w3.weight"]),
                         sd[p + "feed_forward.w2.weight"])
    return F.linear(_rms(x, sd["language_model.model.norm.weight"]), sd["language_model.output.weight"])


@pytest.fixture
def source(tmp_path):
    folder = tmp_path / "InternVL2-tiny"
    folder.mkdir()
    state = original_state_dict()
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"architectures": ["InternVLChatModel"], "vision_config": VISION,
                                                    "llm_config": LLM, "downsample_ratio": 0.5, "select_layer": -1,
                                                    "ps_version": "v2", "template": "internlm2-chat"}))
    return folder, state


def test_converted_model_matches_the_reference_from_unconverted_weights(source, tmp_path):
    from transformers import InternVLForConditionalGeneration

    folder, state = source
    target = convert_internvl2(folder, tmp_path / "native", image_token=IMAGE_TOKEN)
    model = InternVLForConditionalGeneration.from_pretrained(target).eval()
    input_ids = torch.tensor([[1, 2, *([IMAGE_TOKEN] * 4), 11, 12, 13, 14]])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        native = model(input_ids=input_ids, pixel_values=pixels, attention_mask=torch.ones_like(input_ids)).logits
        reference = reference_logits(state, input_ids, pixels)
    torch.testing.assert_close(native, reference, atol=1e-4, rtol=1e-4)


def test_without_the_image_token_in_the_tokenizer_files_it_must_be_given(source, tmp_path):
    folder, _ = source
    with pytest.raises(ConversionError, match="image-token-id"):
        convert_internvl2(folder, tmp_path / "out")


def test_the_folder_carries_the_tokenizer_files_the_template_and_the_end_token(source, tmp_path):
    from transformers import AutoConfig, GenerationConfig

    folder, _ = source
    (folder / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": {
        "92542": {"content": "<|im_end|>"}, str(IMAGE_TOKEN): {"content": "<IMG_CONTEXT>"}}, "auto_map": {}}))
    (folder / "tokenizer.model").write_bytes(b"sentencepiece model")
    (folder / "tokenization_internlm2.py").write_text("# the tokenizer's own code")
    target = convert_internvl2(folder, tmp_path / "native")
    assert AutoConfig.from_pretrained(target).template == "internlm2-chat"
    assert AutoConfig.from_pretrained(target).image_token_id == IMAGE_TOKEN
    assert GenerationConfig.from_pretrained(target).eos_token_id == 92542
    assert {"tokenizer.model", "tokenizer_config.json", "tokenization_internlm2.py"} <= {p.name for p in target.iterdir()}


def test_the_command_line_names_the_head_that_runs_the_folder(source, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    folder, _ = source
    target = tmp_path / "native"
    done = subprocess.run([sys.executable, "-m", "extract.convert", "internvl2", str(folder), str(target), "--image-token-id",
                           str(IMAGE_TOKEN)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"wrote {target}; use it with +model=internvl model.checkpoint={target}"
