"""Shards in video2dataset's layout (WebDataset samples: {key}.mp4 + {key}.json + {key}.txt), alone and mixed with
clips named with their window, on two ranks; what their records carry; resume after a kill."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
import webdataset as wds

from conftest import ffmpeg_output, make_clip, read_records, run_cli, write_shard

SUBTITLES = [{"start": f"00:00:{i:02d}.000", "end": f"00:00:{i:02d}.900", "text": "words " * 12} for i in range(60)]


def _sidecar(key: str, youtube: str, start: str, end: str, **extra) -> bytes:
    """A sidecar as video2dataset writes one: the source url, its window as `clips`, status, big subtitle lists."""
    meta = {"url": f"https://www.youtube.com/watch?v={youtube}", "key": key, "status": "success", "error_message": None,
            "clips": [[start, end]], "yt_meta_dict": {"info": {"title": "a title", "duration": 212}, "subtitles": SUBTITLES},
            "clip_cuts": {"cuts_original_fps": 30, "cut_list": [[i, i + 1] for i in range(300)]}, **extra}
    return json.dumps(meta).encode()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2d")
    folder = root / "shards"
    folder.mkdir()
    clip, silent = make_clip(seconds=2), make_clip(seconds=1, tone=None)
    sound = ffmpeg_output("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libmp3lame", suffix=".mp3")
    first = [("000000000.mp4", clip), ("000000000.txt", b"A dog runs on the beach."),
             ("000000000.json", _sidecar("000000000", "dQw4w9WgXcQ", "00:00:05.500", "00:00:07.500")),
             ("000000001.json", _sidecar("000000001", "aaaaaaaaaaa", "00:01:00.000", "00:01:01.000")),  # sidecar first
             ("000000001.txt", b"Silent footage."), ("000000001.mp4", silent),
             ("my.video (10-12).mp4", clip),  # the other layout, in the same shard
             ("000000002.json", _sidecar("000000002", "bbbbbbbbbbb", "1", "2")), ("000000002.txt", b"no video"),
             ("000000003.mp4", clip), ("000000003.webm", make_clip(seconds=1, fmt="matroska")), ("000000003.txt", b"two videos"),
             ("000000004.mp3", sound), ("000000004.json", json.dumps({"videoID": "sound-only", "span": [3.0, 4.0]}).encode()),
             ("000000000.mp4", clip),  # the first key again, apart from its sample: a duplicate
             ("README.md", b"not a sample")]
    write_shard(folder / "00000.tar", first, gz=False)
    write_shard(folder / "00001.tar.gz", [("000000005.mp4", clip), ("000000005.json", json.dumps({"id": 77, "start": "2.5", "end": 4}).encode()),
                                          ("000000000.mp4", clip), ("000000000.txt", b"again, in another shard")])
    csv = root / "keys.csv"
    csv.write_text("key,duration\n000000000,2.0\n000000005,1.5\nnot-in-shards,3\n")
    return folder, csv


def test_video2dataset_shards_give_one_record_per_sample_on_two_ranks(shards, tmp_path):
    folder, csv = shards
    out = tmp_path / "out"
    result = run_cli("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={folder}", f"dataset_csv={csv}", f"output_dir={out}",
                     "num_workers=2", "batch_size=2", torchrun=2)
    assert result.returncode == 0, result.stderr[-3000:]
    for head in ("probe", "av_sync"):
        records = read_records(out / head)
        keys = [r["key"] for r in records]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 8  # 6 samples, one clip, README, no duplicate
        by_key = {r["key"]: r for r in records}
        first = by_key["000000000"]
        assert first["video_id"] == "dQw4w9WgXcQ" and (first["start"], first["end"]) == (5.5, 7.5)
        assert first["sample"]["caption"] == "A dog runs on the beach." and first["member"] == "000000000.mp4"
        meta = json.loads(first["sample"]["meta"])  # the sidecar's small fields, as JSON text: one type for every sample
        assert meta["status"] == "success" and meta["clips"] == [["00:00:05.500", "00:00:07.500"]]
        assert sorted(first["sample"]["dropped"]) == ["clip_cuts", "yt_meta_dict"]  # big values left out, and named
        assert first["in_csv"] and first["duration"] == 2.0
        assert by_key["000000001"]["sample"]["caption"] == "Silent footage."  # the sidecar came before the video
        assert (by_key["000000002"]["status"], by_key["000000002"]["error_type"]) == ("error", "no_media")
        assert by_key["000000003"]["member"] == "000000003.mp4" and "webm" in by_key["000000003"]["sample"]["notes"][0]
        sound = by_key["000000004"]
        assert sound["video_id"] == "sound-only" and (sound["start"], sound["end"]) == (3.0, 4.0)
        assert (sound["status"], sound["error_type"]) == ("skipped", "no_video")  # picture heads skip a sound sample
        assert by_key["000000005"]["video_id"] == "77" and (by_key["000000005"]["start"], by_key["000000005"]["end"]) == (2.5, 4.0)
        clip = next(r for r in records if r["member"] == "my.video (10-12).mp4")
        assert clip["sample"] is None and clip["status"] != "error" and clip["video_id"] == "my.video"
        assert next(r for r in records if r["member"] == "README.md")["status"] == "rejected"
    probe = {r["key"]: r for r in read_records(out / "probe")}
    assert probe["000000000"]["status"] == "ok" and probe["000000003"]["status"] == "ok"
    summary = json.loads((out / "probe" / "summary.json").read_text())
    assert [r["key"] for r in summary["csv_rows_without_clips"]["rows"]] == ["not-in-shards"]
    duplicates = summary["output_totals"]["duplicates"]
    assert duplicates[str(folder / "00000.tar")] == ["000000000.mp4"]
    assert any("already in" in note for note in duplicates[str(folder / "00001.tar.gz")])
    # output and input join on WebDataset's own key
    inputs = {s["__key__"] for s in wds.WebDataset(str(folder / "00000.tar"), shardshuffle=False)}
    outputs = {s["__key__"] for s in wds.WebDataset(str(out / "probe" / "00000.tar"), shardshuffle=False)}
    assert {"000000000", "000000001", "000000003", "000000004"} <= inputs & outputs


def test_a_sound_sample_serves_the_audio_heads(shards, tmp_path):
    from conftest import REPO

    folder, _ = shards
    # the sound sample alone, for a head that needs sound and no frames
    with tarfile.open(folder / "00000.tar") as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar if m.name.startswith("000000004")]
    write_shard(tmp_path / "s.tar", members, gz=False)
    script = f"""
import sys
sys.path.insert(0, "{REPO / 'tests'}")
from omegaconf import open_dict
from conftest import compose_cfg
from extract.decode import MediaSpec
from extract.heads import Head, Result, register
from extract.runner import run

@register
class Loudness(Head):
    name = "test_loudness"
    fields = {{"samples": int}}
    def __init__(self):
        self.media_spec = MediaSpec(audio=True)
    def prepare(self, clip):
        return Result(fields={{"samples": len(clip.media.audio)}})

cfg = compose_cfg("+model=probe", "tar_folder={tmp_path}", "output_dir={tmp_path / 'out'}", "num_workers=0", "wandb.mode=disabled")
with open_dict(cfg):
    cfg.model = {{"test_loudness": {{}}}}
print(run(cfg)["this_run"]["by_status"])
"""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = read_records(tmp_path / "out" / "test_loudness")
    assert record["status"] == "ok" and 15000 < record["samples"] < 17500  # one second at 16 kHz


def test_a_killed_run_on_samples_resumes_them(tmp_path):
    """Kill safety and resume hold for WebDataset samples: the rerun keeps what was saved and gives each once."""
    from test_reliability import _check_complete_tars_read_to_the_end, _launch, _saved, _wait_for_partial_records
    from processes import kill_tree, wait_gone

    folder = tmp_path / "in"
    folder.mkdir()
    clip = make_clip(seconds=3, size="320x240", rate=24)
    keys = []
    for s in range(4):
        members = []
        for j in range(8):
            key = f"{s:05d}{j:04d}"
            members += [(f"{key}.mp4", clip), (f"{key}.txt", b"a caption"), (f"{key}.json", json.dumps({"videoID": key}).encode())]
            keys.append(key)
        write_shard(folder / f"{s:05d}.tar", members, gz=False)
    out = tmp_path / "out"
    args = ["+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={folder}", f"output_dir={out}", "batch_size=1", "model.av_sync.batch_size=3",
            "num_workers=1", "model.probe.fps=24", "wandb.mode=disabled"]
    job = _launch(args)
    _wait_for_partial_records(out)
    killed = kill_tree(job.pid)
    job.wait()
    assert wait_gone(killed, timeout=10) == set()
    saved = _saved(out)
    job = _launch(args)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    _check_complete_tars_read_to_the_end(out)
    for head in ("probe", "av_sync"):
        records = read_records(out / head)
        assert sorted(r["key"] for r in records) == sorted(keys)
        this_run = json.loads((out / head / "summary.json").read_text())["this_run"]
        assert this_run["clips_resumed"] == len(saved[head]["partial"])
        assert all(r["sample"]["caption"] == "a caption" for r in records)


def test_sidecar_json_members_may_be_big_or_broken(tmp_path, clip_bytes):
    big = json.dumps({"videoID": "v", "blob": "x" * (2 << 20)}).encode()
    write_shard(tmp_path / "s.tar", [("1.mp4", clip_bytes), ("1.json", big), ("2.mp4", clip_bytes), ("2.json", b"{not json"),
                                     ("3.mp4", clip_bytes), ("3.txt", io.BytesIO(b"\xff\xfe bad utf-8").read())], gz=False)
    result = run_cli("+model=probe", f"tar_folder={tmp_path}", f"output_dir={tmp_path / 'out'}", "num_workers=0")
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["key"]: r for r in read_records(tmp_path / "out" / "probe")}
    assert records["1"]["status"] == "ok" and "1.json left out" in records["1"]["sample"]["notes"][0]
    assert records["2"]["status"] == "ok" and "not JSON" in records["2"]["sample"]["notes"][0] and records["2"]["video_id"] == "2"
    assert records["3"]["sample"]["caption"].endswith("bad utf-8")
