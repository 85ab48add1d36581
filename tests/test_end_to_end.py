"""The whole program under torchrun (2 ranks, gloo, 2 workers each) on generated shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import webdataset as wds

from conftest import REPO, make_clip, read_records, run_cli, write_shard
from extract.schema import BASE_FIELDS


def _matroska_truncated() -> bytes:
    whole = make_clip(seconds=2, fmt="matroska")
    return whole[: len(whole) // 40]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three shards: good and bad clips (.tar.gz), a plain .tar, and a gzip stream cut mid-way."""
    root = tmp_path_factory.mktemp("data")
    shards = root / "shards"
    shards.mkdir()
    clip = make_clip()
    good = {
        "my.video.v2 (10.0-23.01).mp4": clip,
        "my.video.v2 (30-31).mp4": clip,  # a second clip of the same video
        "-leading dash (0-1).mp4": clip,
        "with spaces and.dots (1.5-2.5).mp4": make_clip(tone=None),  # no audio: fine for probe
    }
    bad = {
        "zero bytes (0-1).mp4": (b"", "empty_file"),
        "random bytes (0-1).mp4": (os.urandom(20000), "not_media"),
        "html page (0-1).mp4": (b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "not_media"),
        "truncated (0-1).mkv": (_matroska_truncated(), "decode_error"),
    }
    rejected = {"README.md": b"not a clip", "sub/nested (0-1).mp4": clip, "../escape (0-1).mp4": clip}
    write_shard(shards / "a-000.tar.gz", [*good.items(), *((n, d) for n, (d, _) in bad.items()), *rejected.items()])
    plain = {f"plain.{i} (0-1).mp4": clip for i in range(3)}
    write_shard(shards / "b-001.tar", list(plain.items()), gz=False)
    cut = {f"cut.{i} (0-1).mp4": make_clip(seconds=1, pattern="smptebars" if i % 2 else "testsrc2", size="320x240") for i in range(6)}
    write_shard(root / "whole.tar.gz", list(cut.items()))
    whole = (root / "whole.tar.gz").read_bytes()
    (shards / "c-002.tar.gz").write_bytes(whole[: len(whole) * 2 // 3])
    csv = root / "dataset.csv"
    rows = ["video_id,start,end,duration", "my.video.v2,10.0,23.01,13.01", "my.video.v2,30,31,1",
            "-leading dash,0,1,1", "never in a shard,5,6,1"]
    csv.write_text("\n".join(rows) + "\n")
    return {"shards": shards, "csv": csv, "good": good, "bad": bad, "rejected": rejected, "plain": plain, "cut": cut}


def _key(name: str) -> str:
    from extract.clips import parse_member_name

    return parse_member_name(name).key


def test_every_clip_exactly_once_on_two_ranks(dataset, tmp_path):
    out = tmp_path / "out"
    result = run_cli("+model=probe", f"tar_folder={dataset['shards']}", f"dataset_csv={dataset['csv']}",
                     f"output_dir={out}", "batch_size=2", "num_workers=2", torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = out / "probe"
    assert sorted(p.name for p in folder.glob("*.tar")) == ["a-000.tar", "b-001.tar", "c-002.tar"]
    assert not list(folder.glob("*.partial"))
    records = read_records(folder)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)), "a clip was written twice"
    assert all(set(BASE_FIELDS) <= set(r) for r in records), "a record lacks a declared field"
    by_member = {r["member"]: r for r in records}

    for name in [*dataset["good"], *dataset["plain"]]:
        record = by_member[name]
        assert record["status"] == "ok", record
        assert record["key"] == _key(name) and "." not in record["key"]
        assert record["stats"]["frames_sampled"] > 0
    assert by_member["my.video.v2 (10.0-23.01).mp4"]["video_id"] == "my.video.v2"
    assert by_member["-leading dash (0-1).mp4"]["video_id"] == "-leading dash"
    assert by_member["with spaces and.dots (1.5-2.5).mp4"]["has_audio"] is False
    for name, (_, error_type) in dataset["bad"].items():
        record = by_member[name]
        assert record["status"] == "error" and record["error"] and record["error_type"] == error_type, record
    for name in dataset["rejected"]:
        assert by_member[name]["status"] == "rejected" and "not a clip" in by_member[name]["error"]
    # CSV join: duration from the CSV, clips missing from it flagged
    assert by_member["my.video.v2 (10.0-23.01).mp4"]["duration"] == pytest.approx(13.01)
    assert by_member["plain.0 (0-1).mp4"]["in_csv"] is False and by_member["plain.0 (0-1).mp4"]["duration"] is None
    # the cut gzip stream: clips before the fault kept, the fault recorded for that shard
    cut_kept = [r for r in records if r["shard"].endswith("c-002.tar.gz") and r["status"] == "ok"]
    assert 1 <= len(cut_kept) < len(dataset["cut"])
    summary = json.loads((folder / "summary.json").read_text())
    assert any(s.endswith("c-002.tar.gz") for s in summary["output_totals"]["shard_faults"])
    assert [r["video_id"] for r in summary["csv_rows_without_clips"]["rows"]] == ["never in a shard"]
    assert summary["output_totals"]["records"] == len(records)
    assert sorted(r["rank"] for r in summary["ranks"]) == [0, 1]
    # nothing was written outside the output folder
    assert not (out / "escape (0-1).mp4").exists() and not (tmp_path / "escape (0-1).mp4").exists()

    # plain WebDataset reads the output: one sample per record, keys intact
    samples = list(wds.WebDataset([str(p) for p in sorted(folder.glob("*.tar"))], shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(keys)
    assert all(json.loads(s["json"])["key"] == s["__key__"] for s in samples)

    # a rerun skips complete shards and writes nothing twice
    again = run_cli("+model=probe", f"tar_folder={dataset['shards']}", f"output_dir={out}", "num_workers=2", torchrun=2)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [r["key"] for r in read_records(folder)] == keys
    assert json.loads((folder / "summary.json").read_text())["this_run"]["records"] == 0


def test_fewer_shards_than_ranks_and_workers(dataset, tmp_path):
    out = tmp_path / "out"
    shard = dataset["shards"] / "b-001.tar"
    result = run_cli("+model=probe", f"shards=[{shard}]", f"output_dir={out}", "num_workers=3", torchrun=2, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "probe" / "summary.json").read_text())
    assert {r["rank"]: r["shards"] for r in summary["ranks"]} == {0: 1, 1: 0}
    assert len(read_records(out / "probe")) == len(dataset["plain"])


def test_two_nodes_under_multi_node_torchrun(dataset, tmp_path):
    """Two torchrun agents on this machine stand in for two nodes (c10d rendezvous on localhost)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    args = ["-m", "extract", "+model=probe", f"tar_folder={dataset['shards']}", f"output_dir={out}", "num_workers=1",
            "wandb.mode=disabled"]
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                                f"--node_rank={node}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
                                "--rdzv_id=extract-test", *args], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
              for node in (0, 1)]
    for agent in agents:
        _, stderr = agent.communicate(timeout=300)
        assert agent.returncode == 0, stderr.decode()[-3000:]
    records = read_records(out / "probe")
    assert len({r["key"] for r in records}) == len(records) > 0
    summary = json.loads((out / "probe" / "summary.json").read_text())
    assert sorted(r["rank"] for r in summary["ranks"]) == [0, 1] and all(r["shards"] > 0 for r in summary["ranks"])
