"""probe: technical metadata and content statistics, computed on CPU without a model."""

from __future__ import annotations

import math

import numpy as np

from extract.decode import MediaSpec
from extract.heads import Clip, Head, Result, register

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601


@register
class Probe(Head):
    name = "probe"

    def __init__(self, fps: float = 4.0, max_frames: int = 64, short_side: int = 128, cut_threshold: float = 0.5):
        self.media_spec = MediaSpec(fps=fps, max_frames=max_frames, short_side=short_side, audio=True)
        self.cut_threshold = cut_threshold  # histogram distance (0..1) between sampled frames that counts as a cut

    def infer(self, clips: list[Clip]) -> list[Result]:
        return [Result(fields=self._describe(clip)) for clip in clips]

    def _describe(self, clip: Clip) -> dict:
        media = clip.media
        info = media.info
        luma = (media.frames.astype(np.float32) @ _LUMA) if media.frames is not None else None  # [T, H, W]
        return {
            "container": info.get("container"),
            "duration_s": info.get("duration_s"),
            "bit_rate": info.get("bit_rate"),
            "video_streams": info.get("video_streams", []),
            "audio_streams": info.get("audio_streams", []),
            "has_audio": media.has_audio,
            "stats": {
                "frames_sampled": 0 if luma is None else int(luma.shape[0]),
                "frame_times": media.frame_times,
                "mean_luma": None if luma is None else round(float(luma.mean()), 3),
                "motion_energy": motion_energy(luma),
                "scene_cuts": scene_cuts(luma, self.cut_threshold),
                "audio_rms_dbfs": rms_dbfs(media.audio),
            },
        }


def motion_energy(luma: np.ndarray | None) -> float | None:
    """Mean absolute luma change between consecutive sampled frames, in 0..255 levels."""
    if luma is None or len(luma) < 2:
        return None
    return round(float(np.abs(np.diff(luma, axis=0)).mean()), 3)


def scene_cuts(luma: np.ndarray | None, threshold: float) -> int | None:
    """Hard cuts: consecutive sampled frames whose 32-bin luma histograms differ by more than
    `threshold` (half the L1 distance of the normalised histograms, 0 = same, 1 = disjoint)."""
    if luma is None or len(luma) < 2:
        return None if luma is None else 0
    hists = np.stack([np.histogram(frame, bins=32, range=(0, 256))[0] for frame in luma]).astype(np.float64)
    hists /= hists.sum(axis=1, keepdims=True)
    distance = 0.5 * np.abs(np.diff(hists, axis=0)).sum(axis=1)
    return int((distance > threshold).sum())


def rms_dbfs(audio: np.ndarray | None) -> float | None:
    """RMS level of the mono 16 kHz signal relative to full scale; -120 dBFS for digital silence."""
    if audio is None or audio.size == 0:
        return None
    rms = math.sqrt(float(np.mean(np.square(audio, dtype=np.float64))))
    return round(max(-120.0, 20 * math.log10(rms)) if rms > 0 else -120.0, 2)
