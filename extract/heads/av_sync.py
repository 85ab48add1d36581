"""av_sync: how far a clip's sound is off its picture, without model weights.

Method `onset_xcorr`: visual onsets (mean brightening between consecutive frames, per video
frame) against audio onsets (spectral flux of the 16 kHz signal, 5 ms hop), correlated over lags
within +-max_offset on a 1 ms grid, with parabolic refinement of the peak. Frames and sound are
placed by their presentation times in the file, so an offset in the container counts as one in the
content does. A positive offset means the audio lags the picture. A learned estimator (e.g. Synchformer) would be another entry in
`METHODS` with the same inputs and the same `Estimate` out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from extract.decode import Media, MediaSpec
from extract.heads import Clip, Head, Result, register

SAMPLE_RATE = 16000
HOP = 80  # 5 ms
WINDOW = 256  # 16 ms


@dataclass
class Estimate:
    offset_s: float | None
    confidence: float
    skip_reason: str | None = None
    skip_type: str = "undecidable"
    details: dict | None = None


def visual_onsets(frames: np.ndarray) -> np.ndarray:
    """Per frame k: mean brightening from frame k-1 to k (0 for the first frame), in luma levels."""
    luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rise = np.clip(np.diff(luma, axis=0), 0, None).mean(axis=(1, 2))
    return np.concatenate([[0.0], rise]).astype(np.float64)


def audio_onsets(audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral flux (half-wave rectified rise of log magnitude) and its times (window centres)."""
    signal = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    spectrum = torch.stft(signal, n_fft=WINDOW, hop_length=HOP, win_length=WINDOW, window=torch.hann_window(WINDOW),
                          center=False, return_complex=True).abs()
    log_mag = torch.log1p(1000 * spectrum)
    flux = torch.clamp(log_mag[:, 1:] - log_mag[:, :-1], min=0).sum(dim=0).numpy().astype(np.float64)
    # the rise between windows i-1 and i is timed at the centre of window i (the STFT convention)
    times = (np.arange(len(flux) + 1) * HOP + WINDOW / 2) / SAMPLE_RATE
    return np.concatenate([[0.0], flux]), times


def _parabolic_peak(values: np.ndarray, index: int) -> float:
    if 0 < index < len(values) - 1:
        left, centre, right = values[index - 1], values[index], values[index + 1]
        denominator = left - 2 * centre + right
        if denominator < 0:
            return index + 0.5 * (left - right) / denominator
    return float(index)


def onset_xcorr(media: Media, max_offset: float, min_motion: float, min_sound_dbfs: float) -> Estimate:
    frames, times = media.frames, np.asarray(media.frame_times, dtype=np.float64)
    if frames is None or len(frames) < 8:
        return Estimate(None, 0.0, "too few video frames to decide")
    if media.audio is None:
        return Estimate(None, 0.0, "the clip has no audio stream", "no_audio")
    rms = float(np.sqrt(np.mean(np.square(media.audio, dtype=np.float64)))) if media.audio.size else 0.0
    if rms <= 10 ** (min_sound_dbfs / 20):
        return Estimate(None, 0.0, f"too little sound to decide (RMS below {min_sound_dbfs:g} dBFS)")
    visual = visual_onsets(frames)
    if visual.max() - np.median(visual) < min_motion:  # steady sensor noise is not change
        return Estimate(None, 0.0, "too little visual change to decide (a still picture)")
    flux, flux_times = audio_onsets(media.audio)
    flux_times = flux_times + (media.audio_start or 0.0)  # placed by its presentation time, as frames are: a stream that
    # starts late in its container (an edit list, a muxing offset) is played late, and that shows in the offset
    if flux.std() == 0:
        return Estimate(None, 0.0, "the sound has no onsets to align")

    visual = (visual - visual.mean()) / (visual.std() + 1e-12)
    flux = (flux - flux.mean()) / (flux.std() + 1e-12)
    lags = np.arange(-max_offset, max_offset + 5e-4, 1e-3)
    # audio onset strength at each frame time shifted by each lag (linear interpolation, 0 outside)
    shifted = np.interp(times[None, :] + lags[:, None], flux_times, flux, left=0.0, right=0.0)
    score = shifted @ visual / len(visual)
    best = int(np.argmax(score))
    offset = float(np.interp(_parabolic_peak(score, best), np.arange(len(lags)), lags))

    # confidence: correlation at the peak, discounted by the best rival more than a frame away
    frame_period = float(np.median(np.diff(times)))
    rivals = score[np.abs(lags - lags[best]) > frame_period]
    peak = float(score[best])
    rival = float(rivals.max()) if rivals.size else 0.0
    confidence = float(np.clip(peak, 0, 1) * np.clip(1 - max(rival, 0) / peak, 0, 1)) if peak > 0 else 0.0
    return Estimate(round(offset, 4), round(confidence, 4),
                    details={"peak_correlation": round(peak, 4), "rival_correlation": round(rival, 4)})


METHODS = {"onset_xcorr": onset_xcorr}


@register
class AVSync(Head):
    name = "av_sync"
    fields = {"offset_s": float, "candidate_offset_s": float, "confidence": float, "method": str, "fps": float,
              "frames_used": int, "max_offset_s": float, "peak_correlation": float, "rival_correlation": float}

    def __init__(self, method: str = "onset_xcorr", max_offset: float = 2.0, max_frames: int = 900,
                 short_side: int = 64, min_motion: float = 1.0, min_sound_dbfs: float = -60.0,
                 min_confidence: float = 0.35):
        if method not in METHODS:
            raise TypeError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
        self.method, self.max_offset = method, max_offset
        self.min_motion, self.min_sound_dbfs, self.min_confidence = min_motion, min_sound_dbfs, min_confidence
        self.media_spec = MediaSpec(every_frame=True, max_frames=max_frames, short_side=short_side, audio=True,
                                    sample_rate=SAMPLE_RATE)

    def prepare(self, clip: Clip) -> Result:
        """All of it is CPU work: it runs in the workers."""
        if clip.media.audio_error:
            return Result(status="error", error_type=clip.media.audio_error[0], error=clip.media.audio_error[1])
        estimate = METHODS[self.method](clip.media, self.max_offset, self.min_motion, self.min_sound_dbfs)
        times = clip.media.frame_times
        fields = {"offset_s": estimate.offset_s, "confidence": estimate.confidence, "method": self.method,
                  "fps": round((len(times) - 1) / (times[-1] - times[0]), 3) if len(times) > 1 and times[-1] > times[0] else None,
                  "frames_used": len(times), "max_offset_s": self.max_offset, **(estimate.details or {})}
        if estimate.skip_reason is None and estimate.confidence < self.min_confidence:
            fields.update(offset_s=None, candidate_offset_s=estimate.offset_s)
            estimate.skip_reason = f"no clear alignment (confidence {estimate.confidence:g} < min_confidence {self.min_confidence:g})"
            estimate.skip_type = "low_confidence"
        if estimate.skip_reason:
            return Result(fields=fields, status="skipped", error_type=estimate.skip_type, error=estimate.skip_reason)
        return Result(fields=fields)

    def infer(self, clips: list[Clip]) -> list[Result]:
        return [self.prepare(clip) for clip in clips]
