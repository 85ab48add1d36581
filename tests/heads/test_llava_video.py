"""llava_video with a tiny random LLaVA-OneVision saved and loaded by path, on CPU."""

import itertools
import sys
from pathlib import Path

import pytest
import torch

from conftest import compose_cfg, make_clip, read_records, run_cli, write_shard, ready
from extract.decode import decode_media
from extract.heads import Clip, build
from extract.runner import run
from tiny import save_tiny_llava_video


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_llava_video(tmp_path_factory.mktemp("tiny-llava"))


def _clips(head, count):
    clips = []
    for i in range(count):
        media = decode_media(make_clip(seconds=1 + i * 0.5, pattern=("testsrc", "smptebars", "rgbtestsrc")[i % 3]), head.media_spec)
        clips.append(Clip(f"k{i}", f"v{i}", 0.0, 1.0, media))
    return clips


def test_end_to_end_records(checkpoint, tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [(f"vid.{i} (0-1).mp4", clip_bytes) for i in range(5)] + [("bad (0-1).mp4", b"")])
    cfg = compose_cfg("+model=llava_video", f"model.checkpoint={checkpoint}", "model.num_frames=8", "model.max_new_tokens=6",
                      f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1", "batch_size=4",
                      "wandb.mode=disabled")
    run(cfg)
    records = {r["member"]: r for r in read_records(tmp_path / "out" / "llava_video")}
    assert records["bad (0-1).mp4"]["status"] == "error"
    for i in range(5):
        record = records[f"vid.{i} (0-1).mp4"]
        assert record["status"] == "ok" and record["model"] == str(checkpoint)
        assert 0.0 <= record["confidence"] <= 1.0 and record["num_tokens"] <= 6
        assert record["finish_reason"] in ("eos", "length") and record["num_frames"] == 8 and len(record["frame_times"]) == 8
        assert isinstance(record["caption"], str) and record["prompt_sha1"]


def test_frames_reach_the_head_at_the_towers_size(checkpoint):
    head = ready(build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4}))
    [clip] = _clips(head, 1)
    assert clip.media.frames.shape == (4, 40, 40, 3)  # resized in the decoder to the vision tower's size


def test_greedy_captions_do_not_depend_on_the_batch(checkpoint):
    head = build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "max_new_tokens": 8, "dtype": "float32"})
    ready(head)
    clips = _clips(head, 4)
    one_by_one = [head.infer([clip])[0].fields for clip in clips]
    batched = [result.fields for result in head.infer(clips)]
    assert [f["caption"] for f in batched] == [f["caption"] for f in one_by_one]
    for a, b in zip(batched, one_by_one):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)


def test_missing_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    result = run_cli("+model=llava_video", f"model.checkpoint={tmp_path / 'nowhere'}", "tar_folder=shards",
                     f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert f"the checkpoint folder {tmp_path / 'nowhere'} does not exist" in result.stderr
    assert "point model.llava_video.checkpoint at a folder" in result.stderr  # the option to set, by its name
    # a hub id that is not in the cache, with the network there (HF_HUB_OFFLINE unset): one line at once, no retries,
    # and the command that fetches it is the one today's huggingface_hub ships (`hf`, not `huggingface-cli`)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # had it tried the hub, it would retry for long and log each try
    result = run_cli("+model=llava_video", "model.checkpoint=nobody/no-such-model", "tar_folder=shards", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert "cannot load checkpoint 'nobody/no-such-model'" in lines[0] and "`hf download nobody/no-such-model`" in lines[0]
    assert "or point model.llava_video.checkpoint at a local folder" in lines[0]
    import shutil

    assert shutil.which("hf", path=str(Path(sys.executable).parent)) or shutil.which("hf")  # the advised command exists


def test_out_of_memory_batch_is_retried_in_halves(checkpoint, monkeypatch):
    head = build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "max_new_tokens": 4})
    ready(head)
    clips = _clips(head, 4)
    real_generate, sizes = head._generate, []

    def generate_or_run_out(batch):
        sizes.append(len(batch))
        if len(batch) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(batch)

    monkeypatch.setattr(head, "_generate", generate_or_run_out)
    results = head.infer(clips)
    assert len(results) == 4 and all(r.status == "ok" for r in results)
    assert sizes == [4, 2, 1, 1, 2, 1, 1]


def _free_running(head, clips, new_tokens):
    """The tokens the model picks greedily with no end token, and their log-probabilities."""
    inputs = head.model_inputs([head.prepare(clip) for clip in clips])
    out = head.model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, output_scores=True, return_dict_in_generate=True)
    logprobs = head.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
    return out.sequences.tolist(), logprobs


def test_a_caption_ends_at_its_first_end_of_sequence_token(checkpoint):
    """Tiny random models never say their end token: make one of the tokens it says the end token, and the
    caption, its length and its confidence must stop right before it."""
    head = ready(build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "max_new_tokens": 8, "dtype": "float32"}))
    clips = _clips(head, 2)
    tokens, logprobs = _free_running(head, clips, 8)
    end = next(t for k, t in enumerate(tokens[0]) if k >= 2 and t not in tokens[0][:k])
    head.model.generation_config.eos_token_id = end
    results = head.infer(clips)
    for row, result in enumerate(results):
        stop = tokens[row].index(end) if end in tokens[row] else None
        length = 8 if stop is None else stop
        fields = result.fields
        assert fields["num_tokens"] == length and fields["finish_reason"] == ("length" if stop is None else "eos")
        assert fields["caption"] == head.tokenizer.decode(tokens[row][:length], skip_special_tokens=True).strip()
        assert fields["confidence"] == pytest.approx(float(logprobs[row, :length].mean().exp()), abs=1e-6)  # rounded to 6 places
    assert results[0].fields["finish_reason"] == "eos" and results[0].fields["num_tokens"] >= 2


def test_the_users_question_is_in_the_prompt_after_the_frame_times(checkpoint):
    question = "What colour is the car on the left?"
    head = ready(build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "prompt": question}))
    [clip] = _clips(head, 1)
    prompt = head.prompt_for(clip)
    assert "related to this video.\n" + question + "<|im_end|>\n<|im_start|>assistant\n" in prompt
    tokens = head.prepare(clip)["input_ids"]
    assert question in head.tokenizer.decode(tokens)  # what the model reads
    other = ready(build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4}))
    assert other.prompt_hash != head.prompt_hash


def test_frames_normalised_on_the_device_are_those_normalised_in_a_worker(checkpoint):
    """On a GPU the workers hand over uint8 frames and the device normalises them; on a CPU the workers normalise."""
    head = ready(build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "dtype": "float32"}))
    [clip] = _clips(head, 1)
    in_worker = head.prepare(clip)
    head.normalise_on_device = True
    handed_over = head.prepare(clip)
    assert handed_over["frames"].dtype == torch.uint8 and torch.equal(handed_over["input_ids"], in_worker["input_ids"])
    torch.testing.assert_close(head.pixel_values(handed_over["frames"]), in_worker["pixel_values"], atol=0, rtol=0)


@pytest.mark.parametrize("max_slots", [1, 3])
def test_the_engine_gives_the_records_of_generate_run_clip_by_clip(checkpoint, max_slots):
    """The head's generation engine (continuous batching) against transformers' generate on one clip at a time, with
    an end token taken from what the model says, so that the captions end at different steps or run to the limit."""
    options = {"checkpoint": str(checkpoint), "num_frames": 4, "max_new_tokens": 8, "dtype": "float32"}
    reference = ready(build("llava_video", {**options, "engine": "generate"}))
    clips = _clips(reference, 5)
    rows = [_free_running(reference, [clip], 8)[0][0][-8:] for clip in clips]
    # end tokens some captions say, after different numbers of tokens, and others never do

    def lengths(ends):
        return [next((k for k, t in enumerate(row) if t in ends), len(row)) for row in rows]

    tokens = sorted({t for row in rows for t in row})
    ends = next(list(ends) for ends in [*((t,) for t in tokens), *itertools.combinations(tokens, 2)]
                if 8 in lengths(ends) and len(set(lengths(ends)) - {0}) > 2 and 0 not in lengths(ends))
    reference.model.generation_config.eos_token_id = ends
    expected = [reference.infer([clip])[0].fields for clip in clips]
    engine = ready(build("llava_video", {**options, "max_slots": max_slots}))
    engine.model.generation_config.eos_token_id = ends
    got = [result.fields for result in engine.infer(clips)]
    assert engine.engine.stats.prefills == 5 and engine.engine.stats.slots == max_slots
    assert {f["finish_reason"] for f in expected} == {"eos", "length"} and len({f["num_tokens"] for f in expected}) > 2
    for a, b in zip(got, expected):
        assert (a["caption"], a["num_tokens"], a["finish_reason"]) == (b["caption"], b["num_tokens"], b["finish_reason"])
        assert a["confidence"] == pytest.approx(b["confidence"], abs=2e-6)
        assert a["mean_logprob"] == pytest.approx(b["mean_logprob"], abs=2e-5)


def test_engine_and_slot_options_are_checked(checkpoint):
    from extract.errors import ConfigError

    with pytest.raises(ConfigError, match="engine='vllm' is not one of continuous, generate"):
        build("llava_video", {"checkpoint": str(checkpoint), "engine": "vllm"})
    with pytest.raises(ConfigError, match="max_slots=0 must be at least 1"):
        build("llava_video", {"checkpoint": str(checkpoint), "max_slots": 0})


def test_a_hub_id_in_the_hugging_face_cache_runs_from_there_without_the_network(checkpoint, tmp_path, monkeypatch):
    """What `hf download org/name` leaves (HF_HOME/hub/models--org--name/snapshots/<revision>/ and refs/main) is what a
    hub id reads, with the network unreachable; the records name the hub id."""
    import shutil

    repo = tmp_path / "hf" / "hub" / "models--someone--tiny-llava"
    shutil.copytree(checkpoint, repo / "snapshots" / ("a" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("v (0-1).mp4", make_clip(seconds=1))])
    result = run_cli("+model=llava_video", "model.checkpoint=someone/tiny-llava", "model.num_frames=4", "model.max_new_tokens=2",
                     f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0")
    assert result.returncode == 0, result.stderr[-3000:]
    [record] = read_records(tmp_path / "out" / "llava_video")
    assert record["status"] == "ok" and record["model"] == "someone/tiny-llava"
