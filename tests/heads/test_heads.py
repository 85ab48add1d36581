"""The head contract and the one-pass runner: per-clip isolation, declared fields, one decode for several
heads, optional packages imported only for the heads that need them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import open_dict

from conftest import REPO, compose_cfg, ffmpeg_output, make_clip, plain_mp4, read_records, write_shard
from extract import data as data_module
from extract.decode import MediaSpec, decode_views
from extract.heads import Head, Result, register
from extract.runner import run
from extract.schema import BASE_FIELDS


@register
class FailsOnBoom(Head):
    """Fails a whole batch when one of its clips is named 'boom'."""

    name = "test_fails_on_boom"
    fields = {"frames": int, "first_time": float}

    def __init__(self, undeclared: bool = False):
        self.media_spec = MediaSpec(num_frames=2)
        self.undeclared = undeclared

    def infer(self, clips):
        if any(clip.video_id == "boom" for clip in clips):
            raise RuntimeError("this head cannot take a clip named boom")
        extra = {"not_declared": 1} if self.undeclared else {}
        return [Result(fields={"frames": len(c.media.frame_times), **extra}) for c in clips]


def _cfg(tmp_path, heads: dict, *extra):
    cfg = compose_cfg("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1",
                      "wandb.mode=disabled", *extra)
    with open_dict(cfg):
        cfg.model = heads
    return cfg


def test_one_bad_clip_fails_alone_when_its_batch_fails(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    names = ["a (0-1).mp4", "boom (0-1).mp4", "c (0-1).mp4", "d (0-1).mp4", "e (0-1).mp4"]
    write_shard(tmp_path / "in" / "s.tar", [(n, clip_bytes) for n in names])
    run(_cfg(tmp_path, {"test_fails_on_boom": {"batch_size": 4}}))
    records = {r["member"]: r for r in read_records(tmp_path / "out" / "test_fails_on_boom")}
    boom = records.pop("boom (0-1).mp4")
    assert (boom["status"], boom["error_type"]) == ("error", "head_error") and "cannot take a clip named boom" in boom["error"]
    assert boom["frames"] is None and set(BASE_FIELDS) | {"frames", "first_time"} == set(boom)
    for record in records.values():  # its batch-mates were retried one by one
        assert record["status"] == "ok" and record["frames"] == 2 and record["first_time"] is None


def test_an_undeclared_field_is_that_clips_error(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("a (0-1).mp4", clip_bytes)])
    run(_cfg(tmp_path, {"test_fails_on_boom": {"undeclared": True}}))
    [record] = read_records(tmp_path / "out" / "test_fails_on_boom")
    assert record["status"] == "error" and record["error_type"] == "head_error" and "not_declared" in record["error"]
    assert "not_declared" not in record


@pytest.mark.parametrize("base_field", ["status", "arrays", "length_s", "length_mismatch"])
def test_a_field_named_as_a_base_field_is_refused(base_field):
    with pytest.raises(TypeError, match=base_field):
        @register
        class Clashes(Head):
            name = "test_clashes"
            fields = {base_field: str, "caption": str}


def test_the_base_fields_are_the_ones_the_readme_lists():
    import re

    table = (REPO / "README.md").read_text().split("| base field | type | meaning |")[1].split("\n\n")[0]
    listed = [name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])]
    assert listed == ["key", "video_id", "start", "end", "duration", "in_csv", "length_s", "length_mismatch", "shard", "member",
                      "head", "model", "status", "error_type", "error", "arrays", "sample"]
    assert sorted(BASE_FIELDS) == sorted(listed)


def test_several_heads_share_one_read_and_one_decode_per_clip(tmp_path, monkeypatch):
    calls = []

    def counting(data, specs, **kwargs):
        calls.append(list(specs))
        return decode_views(data, specs, **kwargs)

    monkeypatch.setattr(data_module, "decode_views", counting)
    (tmp_path / "in").mkdir()
    names = [f"v{i} (0-1).mp4" for i in range(3)]
    write_shard(tmp_path / "in" / "s.tar", [(n, make_clip(seconds=1)) for n in names])
    cfg = compose_cfg("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                      "num_workers=0", "decode_timeout=0", "wandb.mode=disabled")
    run(cfg)
    assert len(calls) == 3 and all(len(specs) == 2 for specs in calls)  # one decode per clip, each head's view in it
    for head in ("probe", "av_sync"):
        assert sorted(r["member"] for r in read_records(tmp_path / "out" / head)) == names


def test_a_clip_that_cannot_be_read_is_an_error_in_every_heads_folder(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("good (0-1).mp4", clip_bytes), ("bad (0-1).mp4", b"\x00\x01" * 5000),
                                             ("README.md", b"hello"), ("README.txt", b"how this shard was made"),
                                             ("orphan.json", b'{"url": "x"}')])
    cfg = compose_cfg("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                      "num_workers=1", "wandb.mode=disabled")
    run(cfg)
    for head in ("probe", "av_sync"):
        records = {r["member"]: r for r in read_records(tmp_path / "out" / head)}
        assert (records["bad (0-1).mp4"]["status"], records["bad (0-1).mp4"]["error_type"]) == ("error", "not_media")
        assert records["README.md"]["status"] == "rejected" and records["good (0-1).mp4"]["status"] != "error"
        # text alone is no sample; a sidecar without its media is a sample that lost it
        readme = records["README.txt"]
        assert (readme["status"], readme["error_type"]) == ("rejected", "bad_name") and readme["key"].startswith("member_")
        assert (records["orphan.json"]["status"], records["orphan.json"]["error_type"]) == ("error", "no_media")
        assert all(record["arrays"] == [] for record in records.values())  # none written, listed as none: never null


def test_only_the_chosen_heads_need_their_packages(tmp_path, clip_bytes):
    """`+model=probe` runs on the base install; a model head without its packages is one clear error."""
    write_shard(tmp_path / "s.tar", [("a (0-1).mp4", clip_bytes)])
    script = textwrap.dedent(f"""
        import sys
        for name in ("transformers", "pycocotools", "tokenizers", "PIL", "torchvision"):
            sys.modules[name] = None  # as if not installed: importing them raises ImportError
        from hydra import compose, initialize_config_dir
        from extract.errors import ConfigError
        from extract.heads import build
        from extract.runner import run
        with initialize_config_dir(config_dir="{REPO / 'conf'}", version_base="1.3"):
            cfg = compose("config", ["+model=probe", "tar_folder={tmp_path}", "output_dir={tmp_path / 'out'}",
                                     "num_workers=0", "wandb.mode=disabled"])
        print(run(cfg)["this_run"]["by_status"])
        for head, options in (("grounding_sam", {{}}), ("llava_video", {{"checkpoint": "x"}})):
            try:
                build(head, options)
            except ConfigError as exc:
                print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "{'ok': 1}"
    assert lines[1] == "head grounding_sam needs the package 'transformers', which is not installed: pip install 'extract[models]'"
    assert lines[2].startswith("head llava_video needs the package 'transformers'")


def test_audio_that_does_not_decode_fails_the_heads_that_need_it_only(tmp_path, clip_bytes):
    garbage = ffmpeg_output("-c", "copy", "-bsf:a", "noise=amount=2", suffix=".mkv", source=plain_mp4())
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("garbage audio (0-2).mkv", garbage), ("fine (0-1).mp4", clip_bytes)])
    run(compose_cfg("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                    "num_workers=1", "wandb.mode=disabled"))
    probe = {r["member"]: r for r in read_records(tmp_path / "out" / "probe")}["garbage audio (0-2).mkv"]
    assert probe["status"] == "ok" and probe["video_streams"][0]["num_frames"] == 24 and probe["has_audio"]
    assert "could not be decoded" in probe["audio_error"] and probe["stats"]["audio_rms_dbfs"] is None
    sync = {r["member"]: r for r in read_records(tmp_path / "out" / "av_sync")}["garbage audio (0-2).mkv"]
    assert (sync["status"], sync["error_type"]) == ("error", "audio_decode_error")


BATCHES: dict[str, list[int]] = {}


class _CountsBatches(Head):
    fields = {"frames": int}

    def __init__(self):
        self.media_spec = MediaSpec(num_frames=1)

    def infer(self, clips):
        BATCHES.setdefault(self.name, []).append(len(clips))
        return [Result(fields={"frames": 1}) for _ in clips]


register(type("BatchesOfItsOwn", (_CountsBatches,), {"name": "test_batches_own"}))
register(type("BatchesOfTheRun", (_CountsBatches,), {"name": "test_batches_run"}))


def test_each_head_takes_its_own_batch_size(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [(f"c{i} (0-1).mp4", clip_bytes) for i in range(7)])
    BATCHES.clear()
    run(_cfg(tmp_path, {"test_batches_own": {"batch_size": 2}, "test_batches_run": {}}, "batch_size=5"))
    assert BATCHES == {"test_batches_own": [2, 2, 2, 1], "test_batches_run": [5, 2]}


def test_the_authors_presets_hold_the_authors_settings():
    """The `authors` preset of each model head is the upstream setting the README's fidelity tables name."""
    from extract.heads.audio_caption import PRESETS as AUDIO
    from extract.heads.grounding_sam import PRESETS as GROUNDING

    assert AUDIO["authors"]["dtype"] == "float32"  # inference_beam_search.py runs float32
    assert GROUNDING["authors"]["box_threshold"] == 0.3 and GROUNDING["authors"]["text_threshold"] == 0.25  # grounded_sam_demo.py
    assert GROUNDING["authors"]["dtype"] == "float32" and GROUNDING["authors"]["max_detections"] is None
    assert GROUNDING["authors"]["segmenter"] == "facebook/sam-vit-huge"
    from extract.heads.llava_video import PRESETS as LLAVA

    assert LLAVA["authors"] == {"num_frames": 64, "max_new_tokens": 1024}  # docs/LLaVA_Video_1003.md, the README's 1024
    assert LLAVA["fast"] == {"num_frames": 32, "max_new_tokens": 256}  # what the README's fidelity table says of fast
    assert GROUNDING["fast"]["max_detections"] == 20 and GROUNDING["fast"]["segmenter"] == "facebook/sam-vit-base"


def test_float_fields_are_written_as_floats():
    from extract.schema import conform

    assert repr(conform(2, float)) == "2.0" and repr(conform([1, 2.5], list[float])) == "[1.0, 2.5]"
    assert conform(float("nan"), float) is None and conform(3.0, int) == 3 and isinstance(conform(3.0, int), int)


def test_option_types_are_exact():
    from extract.heads import fits

    assert fits(2, float) and fits(2.5, float) and not fits(True, float) and not fits("2", float)
    assert fits(True, bool) and not fits(1, bool) and not fits(1.0, int) and fits(None, float | None)
    assert fits([1, 2], list[int]) and not fits("ab", list[int])


def test_thumbnails_are_all_one_size():
    from types import SimpleNamespace

    import numpy as np

    sizes = set()
    for height, width in ((48, 64), (360, 640), (640, 360), (100, 100)):
        item = SimpleNamespace(media={"v": SimpleNamespace(frames=np.full((3, height, width, 3), 200, np.uint8))})
        thumbnail = data_module._thumbnail(item)
        sizes.add(tuple(thumbnail.shape))
        assert thumbnail.dtype == torch.uint8 and int(thumbnail.max()) == 200  # the picture, letterboxed in black
    assert sizes == {(96, 172, 3)}


@register
class Misbehaves(Head):
    """Misbehaves on clips by their id: `prepare` raises (p), `infer` raises for its whole batch (i), `infer` returns one
    result too few for a batch holding it (f), or a non-integral float for an int field (n)."""

    name = "test_misbehaves"
    fields = {"frames": int}

    def __init__(self):
        self.media_spec = MediaSpec(num_frames=2)

    def prepare(self, clip):
        if clip.video_id == "p":
            raise ValueError("prepare cannot take p")
        return len(clip.media.frame_times)

    def infer(self, clips):
        ids = [clip.video_id for clip in clips]
        if "i" in ids:
            raise RuntimeError("infer cannot take i")
        results = [Result(fields={"frames": 2.5 if clip.video_id == "n" else clip.prepared}) for clip in clips]
        return results[:-1] if "f" in ids else results


def test_each_failure_of_a_head_is_that_clips_head_error_and_the_rest_is_written(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    ids = ["a", "p", "b", "i", "c", "f", "d", "n", "e"]
    write_shard(tmp_path / "in" / "s.tar", [(f"{i} (0-1).mp4", clip_bytes) for i in ids])
    run(_cfg(tmp_path, {"test_misbehaves": {"batch_size": 3}, "probe": {}}))
    records = {r["video_id"]: r for r in read_records(tmp_path / "out" / "test_misbehaves")}
    assert sorted(records) == sorted(ids)
    expected_errors = {"p": "prepare cannot take p", "i": "infer cannot take i", "f": "returned 0 results for 1 clips",
                       "n": "field frames is not of its declared type"}
    for video_id, record in records.items():
        if video_id in expected_errors:
            assert (record["status"], record["error_type"]) == ("error", "head_error"), video_id
            assert expected_errors[video_id] in record["error"] and record["frames"] is None
        else:
            assert (record["status"], record["frames"]) == ("ok", 2), video_id
    probe = read_records(tmp_path / "out" / "probe")
    assert len(probe) == len(ids) and all(r["status"] == "ok" for r in probe)  # the other head never noticed


def test_a_clip_that_lasts_other_than_its_name_or_csv_says_is_flagged_and_counted(tmp_path):
    """Clips of 1 s at 12 fps: one named (0-1), one named (0-2.04) and one whose CSV row says 3 s: the decoded length is
    in every record; the two that disagree by more than csv_tolerance plus a frame say so, and the summary counts them."""
    import json

    (tmp_path / "in").mkdir()
    clip = make_clip(seconds=1, rate=12, fmt="matroska", tone=None)
    write_shard(tmp_path / "in" / "s.tar", [("right (0-1).mkv", clip), ("long (0-2.04).mkv", clip), ("csv (5-6).mkv", clip)])
    (tmp_path / "d.csv").write_text("video_id,start,end,duration\ncsv,5,6,3\nright,0,1,1\n")
    run(_cfg(tmp_path, {"probe": {}}, f"dataset_csv={tmp_path / 'd.csv'}"))
    records = {r["video_id"]: r for r in read_records(tmp_path / "out" / "probe")}
    for record in records.values():
        assert record["length_s"] == pytest.approx(1.0, abs=1 / 12 + 1e-6)
    assert records["right"]["length_mismatch"] is None
    assert "the name's window is 2.040 s" in records["long"]["length_mismatch"]
    assert "the CSV's duration is 3.000 s" in records["csv"]["length_mismatch"] and "window" not in records["csv"]["length_mismatch"]
    summary = json.loads((tmp_path / "out" / "probe" / "summary.json").read_text())
    assert summary["output_totals"]["length_mismatches"] == 2


def test_the_registrys_helpers_by_hand():
    from types import SimpleNamespace

    from extract.heads import checkpoint_error, end_tokens, fits, resolve_dtype, with_preset

    assert not fits(True, int) and fits(3, int) and fits(3, float) and not fits(True, float) and fits(None, int | None)
    # an explicit 0 is a value, not "the preset's"
    assert with_preset("h", {"authors": {"threshold": 0.3, "n": 5}}, "authors", {"threshold": 0.0, "n": None}) == {"threshold": 0.0, "n": 5}
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_dtype("bfloat16", cpu) == resolve_dtype("float16", cpu) == resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("auto", cuda) == torch.bfloat16 and resolve_dtype("float16", cuda) == torch.float16
    assert end_tokens(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[7, 9]))) == {7, 9}
    for relative in ("./nowhere", "../nowhere", "~/nowhere"):
        assert f"the checkpoint folder {relative} does not exist" in str(checkpoint_error(relative, OSError("x")))
    assert "`hf download org/model`" in str(checkpoint_error("org/model", OSError("x")))


def test_the_readme_example_head_runs_as_written(tmp_path):
    """README "Adding a head": its head file and its YAML, copied from the README as they are, give a record per clip."""
    import re
    import shutil

    from hydra import compose, initialize_config_dir

    from extract.errors import ConfigError
    from extract.runner import run

    section = (REPO / "README.md").read_text().split("## Adding a head")[1].split("\n## ")[0]
    head_code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    head_yaml = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert "# extract/heads/brightness.py" in head_code and "conf/model/brightness.yaml" in head_yaml
    exec(compile(head_code, "brightness.py", "exec"), {"__name__": "extract.heads.brightness"})  # registers the head
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "model" / "brightness.yaml").write_text(head_yaml)
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s-000.tar.gz", [(f"v{i} (0-1).mp4", make_clip(1.0, size="64x48", rate=8)) for i in range(2)])
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):  # the conf/ folder the head was added to
        cfg = compose(config_name="config", overrides=["+model=brightness", f"tar_folder={tmp_path / 'in'}",
                                                       f"output_dir={tmp_path / 'out'}", "num_workers=0", "wandb.mode=disabled"])
    assert cfg.model.brightness.num_frames == 8  # the YAML's @package put its options under the head
    run(cfg)
    records = read_records(tmp_path / "out" / "brightness")
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(0 < r["brightness"] < 255 and isinstance(r["brightness"], float) for r in records)

    # the same YAML with its first two lines the other way round: Hydra ignores the @package line, which the run names
    first, second, rest = head_yaml.split("\n", 2)
    (conf / "model" / "brightness.yaml").write_text("\n".join([second, first, rest]))
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+model=brightness", f"tar_folder={tmp_path / 'in'}",
                                                       f"output_dir={tmp_path / 'out2'}", "wandb.mode=disabled"])
    with pytest.raises(ConfigError, match=r"model.num_frames=8 is not a head's options: .* '# @package model.<head>'"):
        run(cfg)


def test_a_checkpoint_is_read_where_the_user_points_a_revision_and_a_home_folder_included(tmp_path, monkeypatch):
    """A hub id's pinned `revision` is the snapshot that revision names in the cache, not main's; `~/ckpt` is the home
    folder's (Hydra passes `model.checkpoint=~/ckpt` on as it is: no shell expands it)."""
    from extract.errors import ConfigError
    from extract.heads import local_checkpoint

    repo = tmp_path / "hf" / "hub" / "models--org--m"
    for revision, sha in (("main", "a" * 40), ("v1", "b" * 40)):
        (repo / "snapshots" / sha).mkdir(parents=True)
        (repo / "snapshots" / sha / "config.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / revision).write_text(sha)
    import huggingface_hub.constants

    # what HF_HOME=tmp/hf would give a fresh process (huggingface_hub reads it once, at import)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    assert local_checkpoint("org/m").endswith("a" * 40)
    assert local_checkpoint("org/m", revision="v1").endswith("b" * 40)
    with pytest.raises(ConfigError, match="hf download org/m"):
        local_checkpoint("org/m", revision="v2")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ckpt").mkdir()
    assert local_checkpoint("~/ckpt") == str(tmp_path / "ckpt")
