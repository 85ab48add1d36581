import subprocess

import pytest

from conftest import MEDIA, make_clip
from extract.decode import decode_media
from extract.heads import Clip, build


def _probe(data: bytes) -> dict:
    head = build("probe", {})
    media = decode_media(data, head.media_spec)
    [result] = head.infer([Clip("k", "v", 0.0, 1.0, media)])
    assert result.status == "ok"
    return result.fields


def _two_colours() -> bytes:
    command = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=black:s=96x64:d=1:r=12",
               "-f", "lavfi", "-i", "color=c=white:s=96x64:d=1:r=12", "-filter_complex", "[0:v][1:v]concat=n=2:v=1",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "matroska", "pipe:1"]
    return subprocess.run(command, check=True, capture_output=True).stdout


def test_metadata_of_a_known_clip():
    clip = make_clip(seconds=2, size="96x64", rate=12, tone=440)
    fields = _probe(clip)
    [video] = fields["video_streams"]
    assert (video["codec"], video["width"], video["height"], video["num_frames"]) == ("h264", 96, 64, 24)
    # measured from the frames: a piped mp4 starts its second frame late (the encoder's priming), hence 11.86; the
    # declared rate is what ffprobe prints for this fragmented mp4 (147456/12431), not the nominal 12
    printed = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate", "-of",
                              "default=nw=1:nk=1", "pipe:0"], input=clip, capture_output=True, check=True).stdout.decode().strip()
    from fractions import Fraction

    assert video["fps"] == pytest.approx(12.0, abs=0.2) and video["fps_header"] == float(Fraction(printed))
    [audio] = fields["audio_streams"]
    assert audio["codec"] == "aac" and audio["channels"] == 1 and fields["has_audio"]
    assert fields["container"].startswith("mp4") and fields["duration_s"] == pytest.approx(2.0, abs=0.1)
    # ffmpeg's sine source has amplitude 1/8: RMS = 1/(8*sqrt(2)) = -21.07 dBFS
    assert fields["stats"]["audio_rms_dbfs"] == pytest.approx(-21.07, abs=0.5)
    assert fields["stats"]["frames_sampled"] == 8  # 4 fps over 2 s


def test_a_hard_cut_is_counted_and_a_still_picture_has_none():
    cut = _probe(_two_colours())["stats"]
    assert cut["scene_cuts"] == 1 and cut["motion_energy"] > 10
    still = _probe(make_clip(seconds=2, pattern="color=c=gray", tone=None))["stats"]
    assert still["scene_cuts"] == 0 and still["motion_energy"] < 0.5
    assert 120 < still["mean_luma"] < 136 and still["audio_rms_dbfs"] is None


def _rgb_frames(data: bytes) -> "np.ndarray":
    """ffmpeg's own RGB frames of a clip (its default conversion), [T, H, W, 3]."""
    import numpy as np

    command = ["ffmpeg", "-loglevel", "error", "-i", "pipe:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
    raw = subprocess.run(command, input=data, check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 64, 96, 3)


@pytest.mark.parametrize("colour, luma", [("red", 76.2), ("lime", 149.7), ("blue", 29.1)])
def test_mean_luma_weighs_red_green_and_blue_as_bt601(colour, luma):
    """Pure colours: BT.601's 0.299 R + 0.587 G + 0.114 B by hand (red 76, green 150, blue 29), and the same weights
    over ffmpeg's own RGB frames of the clip."""
    data = make_clip(seconds=1, pattern=f"color=c={colour}", tone=None)
    expected = float((_rgb_frames(data).astype(float) @ [0.299, 0.587, 0.114]).mean())
    stats = _probe(data)["stats"]
    assert stats["mean_luma"] == pytest.approx(expected, abs=1.0)
    assert stats["mean_luma"] == pytest.approx(luma, abs=3.0)
    assert stats["motion_energy"] == pytest.approx(0.0, abs=0.5) and stats["scene_cuts"] == 0


def test_motion_energy_is_the_mean_luma_change_between_sampled_frames():
    """Black for 1 s then white for 1 s, sampled at 4 fps: 4 black and 4 white frames, one change of 255 levels among
    7 steps: 255 / 7 = 36.4, and mean luma 127.5."""
    stats = _probe(_two_colours())["stats"]
    assert stats["frames_sampled"] == 8
    assert stats["motion_energy"] == pytest.approx(255 / 7, abs=1.0)
    assert stats["mean_luma"] == pytest.approx(127.5, abs=1.5)


def _ffmpeg_mapping(path) -> dict[str, int]:
    """The input streams ffmpeg's command line keeps by default, from its own 'Stream mapping' lines."""
    import re

    lines = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-t", "0.1", "-f", "null", "-"], capture_output=True,
                           text=True).stderr
    mapped = [int(m.group(1)) for m in re.finditer(r"Stream #0:(\d+)\S* -> #0:\d+", lines)]
    kinds = {int(m.group(1)): m.group(2) for m in re.finditer(r"Stream #0:(\d+)\S*: (Video|Audio|Subtitle)", lines)}
    return {kinds[i].lower(): i for i in mapped}


def test_a_file_of_many_streams_says_which_stream_each_field_describes(tmp_path):
    """Two video, two audio (mono, then stereo) and a subtitle stream: the streams probe decodes are the ones ffmpeg's
    command line keeps by default (read from its own stream mapping), and it says so; the other video stream's measured
    fields are null; subtitle streams are listed."""
    import json

    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n")
    path = tmp_path / "many.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=12:duration=2",
                    "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2", "-f", "lavfi", "-i", "sine=f=300:d=2",
                    "-f", "lavfi", "-i", "sine=f=500:d=2", "-i", str(tmp_path / "subs.srt"),
                    "-map", "0", "-map", "1", "-map", "2", "-map", "3", "-map", "4", "-ac:a:1", "2", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "mov_text", str(path)], check=True)
    mapping = _ffmpeg_mapping(path)
    streams = json.loads(subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                                        capture_output=True, check=True).stdout)["streams"]
    fields = _probe(path.read_bytes())
    assert (fields["video_stream_index"], fields["audio_stream_index"]) == (mapping["video"], mapping["audio"])
    assert [s["index"] for s in fields["subtitle_streams"]] == [s["index"] for s in streams if s["codec_type"] == "subtitle"]
    assert fields["subtitle_streams"][0]["codec"] == "mov_text"
    decoded = next(s for s in fields["video_streams"] if s["index"] == mapping["video"])
    other = next(s for s in fields["video_streams"] if s["index"] != mapping["video"])
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", f"{mapping['video']}", "-show_entries",
                              "stream=nb_read_frames", "-of", "default=nw=1:nk=1", str(path)], capture_output=True, text=True)
    assert decoded["num_frames"] == int(counted.stdout.strip())
    assert other["num_frames"] is None and other["fps"] is None and other["duration_s"] is None
    assert other["num_frames_header"] == next(int(s["nb_frames"]) for s in streams if s["index"] == other["index"])


@pytest.mark.skipif(not MEDIA.is_dir(), reason="the real clips of ../shared/media are not beside this checkout")
@pytest.mark.parametrize("name", ["nasa_13013.mp4", "example2.mp4", "big_buck_bunny_432_433.webm"])
def test_real_files_decode_the_streams_ffmpeg_keeps(name):
    """NASA's clip holds two video, two audio (8 and 16 kHz) and two subtitle streams: ffmpeg keeps the larger picture
    and the first audio stream; torchcodec's own pick of audio (by bit rate) would be the other one."""
    path = MEDIA / name
    mapping = _ffmpeg_mapping(path)
    fields = _probe(path.read_bytes())
    assert fields["video_stream_index"] == mapping["video"] and fields["audio_stream_index"] == mapping.get("audio")
    if name.startswith("nasa"):
        assert [s["index"] for s in fields["subtitle_streams"]] == [2, 5]


def _frames(*levels, size=(10, 10)) -> "np.ndarray":
    import numpy as np

    return np.stack([np.full(size, level, np.float32) if np.isscalar(level) else np.asarray(level, np.float32) for level in levels])


def test_motion_energy_and_cuts_by_hand():
    import numpy as np

    from extract.heads.probe import motion_energy, scene_cuts

    assert motion_energy(_frames(0, 100, 0)) == 100.0  # a fade in then out moves, whatever its sign
    assert scene_cuts(_frames(0, 255), 0.5) == 1  # two sampled frames can hold a cut
    assert scene_cuts(_frames(0, 255, 0, 255), 0.5) == 3  # every cut counted
    assert scene_cuts(_frames(128), 0.5) == 0 and scene_cuts(None, 0.5) is None  # one frame: no cut, not unknown
    # 40% of the picture changes: half the L1 distance of the histograms is 0.4, under the 0.5 threshold
    partial = np.zeros((10, 10), np.float32)
    partial[:4] = 255
    assert scene_cuts(_frames(0, partial), 0.5) == 0
    # two scenes of near brightness (10 and 20 levels) fall in different bins of 8 levels: a cut
    assert scene_cuts(_frames(10, 20), 0.5) == 1


def test_quiet_sound_is_measured_not_floored():
    import numpy as np

    from extract.heads.probe import rms_dbfs

    quiet = np.full(1000, 10 ** (-100 / 20), np.float64)  # -100 dBFS
    assert rms_dbfs(quiet) == pytest.approx(-100.0, abs=0.01) and rms_dbfs(np.zeros(10)) == -120.0
