import pytest

from conftest import MEDIA, ffmpeg_output, make_clip, read_records, write_shard
from extract.bench.synthetic import flash_click_clip
from extract.decode import decode_media
from extract.heads import Clip, build
from extract.runner import run
from extract.schema import BASE_FIELDS
from conftest import compose_cfg


def _estimate(data: bytes):
    head = build("av_sync", {"method": "onset_xcorr"})
    [result] = head.infer([Clip("k", "v", 0.0, 6.0, decode_media(data, head.media_spec))])
    return result


@pytest.mark.parametrize("fps", [24, 25, 30, 50])
@pytest.mark.parametrize("offset", [-0.5, -0.2, -0.04, 0.0, 0.12, 0.5])
def test_offset_within_one_frame(fps, offset):
    result = _estimate(flash_click_clip(fps, offset, seed=int(fps * 100 + offset * 1000)))
    assert result.status == "ok"
    assert result.fields["offset_s"] == pytest.approx(offset, abs=1 / fps)
    assert result.fields["confidence"] > 0.3 and result.fields["fps"] == pytest.approx(fps, rel=0.01)


@pytest.mark.parametrize("kind, words", [("silence", "too little sound"), ("still", "no frame brightens suddenly"),
                                         ("no_audio", "no audio")])
def test_undecidable_clips_are_skipped_not_guessed(kind, words):
    if kind == "no_audio":
        import subprocess

        data = flash_click_clip(25, 0.0)
        command = ["ffmpeg", "-loglevel", "error", "-i", "pipe:0", "-an", "-c", "copy", "-f", "matroska", "pipe:1"]
        data = subprocess.run(command, input=data, check=True, capture_output=True).stdout
    else:
        data = flash_click_clip(25, 0.1, clicks=kind != "silence", flashes=kind != "still", noise_db=-90 if kind == "silence" else -40)
    result = _estimate(data)
    assert result.status == "skipped" and words in result.error and result.fields["offset_s"] is None


def test_a_moving_picture_without_onsets_is_skipped_for_that_reason():
    """A scrolling test pattern moves in every frame (probe's motion energy is far from 0) but never brightens at once:
    the skip says there is no visual onset, with the numbers, not that the picture is still."""
    from extract.heads import build

    data = make_clip(seconds=4, pattern="testsrc2", size="160x120", rate=25)
    result = _estimate(data)
    assert result.status == "skipped" and result.error_type == "undecidable"
    assert "no visual onset to align" in result.error and "under min_motion 1" in result.error
    probe = build("probe", {})
    [stats] = [r.fields["stats"] for r in probe.infer([Clip("k", "v", 0.0, 4.0, decode_media(data, probe.media_spec))])]
    assert stats["motion_energy"] > 1  # it does move


def test_end_to_end_records(tmp_path):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("sync.test (0-6).mkv", flash_click_clip(30, 0.2))], gz=False)
    cfg = compose_cfg("+model=av_sync", "model.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                      "num_workers=0", "wandb.mode=disabled")
    run(cfg)
    [record] = read_records(tmp_path / "out" / "av_sync")
    assert record["status"] == "ok" and record["method"] == "onset_xcorr" and record["head"] == "av_sync"
    assert set(BASE_FIELDS) <= set(record)
    assert record["offset_s"] == pytest.approx(0.2, abs=1 / 30)


@pytest.mark.parametrize("content, container", [(0.0, 0.4), (0.1, 0.3), (-0.2, 0.5)])
def test_a_late_audio_stream_in_the_container_counts(content, container):
    """The sound placed by its presentation time: audio muxed to start `container` s late plays that late."""
    data = flash_click_clip(25, content, audio_delay=container)
    media = decode_media(data, build("av_sync", {"method": "onset_xcorr"}).media_spec)
    assert media.audio_start == pytest.approx(container, abs=0.01)
    result = _estimate(data)
    assert result.status == "ok" and result.fields["offset_s"] == pytest.approx(content + container, abs=1 / 25)


@pytest.mark.skipif(not MEDIA.is_dir(), reason="the real clips of ../shared/media are not beside this checkout")
@pytest.mark.parametrize("name", ["nasa_13013.mp4", "big_buck_bunny_432_433.webm", "example2.mp4"])
def test_real_footage_gets_a_right_offset_or_a_skip(name):
    """Real clips as they are and with their sound made 0.2 s late, in the content and in the container: an `ok`
    offset must be the shift within two frames (the clips as published taken as in sync), else the clip is skipped."""
    source = (MEDIA / name).read_bytes()
    variants = {0.0: source,
                0.2: ffmpeg_output("-map", "0:v:0", "-map", "0:a:0", "-c:v", "copy", "-af", "adelay=200:all=1", "-c:a", "pcm_s16le",
                                   suffix=".mkv", source=source),
                0.2000001: ffmpeg_output("-itsoffset", "0.2", "-i", str(MEDIA / name), "-map", "0:v:0", "-map", "1:a:0",
                                         "-c:v", "copy", "-c:a", "pcm_s16le", suffix=".mkv", source=source)}
    for shift, data in variants.items():
        result = _estimate(data)
        assert result.status in ("ok", "skipped"), result
        if result.status == "ok":
            fps = result.fields["fps"]
            assert result.fields["offset_s"] == pytest.approx(round(shift, 3), abs=2 / fps), (name, shift, result.fields)


def test_a_guess_is_skipped_with_its_candidate_kept():
    """Flashes over loud noise with no clicks: the correlation peaks somewhere, weakly; that is no offset."""
    result = _estimate(flash_click_clip(25, 0.1, clicks=False, noise_db=-10))
    assert (result.status, result.error_type) == ("skipped", "low_confidence")
    assert result.fields["offset_s"] is None and result.fields["candidate_offset_s"] is not None
    assert result.fields["confidence"] < 0.35 and "min_confidence 0.35" in result.error


def test_offsets_are_exact_to_a_few_milliseconds_at_high_frame_rates():
    """Onsets are timed at the centre of their STFT window: a bias there would show as a few ms on every clip."""
    for fps, offset in ((50, 0.1), (60, -0.2), (50, 0.0)):
        result = _estimate(flash_click_clip(fps, offset, seed=fps))
        assert result.fields["offset_s"] == pytest.approx(offset, abs=0.004), (fps, offset)
        times = decode_media(flash_click_clip(fps, offset, seed=fps), build("av_sync", {"method": "onset_xcorr"}).media_spec).frame_times
        assert result.fields["fps"] == pytest.approx((len(times) - 1) / (times[-1] - times[0]), abs=1e-3)
        assert result.fields["fps"] == pytest.approx(fps, rel=2e-3)


def test_confidence_is_the_peak_discounted_by_its_rival():
    result = _estimate(flash_click_clip(25, 0.1))
    peak, rival = result.fields["peak_correlation"], result.fields["rival_correlation"]
    assert 0 < rival < peak
    assert result.fields["confidence"] == pytest.approx(min(peak, 1.0) * (1 - rival / peak), abs=2e-4)
    import numpy as np

    from extract.heads.av_sync import onset_xcorr

    rng = np.random.default_rng(1)  # flashes at random frames over sound that is noise alone: a weak peak
    frames = np.clip(rng.normal(40, 3, (150, 16, 16, 3)), 0, 255).astype(np.uint8)
    for k in rng.choice(150, 20, replace=False):
        frames[k] = rng.integers(60, 230)
    rng.normal(0, 0.05, 16000 * 6)
    weak = onset_xcorr(_media(frames, rng.normal(0, 0.05, 16000 * 6).astype(np.float32)), 2.0, 1.0, -60.0)
    weak_peak, weak_rival = weak.details["peak_correlation"], weak.details["rival_correlation"]
    assert 0 < weak_peak < 1 and weak.confidence == pytest.approx(weak_peak * (1 - max(weak_rival, 0) / weak_peak), abs=2e-4)


def test_the_parabolic_peak_by_hand():
    from extract.heads.av_sync import _parabolic_peak

    # a parabola through (0, 1), (1, 3), (2, 2) peaks at 1 + 0.5 (1 - 2) / (1 - 6 + 2) = 7/6
    assert _parabolic_peak([1.0, 3.0, 2.0], 1) == pytest.approx(7 / 6)
    assert _parabolic_peak([1.0, 3.0, 2.0], 0) == 0.0


def _media(frames, audio):
    from extract.decode import Media

    return Media(info={}, frames=frames, frame_times=[i / 25 for i in range(len(frames))], frame_indices=list(range(len(frames))),
                 audio=audio, sample_rate=16000, audio_start=0.0)


def test_too_few_frames_and_a_noisy_still_are_skipped():
    import numpy as np

    from extract.heads.av_sync import onset_xcorr

    rng = np.random.default_rng(0)
    clicks = np.zeros(16000 * 4, np.float32)
    clicks[8000::8000] = 0.9
    few = onset_xcorr(_media(np.zeros((7, 8, 8, 3), np.uint8), clicks), 2.0, 1.0, -60.0)
    assert few.offset_s is None and "too few video frames" in few.skip_reason
    # sensor noise of 10 levels: every frame brightens a little somewhere, none suddenly
    noisy = np.clip(rng.normal(120, 10, (100, 16, 16, 3)), 0, 255).astype(np.uint8)
    still = onset_xcorr(_media(noisy, clicks), 2.0, 1.0, -60.0)
    assert still.offset_s is None and "no frame brightens suddenly" in still.skip_reason


def test_synchformer_reads_the_frames_its_windows_use_and_skips_near_silence():
    import numpy as np

    from extract.bench.synthetic import flash_click_clip

    head = build("av_sync", {"method": "synchformer"})
    media = decode_media(flash_click_clip(25, 0.0, seconds=5.0), head.media_spec)
    prepared = head.prepare(Clip("k", "v", None, None, media))
    segments = len(prepared["spectrograms"])
    assert len(prepared["frames"]) == (segments - 1) * 8 + 16  # segments of 16 frames every 8
    quiet = decode_media(flash_click_clip(25, 0.0, seconds=5.0, noise_db=-70, clicks=False), head.media_spec)
    assert np.sqrt(np.mean(np.square(quiet.audio, dtype=np.float64))) < 10 ** (-60 / 20)  # below min_sound_dbfs
    skipped = head.prepare(Clip("k", "v", None, None, quiet))
    assert skipped.status == "skipped" and "too little sound" in skipped.error
