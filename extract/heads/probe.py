"""probe: technical metadata and content statistics, computed on CPU (in the workers) without a model."""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np

from extract.decode import MediaSpec
from extract.heads import Clip, Head, Result, register

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601


class VideoStream(TypedDict):
    index: int
    codec: str
    width: int
    height: int
    # measured fields (fps, num_frames, duration_s, first_frame_s) are of the decoded stream (video_stream_index) only
    fps: float  # measured: the mean spacing of the decoded frames' timestamps
    fps_header: float  # the average rate the header declares (frames / duration: ffprobe's avg_frame_rate, decord's get_avg_fps)
    num_frames: int  # counted in the stream's packets
    num_frames_header: int
    duration_s: float  # measured: first frame to the end of the last
    duration_s_header: float
    start_s: float  # the stream's start time in the container
    first_frame_s: float  # the first decoded frame's presentation time
    color_space: str  # the colour matrix the stream is tagged with (bt709, bt470bg, ...), null when untagged


class AudioStream(TypedDict):
    index: int
    codec: str
    sample_rate: int
    channels: int
    start_s: float
    duration_s_header: float


class SubtitleStream(TypedDict):
    index: int
    codec: str


class Stats(TypedDict):
    frames_sampled: int
    frame_times: list[float]  # presentation times (s)
    mean_luma: float  # 0..255
    motion_energy: float  # mean absolute luma change between sampled frames, 0..255
    scene_cuts: int
    audio_rms_dbfs: float


@register
class Probe(Head):
    name = "probe"
    fields = {"container": str, "duration_s": float, "duration_s_measured": float, "bit_rate": int,
              "video_streams": list[VideoStream], "audio_streams": list[AudioStream], "subtitle_streams": list[SubtitleStream],
              "video_stream_index": int, "audio_stream_index": int, "has_audio": bool, "audio_error": str, "stats": Stats}

    takes_still_images = True  # what a file is, pictures included, is the probe's to say

    def __init__(self, fps: float = 4.0, max_frames: int = 64, short_side: int = 128, cut_threshold: float = 0.5):
        if fps <= 0 or not 0 <= cut_threshold <= 1:
            raise ValueError("fps must be positive and cut_threshold within 0 to 1")
        self.media_spec = MediaSpec(fps=fps, max_frames=max_frames, short_side=short_side, audio=True)
        self.cut_threshold = cut_threshold  # histogram distance (0..1) between sampled frames that counts as a cut

    def prepare(self, clip: Clip) -> Result:
        return Result(fields=self._describe(clip))

    def infer(self, clips: list[Clip]) -> list[Result]:
        return [self.prepare(clip) for clip in clips]

    def _describe(self, clip: Clip) -> dict:
        media = clip.media
        info = media.info
        luma = (np.asarray(media.frames, dtype=np.float32) @ _LUMA) if media.frames is not None else None  # [T, H, W]
        return {
            "container": info.get("container"),
            "duration_s": info.get("duration_s"),
            "duration_s_measured": info.get("duration_s_measured"),
            "bit_rate": info.get("bit_rate"),
            "video_streams": info.get("video_streams", []),
            "audio_streams": info.get("audio_streams", []),
            "subtitle_streams": info.get("subtitle_streams", []),
            # the streams the measured fields and the stats describe
            "video_stream_index": info.get("video_stream_index") if media.frames is not None else None,
            "audio_stream_index": info.get("audio_stream_index") if media.audio is not None else None,
            "has_audio": media.has_audio,
            "audio_error": media.audio_error[1] if media.audio_error else None,
            "stats": {
                "frames_sampled": 0 if luma is None else int(luma.shape[0]),
                "frame_times": media.frame_times,
                "mean_luma": None if luma is None else round(float(luma.mean()), 3),
                "motion_energy": motion_energy(luma),
                "scene_cuts": scene_cuts(luma, self.cut_threshold),
                "audio_rms_dbfs": rms_dbfs(None if media.audio is None else np.asarray(media.audio)),
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
    """RMS level of the mono signal relative to full scale; -120 dBFS for digital silence."""
    if audio is None or audio.size == 0:
        return None
    rms = math.sqrt(float(np.mean(np.square(audio, dtype=np.float64))))
    return round(max(-120.0, 20 * math.log10(rms)) if rms > 0 else -120.0, 2)
