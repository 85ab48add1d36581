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


def test_every_sample_has_the_same_members_whatever_its_container_and_a_standard_loader_reads_them(tmp_path):
    """Clips in Matroska, WebM and mp4 and a sample without a caption: each output sample is {key}.mp4 (the bytes as
    they were), .json and .txt (empty when there is no caption), so to_tuple("mp4", "txt") reads every one."""
    import subprocess
    import sys

    from conftest import REPO

    (tmp_path / "in").mkdir()
    clips = {"m (0-1).mkv": make_clip(seconds=1, fmt="matroska"), "p (0-1).mp4": make_clip(seconds=1),
             "w (0-1).webm": make_clip(seconds=1, fmt="webm", tone=None)}
    write_shard(tmp_path / "in" / "a.tar", [*clips.items(), ("000009.webm", clips["w (0-1).webm"]), ("000009.json", b"{}")])
    run(compose_cfg("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0",
                    "wandb.mode=disabled"))
    chosen = tmp_path / "chosen"
    done = subprocess.run([sys.executable, "-m", "extract.select", str(tmp_path / "out"), "--where", "true", "--out", str(chosen)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    samples = _samples(chosen)
    assert len(samples) == 4 and all(set(s) - {"__key__", "__url__", "__local_path__"} == {"mp4", "json", "txt"} for s in samples)
    read = list(wds.WebDataset(str(chosen / "000000.tar"), shardshuffle=False).to_tuple("mp4", "txt", "json"))
    assert len(read) == 4
    by_member = {json.loads(meta)["media"]["member"]: (media, text, json.loads(meta)) for media, text, meta in read}
    containers = {r["member"]: r["container"] for r in read_records(tmp_path / "out" / "probe")}
    for member, data in clips.items():
        media, text, meta = by_member[member]
        assert media == data and meta["media"]["format"] == containers[member] and text == b""  # what the bytes are
    assert by_member["000009.webm"][0] == clips["w (0-1).webm"] and by_member["000009.webm"][2]["caption_source"] is None

    named = tmp_path / "named"
    select(tmp_path / "out", "true", named, media_ext="video", progress=False)
    assert all("video" in s and "mp4" not in s for s in _samples(named))
    with pytest.raises(ConfigError, match="--media-ext"):
        select(tmp_path / "out", "true", tmp_path / "bad", media_ext="../x", progress=False)


def test_the_input_samples_own_caption_is_kept_unless_another_is_asked_for(finished, tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    root, _ = finished
    for args in ([], ["--caption", "sample"]):
        out = tmp_path / f"c{len(args)}"
        done = subprocess.run([sys.executable, "-m", "extract.select", str(root / "out"), "--where", "key = '000001'", "--out",
                               str(out), *args], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert done.returncode == 0, done.stderr
        [sample] = _samples(out)
        meta = json.loads(sample["json"])
        assert sample["txt"] == b"A test pattern." and meta["caption_source"] == "sample"
        assert meta["sample"]["caption"] == "A test pattern."  # and the json keeps it


def test_which_caption_goes_to_the_txt():
    from extract.select import caption_of

    llava = {"llava_video": {"caption": "A dog runs."}, "probe": {}}
    heads = {"probe": None, "llava_video": None}
    assert caption_of(llava, {"caption": "Own words."}, None, heads) == ("Own words.", "sample")  # not replaced unasked
    assert caption_of(llava, {"caption": "Own words."}, "llava_video", heads) == ("A dog runs.", "llava_video")
    assert caption_of(llava, None, None, heads) == ("A dog runs.", "llava_video")  # a clip named with its window
    assert caption_of(llava, {"caption": None}, None, heads) == ("A dog runs.", "llava_video")
    assert caption_of(llava, {"caption": "Own words."}, "sample", heads) == ("Own words.", "sample")
    assert caption_of(llava, None, "sample", heads) == (None, None)
    assert caption_of({"probe": {}}, None, None, {"probe": None}) == (None, None)
    assert caption_of({"llava_video": {"status": "error", "caption": None}}, None, None, heads) == (None, None)
    assert caption_of(llava, {"caption": ""}, None, heads) == ("A dog runs.", "llava_video")  # an empty .txt is no caption
    # where both ran, the default is the picture's captioner, llava_video, not the sound's
    both = {"audio_caption": {"caption": "a dog barks"}, "llava_video": {"caption": "A dog runs."}}
    assert caption_of(both, None, None, {"audio_caption": None, "llava_video": None}) == ("A dog runs.", "llava_video")
    assert caption_of(both, None, "audio_caption", {"audio_caption": None, "llava_video": None}) == ("a dog barks", "audio_caption")
    # vlm_caption is a picture's captioner too: before the sound's, after llava_video (the order the README gives)
    three = {**both, "vlm_caption": {"caption": "A brown dog runs."}}
    assert caption_of(three, None, None, {"audio_caption": None, "vlm_caption": None}) == ("A brown dog runs.", "vlm_caption")
    assert caption_of(three, None, None, {"audio_caption": None, "vlm_caption": None, "llava_video": None}) == ("A dog runs.", "llava_video")


def test_shard_bytes_on_the_command_line_lifts_the_clip_count_limit(finished, tmp_path, monkeypatch):
    """--shard-bytes alone limits by bytes: the default clip count (1,000, made 2 here) no longer cuts the shards."""
    from extract import select as module

    root, _ = finished
    monkeypatch.setattr(module, "SHARD_SIZE", 2)
    module.main([str(root / "out"), "--where", '"probe.status" = \'ok\'', "--out", str(tmp_path / "b"), "--shard-bytes", str(10**9)])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [s["clips"] for s in manifest["output_shards"]] == [7]
    module.main([str(root / "out"), "--where", '"probe.status" = \'ok\'', "--out", str(tmp_path / "c")])
    assert [s["clips"] for s in json.loads((tmp_path / "c" / "manifest.json").read_text())["output_shards"]] == [2, 2, 2, 1]


@pytest.mark.parametrize("where", ["probe.status = 'ok'", "probe.duration_s > 1"])
def test_a_dotted_column_written_without_quotes_is_one_line_that_says_to_quote_it(finished, tmp_path, where):
    import subprocess
    import sys

    from conftest import REPO

    root, _ = finished
    done = subprocess.run([sys.executable, "-m", "extract.select", str(root / "out"), "--where", where, "--out",
                           str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "double quotes" in done.stderr and '"probe.status"' in done.stderr
    import shlex

    advised = shlex.split(done.stderr.split("a shell takes as ")[1])  # pasted into a shell as the message writes it
    assert advised[0] == "--where"
    pasted = subprocess.run([sys.executable, "-m", "extract.select", str(root / "out"), *advised, "--out", str(tmp_path / "y")],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert pasted.returncode == 0, pasted.stderr


def test_a_table_older_than_the_runs_records_is_exported_again(tmp_path):
    """select reads the run's table; a rerun that added clips after the last export must not leave them out."""
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("first (0-1).mp4", make_clip(seconds=1))])
    args = ("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0", "wandb.mode=disabled")
    run(compose_cfg(*args))
    assert select(tmp_path / "out", "true", tmp_path / "one", progress=False)["clips_written"] == 1
    write_shard(tmp_path / "in" / "b.tar", [("second (0-1).mp4", make_clip(seconds=1))])
    run(compose_cfg(*args))
    assert select(tmp_path / "out", "true", tmp_path / "two", progress=False)["clips_written"] == 2


def test_an_output_shard_is_never_larger_than_shard_bytes_unless_one_clip_alone_is():
    """Every member's header blocks (PAX headers for long or non-ASCII names), padding, the end blocks and tarfile's
    record padding count: the file on disk is what --shard-bytes limits."""
    import tempfile
    from pathlib import Path

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from extract.select import _Shards

    names = st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=0x4FF, blacklist_categories=("Cs", "Cc")),
                    min_size=1, max_size=150)
    clips = st.lists(st.tuples(names, st.integers(0, 40_000)), min_size=1, max_size=12)

    @settings(max_examples=40, deadline=None)
    @given(clips=clips, limit=st.integers(1, 120_000))
    def check(clips, limit):
        with tempfile.TemporaryDirectory() as tmp:
            shards = _Shards(Path(tmp), 1 << 30, limit)
            for i, (name, size) in enumerate(clips):
                shards.add([(f"k{i}{name}.mp4", b"x" * size), (f"k{i}{name}.json", b"{}"), (f"k{i}{name}.txt", b"")])
            shards.close_shard()
            assert sum(s["clips"] for s in shards.written) == len(clips)
            for written in shards.written:
                on_disk = (Path(tmp) / written["shard"]).stat().st_size
                assert on_disk == written["bytes"]  # the manifest says what is on disk
                assert on_disk <= limit or written["clips"] == 1
                with tarfile.open(Path(tmp) / written["shard"]) as tar:
                    assert len(tar.getmembers()) == 3 * written["clips"]

    check()


def test_arrays_of_several_heads_travel_with_their_clips(tmp_path):
    """--arrays: each head's arrays of a chosen clip as {key}.<head>.<name>.npy, the bytes the run wrote; a clip whose
    head wrote none has none."""
    import io

    import numpy as np

    from extract.writer import OutputWriter

    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("x (0-1).mp4", make_clip(seconds=1)), ("y (0-1).mp4", make_clip(seconds=1))])
    run(compose_cfg("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0",
                    "wandb.mode=disabled"))
    probe = {r["video_id"]: r for r in read_records(tmp_path / "out" / "probe")}
    url = probe["x"]["shard"]
    written = {}
    for head, shape in (("internvl", (3, 4)), ("audio_caption", (8,))):
        writer = OutputWriter(tmp_path / "out" / head)
        writer.plan([url])
        for video_id, record in probe.items():
            arrays = {"features": np.random.default_rng(len(head) + len(video_id)).random(shape).astype(np.float16)} \
                if video_id == "x" else {}
            written[head, video_id] = arrays
            base = {name: record[name] for name in ("key", "video_id", "start", "end", "shard", "member")}
            writer.write(url, {**base, "head": head, "status": "ok" if arrays else "error", "arrays": sorted(arrays)}, arrays)
        writer.finish(url, None, [], head)
        writer.close()
    select(tmp_path / "out", "true", tmp_path / "chosen", arrays=True, progress=False)
    samples = {json.loads(s["json"])["video_id"]: s for s in _samples(tmp_path / "chosen")}
    for head in ("internvl", "audio_caption"):
        got = np.load(io.BytesIO(samples["x"][f"{head}.features.npy"]))
        assert got.dtype == np.float16 and np.array_equal(got, written[head, "x"]["features"])
        assert f"{head}.features.npy" not in samples["y"]
    plain = select(tmp_path / "out", "true", tmp_path / "plain", progress=False)  # without --arrays: none
    assert plain["clips_written"] == 2 and not any(".npy" in name for s in _samples(tmp_path / "plain") for name in s)
