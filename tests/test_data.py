"""The data module's rules that a user sees in file names: each input shard's output name."""

import pytest

from extract.data import resolve_shards, shard_stem


@pytest.mark.parametrize("url, name", [
    # the README's forms, verbatim
    ("pipe:aws s3 cp s3://b/s-000.tar -", "s-000"),
    ("/data/s-000.tar", "s-000"),
    ("a.tar", "a"),
    # the other usual ones
    ("pipe:curl -s -L https://host.example/data/s-001.tar.gz", "s-001"),
    ("pipe:gsutil cat gs://bucket/clips/s-002.tgz", "s-002"),
    ("pipe:cat '/data/my shards/s-003.tar'", "s-003"),
    ("pipe:curl -s https://host.example/s-004.tar?X-Amz-Signature=abc | cat", "s-004"),
    ("https://host.example/data/s-005.tar?token=xyz", "s-005"),
    ("s3://bucket/prefix/s-006.tar.gz", "s-006"),
    ("pipe:aws s3 cp s3://bucket/prefix/shard-without-suffix -", "shard-without-suffix"),
    ("/data/dated.2024.tar.gz", "dated.2024"),
])
def test_each_shard_gets_its_own_name(url, name):
    assert shard_stem(url) == name


def test_the_readmes_pipe_and_brace_forms_give_distinct_names():
    piped = [shard_stem(f"pipe:aws s3 cp s3://b/s-{i:03d}.tar -") for i in range(3)]
    assert piped == ["s-000", "s-001", "s-002"]
    expanded = resolve_shards(None, "/data/s-{000..099}.tar")
    assert len(expanded) == 100 and [shard_stem(u) for u in expanded[:2]] == ["s-000", "s-001"]
    assert len({shard_stem(u) for u in expanded}) == 100
    assert [shard_stem(u) for u in resolve_shards(None, ["a.tar", "b.tar"])] == ["a", "b"]


# ---------------------------------------------------------------------------- reading members, no decoding


def _items(path, heads=("probe",), done=None, max_member_bytes=1 << 30):
    from extract.data import ClipItem, ShardEnd, ShardPlan, read_members

    plan = ShardPlan({str(path): {head: set(done or ()) for head in heads}})
    out = list(read_members([{"url": str(path)}], plan, max_member_bytes))
    assert isinstance(out[-1], ShardEnd)
    return [item for item in out if isinstance(item, ClipItem)], out[-1]


def _media(tag: bytes, size: int = 0) -> bytes:
    """Bytes that pass the early refusal as an mp4 would (not read as media here: nothing is decoded)."""
    body = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) + tag
    return body + bytes(range(256)) * (size // 256)


def _tar(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_tar_folder_shards_come_sorted(tmp_path):
    for name in ("c.tar", "a.tar.gz", "b.tgz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert resolve_shards(str(tmp_path), None) == [str(tmp_path / n) for n in ("a.tar.gz", "b.tgz", "c.tar")]


def test_a_resumed_shard_reads_only_the_clips_a_head_lacks(tmp_path):
    from extract.clips import parse_member_name

    path = _tar(tmp_path / "s.tar", [("a (0-1).mp4", _media(b"a")), ("b (0-1).mp4", _media(b"b"))])
    done = {parse_member_name("a (0-1).mp4").key}
    items, _ = _items(path, done=done)
    assert [i.member for i in items] == ["b (0-1).mp4"] and items[0].data == bytearray(_media(b"b"))


def test_a_clip_repeated_in_a_shard_is_read_once_and_reported(tmp_path):
    path = _tar(tmp_path / "s.tar", [("a (0-1).mp4", _media(b"first")), ("a (0-1).mp4", _media(b"again")), ("000.mp4", _media(b"m")),
                                     ("000.json", b"{}"), ("001.mp4", _media(b"n")), ("000.txt", b"late")])
    items, end = _items(path)
    assert [i.member for i in items] == ["a (0-1).mp4", "000.mp4", "001.mp4"] and items[0].data == bytearray(_media(b"first"))
    assert end.duplicates == ["a (0-1).mp4", "000.txt"]


def test_a_samples_members_are_read_as_one_sample(tmp_path):
    import json

    caption = "A dog runs on the beach."
    sidecar = {"url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ", "clips": [["00:00:05.500", "00:00:07.500"]],
               "subtitles": "s" * 5000, "note": "n" * 3000}  # a sidecar of 8 kB: read, its long values left out by name
    path = _tar(tmp_path / "s.tar", [("000123.mp4", _media(b"video")), ("000123.webm", _media(b"other")), ("000123.json", json.dumps(sidecar).encode()),
                                     ("000123.txt", caption.encode()), ("000124.WAV", _media(b"sound"))])
    (sample, sound), _ = _items(path)
    assert (sample.key, sample.member, sample.video_id, sample.start, sample.end) == ("000123", "000123.mp4", "dQw4w9WgXcQ", 5.5, 7.5)
    assert sample.data == bytearray(_media(b"video")) and not sample.audio_only  # the first media member, the second noted
    assert sample.sample["caption"] == caption and sorted(sample.sample["dropped"]) == ["note", "subtitles"]
    assert any("000123.webm not read" in note for note in sample.sample["notes"])
    assert sound.key == "000124" and sound.audio_only and sound.data == bytearray(_media(b"sound"))


def test_members_over_the_size_limit_are_too_large_unread(tmp_path):
    path = _tar(tmp_path / "s.tar", [("big (0-1).mp4", _media(b"x", 4096)), ("000.mp4", _media(b"y", 4096)), ("000.json", b"{}"),
                                     ("ok (0-1).mp4", _media(b"z"))])
    items, _ = _items(path, max_member_bytes=1000)
    by_member = {i.member: i for i in items}
    for name in ("big (0-1).mp4", "000.mp4"):
        assert (by_member[name].status, by_member[name].error_type) == ("error", "too_large") and by_member[name].data is None
    assert by_member["ok (0-1).mp4"].status == "ok"


def test_the_clip_a_shard_breaks_in_gets_a_truncated_record(tmp_path):
    path = _tar(tmp_path / "s.tar", [("a (0-1).mp4", _media(b"a")), ("b (0-1).mp4", _media(b"b", 5000))])
    data = path.read_bytes()
    path.write_bytes(data[: 512 * 4 + 2000])  # cut inside b's data
    items, end = _items(path)
    assert [(i.member, i.status, i.error_type) for i in items] == [("a (0-1).mp4", "ok", None), ("b (0-1).mp4", "error", "truncated")]
    assert end.fault and "b (0-1).mp4" in end.fault


def test_the_wb_thumbnail_is_the_middle_sampled_frame_letterboxed():
    import numpy as np

    from extract.data import THUMBNAIL_HEIGHT, THUMBNAIL_WIDTH, ClipItem, _thumbnail
    from extract.decode import Media

    frames = np.stack([np.full((60, 80, 3), 40 * i, np.uint8) for i in range(5)])  # frame i is grey 40 i
    item = ClipItem("/in/s.tar", "a (0-1).mp4", "a", ("probe",), media={"probe": Media(info={}, frames=frames)})
    thumbnail = _thumbnail(item).numpy()
    assert thumbnail.shape == (THUMBNAIL_HEIGHT, THUMBNAIL_WIDTH, 3)
    width = round(80 * THUMBNAIL_HEIGHT / 60)  # 96 high, 128 wide, centred in the 172-wide box
    left = (THUMBNAIL_WIDTH - width) // 2
    assert np.all(thumbnail[:, left + 2 : left + width - 2] == 80) and np.all(thumbnail[:, : left] == 0)


def test_pictures_named_as_videos_are_described_by_probe_and_skipped_by_heads_that_need_a_video(tmp_path):
    """Crawls save thumbnails as .mp4 (three in video2dataset's own test shard): probe says what the file is, a head
    that needs a video skips it with a reason; neither takes a picture for a one-frame 25 fps video."""
    import subprocess

    from conftest import make_clip, read_records, run_cli, write_shard

    def picture(codec_args, suffix):
        out = tmp_path / f"p.{suffix}"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:duration=1", "-frames:v",
                        "1", *codec_args, str(out)], check=True)
        return out.read_bytes()

    pictures = {"jpeg": picture([], "jpg"), "png": picture([], "png"), "gif": picture([], "gif"),
                "webp": picture(["-c:v", "libwebp"], "webp"), "bmp": picture([], "bmp")}
    members = [(f"{kind} still (0-1).mp4", data) for kind, data in pictures.items()] + [("a video (0-1).mp4", make_clip(seconds=1))]
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", members, gz=False)
    out = tmp_path / "out"
    done = run_cli("+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}",
                   f"output_dir={out}", "num_workers=0")
    assert done.returncode == 0, done.stderr
    probe = {r["video_id"]: r for r in read_records(out / "probe")}
    sync = {r["video_id"]: r for r in read_records(out / "av_sync")}
    for kind in pictures:
        assert probe[f"{kind} still"]["status"] == "ok" and probe[f"{kind} still"]["container"] == kind
        [stream] = probe[f"{kind} still"]["video_streams"]  # a picture has no rate and no length, not FFmpeg's 25 fps
        assert (stream["fps"], stream["fps_header"], stream["duration_s"]) == (None, None, None), stream
        assert probe[f"{kind} still"]["length_s"] is None and probe[f"{kind} still"]["length_mismatch"] is None
        assert sync[f"{kind} still"]["status"] == "skipped" and sync[f"{kind} still"]["error_type"] == "still_image"
        assert kind.upper() in sync[f"{kind} still"]["error"]
    assert probe["a video"]["container"].startswith("mp4") and sync["a video"]["error_type"] != "still_image"
