"""av_sync: how far a clip's sound is off its picture, without model weights.

Method `onset_xcorr`: visual onsets (mean brightening between consecutive frames, per video
frame) against audio onsets (spectral flux of the 16 kHz signal, 5 ms hop), correlated over lags
within +-max_offset on a 1 ms grid, with parabolic refinement of the peak. Frames and sound are
placed by their presentation times in the file, so an offset in the container counts as one in the
content does. A positive offset means the audio lags the picture.

Method `synchformer`: the learned model (extract/models/synchformer.py) over 4.8 s windows of 25 fps frames and
16 kHz sound on the same clock; its input is made in the workers, the model runs on the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch

from extract.decode import Media, MediaSpec, as_bt601, first_slot_time, time_origin
from extract.errors import ConfigError
from extract.heads import Clip, Head, Result, register, resolve_dtype, split_on_oom
from extract.models import synchformer

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
    sudden = visual.max() - np.median(visual)
    if sudden < min_motion:  # steady sensor noise, or motion that brightens no frame at once, gives nothing to align
        return Estimate(None, 0.0, f"no visual onset to align: no frame brightens suddenly (the largest rise over the "
                                   f"typical one is {sudden:.2f} luma levels, under min_motion {min_motion:g}); the "
                                   "picture is still or changes smoothly")
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


METHODS = ("onset_xcorr", "synchformer")
# the options only one method reads, with their defaults
OPTIONS_OF = {"onset_xcorr": {"max_offset": 2.0, "max_frames": 900, "short_side": 64, "min_motion": 1.0},
              "synchformer": {"checkpoint": None, "dtype": "float32", "max_seconds": 30.0, "window_batch": 8}}


def _other(method: str) -> str:
    return next(m for m in METHODS if m != method)
DEFAULT_MIN_CONFIDENCE = {"onset_xcorr": 0.35, "synchformer": 0.0}


class SyncWindow(TypedDict):
    start_s: float  # on the clip's picture clock, from its first frame
    end_s: float
    offset_s: float
    confidence: float


def streams_of(media: Media, decoded: bool = False) -> dict:
    """The streams an estimate comes from: the video stream decoded and the audio stream ffmpeg's command line keeps
    (`decoded`: both were, though the frames stayed in the worker)."""
    return {"video_stream_index": media.info.get("video_stream_index") if decoded or media.frames is not None else None,
            "audio_stream_index": media.info.get("audio_stream_index") if decoded or media.audio is not None else None}


@register
class AVSync(Head):
    name = "av_sync"
    fields = {"offset_s": float, "candidate_offset_s": float, "confidence": float, "method": str, "fps": float,
              "frames_used": int, "max_offset_s": float, "peak_correlation": float, "rival_correlation": float,
              "offset_probabilities": list[float], "windows": list[SyncWindow], "desync_s": float,
              "video_stream_index": int, "audio_stream_index": int}
    frames_in_model_step = False  # synchformer's frames travel as what `prepare` made of them

    def __init__(self, method: str = "synchformer", max_offset: float = 2.0, max_frames: int = 900,
                 short_side: int = 64, min_motion: float = 1.0, min_sound_dbfs: float = -60.0,
                 min_confidence: float | None = None, checkpoint: str | None = None, dtype: str = "float32",
                 max_seconds: float = 30.0, window_batch: int = 8):
        if method not in METHODS:
            raise TypeError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
        given = {"max_offset": max_offset, "max_frames": max_frames, "short_side": short_side, "min_motion": min_motion,
                 "checkpoint": checkpoint, "dtype": dtype, "max_seconds": max_seconds, "window_batch": window_batch}
        foreign = [name for name, value in given.items() if name in OPTIONS_OF[_other(method)] and value != OPTIONS_OF[_other(method)][name]]
        if foreign:  # an option the chosen method would ignore: most likely the method was forgotten
            raise ValueError(f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} for method={_other(method)}, "
                             f"and this run's method is {method}")
        for wrong, why in ((max_offset <= 0, f"max_offset={max_offset} must be positive"),
                           (window_batch < 1, f"window_batch={window_batch} must be at least 1"),
                           (not 0 <= (min_confidence or 0) <= 1, f"min_confidence={min_confidence} must be within 0 to 1")):
            if wrong:
                raise ValueError(why)
        if method == "synchformer" and max_seconds < synchformer.WINDOW_S:
            raise ValueError(f"max_seconds={max_seconds:g} is shorter than one Synchformer window ({synchformer.WINDOW_S:g} s)")
        self.method, self.max_offset = method, max_offset
        self.min_motion, self.min_sound_dbfs = min_motion, min_sound_dbfs
        self.min_confidence = DEFAULT_MIN_CONFIDENCE[method] if min_confidence is None else min_confidence
        self.dtype_name, self.window_batch = dtype, window_batch
        if method == "synchformer":
            self.model_id, self.max_offset = checkpoint, float(synchformer.OFFSETS_S[-1])
            self.media_spec = MediaSpec(fps=synchformer.FPS, sampling="rate", max_frames=int(max_seconds * synchformer.FPS),
                                        short_side=synchformer.SHORT_SIDE, exact_short_side=True, crop=synchformer.CROP,
                                        resample="bicubic", audio=True, sample_rate=synchformer.SAMPLE_RATE)
        else:
            self.media_spec = MediaSpec(every_frame=True, max_frames=max_frames, short_side=short_side, audio=True,
                                        sample_rate=SAMPLE_RATE)

    def open(self, device: torch.device) -> None:
        if self.method == "synchformer":  # a missing checkpoint is one line before any work, not after the workers start
            try:
                synchformer.check_checkpoint_path(self.model_id)
            except synchformer.CheckpointError as exc:
                raise ConfigError(str(exc)) from None

    def load(self, device: torch.device) -> None:
        if self.method == "synchformer":
            self.device = device
            try:
                self.model = synchformer.load_synchformer(self.model_id, device, resolve_dtype(self.dtype_name, device))
            except synchformer.CheckpointError as exc:
                raise ConfigError(str(exc)) from None

    def prepare(self, clip: Clip) -> Result | dict:
        """In a worker: the whole onset method, or Synchformer's inputs (frames and spectrograms per segment)."""
        if clip.media.audio_error:
            return Result(status="error", error_type=clip.media.audio_error[0], error=clip.media.audio_error[1])
        if self.method == "synchformer":
            return self._synchformer_inputs(clip.media)
        estimate = onset_xcorr(clip.media, self.max_offset, self.min_motion, self.min_sound_dbfs)
        times = clip.media.frame_times
        fields = {**streams_of(clip.media), "offset_s": estimate.offset_s, "confidence": estimate.confidence, "method": self.method,
                  "fps": round((len(times) - 1) / (times[-1] - times[0]), 3) if len(times) > 1 and times[-1] > times[0] else None,
                  "frames_used": len(times), "max_offset_s": self.max_offset, **(estimate.details or {})}
        return self._judged(fields, estimate.confidence, estimate.skip_reason, estimate.skip_type)

    def _judged(self, fields: dict, confidence: float, skip_reason: str | None, skip_type: str) -> Result:
        if skip_reason is None and confidence < self.min_confidence:
            fields.update(offset_s=None, candidate_offset_s=fields["offset_s"])
            skip_reason = f"no clear alignment (confidence {confidence:g} < min_confidence {self.min_confidence:g})"
            skip_type = "low_confidence"
        if skip_reason:
            return Result(fields=fields, status="skipped", error_type=skip_type, error=skip_reason)
        return Result(fields=fields)

    def _synchformer_inputs(self, media: Media) -> Result | dict:
        base = {**streams_of(media), "method": self.method, "fps": float(synchformer.FPS), "max_offset_s": self.max_offset}
        if media.audio is None:
            return Result(fields=base, status="skipped", error_type="no_audio", error="the clip has no audio stream")
        if media.frames is None or not len(media.frames):
            return Result(fields=base, status="skipped", error_type="undecidable", error="no video frames")
        audio = np.asarray(media.audio, dtype=np.float32)
        if not audio.size or np.sqrt(np.mean(np.square(audio, dtype=np.float64))) <= 10 ** (self.min_sound_dbfs / 20):
            return Result(fields=base, status="skipped", error_type="undecidable",
                          error=f"too little sound to decide (RMS below {self.min_sound_dbfs:g} dBFS)")
        first_frame = media.video.get("first_frame_s")
        first_frame = media.frame_times[0] if first_frame is None else first_frame
        # frame k is the fps filter's k-th output, shown from the first slot's time + k / 25 s: the sound goes on that clock
        video_start = first_slot_time(time_origin(media.info), first_frame, synchformer.FPS)
        audio = synchformer.aligned_audio(audio, media.audio_start, video_start)
        segments = synchformer.segment_count(len(media.frames), len(audio))
        starts = synchformer.window_starts(segments)
        if not starts:
            seconds = min(len(media.frames) / synchformer.FPS, len(audio) / synchformer.SAMPLE_RATE)
            return Result(fields=base, status="skipped", error_type="too_short",
                          error=f"{seconds:.2f} s of picture and sound together; Synchformer needs 4.8 s")
        used = (segments - 1) * synchformer.SEGMENT_STEP + synchformer.SEGMENT_FRAMES
        # the authors decode with torchvision's read_video, whose PyAV frames are converted with BT.601 whatever the tag
        frames = as_bt601(np.asarray(media.frames[:used]), media.video.get("color_space"))
        return {"frames": torch.as_tensor(frames),
                "spectrograms": synchformer.spectrogram_segments(audio, segments), "starts": starts}

    def infer(self, clips: list[Clip]) -> list[Result]:
        windows = [(index, start) for index, clip in enumerate(clips) if isinstance(clip.prepared, dict)
                   for start in clip.prepared["starts"]]
        logits = []
        for first in range(0, len(windows), self.window_batch):
            logits += split_on_oom(lambda batch: self._window_logits(clips, batch), windows[first:first + self.window_batch])
        results = []
        for index, clip in enumerate(clips):
            if not isinstance(clip.prepared, dict):
                results.append(clip.prepared if isinstance(clip.prepared, Result) else self.prepare(clip))
                continue
            mine = [(start, row) for (i, start), row in zip(windows, logits) if i == index]
            decided = synchformer.decide(torch.stack([row for _, row in mine]))
            step = synchformer.SEGMENT_STEP / synchformer.FPS
            span = (synchformer.SEGMENTS_PER_WINDOW - 1) * step + synchformer.SEGMENT_FRAMES / synchformer.FPS
            fields = {**streams_of(clip.media, decoded=True), "method": self.method, "fps": float(synchformer.FPS), "max_offset_s": self.max_offset,
                      "frames_used": len(clip.prepared["frames"]), "offset_s": decided["offset_s"],
                      "confidence": decided["confidence"], "offset_probabilities": decided["offset_probabilities"],
                      "desync_s": decided["desync_s"],
                      "windows": [{"start_s": round(start * step, 3), "end_s": round(start * step + span, 3), "offset_s": offset,
                                   "confidence": confidence}
                                  for (start, _), offset, confidence in zip(mine, decided["window_offsets_s"], decided["window_confidences"])]}
            results.append(self._judged(fields, decided["confidence"], None, "low_confidence"))
        return results

    @torch.no_grad()
    def _window_logits(self, clips: list[Clip], windows: list[tuple[int, int]]) -> list[torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        pictures, sounds = [], []
        for index in dict.fromkeys(i for i, _ in windows):
            prepared = clips[index].prepared
            picture, sound = synchformer.window_inputs(prepared["frames"].to(self.device, non_blocking=True),
                                                       prepared["spectrograms"].to(self.device, non_blocking=True),
                                                       [start for i, start in windows if i == index], dtype)
            pictures.append(picture)
            sounds.append(sound)
        return list(self.model(torch.cat(pictures), torch.cat(sounds)).float().cpu())
