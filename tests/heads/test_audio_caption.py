"""audio_caption, the head: its windows, sound, records and errors, with a tiny random release-format checkpoint on CPU
(the model itself: tests/models/test_beats_conformer_bart.py)."""

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
import webdataset as wds

from conftest import MEDIA, compose_cfg, ffmpeg_output, make_clip, plain_mp4, read_records, ready, write_shard
from extract.decode import decode_media
from extract.errors import ConfigError
from extract.heads import Clip, build
from extract.heads.audio_caption import clean_caption, windows_of
from extract.runner import run
from tiny import save_tiny_audio_captioner


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_tiny_audio_captioner(tmp_path_factory.mktemp("tiny-captioner"))


def _head(checkpoint, **options):
    head = build("audio_caption", {"checkpoint": str(checkpoint), "tokenizer": str(checkpoint), "max_length": 20,
                                   "dtype": "float32", **options})
    ready(head)
    return head


# ---------------------------------------------------------------------------- windows and checkpoints


def test_windows_are_equal_and_cover_the_audio():
    assert windows_of(16000 * 30, 30.0) == [(0, 480000)]
    windows = windows_of(16000 * 70, 30.0)
    assert len(windows) == 3 and windows[0][0] == 0 and windows[-1][1] == 16000 * 70
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert {end - start for start, end in windows} <= {373333, 373334}


def test_missing_files_are_one_clear_error(checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"cannot load checkpoint .*`hf download slseanwu/.*config.json pytorch_model.bin` and `hf download facebook/bart-base`"):
        _head(tmp_path)  # an empty folder
    with pytest.raises(ConfigError, match=r"the checkpoint folder /nonexistent-tokenizer does not exist"):
        build("audio_caption", {"checkpoint": str(checkpoint), "tokenizer": "/nonexistent-tokenizer"}).load(torch.device("cpu"))
    # found by open(), which the runner and the launcher call before any work, not only when the weights load
    with pytest.raises(ConfigError, match="model.audio_caption.tokenizer"):
        build("audio_caption", {"checkpoint": str(checkpoint), "tokenizer": "/nonexistent-tokenizer"}).open(torch.device("cpu"))
    with pytest.raises(ConfigError, match="pytorch_model.bin not in"):
        build("audio_caption", {"checkpoint": str(tmp_path)}).open(torch.device("cpu"))


# ---------------------------------------------------------------------------- head
def _clips(head, seconds=(1.0, 2.6, 4.3), tones=(440, 950, 2200)):
    return [Clip(f"k{i}", "v", 0.0, s, decode_media(make_clip(s, tone=t, size="32x32", rate=4), head.media_spec))
            for i, (s, t) in enumerate(zip(seconds, tones))]


def test_beam_search_and_features_do_not_depend_on_the_batch(checkpoint):
    head = _head(checkpoint)
    clips = _clips(head)
    alone = [head.infer([clip])[0] for clip in clips]
    together = head.infer(clips)
    assert len({a.fields["caption"] for a in alone}) > 1  # the captions depend on the sound
    for a, b in zip(alone, together):
        assert a.fields["caption"] == b.fields["caption"] and a.fields["num_tokens"] == b.fields["num_tokens"]
        assert a.fields["confidence"] == pytest.approx(b.fields["confidence"], abs=1e-4)
        np.testing.assert_allclose(a.arrays["features"].astype(np.float32), b.arrays["features"].astype(np.float32), atol=2e-3)


def test_padding_is_masked_before_the_conformer_convolution(checkpoint):
    """Without the mask, padded positions leak into a shorter clip's last frames (so the test above can fail)."""
    head = _head(checkpoint)
    short, long = _clips(head, seconds=(1.0, 4.3), tones=(440, 950))
    from extract.models.beats_conformer_bart import normalised_fbank

    fbanks = [normalised_fbank(torch.from_numpy(c.media.audio)) for c in (short, long)]
    frames = torch.tensor([len(f) for f in fbanks])
    batch = torch.nn.utils.rnn.pad_sequence(fbanks, batch_first=True)
    with torch.no_grad():
        alone = head.model.encode(fbanks[0][None], frames[:1]).hidden[0]
        masked = head.model.encode(batch, frames).hidden[0, : len(alone)]
        head.model._mask_padding = lambda module, args: None
        for layer in head.model.postencoder.layers:
            layer.conv_module.depthwise_conv._forward_pre_hooks.clear()
        unmasked = head.model.encode(batch, frames).hidden[0, : len(alone)]
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=1e-4)
    assert (unmasked - alone).abs().max() > 1e-3


def test_end_to_end_records_windows_and_features(checkpoint, tmp_path):
    (tmp_path / "in").mkdir()
    # a rising tone, so the long clip's three windows sound (and are captioned) differently
    chirp = ffmpeg_output("-f", "lavfi", "-i", "color=c=gray:s=32x32:r=1:d=65", "-f", "lavfi", "-i",
                          "aevalsrc=0.5*sin(2*PI*(200+30*t)*t):s=16000:d=65", "-c:v", "libx264", "-c:a", "aac", "-shortest")
    members = [("tone a (0-2).mp4", make_clip(2.0, tone=440, size="32x32", rate=4)),
               ("long one (0-65).mp4", chirp),
               ("silent film (0-1).mp4", make_clip(1.0, tone=None, size="32x32", rate=4)),
               ("tiny blip (0-0.1).mkv", make_clip(0.1, tone=440, size="32x32", rate=10, fmt="matroska")),
               ("broken (0-1).mp4", np.random.default_rng(0).bytes(5000)),
               ("garbage audio (0-2).mkv", ffmpeg_output("-c", "copy", "-bsf:a", "noise=amount=2", suffix=".mkv", source=plain_mp4()))]
    write_shard(tmp_path / "in" / "a.tar", members)
    cfg = compose_cfg("+model=[probe,audio_caption]", f"model.audio_caption.checkpoint={checkpoint}",
                      f"model.audio_caption.tokenizer={checkpoint}", "model.audio_caption.max_length=12",
                      f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1", "batch_size=2",
                      "wandb.mode=disabled")
    run(cfg)
    probe = {r["video_id"]: r for r in read_records(tmp_path / "out" / "probe")}
    assert [video_id for video_id, r in probe.items() if r["status"] != "ok"] == ["broken"]  # the picture heads go on
    folder = tmp_path / "out" / "audio_caption"
    records = {r["video_id"]: r for r in read_records(folder)}
    assert len(records) == 6
    samples = {s["__key__"]: s for s in wds.WebDataset(str(folder / "a.tar"), shardshuffle=False)}
    for video_id, windows in (("tone a", 1), ("long one", 3)):
        record = records[video_id]
        assert record["status"] == "ok" and record["has_audio"] and record["num_windows"] == windows
        assert record["caption"] and 0 <= record["confidence"] <= 1 and record["finish_reason"] in ("eos", "length")
        assert record["windows"][0]["start"] == 0 and record["windows"][-1]["end"] == pytest.approx(record["audio_s"], abs=1e-3)
        best = max(record["windows"], key=lambda w: w["confidence"])  # the clip's caption is its most confident window's
        assert (record["caption"], record["confidence"], record["num_tokens"]) == (best["caption"], best["confidence"], best["num_tokens"])
        assert record["feature_dim"] == 48 and record["feature_layer"] == 2 and record["arrays"] == ["features"]
        features = np.load(io.BytesIO(samples[record["key"]]["features.npy"]))
        assert features.dtype == np.float16 and features.shape == (48,) and np.isfinite(features).all()
    assert len({w["confidence"] for w in records["long one"]["windows"]}) == 3  # so choosing the best one is tested
    silent = records["silent film"]
    assert (silent["status"], silent["error_type"], silent["has_audio"]) == ("skipped", "no_audio", False)
    assert records["tiny blip"]["status"] == "skipped" and records["tiny blip"]["error_type"] == "too_short"
    assert records["broken"]["status"] == "error" and records["broken"]["error"]
    assert (records["garbage audio"]["status"], records["garbage audio"]["error_type"]) == ("error", "audio_decode_error")


# ---------------------------------------------------------------------------- captions and sound


def test_captions_lose_their_punctuation_as_the_release_writes_them():
    assert clean_caption(" A dog barks, then a car passes by.") == "A dog barks then a car passes by"


def _librosa_0_9_load(path, container: str) -> np.ndarray:
    """librosa 0.9.2's load(path, sr=16000) (the release's requirements.txt pins it), written from its source:
    soundfile reads WAV/FLAC/OGG; anything else goes to audioread, whose ffmpeg backend runs `ffmpeg -i FILE -f s16le -`
    and librosa scales the 16-bit samples by 1/32768 (buf_to_float); to_mono averages the channels; resample with
    res_type='kaiser_best' calls resampy and fixes the length to ceil(n x 16000 / sr)."""
    import json
    import subprocess

    import resampy

    stream = json.loads(subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
                                        "stream=sample_rate,channels", "-of", "json", str(path)], capture_output=True,
                                       check=True).stdout)["streams"][0]
    rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    if container in ("wav", "flac"):  # soundfile: the file's own samples as floats (16-bit PCM here: exact in f32le)
        raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "f32le", "-"], capture_output=True,
                             check=True).stdout
        sound = np.frombuffer(raw, np.float32)
    else:
        raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "s16le", "-"], capture_output=True,
                             check=True).stdout
        sound = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    mono = sound.reshape(-1, channels).T.mean(axis=0)
    resampled = resampy.resample(mono, rate, 16000, filter="kaiser_best", axis=-1)
    length = int(np.ceil(len(mono) * 16000 / rate))  # util.fix_length: cut, or padded with zeros
    return np.concatenate([resampled, np.zeros(max(0, length - len(resampled)), np.float32)])[:length]


GENERATED = {  # name: (ffmpeg output options, container): 44.1 and 48 kHz, stereo, as recordings and downloads come
    "noise-48k.wav": (["-ar", "48000", "-ac", "2", "-c:a", "pcm_s16le"], "wav"),
    "noise-44k.flac": (["-ar", "44100", "-ac", "2"], "flac"),
    "noise-48k.mp4": (["-ar", "48000", "-ac", "2", "-c:a", "aac"], "mp4"),
}


@pytest.mark.parametrize("name", [*GENERATED, "example2.mp4", "big_buck_bunny_432_433.webm"])
def test_the_sound_is_what_the_authors_librosa_load_gives(name, tmp_path):
    import subprocess

    from extract.decode import decode_media, sniff_container
    from extract.heads import build

    if name in GENERATED:
        options, _ = GENERATED[name]
        path = tmp_path / name
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "anoisesrc=d=3:c=pink:a=0.3", "-f", "lavfi", "-i",
                        "sine=f=3000:d=3", "-filter_complex", "amix=inputs=2", *options, str(path)], check=True)
    else:
        path = MEDIA / name
        if not path.is_file():
            pytest.skip("the real clips of ../shared/media are not beside this checkout")
    data = path.read_bytes()
    head = build("audio_caption", {"checkpoint": "unused"})
    media = decode_media(data, head.media_spec)
    expected = _librosa_0_9_load(path, sniff_container(data))
    assert media.sample_rate == 16000 and len(media.audio) == len(expected)
    np.testing.assert_allclose(media.audio, expected, atol=1e-5)
    through_ffmpeg = decode_media(data, replace(head.media_spec, audio_resampler="ffmpeg")).audio
    n = min(len(through_ffmpeg), len(expected))
    assert np.abs(through_ffmpeg[:n] - expected[:n]).max() > 1e-4  # the resamplers differ: the test tells them apart


def test_skips_and_errors_say_whether_the_clip_has_sound():
    from types import SimpleNamespace

    from extract.heads.audio_caption import AudioCaption

    def media(samples: int | None, error=None):
        return SimpleNamespace(audio_error=error, has_audio=samples is not None,
                               audio=None if samples is None else np.zeros(samples, np.float32))

    # one 16 x 16 patch column needs 16 fbank frames of 25 ms every 10 ms: 400 + 15 x 160 samples
    assert AudioCaption._skipped(media(400 + 15 * 160)) is None
    short = AudioCaption._skipped(media(400 + 15 * 160 - 1))
    assert (short.status, short.error_type, short.fields["has_audio"]) == ("skipped", "too_short", True)
    broken = AudioCaption._skipped(media(16000, ("audio_decode_error", "bad packets")))
    assert (broken.status, broken.fields["has_audio"]) == ("error", True)  # there is sound; it would not decode
    silent_film = AudioCaption._skipped(media(None))
    assert (silent_film.error_type, silent_film.fields["has_audio"]) == ("no_audio", False)


def test_clip_features_are_the_token_weighted_mean_of_its_windows():
    from types import SimpleNamespace

    from extract.heads.audio_caption import AudioCaption
    from extract.models.generation import Generated

    head = AudioCaption.__new__(AudioCaption)
    head.model, head.tokenizer_id, head.preset, head.revision = SimpleNamespace(repr_layer=10), "t", "authors", None
    said = lambda confidence: Generated("x", 2, confidence, -1.0, "eos")  # noqa: E731
    windows = [({"start": 0.0, "end": 30.0}, {"generated": said(0.2), "pooled": np.array([0.0, 2.0]), "tokens": 1}),
               ({"start": 30.0, "end": 40.0}, {"generated": said(0.6), "pooled": np.array([4.0, 2.0]), "tokens": 3})]
    result = head._clip_result({"audio_s": 40.0}, windows)
    np.testing.assert_allclose(result.arrays["features"].astype(np.float64), [3.0, 2.0])  # (0 x 1 + 4 x 3) / 4
    assert result.fields["confidence"] == 0.6 and result.fields["num_windows"] == 2


def test_every_window_is_captioned_whatever_the_window_batch_and_cut_captions_say_length(checkpoint):
    head = _head(checkpoint, window_batch=2, max_length=6)
    audio = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * 70) / 16000)).astype(np.float32)  # 70 s: 3 windows
    from types import SimpleNamespace

    clip = Clip("k", "v", None, None, SimpleNamespace(audio_error=None, has_audio=True, audio=audio))
    [result] = head.infer([clip])
    assert result.fields["num_windows"] == 3 and len(result.fields["windows"]) == 3
    assert all(isinstance(w["caption"], str) for w in result.fields["windows"])
    assert any(w["num_tokens"] == 4 for w in result.fields["windows"])  # random weights run to the limit
    for window in result.fields["windows"]:  # BART's start token and its forced end token leave max_length - 2
        assert window["num_tokens"] <= 4
        assert window["finish_reason"] == ("length" if window["num_tokens"] == 4 else "eos")
