"""llava_video against its authors' code (LLaVA-VL/LLaVA-NeXT): the forward pass written here from
llava_arch.py on a tiny state dict with the original key names, their frame sampling, their preprocessing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import ffmpeg_output, make_clip, plain_mp4, ready
from extract.decode import decode_media
from extract.heads import Clip, build
from extract.models.convert import convert_llava_video
from tiny import save_tiny_llava_video

IMAGE_TOKEN_INDEX = -200  # llava/constants.py
# transformers' names -> LLaVA-NeXT's (LlavaQwenForCausalLM: Qwen2 `model.*`, SigLIP tower, mm_projector)
TO_ORIGINAL = [("model.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
               ("model.multi_modal_projector.linear_1.", "model.mm_projector.0."),
               ("model.multi_modal_projector.linear_2.", "model.mm_projector.2."),
               ("model.language_model.", "model."), ("model.image_newline", "model.image_newline"), ("lm_head.", "lm_head.")]


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny checkpoint in LLaVA-NeXT's own layout (random weights, the original key names), and the head's
    folder made from it by `extract.convert llava_video`."""
    from transformers import AutoTokenizer, LlavaOnevisionForConditionalGeneration

    tiny = save_tiny_llava_video(tmp_path_factory.mktemp("hf"), seed=3)
    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny)
    torch.manual_seed(1)
    with torch.no_grad():
        model.model.image_newline.normal_()  # not the initial value: the test sees where newlines go
    source = tmp_path_factory.mktemp("lmms-lab")
    state = {}
    for key, value in model.state_dict().items():
        new, old = next((n, o) for n, o in TO_ORIGINAL if key.startswith(n))
        state[old + key[len(new):]] = value.contiguous()
    save_file(state, source / "model.safetensors")
    text, vision = model.config.text_config, model.config.vision_config
    (source / "config.json").write_text(json.dumps({
        "architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size, "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads, "num_key_value_heads": text.num_key_value_heads,
        "vocab_size": text.vocab_size, "max_position_embeddings": text.max_position_embeddings, "rms_norm_eps": text.rms_norm_eps,
        "rope_theta": text.rope_parameters["rope_theta"] if getattr(text, "rope_parameters", None) else 10000.0,
        "mm_vision_tower": f"tiny/siglip-patch{vision.patch_size}-{vision.image_size}", "mm_projector_type": "mlp2x_gelu", "mm_hidden_size": vision.hidden_size,
        "mm_spatial_pool_mode": "bilinear", "mm_newline_position": "grid", "mm_patch_merge_type": "spatial_unpad",
        "image_aspect_ratio": "anyres_max_9", "image_grid_pinpoints": model.config.image_grid_pinpoints, "tie_word_embeddings": False,
        "vision_image_size": vision.image_size, "vision_patch_size": vision.patch_size}))
    AutoTokenizer.from_pretrained(tiny).save_pretrained(source)
    converted = convert_llava_video(source, tmp_path_factory.mktemp("converted"), vision_heads=vision.num_attention_heads)
    return state, json.loads((source / "config.json").read_text()), converted


def _authors_logits(state: dict, config: dict, prompt: str, placeholder: str, tokenizer, frames: torch.Tensor) -> torch.Tensor:
    """LlavaQwenForCausalLM's forward for one video, written from llava_arch.py: SigLIP tower (its last kept layer,
    no post-norm), mlp2x_gelu projector, get_2dPool (bilinear, stride 2), add_token_per_grid, the features spliced
    where tokenizer_image_token put IMAGE_TOKEN_INDEX, then Qwen2."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

    tower_keys = {k[len("model.vision_tower.vision_tower."):]: v for k, v in state.items() if k.startswith("model.vision_tower.")}
    layers = len({k.split(".")[3] for k in tower_keys if k.startswith("vision_model.encoder.layers.")})
    width = state["model.mm_projector.0.weight"].shape[1]
    tower = SiglipVisionModel(SiglipVisionConfig(hidden_size=width, intermediate_size=tower_keys["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                                                 num_hidden_layers=layers, num_attention_heads=2, image_size=config["vision_image_size"],
                                                 patch_size=config["vision_patch_size"], vision_use_head=False)).eval()
    if not any(k.startswith("vision_model.") for k in tower.state_dict()):  # transformers 5.2x names the tower's modules without it
        tower_keys = {k[len("vision_model."):]: v for k, v in tower_keys.items()}
    tower.load_state_dict(tower_keys, strict=True)
    language = Qwen2ForCausalLM(Qwen2Config(hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
                                            num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
                                            num_key_value_heads=config["num_key_value_heads"], vocab_size=config["vocab_size"],
                                            max_position_embeddings=config["max_position_embeddings"], rms_norm_eps=config["rms_norm_eps"],
                                            rope_theta=config["rope_theta"], tie_word_embeddings=False)).eval()
    language.load_state_dict({k: v for k, v in state.items() if k.startswith(("model.embed_tokens", "model.layers", "model.norm", "lm_head"))})
    with torch.no_grad():
        # encode_images: the tower's hidden_states[-1], then mm_projector (Linear, GELU, Linear)
        features = tower(frames, output_hidden_states=True).hidden_states[-1]
        features = torch.nn.functional.linear(features, state["model.mm_projector.0.weight"], state["model.mm_projector.0.bias"])
        features = torch.nn.functional.gelu(features)
        features = torch.nn.functional.linear(features, state["model.mm_projector.2.weight"], state["model.mm_projector.2.bias"])
        # get_2dPool(image_feat) with the default stride 2, mm_spatial_pool_mode "bilinear"
        num_frames, num_tokens, dim = features.shape
        side = math.isqrt(num_tokens)
        grid = features.view(num_frames, side, side, -1).permute(0, 3, 1, 2).contiguous()
        grid = torch.nn.functional.interpolate(grid, size=[math.ceil(side / 2), math.ceil(side / 2)], mode="bilinear")
        features = grid.permute(0, 2, 3, 1).reshape(num_frames, -1, dim)
        # add_token_per_grid
        resize_h = int(math.sqrt(features.shape[1]))
        feature = features.view(num_frames, 1, resize_h, resize_h, -1).permute(4, 0, 2, 1, 3).contiguous()
        feature = feature.flatten(1, 2).flatten(2, 3)
        newline = state["model.image_newline"]
        feature = torch.cat((feature, newline[:, None, None].expand(*feature.shape[:-1], 1)), dim=-1)
        feature = feature.flatten(1, 2).transpose(0, 1)
        # tokenizer_image_token: each chunk around the image token tokenised on its own; then the splice
        before, after = prompt.split(placeholder)
        ids_before, ids_after = tokenizer(before).input_ids, tokenizer(after).input_ids
        embed = language.model.embed_tokens
        inputs = torch.cat([embed(torch.tensor(ids_before)), feature, embed(torch.tensor(ids_after))])[None]
        return language(inputs_embeds=inputs).logits[0]


def test_the_head_gives_the_logits_of_the_authors_forward(release):
    state, config, converted = release
    head = ready(build("llava_video", {"checkpoint": str(converted), "num_frames": 5, "dtype": "float32"}))
    clip = Clip("k", "v", 0.0, 2.0, decode_media(make_clip(seconds=2, rate=12, pattern="testsrc2"), head.media_spec))
    prepared = head.prepare(clip)
    ids = prepared["input_ids"][None]
    with torch.no_grad():
        embeddings = head.model.get_input_embeddings()(ids)
        embeddings[ids == head.video_token] = head.visual_tokens(prepared["pixel_values"])
        ours = head.model(inputs_embeds=embeddings).logits[0]
    placeholder = head.tokenizer.convert_ids_to_tokens(head.video_token)
    theirs = _authors_logits(state, config, head.prompt_for(clip), placeholder, head.tokenizer, prepared["pixel_values"])
    assert ours.shape == theirs.shape and (ids == head.video_token).sum() == 5 * 3 * 4  # 5 frames of 3 rows of 3 + newline
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_frames_and_times_are_sampled_as_load_video_does(release):
    _, _, converted = release
    head = ready(build("llava_video", {"checkpoint": str(converted), "num_frames": 4}))
    # 24 frames at 12 fps: int(linspace(0, 23, 4)) = 0, 7, 15, 23; times index / fps; length 24 / 12
    plain = make_clip(seconds=2, rate=12, tone=None, fmt="matroska")
    late = ffmpeg_output("-c", "copy", "-f", "mpegts", suffix=".ts", source=plain_mp4(seconds=2, rate=12))  # starts at ~1.4 s
    for data in (plain, late):
        clip = Clip("k", "v", 0.0, 2.0, decode_media(data, head.media_spec))
        assert clip.media.frame_indices == [0, 7, 15, 23]
        times, length = head.frame_times(clip.media)
        assert times == [0.0, 0.58, 1.25, 1.92] and length == pytest.approx(2.0)
        prompt = head.prompt_for(clip)
        assert "The video lasts for 2.00 seconds, and 4 frames are uniformly sampled from it. These frames are located at " \
               "0.00s,0.58s,1.25s,1.92s.Please answer" in prompt
        assert head.prepare(clip)["frame_times"] == times  # the record's times are the prompt's


def test_the_prompt_is_the_qwen_1_5_conversation(release):
    _, _, converted = release
    head = ready(build("llava_video", {"checkpoint": str(converted), "num_frames": 4, "prompt": "What happens?"}))
    clip = Clip("k", "v", 0.0, 2.0, decode_media(make_clip(seconds=2, rate=12), head.media_spec))
    prompt = head.prompt_for(clip)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<video>The video lasts")
    assert prompt.endswith("related to this video.\nWhat happens?<|im_end|>\n<|im_start|>assistant\n")


def test_pixels_are_siglips_preprocessing_of_the_full_frames(release):
    """SigLipImageProcessor (siglip_encoder.py): PIL bicubic resize of the decoded frame to 384, x / 255, mean and std 0.5;
    here the decoder resizes (torch's antialiased bicubic) and the head normalises."""
    from transformers.image_transforms import normalize, rescale, resize
    from transformers.image_utils import ChannelDimension, PILImageResampling

    _, _, converted = release
    head = ready(build("llava_video", {"checkpoint": str(converted), "num_frames": 3, "dtype": "float32"}))
    data = make_clip(seconds=1, rate=12, size="320x240", pattern="testsrc2")
    clip = Clip("k", "v", 0.0, 1.0, decode_media(data, head.media_spec))
    ours = head.prepare(clip)["pixel_values"]
    full = decode_media(data, type(head.media_spec)(num_frames=3, sampling="linspace")).frames  # the same frames, not resized
    size = head.media_spec.size
    theirs = []
    for frame in full:
        image = resize(frame, size=size, resample=PILImageResampling.BICUBIC, data_format=ChannelDimension.FIRST,
                       input_data_format=ChannelDimension.LAST)
        image = rescale(image, 1 / 255, data_format=ChannelDimension.FIRST)
        theirs.append(normalize(image, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), data_format=ChannelDimension.FIRST))
    theirs = torch.from_numpy(np.stack(theirs)).float()
    difference = (ours - theirs).abs()
    assert difference.max() <= 2 * 2 / 255 + 1e-6 and difference.mean() < 0.01  # at most two levels of 255 apart


def test_a_phone_clips_times_come_from_its_average_rate(release):
    """load_video: fps = decord's get_avg_fps() (ffprobe's avg_frame_rate), times index / fps, length frames / fps; on a
    variable-rate clip on a 90 kHz clock whose r_frame_rate (30) is far from its average (about 10.7)."""
    import numpy as np

    from test_decode import _ffprobe_rate, phone_like_clip

    _, _, converted = release
    head = ready(build("llava_video", {"checkpoint": str(converted), "num_frames": 4}))
    data = phone_like_clip()
    average = _ffprobe_rate(data, "avg_frame_rate")
    frames = int(_ffprobe_count(data))
    clip = Clip("k", "v", 0.0, 4.0, decode_media(data, head.media_spec))
    indices = [int(i) for i in np.linspace(0, frames - 1, 4)]
    assert clip.media.frame_indices == indices
    times, length = head.frame_times(clip.media)
    assert times == [round(i / average, 2) for i in indices] and length == pytest.approx(frames / average, rel=1e-4)
    assert f"The video lasts for {frames / average:.2f} seconds" in head.prompt_for(clip)
    assert head.prepare(clip)["video_s"] == round(frames / average, 3)  # the record's, to the millisecond


def _ffprobe_count(data: bytes) -> int:
    import subprocess

    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "default=nw=1:nk=1", "pipe:0"], input=data, capture_output=True, check=True)
    return int(out.stdout.decode().strip())
