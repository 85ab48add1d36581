import time

import pytest

from conftest import make_clip
from extract.decode import DecodeFailure, DecodeWatchdog, MediaSpec, decode_media

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


def test_truncated_file_is_an_error():
    whole = make_clip(seconds=2, fmt="matroska")
    with pytest.raises(DecodeFailure):
        decode_media(whole[: len(whole) // 40], SPEC)


def test_decoded_size_limit(clip_bytes):
    with pytest.raises(DecodeFailure) as info:
        decode_media(clip_bytes, MediaSpec(num_frames=64), max_decoded_bytes=1000)
    assert info.value.error_type == "too_large"


def _blocks_on_marker(data, spec):
    if data == b"hang":
        time.sleep(3600)
    return decode_media(data, spec)


def _explodes_on_marker(data, spec):
    if data == b"explode":
        return bytearray(64 << 30)  # 64 GiB: over the decode's memory limit
    return decode_media(data, spec)


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


def test_watchdog_stops_a_memory_explosion(clip_bytes):
    watchdog = DecodeWatchdog(_explodes_on_marker, timeout_s=30, memory_limit_bytes=1 << 30)
    try:
        with pytest.raises(DecodeFailure) as info:
            watchdog(b"explode", SPEC)
        assert info.value.error_type == "too_large"
        assert watchdog(clip_bytes, SPEC).frames.shape[0] == 4
    finally:
        watchdog.close()
