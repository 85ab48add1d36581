"""vlm_caption against each family's own processor and `generate`, on tiny random checkpoints saved and loaded by path.

The expected tokens and log-probabilities come from transformers alone: the checkpoint's processor applies its chat
template to the clip's frames (sampling them itself where it prescribes a rule, from every frame of the clip), and
the model's own greedy `generate` runs on that, one clip at a time.
"""

import json

import numpy as np
import pytest
import torch

from conftest import ffmpeg_output, read_records, ready, run_cli, write_shard
from extract.decode import MediaSpec, decode_media
from extract.errors import ConfigError
from extract.heads import Clip, build
from extract.models.random_models import save_tiny_vlm

FAMILIES = ["qwen3_vl", "qwen2_5_vl", "llava_onevision", "internvl"]
SAMPLES_ITSELF = {"qwen3_vl", "qwen2_5_vl"}  # processors with a sampling rule (2 frames a second); the others get 32
PROMPT = "Describe this video in detail."
NEW_TOKENS = 10


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return {family: save_tiny_vlm(family, root / family) for family in FAMILIES}


@pytest.fixture(scope="module")
def clips():
    """Three clips of different lengths, rates and sizes: 3 s at 10 fps (30 frames), 2 s at 25 fps, 5 s at 8 fps."""
    return [ffmpeg_output("-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}", "-pix_fmt", "yuv420p")
            for size, rate, seconds in [("96x64", 10, 3), ("128x72", 25, 2), ("80x80", 8, 5)]]


def _clip(head, data: bytes, key: str = "k") -> Clip:
    clip = Clip(key, "v", 0.0, 1.0, decode_media(data, head.media_spec))
    clip.prepared = head.prepare(clip)  # a worker's share
    return clip


def _spy_on_tokens(monkeypatch) -> list:
    """Every generation's tokens and log-probabilities as the head hands them to `summarise`."""
    from extract.heads import vlm_caption
    from extract.models import generation

    seen = []

    def spy(real):
        def summarise(tokenizer, tokens, logprobs, eos_ids):
            seen.append((list(tokens), [float(x) for x in logprobs]))
            return real(tokenizer, tokens, logprobs, eos_ids)
        return summarise

    monkeypatch.setattr(vlm_caption, "summarise", spy(vlm_caption.summarise))
    monkeypatch.setattr(generation, "summarise", spy(generation.summarise))
    return seen


def _reference(folder, data: bytes, rate: float) -> tuple[list[int], list[float], dict]:
    """transformers alone: every frame of the clip (at its declared `rate`) to the processor, which samples by its own
    rule where it has one (else 32 frames by transformers' uniform rule, frame i * total // 32, as the README says: by
    hand here), its chat template, and the
    model's greedy `generate`. Returns (tokens, log-probabilities, the processor's inputs)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    processor = AutoProcessor.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    every = decode_media(data, MediaSpec(every_frame=True, max_frames=100_000)).frames
    total = len(every)
    rule = getattr(processor.video_processor, "fps", None) is not None
    count = min(32, total)
    indices = list(range(total)) if rule else [i * total // count for i in range(count)]
    metadata = VideoMetadata(total_num_frames=total, fps=rate, duration=total / rate, frames_indices=indices)
    messages = [{"role": "user", "content": [{"type": "video", "video": every[indices]}, {"type": "text", "text": PROMPT}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                                           processor_kwargs={"video_metadata": [metadata], "do_sample_frames": rule})
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, output_scores=True, return_dict_in_generate=True)
    logprobs = model.compute_transition_scores(output.sequences, output.scores, normalize_logits=True)[0]
    return output.sequences[0, inputs["input_ids"].shape[1]:].tolist(), logprobs.tolist(), inputs


@pytest.mark.parametrize("engine", ["continuous", "generate"])
@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_and_logprobs_equal_the_models_own_generate_on_its_chat_template(family, engine, checkpoints, clips, monkeypatch):
    seen = _spy_on_tokens(monkeypatch)
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints[family]), "max_new_tokens": NEW_TOKENS, "engine": engine,
                                       "prompt": PROMPT}))
    [result] = head.infer([_clip(head, clips[0])])
    tokens, logprobs, inputs = _reference(checkpoints[family], clips[0], rate=10.0)
    [(head_tokens, head_logprobs)] = seen
    assert head_tokens == tokens
    assert head_logprobs == pytest.approx(logprobs, abs=1e-4)
    fields = result.fields
    assert result.status == "ok" and fields["engine"] == engine and fields["num_tokens"] == NEW_TOKENS  # random weights never end
    assert fields["mean_logprob"] == pytest.approx(float(np.mean(logprobs)), abs=1e-4)
    if family == "qwen2_5_vl":  # Qwen2-VL's rule at 2 fps over 30 frames at 10 fps: arange(0, 30, 30 / 6), by hand
        assert fields["frame_times"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
        assert int(inputs["video_grid_thw"][0, 0]) * 2 == fields["num_frames"] == 6  # 2 frames a temporal patch
    elif family == "qwen3_vl":  # Qwen3-VL's: linspace(0, 29, 6) rounded, by hand
        assert fields["frame_times"] == [0.0, 0.6, 1.2, 1.7, 2.3, 2.9]
    else:  # no rule: 32 frames at most, all 30 of this clip
        assert fields["num_frames"] == 30 and fields["frame_times"] == [round(i / 10, 3) for i in range(30)]


@pytest.mark.parametrize("family", ["qwen3_vl", "llava_onevision"])
def test_a_clips_record_does_not_depend_on_its_batch_mates(family, checkpoints, clips):
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints[family]), "max_new_tokens": 6, "max_slots": 2}))
    batch = [_clip(head, data, f"k{i}") for i, data in enumerate(clips)]
    together = [r.fields for r in head.infer(batch)]
    alone = [head.infer([clip])[0].fields for clip in batch]
    assert len({f["num_frames"] for f in together}) >= 2  # prompts of different lengths
    for a, b in zip(together, alone):
        assert {k: v for k, v in a.items() if k not in ("mean_logprob", "confidence")} == \
            {k: v for k, v in b.items() if k not in ("mean_logprob", "confidence")}
        assert a["mean_logprob"] == pytest.approx(b["mean_logprob"], abs=1e-5)


def test_frame_times_are_what_the_prompt_says_index_over_rate_even_when_the_file_starts_later(checkpoints, clips):
    """A clip whose first frame is shown at 2 s (`-output_ts_offset 2`): the processor's metadata, and Qwen3-VL's prompt,
    time the frames from 0 by index over rate, so the record does too (the file's own times start at 2)."""
    shifted = ffmpeg_output("-output_ts_offset", "2", "-c", "copy", source=clips[0])
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen3_vl"]), "max_new_tokens": 1}))
    clip = _clip(head, shifted)
    assert clip.media.frame_times[0] == pytest.approx(2.0, abs=0.05)
    fields = head.infer([clip])[0].fields
    assert fields["frame_times"] == [0.0, 0.6, 1.2, 1.7, 2.3, 2.9]  # as on the unshifted clip: linspace(0, 29, 6) / 10
    prompt = head.processor.tokenizer.decode(clip.prepared["inputs"]["input_ids"][0])
    assert prompt.count("seconds>") == 3 and "<0.3 seconds>" in prompt and "<2.3 seconds>" not in prompt  # each pair of frames timed at its middle, from 0


def test_the_frame_options_ask_the_processors_own_rule(checkpoints, clips):
    """num_frames through Qwen2-VL's rule: rounded to whole temporal patches, arange(0, 30, 30 / 4); fps through
    Qwen3-VL's: int(30 / 10 * 1) = 3 frames, at least its min_frames 4: linspace(0, 29, 4) rounded; a processor without
    a rule takes num_frames by transformers' uniform rule, i * 30 // 5."""
    def times(family, **options):
        head = ready(build("vlm_caption", {"checkpoint": str(checkpoints[family]), "max_new_tokens": 1, **options}))
        return head.infer([_clip(head, clips[0])])[0].fields["frame_times"]

    assert times("qwen2_5_vl", num_frames=4) == [0.0, 0.7, 1.5, 2.2]
    assert times("qwen3_vl", fps=1.0) == [0.0, 1.0, 1.9, 2.9]
    assert times("qwen3_vl", num_frames=5) == [0.0, 0.7, 1.4, 2.2, 2.9]  # linspace(0, 29, 5) rounded: its rule takes counts too
    assert times("llava_onevision", num_frames=5) == [0.0, 0.6, 1.2, 1.8, 2.4]
    assert times("internvl", num_frames=100) == [round(i / 10, 3) for i in range(30)]  # at most the clip's frames
    assert times("qwen3_vl", num_frames=100) == [round(i / 10, 3) for i in range(30)]  # not linspace's 100 with repeats
    with pytest.raises(ConfigError, match="num_frames or fps, not both"):
        build("vlm_caption", {"checkpoint": "x", "num_frames": 4, "fps": 1.0})


def test_a_model_the_engine_cannot_run_falls_back_to_generate_and_says_so(tmp_path, clips, monkeypatch, caplog):
    """Qwen2.5-VL with sliding-window layers: the engine runs full attention only, so transformers' generate makes the
    caption, the record says `generate`, and the tokens are still the model's own."""
    from transformers import AutoConfig

    folder = save_tiny_vlm("qwen2_5_vl", tmp_path / "sliding")
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(use_sliding_window=True, sliding_window=8, max_window_layers=1, layer_types=None)
    (folder / "config.json").write_text(json.dumps(config))
    assert "sliding_attention" in AutoConfig.from_pretrained(folder).text_config.layer_types
    seen = _spy_on_tokens(monkeypatch)
    with caplog.at_level("WARNING"):
        head = ready(build("vlm_caption", {"checkpoint": str(folder), "max_new_tokens": NEW_TOKENS}))
        [result] = head.infer([_clip(head, clips[0])])
    assert result.fields["engine"] == "generate" and "sliding-window" in caplog.text
    assert seen[0][0] == _reference(folder, clips[0], rate=10.0)[0]


def test_a_missing_or_wrong_checkpoint_is_one_line_naming_the_option(tmp_path, clips):
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config, Qwen2ForCausalLM, CLIPImageProcessor

    from extract.models.random_models import tiny_tokenizer

    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("v (0-3).mp4", clips[0])])
    text_only = tmp_path / "qwen2"
    tokenizer = tiny_tokenizer()
    Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(text_only)
    tokenizer.save_pretrained(text_only)
    for checkpoint, said in [(tmp_path / "nowhere", "does not exist"), (text_only, "is a qwen2 model, not a video-language model")]:
        done = run_cli("+model=vlm_caption", f"model.checkpoint={checkpoint}", f"tar_folder={tmp_path / 'in'}",
                       f"output_dir={tmp_path / 'out'}")
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert said in lines[0] and "model.vlm_caption.checkpoint" in lines[0]
        assert not (tmp_path / "out" / "vlm_caption").exists() or not list((tmp_path / "out" / "vlm_caption").glob("*.tar"))
    # an image-only model: its processor takes no video
    images_only = tmp_path / "llava"
    config = LlavaConfig(text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                                      "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1},
                         vision_config={"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                                        "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                         image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    LlavaForConditionalGeneration(config).save_pretrained(images_only)
    LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32), tokenizer=tokenizer,
                   patch_size=8, chat_template=tokenizer.chat_template).save_pretrained(images_only)
    with pytest.raises(ConfigError, match="takes no video.*model.vlm_caption.checkpoint"):
        build("vlm_caption", {"checkpoint": str(images_only)}).open(torch.device("cpu"))


def test_the_quickstart_line_gives_one_caption_per_clip_beside_probe(checkpoints, clips, tmp_path):
    """The README's command: `'+model=[probe,vlm_caption]' model.vlm_caption.checkpoint=<folder>`; a member that is
    no video gets an error record in both heads."""
    (tmp_path / "in").mkdir()
    members = [(f"clip.{i} ({i}-{i + 2}).mp4", data) for i, data in enumerate(clips)] + [("broken (0-1).mp4", b"not a video")]
    write_shard(tmp_path / "in" / "s-000.tar", members)
    done = run_cli("+model=[probe,vlm_caption]", f"model.vlm_caption.checkpoint={checkpoints['qwen3_vl']}",
                   "model.vlm_caption.max_new_tokens=5", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                   "num_workers=1")
    assert done.returncode == 0, done.stderr[-3000:]
    for head in ("probe", "vlm_caption"):
        records = {r["member"]: r for r in read_records(tmp_path / "out" / head)}
        assert sorted(records) == sorted(name for name, _ in members)
        assert records["broken (0-1).mp4"]["status"] == "error"
    captions = [r for r in read_records(tmp_path / "out" / "vlm_caption") if r["status"] == "ok"]
    assert len(captions) == 3
    for record in captions:
        assert record["model"] == str(checkpoints["qwen3_vl"]) and record["engine"] == "continuous"
        assert record["num_tokens"] == 5 and record["finish_reason"] == "length" and isinstance(record["caption"], str)
        assert record["num_frames"] == len(record["frame_times"]) >= 4 and len(record["prompt_sha1"]) == 12
        assert record["preset"] == "authors"


def test_qwens_frames_get_the_per_frame_pixel_budget_of_qwen_vl_utils(checkpoints, clips):
    """transformers' Qwen video processors share a whole video's pixel budget out among its frames, as Qwen's
    qwen-vl-utils does, only when asked (`cap_pixels_per_frame=True`); the head asks. With a budget of 16 tokens' worth
    of pixels (`max_video_tokens`, given through processor_options) each of the 10 frames of 80x80 shrinks when asked,
    and keeps its size when not: the grids differ, and the head's is the asked one."""
    from transformers import AutoProcessor
    from transformers.video_utils import VideoMetadata

    budget = {"max_video_tokens": 16}
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"]), "max_new_tokens": 1, "processor_options": budget}))
    clip = _clip(head, clips[2])  # 5 s at 8 fps, 80x80: 10 frames at 2 fps
    processor = AutoProcessor.from_pretrained(checkpoints["qwen2_5_vl"])
    metadata = VideoMetadata(total_num_frames=40, fps=8.0, duration=5.0, frames_indices=list(clip.media.frame_indices))
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}],
                                         add_generation_prompt=True, tokenize=False)

    def grid(cap):
        inputs = processor(text=[text], videos=[clip.media.frames], video_metadata=[metadata], do_sample_frames=False,
                           return_tensors="pt", cap_pixels_per_frame=cap, **budget)
        return inputs["video_grid_thw"].tolist()

    assert len(clip.media.frames) == 10
    assert clip.prepared["inputs"]["video_grid_thw"].tolist() == grid(True) != grid(False)
    override = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"]), "max_new_tokens": 1,
                                           "processor_options": {**budget, "cap_pixels_per_frame": False}}))
    assert _clip(override, clips[2]).prepared["inputs"]["video_grid_thw"].tolist() == grid(False)


def test_a_clip_too_short_for_the_processors_rule_gets_every_frame_and_a_still_is_skipped(checkpoints, tmp_path):
    """Qwen2-VL's rule rounds a count up to whole temporal patches (15 -> 16 frames, past a 15-frame clip's end) and
    divides by zero on a 1-frame clip; its processor takes every frame it is handed instead, padding the last
    temporal patch. So does the head: a record, not an error. A JPEG named .mp4 is a still, skipped as for every
    head that needs a video."""
    short = ffmpeg_output("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10:duration=1.5", "-pix_fmt", "yuv420p")
    single = ffmpeg_output("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=10", "-frames:v", "1", "-pix_fmt", "yuv420p")
    still = ffmpeg_output("-f", "lavfi", "-i", "testsrc2=size=96x64", "-frames:v", "1", suffix=".jpg")
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("short (0-1.5).mp4", short), ("single (0-0.1).mp4", single), ("photo (0-1).mp4", still)])
    done = run_cli("+model=vlm_caption", f"model.checkpoint={checkpoints['qwen2_5_vl']}", "model.num_frames=100",
                   "model.max_new_tokens=2", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1")
    assert done.returncode == 0, done.stderr[-3000:]
    records = {r["member"]: r for r in read_records(tmp_path / "out" / "vlm_caption")}
    assert (records["short (0-1.5).mp4"]["status"], records["short (0-1.5).mp4"]["num_frames"]) == ("ok", 15)
    assert (records["single (0-0.1).mp4"]["status"], records["single (0-0.1).mp4"]["num_frames"]) == ("ok", 1)
    assert (records["photo (0-1).mp4"]["status"], records["photo (0-1).mp4"]["error_type"]) == ("skipped", "still_image")


def test_processor_options_are_given_on_the_command_line_as_a_mapping(checkpoints, clips):
    """`'model.vlm_caption.processor_options={size: {...}}'` (as the YAML's comment writes it) reaches the processor: a
    budget of 3136 pixels a frame shrinks the 96x64 frames to 28x56 (smart_resize, by hand: 2 x 4 patches of 14)."""
    from omegaconf import OmegaConf

    from conftest import compose_cfg

    cfg = compose_cfg("+model=[probe,vlm_caption]", f"model.vlm_caption.checkpoint={checkpoints['qwen2_5_vl']}",
                      "model.vlm_caption.processor_options={size: {shortest_edge: 3136, longest_edge: 3136}}")
    options = OmegaConf.to_container(cfg.model.vlm_caption)
    options.pop("batch_size")
    head = ready(build("vlm_caption", options))
    small = _clip(head, clips[0]).prepared["inputs"]["video_grid_thw"].tolist()
    default = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"])}))
    assert small == [[3, 2, 4]] and _clip(default, clips[0]).prepared["inputs"]["video_grid_thw"].tolist() != small


def test_a_processor_that_needs_a_missing_package_is_one_line(checkpoints, monkeypatch):
    """SmolVLM's processor imports num2words when it loads; without it transformers raises ImportError, which the head
    turns into one line naming the checkpoint and transformers' own words (the runner prints it, exit 2)."""
    from transformers import AutoProcessor

    def needs_a_package(*args, **kwargs):
        raise ImportError("Package `num2words` is required to run SmolVLM processor. Install it with `pip install num2words`.\nmore")

    monkeypatch.setattr(AutoProcessor, "from_pretrained", needs_a_package)
    with pytest.raises(ConfigError) as caught:
        build("vlm_caption", {"checkpoint": str(checkpoints["qwen3_vl"])}).open(torch.device("cpu"))
    message = str(caught.value)
    assert "\n" not in message and "needs a package that is not installed" in message and "pip install num2words" in message


def test_what_the_engine_cannot_run_is_caught_at_the_language_models_door(checkpoints, clips):
    """A prompt padded on the left (a 0 in its attention mask) is no longer causal attention alone: the engine refuses
    it (the head then runs generate); the same prompt unpadded, with a mask of 1s or of True, is the engine's."""
    from extract.heads.vlm_caption import EngineCannotRun

    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"]), "max_new_tokens": 1}))
    inputs = dict(_clip(head, clips[0]).prepared["inputs"])
    assert head.prompt(inputs).embeddings.shape[0] == inputs["input_ids"].shape[1]
    assert head.prompt({**inputs, "attention_mask": inputs["attention_mask"].bool()}).position_offset < 0  # Qwen's rope delta
    padded = {**inputs, "input_ids": torch.cat([torch.tensor([[head.processor.tokenizer.pad_token_id]]), inputs["input_ids"]], 1),
              "attention_mask": torch.cat([torch.tensor([[0]]), inputs["attention_mask"]], 1),
              "mm_token_type_ids": torch.cat([torch.tensor([[0]]), inputs["mm_token_type_ids"]], 1)}  # a text token
    with pytest.raises(EngineCannotRun, match="attention mask of its own"):
        head.prompt(padded)


def test_only_the_pixels_take_the_models_dtype_on_the_device(checkpoints, clips):
    """Qwen2.5-VL's seconds per temporal patch place the visual tokens in time: rounded to bfloat16 (0.5 is exact, 1/3
    is not) they would move; the pixels run in the model's dtype."""
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"]), "max_new_tokens": 1}))
    head.dtype = torch.bfloat16
    moved = head._on_device({"pixel_values_videos": torch.zeros(2, 3), "second_per_grid_ts": torch.tensor([1 / 3]),
                             "input_ids": torch.tensor([[1, 2]])})
    assert moved["pixel_values_videos"].dtype == torch.bfloat16 and moved["input_ids"].dtype == torch.long
    assert moved["second_per_grid_ts"].dtype == torch.float32 and float(moved["second_per_grid_ts"]) == pytest.approx(1 / 3, abs=1e-7)


def test_frame_times_divide_by_the_declared_rate_the_frames_were_chosen_by(checkpoints, clips):
    """The frames are chosen at the declared rate (FFmpeg's average rate, `fps_header`), so their times are index over
    that rate, even where the rate measured from the frames' spacing says otherwise."""
    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["qwen2_5_vl"]), "max_new_tokens": 1}))
    clip = Clip("k", "v", 0.0, 3.0, decode_media(clips[0], head.media_spec))
    assert clip.media.video["fps_header"] == 10
    clip.media.video["fps"] = 12.5  # as a measured rate may differ
    assert head.prepare(clip)["frame_times"] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


def test_once_the_engine_cannot_run_a_model_later_batches_go_straight_to_generate(checkpoints, clips, monkeypatch, caplog):
    from extract.heads.vlm_caption import EngineCannotRun

    head = ready(build("vlm_caption", {"checkpoint": str(checkpoints["llava_onevision"]), "max_new_tokens": 3}))
    tries = []

    def cannot(inputs):
        tries.append(1)
        raise EngineCannotRun("its language model takes something new")

    monkeypatch.setattr(head, "prompt", cannot)
    with caplog.at_level("WARNING"):
        first = head.infer([_clip(head, clips[0])])[0].fields
        second = head.infer([_clip(head, clips[1])])[0].fields
    assert (first["engine"], second["engine"], len(tries)) == ("generate", "generate", 1)
    assert caplog.text.count("cannot run") == 1 and "takes something new" in caplog.text


def test_a_qwen2_5_vl_folder_without_a_video_config_gets_32_frames_and_fps_2_gives_qwens_rate(checkpoints, clips, tmp_path):
    """Qwen2.5-VL's releases keep one preprocessor_config.json (the image processor's, as below) and no video config:
    transformers' video processor then has no rate of its own, so the head takes 32 frames, as the README says; fps=2
    gives Qwen's 2 frames a second through its rule (40 frames at 8 fps: 10, every 4th, by hand)."""
    import shutil

    folder = tmp_path / "qwen2_5_vl-release-layout"
    shutil.copytree(checkpoints["qwen2_5_vl"], folder)
    (folder / "processor_config.json").unlink()
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"}))

    def times(**options):
        head = ready(build("vlm_caption", {"checkpoint": str(folder), "max_new_tokens": 1, **options}))
        return head.infer([_clip(head, clips[2])])[0].fields["frame_times"]

    assert times() == [round(i * 40 // 32 / 8, 3) for i in range(32)]
    assert times(fps=2.0) == [i / 2 for i in range(10)]


def test_a_checkpoint_without_a_chat_template_is_one_line(checkpoints, tmp_path):
    import shutil

    folder = tmp_path / "no-template"
    shutil.copytree(checkpoints["llava_onevision"], folder)
    for path in folder.glob("chat_template*"):
        path.unlink()
    with pytest.raises(ConfigError, match="has no chat template.*model.vlm_caption.checkpoint"):
        build("vlm_caption", {"checkpoint": str(folder)}).open(torch.device("cpu"))
