"""A tiny checkpoint laid out as lmms-lab publishes LLaVA-Video (LLaVA-NeXT's key names and config keys, a tokenizer
with no <image> or <video> token, more embedding rows than tokens, a tower whose size its patches do not divide),
converted by `extract.convert llava_video` and run by the head."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO, make_clip, ready
from extract.decode import decode_media
from extract.heads import Clip, build
from extract.models.convert import ConversionError, convert_llava_video
from extract.models.random_models import tiny_qwen2_text_config, tiny_tokenizer

EXTRA_ROWS = 8  # lmms-lab's LLaVA-Video-7B: 152,064 rows for a tokenizer of 151,646
TOWER = {"image_size": 44, "patch_size": 8}  # 5 x 5 patches cover 40 of its 44 px, as SigLIP's 27 x 14 = 378 of 384


def _to_original(key: str) -> str:
    for new, old in (("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
                     ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
                     ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
                     ("model.language_model.", "model."), ("model.image_newline", "model.image_newline"), ("lm_head.", "lm_head.")):
        if key.startswith(new):
            return old + key[len(new):]
    raise AssertionError(key)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    tokenizer = tiny_tokenizer(placeholders=False)
    assert "<image>" not in tokenizer.get_vocab() and "<video>" not in tokenizer.get_vocab()
    text = {**tiny_qwen2_text_config(tokenizer), "vocab_size": len(tokenizer) + EXTRA_ROWS}
    config = LlavaOnevisionConfig(text_config=text, vision_config={
        "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "vision_use_head": False, **TOWER},
        image_token_index=len(tokenizer), video_token_index=len(tokenizer) + 1, vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=[[44, 44]])
    torch.manual_seed(5)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.image_newline.normal_()
        model.lm_head.weight[len(tokenizer):] += 5.0  # rows past the tokenizer are likely argmaxes: the cut shows
    source = tmp_path_factory.mktemp("LLaVA-Video-tiny-Qwen2")
    save_file({_to_original(k): v.contiguous() for k, v in model.state_dict().items()}, source / "model.safetensors")
    (source / "config.json").write_text(json.dumps({  # the keys lmms-lab's config.json has (no image size among them)
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", **{k: text[k] for k in (
            "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "max_position_embeddings")}, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
        "mm_vision_tower": "tiny/siglip-patch8-44", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": 32,
        "mm_spatial_pool_mode": "bilinear", "mm_newline_position": "grid", "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": [[44, 44]], "tie_word_embeddings": False}))
    tokenizer.save_pretrained(source)
    return source, len(tokenizer)


def test_the_conversion_keeps_the_towers_size_and_adds_the_placeholders_at_the_end(release, tmp_path):
    from transformers import AutoConfig, AutoProcessor

    source, tokens = release
    target = convert_llava_video(source, tmp_path / "converted", vision_heads=2)
    config = AutoConfig.from_pretrained(target)
    assert config.vision_config.image_size == 44 and config.vision_config.patch_size == 8  # not 5 x 8 = 40
    assert (config.image_token_index, config.video_token_index) == (tokens, tokens + 1)
    processor = AutoProcessor.from_pretrained(target)
    assert processor.video_processor.size["height"] == 44 and processor.image_processor.size["height"] == 44
    config_file = json.loads((source / "config.json").read_text())
    (tmp_path / "unnamed").mkdir()
    for path in source.iterdir():
        (tmp_path / "unnamed" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "unnamed" / "config.json").write_text(json.dumps({**config_file, "mm_vision_tower": "some/tower"}))
    with pytest.raises(ConversionError, match="give it with --image-size"):
        convert_llava_video(tmp_path / "unnamed", tmp_path / "out", vision_heads=2)
    assert AutoConfig.from_pretrained(convert_llava_video(tmp_path / "unnamed", tmp_path / "out2", vision_heads=2, image_size=44)
                                      ).vision_config.image_size == 44


def test_the_command_line_converts_and_says_how_to_use_the_folder(release, tmp_path):
    source, _ = release
    target = tmp_path / "converted"
    command = [sys.executable, "-m", "extract.convert"]
    done = subprocess.run([*command, "llava_video", str(source), str(target), "--vision-heads", "2"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == f"wrote {target}; use it with +model=llava_video model.checkpoint={target}"
    assert json.loads((target / "config.json").read_text())["architectures"] == ["LlavaOnevisionForConditionalGeneration"]
    (tmp_path / "not-json").mkdir()
    (tmp_path / "not-json" / "config.json").write_text("{broken")
    (tmp_path / "not-text").mkdir()
    (tmp_path / "not-text" / "config.json").write_bytes(b"\xff\xfe\x00binary")
    for what in ("llava_video", "internvl2"):
        for folder, words in ((tmp_path / "absent", "is not a checkpoint folder: it has no config.json"),
                              (tmp_path / "not-json", "config.json is not JSON"), (tmp_path / "not-text", "config.json is not JSON")):
            refused = subprocess.run([*command, what, str(folder), str(tmp_path / "out")], cwd=REPO, capture_output=True,
                                     text=True, timeout=300)
            assert refused.returncode == 2 and refused.stderr.startswith(f"error: {folder}"), refused.stderr[-2000:]
            assert words in refused.stderr and refused.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


def _greedy_over_kept_rows(head, prepared: dict, kept: int, steps: int) -> tuple[list[int], float]:
    """Greedy decoding written here: the whole sequence through the model at every step (no cache), the argmax and the
    log-softmax over the first `kept` rows of the last position's logits."""
    embeddings = head.model_inputs([prepared])["inputs_embeds"]
    tokens, logprobs = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = head.model(inputs_embeds=embeddings).logits[0, -1, :kept].double()
            token = int(logits.argmax())
            tokens.append(token)
            logprobs.append(float(logits.log_softmax(-1)[token]))
            embeddings = torch.cat([embeddings, head.model.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens, sum(logprobs) / len(logprobs)


@pytest.mark.parametrize("engine", ["continuous", "generate"])
def test_the_head_reads_frames_at_the_towers_size_and_scores_the_authors_rows(release, tmp_path, engine):
    source, tokens = release
    target = convert_llava_video(source, tmp_path / "converted", vision_heads=2)
    head = ready(build("llava_video", {"checkpoint": str(target), "num_frames": 4, "max_new_tokens": 5, "dtype": "float32",
                                       "engine": engine}))
    head.model.generation_config.eos_token_id = -1  # no end token: five tokens each way
    assert head.vocab_rows == tokens
    clip = Clip("k", "v", 0.0, 1.0, decode_media(make_clip(seconds=1, size="96x64"), head.media_spec))
    assert clip.media.frames.shape == (4, 44, 44, 3)
    prepared = head.prepare(clip)
    expected_tokens, expected_mean = _greedy_over_kept_rows(head, prepared, tokens, 5)
    clip.prepared = prepared
    [result] = head.infer([clip])
    assert result.fields["caption"] == head.tokenizer.decode(expected_tokens, skip_special_tokens=True).strip()
    assert result.fields["mean_logprob"] == pytest.approx(expected_mean, abs=2e-6)
    _, over_every_row = _greedy_over_kept_rows(head, prepared, tokens + EXTRA_ROWS + 2, 5)
    assert abs(over_every_row - expected_mean) > 1e-3  # the rows cut matter here: the test can tell
