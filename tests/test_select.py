"""extract.select: the clips a query chooses, as WebDataset shards to train on."""

import json
import tarfile

import pytest
import webdataset as wds

from conftest import compose_cfg, make_clip, read_records, run_cli, write_shard
from extract.errors import ConfigError
from extract.runner import run
from extract.select import select


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A probe + av_sync run over two shards of clips (2 s and 1 s long, some silent) and one of WebDataset samples."""
    root = tmp_path_factory.mktemp("run")
    (root / "in").mkdir()
    long, short, silent = make_clip(seconds=2), make_clip(seconds=1), make_clip(seconds=2, tone=None)
    members = {"a": [("long.a (0-2).mp4", long), ("short.a (0-1).mp4", short), ("silent.a (0-2).mp4", silent)],
               "b": [("long.b (0-2).mp4", long), ("broken.b (0-1).mp4", b"\x00" * 100), ("short.b (0-1).mp4", short)]}
    for name, clips in members.items():
        write_shard(root / "in" / f"{name}.tar", clips, gz=name == "b")
    write_shard(root / "in" / "c.tar", [("000001.mp4", long), ("000001.json", json.dumps({"url": "u", "videoID": "vid1"}).encode()),
                                        ("000001.txt", b"A test pattern."), ("000002.mp4", short), ("000002.json", b"{}")], gz=False)
    run(compose_cfg("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={root / 'in'}", f"output_dir={root / 'out'}", "num_workers=1",
                    "wandb.mode=disabled"))
    return root, {name: dict(clips) for name, clips in members.items()} | {"c": {"000001.mp4": long, "000002.mp4": short}}


def _samples(folder):
    return list(wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False))


def test_the_chosen_clips_come_out_as_training_samples(finished, tmp_path):
    root, members = finished
    out = tmp_path / "chosen"
    done = select(root / "out", '"probe.duration_s" > 1.5 and "probe.has_audio"', out, shard_size=2, progress=False)
    expected = {"long.a (0-2).mp4", "long.b (0-2).mp4", "000001.mp4"}  # long with sound; not silent, short or broken
    probe = {r["member"]: r for r in read_records(root / "out" / "probe")}
    assert done["clips_chosen"] == done["clips_written"] == 3 and done["clips_not_found"] == 0
    assert [s["shard"] for s in done["output_shards"]] == ["000000.tar", "000001.tar"] and [s["clips"] for s in done["output_shards"]] == [2, 1]
    samples = _samples(out)
    assert sorted(s["__key__"] for s in samples) == sorted(probe[m]["key"] for m in expected)
    every = {member: data for clips in members.values() for member, data in clips.items()}
    originals = {probe[m]["key"]: every[m] for m in expected}
    for sample in samples:
        assert sample["mp4"] == originals[sample["__key__"]]  # the media bytes exactly as they were
        meta = json.loads(sample["json"])
        assert meta["key"] == sample["__key__"] and set(meta["heads"]) == {"probe", "av_sync"}
        assert meta["heads"]["probe"]["duration_s"] > 1.5 and meta["heads"]["probe"]["status"] == "ok"
    by_key = {s["__key__"]: s for s in samples}
    assert by_key["000001"]["txt"] == b"A test pattern." and json.loads(by_key["000001"]["json"])["video_id"] == "vid1"
    decoded = list(wds.WebDataset(str(out / "{000000..000001}.tar"), shardshuffle=False).decode())
    assert len(decoded) == 3 and all(isinstance(s["json"], dict) for s in decoded)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["where"].startswith('"probe.duration_s"') and len(manifest["input_shards"]) == 3


def test_the_output_reads_as_input_and_keeps_its_keys(finished, tmp_path):
    root, _ = finished
    out = tmp_path / "chosen"
    select(root / "out", '"probe.status" = \'ok\'', out, progress=False)
    again = run_cli("+model=probe", f"tar_folder={out}", f"output_dir={tmp_path / 'again'}", "num_workers=1")
    assert again.returncode == 0, again.stderr[-2000:]
    first = {r["key"]: r for r in read_records(root / "out" / "probe") if r["status"] == "ok"}
    second = {r["key"]: r for r in read_records(tmp_path / "again" / "probe")}
    assert set(second) == set(first) and all(r["status"] == "ok" for r in second.values())
    assert all(second[k]["video_id"] == first[k]["video_id"] for k in first)


def test_shards_by_bytes_arrays_and_captions(finished, tmp_path):
    root, _ = finished
    out = tmp_path / "bytes"
    done = select(root / "out", '"probe.status" = \'ok\'', out, shard_size=1 << 30, shard_bytes=1, progress=False)
    assert all(s["clips"] == 1 for s in done["output_shards"]) and len(done["output_shards"]) == done["clips_written"] == 7
    with pytest.raises(ConfigError, match="--caption llava_video: that head did not run here"):
        select(root / "out", "true", tmp_path / "x", caption="llava_video", progress=False)


def test_a_killed_selection_leaves_no_truncated_shard_and_the_rerun_finishes(finished, tmp_path, monkeypatch):
    from extract import select as module

    root, _ = finished
    out = tmp_path / "killed"
    real_add, calls = module._Shards.add, []

    def add_then_die(self, members):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        real_add(self, members)

    monkeypatch.setattr(module._Shards, "add", add_then_die)
    with pytest.raises(KeyboardInterrupt):
        select(root / "out", '"probe.status" = \'ok\'', out, shard_size=2, progress=False)
    assert sorted(p.name for p in out.glob("*.tar*")) == ["000000.tar", "000001.tar.partial"]
    monkeypatch.setattr(module._Shards, "add", real_add)
    finished_first = (out / "000000.tar").stat().st_ino
    done = select(root / "out", '"probe.status" = \'ok\'', out, shard_size=2, progress=False)
    assert not list(out.glob("*.partial")) and done["clips_written"] == 7
    assert (out / "000000.tar").stat().st_ino == finished_first  # a complete shard is kept, not written again
    keys = [s["__key__"] for s in _samples(out)]
    assert len(keys) == len(set(keys)) == 7
    for path in out.glob("*.tar"):
        with tarfile.open(path) as tar:
            tar.getmembers()  # whole


def test_another_query_a_missing_shard_and_a_bad_query_are_one_line_errors(finished, tmp_path):
    root, _ = finished
    out = tmp_path / "one"
    select(root / "out", '"probe.status" = \'ok\'', out, progress=False)
    with pytest.raises(ConfigError, match="holds the shards of another query"):
        select(root / "out", '"probe.status" = \'error\'', out, progress=False)
    with pytest.raises(ConfigError, match="the query does not run: .*nope"):
        select(root / "out", '"nope" > 1', tmp_path / "two", progress=False)
    moved = tmp_path / "moved"
    moved.mkdir()
    with pytest.raises(ConfigError, match=r"input shard .*moved.*is not there \(3 missing\)"):
        select(root / "out", "true", tmp_path / "three", input_root=moved, progress=False)
    assert not (tmp_path / "three").exists()  # nothing written
    for path in (root / "in").iterdir():
        (moved / path.name).write_bytes(path.read_bytes())
    assert select(root / "out", '"probe.status" = \'ok\'', tmp_path / "four", input_root=moved, progress=False)["clips_written"] == 7
    result = run_cli_select(root / "out", "--where", "nonsense ((", "--out", str(tmp_path / "five"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def run_cli_select(*args):
    import subprocess
    import sys

    from conftest import REPO

    return subprocess.run([sys.executable, "-m", "extract.select", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_each_clip_keeps_its_own_container(tmp_path):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("m (0-1).mkv", make_clip(seconds=1, fmt="matroska")), ("p (0-1).mp4", make_clip(seconds=1))])
    run(compose_cfg("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0",
                    "wandb.mode=disabled"))
    select(tmp_path / "out", "true", tmp_path / "chosen", progress=False)
    samples = {json.loads(s["json"])["video_id"]: s for s in _samples(tmp_path / "chosen")}
    assert "mkv" in samples["m"] and "mp4" not in samples["m"] and "mp4" in samples["p"]
