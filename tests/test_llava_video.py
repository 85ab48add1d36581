"""llava_video with a tiny random LLaVA-OneVision saved and loaded by path, on CPU."""

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


def test_prompt_has_the_frame_times(checkpoint):
    head = build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4})
    ready(head)
    [clip] = _clips(head, 1)
    prompt = head.prompt_for(clip)
    times = ",".join(f"{t:.2f}s" for t in clip.media.frame_times)
    assert f"4 frames are uniformly sampled from it. These frames are located at {times}." in prompt
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n") and "<video>" in prompt
    assert clip.media.frames.shape[1:3] == (32, 32)  # resized in the decoder to the processor's size


def test_greedy_captions_do_not_depend_on_the_batch(checkpoint):
    head = build("llava_video", {"checkpoint": str(checkpoint), "num_frames": 4, "max_new_tokens": 8, "dtype": "float32"})
    ready(head)
    clips = _clips(head, 4)
    one_by_one = [head.infer([clip])[0].fields for clip in clips]
    batched = [result.fields for result in head.infer(clips)]
    assert [f["caption"] for f in batched] == [f["caption"] for f in one_by_one]
    for a, b in zip(batched, one_by_one):
        assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)


def test_missing_checkpoint_is_one_clear_error(tmp_path):
    result = run_cli("+model=llava_video", f"model.checkpoint={tmp_path / 'nowhere'}", "tar_folder=shards",
                     f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 2
    assert "cannot load checkpoint" in result.stderr and "huggingface-cli download" in result.stderr


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
