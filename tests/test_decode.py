import struct
from pathlib import Path
import time

import numpy as np

import pytest

from conftest import ffmpeg_output, make_clip, plain_mp4
from extract.decode import DecodeFailure, DecodeWatchdog, MediaSpec, decode_media, decode_views, refuse_early

SPEC = MediaSpec(num_frames=4, audio=True)


def test_decodes_frames_and_audio_from_bytes(clip_bytes):
    media = decode_media(clip_bytes, MediaSpec(num_frames=4, size=(32, 48), audio=True))
    assert media.frames.shape == (4, 32, 48, 3)  # resized in the decoder
    assert len(media.frame_times) == 4 and media.frame_times == sorted(media.frame_times)
    assert media.sample_rate == 16000 and abs(media.audio.shape[0] - 16000) < 1600
    assert media.info["video_streams"][0]["width"] == 96 and media.has_audio


def test_clip_without_audio_is_fine_for_a_video_head():
    media = decode_media(make_clip(tone=None), SPEC)
    assert media.frames.shape[0] == 4 and media.audio is None and not media.has_audio


@pytest.mark.parametrize(
    "data, error_type, words",
    [
        (b"", "empty_file", "empty"),
        (b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not_media", "HTML"),
        (bytes(range(256)) * 64, "not_media", "cannot read"),
    ],
)
def test_bad_bytes_become_readable_errors(data, error_type, words):
    with pytest.raises(DecodeFailure) as info:
        decode_media(data, SPEC)
    assert info.value.error_type == error_type and words in str(info.value)


def test_truncated_file_is_a_decode_error():
    whole = make_clip(seconds=2, fmt="matroska")
    with pytest.raises(DecodeFailure) as info:
        decode_media(whole[: len(whole) // 40], SPEC)
    assert info.value.error_type == "decode_error" and "matroska" in str(info.value)


def test_decoded_size_limit(clip_bytes):
    with pytest.raises(DecodeFailure) as info:
        decode_media(clip_bytes, MediaSpec(num_frames=64), max_decoded_bytes=1000)
    assert info.value.error_type == "too_large"


def _blocks_on_marker(data, specs):
    if data == b"hang":
        time.sleep(3600)
    return decode_media(data, specs)


def _explodes_or_crashes_on_marker(data, specs):
    if data == b"explode":
        return bytearray(64 << 30)  # 64 GiB: over the decode's memory limit
    if data == b"crash":
        import os

        os._exit(11)  # as ffmpeg dies on a corrupt file: the child is gone without a word
    return decode_media(data, specs)


def test_watchdog_abandons_a_hung_decode_and_goes_on(clip_bytes):
    watchdog = DecodeWatchdog(_blocks_on_marker, timeout_s=2, memory_limit_bytes=2 << 30)
    try:
        assert watchdog(clip_bytes, SPEC).frames.shape[0] == 4
        started = time.monotonic()
        with pytest.raises(DecodeFailure) as info:
            watchdog(b"hang", SPEC)
        assert info.value.error_type == "decode_timeout" and time.monotonic() - started < 10
        assert watchdog(clip_bytes, SPEC).frames.shape[0] == 4  # a fresh child takes over
    finally:
        watchdog.close()


@pytest.mark.parametrize("marker, error_type", [(b"explode", "too_large"), (b"crash", "decoder_crashed")])
def test_watchdog_stops_a_memory_explosion_or_a_crash_and_the_next_clip_gets_a_fresh_decoder(clip_bytes, marker, error_type):
    watchdog = DecodeWatchdog(_explodes_or_crashes_on_marker, timeout_s=30, memory_limit_bytes=1 << 30)
    try:
        with pytest.raises(DecodeFailure) as info:
            watchdog(marker, SPEC)
        assert info.value.error_type == error_type
        assert watchdog(clip_bytes, SPEC).frames.shape[0] == 4
        assert watchdog(clip_bytes, SPEC).frames.shape[0] == 4
    finally:
        watchdog.close()


# ---------------------------------------------------------------------------- which frames, at what times


def test_frames_are_the_ones_shown_at_the_centres_of_equal_spans():
    # 2 s at 12 fps: spans of 0.5 s, centres 0.25, 0.75, 1.25, 1.75 s, shown by frames 3, 9, 15 and 21
    media = decode_media(make_clip(seconds=2, rate=12, tone=None, fmt="matroska"), MediaSpec(num_frames=4))
    assert media.frame_times == [0.25, 0.75, 1.25, 1.75] and media.frame_indices == [3, 9, 15, 21]
    assert decode_media(make_clip(seconds=2, rate=12, tone=None, fmt="matroska"), MediaSpec(fps=2)).frame_indices == [3, 9, 15, 21]


def test_linspace_sampling_takes_both_ends_by_index():
    media = decode_media(make_clip(seconds=2, rate=12, tone=None, fmt="matroska"), MediaSpec(num_frames=4, sampling="linspace"))
    assert media.frame_indices == [0, 7, 15, 23]  # int(linspace(0, 23, 4))
    assert media.frame_times == [0.0, 0.583, 1.25, 1.917]


def test_several_views_come_from_one_decode():
    views = [MediaSpec(num_frames=2, size=(16, 24)), MediaSpec(every_frame=True, max_frames=5, short_side=32, audio=True),
             MediaSpec(audio=True)]
    out = decode_views(make_clip(seconds=1, rate=12, size="96x64"), views)
    assert out[views[0]].frames.shape == (2, 16, 24, 3) and out[views[1]].frames.shape == (5, 32, 48, 3)
    assert out[views[2]].frames is None and out[views[2]].audio.shape == out[views[1]].audio.shape


# ---------------------------------------------------------------------------- odd but valid files


def test_mpeg_ts_decodes_every_frame():
    ts = ffmpeg_output("-c", "copy", "-f", "mpegts", suffix=".ts", source=plain_mp4())
    every = decode_media(ts, MediaSpec(every_frame=True, max_frames=100))
    assert every.frames.shape[0] == 24 and every.video["num_frames"] == 24
    start = every.frame_times[0]
    assert start > 1.0  # MPEG-TS timestamps start late; frames keep the file's own times
    assert every.frame_times == pytest.approx([start + i / 12 for i in range(24)], abs=2e-3)
    picked = decode_media(ts, MediaSpec(num_frames=4))
    assert len(set(picked.frame_indices)) == 4 and set(picked.frame_times) <= set(every.frame_times)


def test_variable_frame_rate_reports_the_rate_of_its_frames():
    # 30 fps nominal; the first second keeps every frame, then one in three: 50 frames over 2.9 s
    vfr = ffmpeg_output("-f", "lavfi", "-i", "testsrc=size=96x64:rate=30:duration=3", "-vf", "select='lt(n\\,30)+not(mod(n\\,3))'",
                  "-fps_mode", "vfr", "-c:v", "libx264", "-pix_fmt", "yuv420p")
    media = decode_media(vfr, MediaSpec(every_frame=True, max_frames=100))
    # the declared rate is the stream's average (ffprobe's avg_frame_rate), not its nominal 30
    assert media.frames.shape[0] == 50 and media.video["fps_header"] == pytest.approx(_ffprobe_rate(vfr, "avg_frame_rate"), rel=1e-4)
    assert media.video["fps"] == pytest.approx(49 / 2.9, abs=0.05)


def test_negative_start_timestamps_decode():
    # cut from 1.3 s without re-encoding: the frames since the last keyframe come along with negative times
    cut = ffmpeg_output("-c", "copy", "-avoid_negative_ts", "disabled", suffix=".mkv", seek="1.3",
                  source=make_clip(seconds=3, rate=12, fmt="matroska"))
    media = decode_media(cut, MediaSpec(num_frames=4, audio=True))
    assert media.frames.shape[0] == 4 and media.audio is not None
    assert 0 < media.frame_times[0] < media.frame_times[-1] < 1.8  # the frames shown, from the cut on


def test_garbage_audio_keeps_the_picture_and_says_what_is_wrong():
    garbage = ffmpeg_output("-c", "copy", "-bsf:a", "noise=amount=2", suffix=".mkv", source=plain_mp4())
    media = decode_media(garbage, MediaSpec(num_frames=4, audio=True))
    assert media.frames.shape[0] == 4 and media.has_audio and media.audio is None
    assert media.audio_error[0] == "audio_decode_error" and "could not be decoded" in media.audio_error[1]


def test_a_container_duration_edited_far_off_is_reported_beside_the_measured_one():
    data = bytearray(plain_mp4())
    at = data.index(b"mvhd") + 4
    version = data[at]
    assert version == 0
    timescale, duration = struct.unpack(">II", data[at + 12 : at + 20])
    data[at + 16 : at + 20] = struct.pack(">I", duration * 100)
    media = decode_media(bytes(data), MediaSpec(num_frames=2, audio=True))
    assert media.info["duration_s"] == pytest.approx(100 * duration / timescale, rel=1e-3)
    assert media.info["duration_s_measured"] == pytest.approx(2.0, abs=0.1)


def test_members_that_cannot_be_media_are_refused_from_their_first_bytes():
    assert "repeated" in refuse_early(bytes(65536)) and "repeated" in refuse_early(b"\x07" * 65536)
    assert "HTML" in refuse_early(b"<!DOCTYPE html><html>")
    assert refuse_early(make_clip()[:65536]) is None


def test_stereo_is_folded_to_the_mean_of_its_channels():
    """As the audio captioner's authors load audio (librosa.load's mono: the channel mean), not ffmpeg's downmix,
    which is 3 dB hotter: a tone on the left channel only comes out at half its amplitude."""
    import numpy as np

    stereo = ffmpeg_output("-f", "lavfi", "-i", "aevalsrc=0.5*sin(2*PI*440*t)|0:s=16000:d=1", "-c:a", "pcm_s16le", suffix=".wav")
    media = decode_media(stereo, MediaSpec(audio=True))
    assert media.info["audio_streams"][0]["channels"] == 2
    rms = float(np.sqrt(np.mean(np.square(media.audio[1000:-1000], dtype=np.float64))))
    assert rms == pytest.approx(0.25 / np.sqrt(2), rel=0.01)


def _ffprobe_rate(data: bytes, entry: str) -> float:
    import subprocess
    from fractions import Fraction

    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", f"stream={entry}", "-of",
                          "default=nw=1:nk=1", "pipe:0"], input=data, capture_output=True, check=True).stdout.decode().strip()
    return float(Fraction(out))


def phone_like_clip() -> bytes:
    """Variable-rate frames on a 90 kHz clock, as phones record: r_frame_rate 30, avg_frame_rate about 10.7."""
    return ffmpeg_output("-f", "lavfi", "-i", "testsrc=size=96x64:rate=30:duration=3", "-vf",
                         "select='not(mod(n\\,3))+eq(mod(n\\,7)\\,1)',setpts='N/(10.5*TB)+0.013*mod(N\\,4)/TB'",
                         "-fps_mode", "vfr", "-video_track_timescale", "90000", "-c:v", "libx264", "-pix_fmt", "yuv420p")


def test_the_declared_rate_is_the_streams_average_rate_as_ffprobe_gives_it():
    data = phone_like_clip()
    average, nominal = _ffprobe_rate(data, "avg_frame_rate"), _ffprobe_rate(data, "r_frame_rate")
    assert abs(average - nominal) > 5  # the file is one where the two differ
    media = decode_media(data, MediaSpec(num_frames=4))
    assert media.video["fps_header"] == pytest.approx(average, rel=1e-4)
    for plain in (plain_mp4(seconds=2, rate=12), plain_mp4(seconds=1.5, rate=25)):  # mp4 files with their index
        expected = _ffprobe_rate(plain, "avg_frame_rate")
        assert decode_media(plain, MediaSpec(num_frames=4)).video["fps_header"] == pytest.approx(expected, rel=1e-4)


def test_a_copy_cuts_pre_roll_frames_are_kept_and_counted_as_ffmpeg_counts_them():
    """A stream copied from a cut between keyframes starts with frames that lost their timestamps (Matroska): ffmpeg
    decodes and counts them (`ffprobe -count_frames`); so do the counts and every-frame views here."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        source, cut = Path(tmp) / "source.mp4", Path(tmp) / "cut.mkv"
        source.write_bytes(ffmpeg_output("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=4", "-c:v", "libx264",
                                         "-g", "50", "-bf", "2", "-pix_fmt", "yuv420p"))
        subprocess.run(["ffmpeg", "-loglevel", "error", "-ss", "1.3", "-i", str(source), "-t", "2", "-c", "copy",
                        "-avoid_negative_ts", "disabled", str(cut)], check=True)
        data = cut.read_bytes()
    counted = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                              "stream=nb_read_frames", "-of", "default=nw=1:nk=1", "pipe:0"], input=data, capture_output=True,
                             check=True).stdout.decode().strip()
    untimed = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of",
                              "csv=p=0", "pipe:0"], input=data, capture_output=True, check=True).stdout.decode().split().count("N/A")
    assert untimed > 0  # the file is one with untimed pre-roll
    media = decode_media(data, MediaSpec(every_frame=True, max_frames=1000))
    assert media.video["num_frames"] == len(media.frame_times) == int(counted)
    assert all(b > a for a, b in zip(media.frame_times, media.frame_times[1:]))
    assert media.video["duration_s"] == pytest.approx(int(counted) / 25, rel=0.05)


def test_text_with_spaces_is_named_as_text_and_a_clip_shorter_than_one_frame_step_still_gives_a_frame():
    assert "text, not a video" in refuse_early(b"this is not a video at all, just words and spaces\n")
    assert "text, not a video" in refuse_early(b"   \tindented notes\r\n")
    short = make_clip(seconds=0.15, rate=24, tone=None, fmt="matroska")  # 0.15 s: under the 0.25 s step of 4 fps
    media = decode_media(short, MediaSpec(fps=4))
    assert media.frames.shape[0] == 1


def test_a_small_video_is_never_scaled_up_and_the_measured_length_spans_every_stream():
    import subprocess
    import tempfile
    from pathlib import Path

    small = make_clip(seconds=1, size="96x64", tone=None, fmt="matroska")
    assert decode_media(small, MediaSpec(num_frames=2, short_side=128)).frames.shape[1:] == (64, 96, 3)
    assert decode_media(small, MediaSpec(num_frames=2, short_side=32)).frames.shape[1:] == (32, 48, 3)
    with tempfile.TemporaryDirectory() as tmp:  # sound that starts 0.5 s after the picture, and ends after it
        out = Path(tmp) / "late.mkv"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=2",
                        "-itsoffset", "0.5", "-f", "lavfi", "-i", "sine=f=440:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-c:a", "pcm_s16le", str(out)], check=True)
        data = out.read_bytes()
    media = decode_media(data, MediaSpec(num_frames=2, audio=True))
    video_end = media.video["first_frame_s"] + media.video["duration_s"]
    audio_end = media.audio_start + len(media.audio) / media.sample_rate
    assert media.audio_start == pytest.approx(0.5, abs=0.01) and audio_end > video_end
    assert media.info["duration_s_measured"] == pytest.approx(audio_end - media.video["first_frame_s"], abs=1e-3)
    assert media.info["duration_s_measured"] == pytest.approx(2.5, abs=0.05)


def _cuts_and_odd_rates(tmp: Path) -> dict[str, Path]:
    """Files whose declared average rate is easy to get wrong: stream copies cut between keyframes (an mp4 edit list,
    the commonest way clips are cut from long videos), NTSC rates, a 90 kHz phone clock, fragmented mp4, Matroska."""
    import subprocess

    def ffmpeg(*arguments):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, arguments)], check=True)

    long25, ntsc = tmp / "long25.mp4", tmp / "ntsc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=10", "-f", "lavfi", "-i", "sine=duration=10", "-c:v",
           "libx264", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", long25)
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=30000/1001:duration=6", "-c:v", "libx264", "-g", "60",
           "-pix_fmt", "yuv420p", ntsc)
    files = {"copy cut mp4": tmp / "cut.mp4", "copy cut ntsc": tmp / "cutntsc.mp4", "copy cut mkv": tmp / "cut.mkv",
             "fragmented": tmp / "frag.mp4", "phone clock": tmp / "phone.mp4"}
    ffmpeg("-ss", "3.3", "-t", "3.14", "-i", long25, "-c", "copy", files["copy cut mp4"])
    ffmpeg("-ss", "1.3", "-t", "2.2", "-i", ntsc, "-c", "copy", files["copy cut ntsc"])
    ffmpeg("-ss", "2.5", "-t", "3", "-i", long25, "-c", "copy", files["copy cut mkv"])
    ffmpeg("-i", long25, "-c", "copy", "-movflags", "frag_keyframe+empty_moov", files["fragmented"])
    files["phone clock"].write_bytes(phone_like_clip())
    return files


def test_the_declared_rate_is_exactly_ffprobes_avg_frame_rate_on_cuts_and_odd_clocks(tmp_path):
    import subprocess
    from fractions import Fraction

    for what, path in _cuts_and_odd_rates(tmp_path).items():
        printed = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate",
                                  "-of", "default=nw=1:nk=1", str(path)], capture_output=True, check=True, text=True).stdout.strip()
        media = decode_media(path.read_bytes(), MediaSpec(num_frames=4))
        assert media.video["fps_header"] == float(Fraction(printed)), what  # unrounded: 30000/1001, not 29.97003


def test_llava_videos_times_on_a_copy_cut_follow_the_average_rate(tmp_path):
    """A 3.14 s stream copy of a 25 fps video: the frames are 1/25 s apart and the video lasts what it lasts (as decord's
    get_avg_fps gives the rate), not 113 stored frames over the edited 3.2 s (35 fps, a clip squeezed to 2.3 s)."""
    from extract.heads.llava_video import LlavaVideo

    media = decode_media(_cuts_and_odd_rates(tmp_path)["copy cut mp4"].read_bytes(), MediaSpec(num_frames=8, sampling="linspace"))
    times, length = LlavaVideo.frame_times(media)
    assert times == [round(index / 25, 2) for index in media.frame_indices]
    assert length == pytest.approx(3.14, abs=0.1)


def test_sound_before_time_zero_is_kept_as_the_ffmpeg_command_line_writes_it(tmp_path):
    """Audio muxed 0.5 s before the video (a negative start in Matroska): the authors' loaders read the sound through
    the ffmpeg command line, which writes every sample; none of the first half second may be lost."""
    import subprocess

    path = tmp_path / "early.mkv"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=3", "-itsoffset",
                    "-0.5", "-f", "lavfi", "-i", "sine=frequency=440:duration=3:sample_rate=48000", "-c:v", "libx264", "-c:a",
                    "libopus", "-avoid_negative_ts", "disabled", "-shortest", str(path)], check=True)
    written = np.frombuffer(subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-map", "0:a", "-ac", "1", "-ar",
                                            "16000", "-f", "f32le", "-"], capture_output=True, check=True).stdout, np.float32)
    assert len(written) == 48000  # 3 s: the command line keeps the early half second
    for resampler in ("ffmpeg", "librosa"):
        media = decode_media(path.read_bytes(), MediaSpec(audio=True, sample_rate=16000, audio_resampler=resampler))
        assert abs(len(media.audio) - len(written)) <= 16, resampler
        assert media.audio_start == pytest.approx(-0.5, abs=0.04)  # where the sound sits against the frames


def test_a_heads_own_frame_rule_gets_the_frame_count_and_declared_rate_and_its_frames_are_decoded():
    """sampling='rule': the decoder asks the head's rule with the stream's frame count and declared rate (ffprobe's
    nb_frames and avg_frame_rate) and decodes the frames it names, in order; a rule that refuses the clip makes that
    view a decode_error naming why, not a crash."""
    import subprocess

    data = ffmpeg_output("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-pix_fmt", "yuv420p")
    frames = int(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=nb_frames", "-of",
                                 "default=nw=1:nk=1", "pipe:0"], input=data, capture_output=True, check=True).stdout)
    asked = []

    def rule(total, fps):
        asked.append((total, fps))
        return [30, 3, 17]  # out of order: decoded in order

    media = decode_media(data, MediaSpec(sampling="rule", index_rule=rule))
    assert asked == [(frames, _ffprobe_rate(data, "avg_frame_rate"))] == [(50, 25.0)]
    assert media.frame_indices == [3, 17, 30] and media.frame_times == pytest.approx([3 / 25, 17 / 25, 30 / 25], abs=1e-4)
    every = decode_media(data, MediaSpec(every_frame=True, max_frames=1000)).frames
    assert np.array_equal(media.frames, every[[3, 17, 30]])

    def refuse(total, fps):
        raise TypeError("this rule wants metadata")

    with pytest.raises(DecodeFailure) as failed:
        decode_media(data, MediaSpec(sampling="rule", index_rule=refuse))
    assert failed.value.error_type == "decode_error" and "this rule wants metadata" in failed.value.message
    with pytest.raises(ValueError, match="go together"):
        MediaSpec(sampling="rule")
