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
