"""Converting LLaVA-Video's original layout: a tiny model under LLaVA-NeXT's key names goes through
the converter and must give the same logits as the model it came from."""

import json

import pytest
import torch
from safetensors.torch import save_file

from extract.models.convert import ConversionError, convert_llava_video
from tiny import save_tiny_llava_video

# transformers' names -> LLaVA-NeXT's (LlavaQwenForCausalLM: Qwen2 `model.*`, SigLIP tower, mm_projector)
TO_ORIGINAL = [("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
               ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
               ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
               ("model.language_model.", "model."), ("model.image_newline", "model.image_newline"), ("lm_head.", "lm_head.")]


def _original_name(key: str) -> str:
    for new, old in TO_ORIGINAL:
        if key.startswith(new):
            return old + key[len(new):]
    raise AssertionError(key)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    tiny = save_tiny_llava_video(tmp_path_factory.mktemp("hf"))
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny).eval()
    source = tmp_path_factory.mktemp("lmms-lab")
    state = {_original_name(k): v.contiguous() for k, v in model.state_dict().items()}
    assert "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight" in state
    assert "model.mm_projector.0.weight" in state and "model.layers.1.self_attn.q_proj.weight" in state
    save_file(state, source / "model.safetensors")
    text = model.config.text_config
    (source / "config.json").write_text(json.dumps({
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size, "max_position_embeddings": text.max_position_embeddings, "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": 10000.0, "mm_vision_tower": "tiny/siglip-patch8-40",  # the tiny tower, named as SigLIP is
        "mm_projector_type": "mlp2x_gelu",
        "image_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": model.config.image_grid_pinpoints,
        "tie_word_embeddings": False}))
    AutoTokenizer.from_pretrained(tiny).save_pretrained(source)
    return model, tiny, source


def test_converted_model_gives_the_same_logits(original, tmp_path):
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    model, tiny, source = original
    target = convert_llava_video(source, tmp_path / "converted", vision_heads=2)
    converted = LlavaOnevisionForConditionalGeneration.from_pretrained(target).eval()
    processor = AutoProcessor.from_pretrained(target)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe."}]}],
                                           add_generation_prompt=True)
    video = torch.randint(0, 255, (4, 32, 32, 3), dtype=torch.uint8)
    inputs = processor(text=[prompt], videos=[video], return_tensors="pt", do_sample_frames=False)
    with torch.no_grad():
        torch.testing.assert_close(converted(**inputs).logits, model(**inputs).logits)


def test_a_weight_without_a_rule_or_a_missing_weight_stops_the_conversion(original, tmp_path):
    from safetensors.torch import load_file

    _, _, source = original
    state = load_file(source / "model.safetensors")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((source / name).read_bytes())
    save_file({k: v for k, v in state.items() if k != "model.mm_projector.2.bias"}, broken / "model.safetensors")
    with pytest.raises(ConversionError, match="missing"):
        convert_llava_video(broken, tmp_path / "out", vision_heads=2)
    save_file({**state, "model.extra.weight": torch.zeros(1)}, broken / "model.safetensors")
    with pytest.raises(ConversionError, match="no rule"):
        convert_llava_video(broken, tmp_path / "out2", vision_heads=2)


def test_the_written_processor_preprocesses_as_siglip_and_prompts_as_qwen_1_5(original, tmp_path):
    from transformers import AutoProcessor

    _, _, source = original
    processor = AutoProcessor.from_pretrained(convert_llava_video(source, tmp_path / "converted", vision_heads=2))
    for part in (processor.image_processor, processor.video_processor):
        assert list(part.image_mean) == [0.5, 0.5, 0.5] and list(part.image_std) == [0.5, 0.5, 0.5]
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
