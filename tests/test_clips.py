import pytest

from extract.clips import BadMemberName, clip_key, parse_member_name


@pytest.mark.parametrize(
    "name, video_id, start, end",
    [
        ("abc (1.0-2.5).mp4", "abc", 1.0, 2.5),
        ("my.video.v2 (10-23.01).mkv", "my.video.v2", 10.0, 23.01),
        ("-dash first (0.0-3.0).mp4", "-dash first", 0.0, 3.0),
        ("with (parens) inside (5.5-6.5).webm", "with (parens) inside", 5.5, 6.5),
        ("vidéo 東京 (1-2).MP4", "vidéo 東京", 1.0, 2.0),
    ],
)
def test_clip_names_parse_from_the_right(name, video_id, start, end):
    clip = parse_member_name(name)
    assert (clip.video_id, clip.start, clip.end) == (video_id, start, end)


@pytest.mark.parametrize(
    "name",
    ["README.md", "abc.mp4", "sub/abc (1-2).mp4", "../abc (1-2).mp4", "/etc/abc (1-2).mp4", "abc (3-2).mp4",
     "x" * 4000 + " (1-2).mp4"],
)
def test_non_clip_names_are_refused(name):
    with pytest.raises(BadMemberName):
        parse_member_name(name)


def test_keys_are_unique_stable_and_dot_free():
    ids = ["a.b", "a_b", "a b", "-a.b", "東京", "京都", "a.b.c"]
    keys = {clip_key(v, s, e) for v in ids for s, e in [(0, 1), (0, 1.5), (1, 2)]}
    assert len(keys) == len(ids) * 3
    assert all("." not in k and "/" not in k for k in keys)
    assert clip_key("a.b", 1.0, 2.0) == clip_key("a.b", 1, 2) == parse_member_name("a.b (1.000-2).mp4").key


def test_ids_are_compared_in_nfc():
    composed, decomposed = "caf\u00e9", "cafe\u0301"  # é as one code point, and as e + a combining accent
    assert parse_member_name(f"{decomposed} (0-1).mp4").video_id == composed
    assert parse_member_name(f"{decomposed} (0-1).mp4").key == parse_member_name(f"{composed} (0-1).mp4").key


@pytest.mark.parametrize("character", ["\n", "\t", "\r", "\x00", "\x1b", "\x7f"])
def test_names_with_control_characters_are_refused(character):
    with pytest.raises(BadMemberName, match="control character"):
        parse_member_name(f"bad{character}id (0-1).mp4")


@pytest.mark.parametrize("name", ["x (5-5).mp4", "a\\b (0-1).mp4"])
def test_empty_windows_and_backslashes_are_not_clips(name):
    with pytest.raises(BadMemberName):
        parse_member_name(name)


def test_keys_carry_the_window_in_whole_milliseconds():
    assert clip_key("x", 1.001, 2.0).startswith("x_1001_2000_")  # 1.001 * 1000 is 1000.9999999999999 in floats
    assert clip_key("x", 0.0295, 10.0).startswith("x_30_10000_")  # rounded, not cut
    assert parse_member_name("my.video.v2 (10.0-23.01).mp4").key.startswith("my_video_v2_10000_23010_")


@pytest.mark.parametrize("meta, video_id", [
    ({"id": 77, "videoID": "abc"}, "abc"),  # the named id fields before a bare id
    ({"video_id": " ", "url": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}, "dQw4w9WgXcQ"),  # a blank id is none
    ({"url": "https://youtu.be/dQw4w9WgXcQ?t=3"}, "dQw4w9WgXcQ"),
    ({"url": "https://www.youtube.com/watch?feature=share&v=dQw4w9WgXcQ"}, "dQw4w9WgXcQ"),
    ({"url": "https://www.youtube.com/shorts/dQw4w9WgXcQ"}, "dQw4w9WgXcQ"),
    ({"url": "https://example.com/video.mp4"}, "000123"),  # no id anywhere: the sample's key
    ({"videoID": "cafe\u0301"}, "caf\u00e9"),  # NFC, so it joins its CSV row
])
def test_a_samples_video_id_comes_from_its_sidecar(meta, video_id):
    from extract.clips import sidecar_fields

    assert sidecar_fields(meta, "000123")[0] == video_id


@pytest.mark.parametrize("meta, window", [
    ({"clips": [["00:00:05.500", "00:00:07.500"]]}, (5.5, 7.5)),
    ({"span": [1, 2.5]}, (1.0, 2.5)),
    ({"start": "1:02:03.5", "end": 3725}, (3723.5, 3725.0)),
    ({"start": True, "end": 5}, (None, 5.0)),  # a boolean is no time
    ({"start": "soon", "end": None}, (None, None)),
])
def test_a_samples_window_comes_from_its_sidecar(meta, window):
    from extract.clips import sidecar_fields

    assert sidecar_fields(meta, "k")[1:3] == window


def test_sample_member_names_split_at_the_first_dot_and_ignore_case():
    from extract.clips import parse_sample_name

    assert parse_sample_name("000.MP4") == ("000", "mp4")
    assert parse_sample_name("000123.json") == ("000123", "json")
    assert parse_sample_name("k.features.npy") == ("k", "features.npy")
    assert parse_sample_name("sub/000.mp4") is None and parse_sample_name("no_suffix") is None


def test_sidecar_values_too_long_are_left_out_by_name():
    from extract.clips import sidecar_fields

    _, _, _, small, dropped = sidecar_fields({"url": "u", "subtitles": "x" * 2000, "ok": "y" * 900}, "k")
    assert small == {"url": "u", "ok": "y" * 900} and dropped == ["subtitles"]
