"""internvl with a tiny random native InternVL saved and loaded by path, on CPU."""

import io

import numpy as np
import pytest
import webdataset as wds

from conftest import compose_cfg, make_clip, read_records, write_shard, ready
from extract.decode import decode_media
from extract.heads import Clip, build
from extract.runner import run
from tiny import save_tiny_internvl


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_internvl(tmp_path_factory.mktemp("tiny-internvl"))


def test_end_to_end_records_and_features(checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [(f"v.{i} (0-1).mp4", make_clip(pattern=("testsrc", "smptebars")[i % 2])) for i in range(3)])
    cfg = compose_cfg("+model=internvl", f"model.checkpoint={checkpoint}", "model.max_new_tokens=5", "model.max_tiles=4", f"tar_folder={tmp_path / 'in'}",
                      f"output_dir={tmp_path / 'out'}", "num_workers=1", "batch_size=2", "wandb.mode=disabled")
    run(cfg)
    folder = tmp_path / "out" / "internvl"
    records = read_records(folder)
    assert len(records) == 3
    samples = {s["__key__"]: s for s in wds.WebDataset(str(folder / "a.tar"), shardshuffle=False)}
    for record in records:
        assert record["status"] == "ok" and record["arrays"] == ["features"] and record["feature_dim"] == 32
        assert len(record["keyframes"]) == 4 and 0 <= record["confidence"] <= 1
        assert all(0 <= k["confidence"] <= 1 and isinstance(k["description"], str) for k in record["keyframes"])
        features = np.load(io.BytesIO(samples[record["key"]]["features.npy"]))
        assert features.dtype == np.float16 and features.shape == (4, 32) and np.isfinite(features).all()


def _clips(head):
    return [Clip(f"k{i}", "v", 0.0, 1.0, decode_media(make_clip(pattern=p), head.media_spec))
            for i, p in enumerate(["testsrc", "smptebars", "rgbtestsrc"])]


def test_greedy_output_and_features_do_not_depend_on_the_batch(checkpoint):
    head = build("internvl", {"checkpoint": str(checkpoint), "num_keyframes": 2, "max_new_tokens": 6, "max_tiles": 1, "dtype": "float32"})
    ready(head)
    clips = _clips(head)
    alone = [head.infer([clip])[0] for clip in clips]
    together = head.infer(clips)
    for a, b in zip(alone, together):
        assert [k["description"] for k in a.fields["keyframes"]] == [k["description"] for k in b.fields["keyframes"]]
        np.testing.assert_allclose(a.arrays["features"].astype(np.float32), b.arrays["features"].astype(np.float32), atol=2e-3)


def test_tiling_pools_each_keyframe_over_its_tiles(checkpoint):
    head = build("internvl", {"checkpoint": str(checkpoint), "num_keyframes": 2, "max_new_tokens": 3, "max_tiles": 4})
    ready(head)
    [result] = head.infer(_clips(head)[:1])
    assert result.arrays["features"].shape == (2, 32)


def test_the_engine_gives_the_records_of_generate_run_keyframe_by_keyframe(checkpoint):
    """Every keyframe is a request of the engine; its descriptions, confidences and features equal transformers'
    generate run on one clip at a time (tiles of different counts: prompts of different lengths)."""
    options = {"checkpoint": str(checkpoint), "num_keyframes": 2, "max_new_tokens": 6, "max_tiles": 4, "dtype": "float32"}
    reference = ready(build("internvl", {**options, "engine": "generate"}))
    clips = _clips(reference)
    expected = [reference.infer([clip])[0] for clip in clips]
    engine = ready(build("internvl", {**options, "max_slots": 3}))
    got = engine.infer(clips)
    assert engine.engine.stats.prefills == 6
    for a, b in zip(got, expected):
        for mine, theirs in zip(a.fields["keyframes"], b.fields["keyframes"]):
            assert (mine["description"], mine["num_tokens"], mine["tiles"]) == (theirs["description"], theirs["num_tokens"], theirs["tiles"])
            assert mine["mean_logprob"] == pytest.approx(theirs["mean_logprob"], abs=2e-5)
        assert a.fields["confidence"] == pytest.approx(b.fields["confidence"], abs=2e-6)
        np.testing.assert_allclose(a.arrays["features"].astype(np.float32), b.arrays["features"].astype(np.float32), atol=2e-3)


def test_a_clips_confidence_is_over_every_keyframes_tokens(checkpoint):
    import math

    from dataclasses import replace

    head = ready(build("internvl", {"checkpoint": str(checkpoint), "num_keyframes": 3, "max_new_tokens": 4, "max_tiles": 1,
                                    "dtype": "float32"}))
    # three keyframes of three different pictures, so that each says something else
    views = [decode_media(make_clip(pattern=p), head.media_spec) for p in ("color=c=black", "smptebars", "color=c=white")]
    media = replace(views[0], frames=np.stack([v.frames[0] for v in views]), frame_times=[0.1, 0.5, 0.9])
    [result] = head.infer([Clip("k", "v", 0.0, 1.0, media)])
    keyframes = result.fields["keyframes"]
    assert len({k["mean_logprob"] for k in keyframes}) > 1  # keyframes that differ: the test tells first-only apart
    tokens = sum(k["num_tokens"] for k in keyframes)
    mean = sum(k["mean_logprob"] * k["num_tokens"] for k in keyframes) / tokens
    assert result.fields["mean_logprob"] == pytest.approx(mean, abs=1e-5)
    assert result.fields["confidence"] == pytest.approx(math.exp(mean), rel=1e-3)  # confidences of a tiny model are ~1/vocab
    assert keyframes[0]["confidence"] != pytest.approx(math.exp(mean), rel=1e-3)  # the first keyframe alone says otherwise
