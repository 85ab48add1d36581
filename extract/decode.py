"""Decoding clip bytes with torchcodec, once per clip for every view the heads asked for.

A head declares what it needs as a `MediaSpec` (a view: frames by count, rate or every frame, at a
size; audio at a rate). `decode_views` opens the clip once, decodes its video stream in one
sequential pass that keeps, for each view, the frames it selects (resized per view), and its audio
once per sample rate. The pass never seeks: MPEG-TS, negative start times and variable frame rates
decode as ffmpeg decodes them.

`DecodeWatchdog` runs the decode in a forked child process so that a decode that hangs inside
ffmpeg, or blows up in memory, can be killed and reported as one clip's error while the worker
goes on.
"""

from __future__ import annotations

import ctypes
import io
import math
import os
import pickle
import re
import resource
import signal
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Pipe
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

SNIFF_BYTES = 64 << 10  # what is read of a member before deciding to read the rest


class _Codecs:
    """torchcodec and PyAV (FFmpeg's libraries), imported on first use: what only describes or times models (a GPU
    benchmark on a machine without FFmpeg) never loads them. The watchdog loads them before it forks its decode child,
    since an import there would run hooks (W&B's) forked from the parent."""

    def __getattr__(self, name: str):
        import av
        from torchcodec import _core as core
        from torchcodec.decoders import AudioDecoder, VideoDecoder

        self.__dict__.update(av=av, core=core, AudioDecoder=AudioDecoder, VideoDecoder=VideoDecoder)
        return self.__dict__[name]


codecs = _Codecs()


@dataclass(frozen=True)
class MediaSpec:
    """One view of a clip that a head needs decoded. Equal views are decoded once and shared."""

    num_frames: int = 0  # N frames over the clip, placed by `sampling`...
    fps: float = 0.0  # ...or frames at this rate (capped at max_frames, then spread evenly)
    max_frames: int = 256
    every_frame: bool = False  # or every frame at the native rate (the first max_frames of the clip)
    # centres: the frame shown at the centre of each of N equal time spans;
    # linspace: frame indices int(linspace(0, total - 1, N)) over the decoded frames (LLaVA's rule, both ends included);
    # segments: the middle frame of each of N equal index segments (InternVL's get_index);
    # rate: frames at exactly `fps` from the first frame, the ones ffmpeg's fps filter keeps (the frame shown at
    # the middle of each 1/fps slot), at most max_frames;
    # rule: the indices `index_rule(frame count, declared frame rate)` returns (a checkpoint's own video processor's)
    sampling: str = "centres"
    index_rule: Callable[[int, float | None], Sequence[int]] | None = None
    size: tuple[int, int] | None = None  # (height, width)
    short_side: int | None = None  # or resize so the short side is this, keeping the aspect (never up)...
    # ...unless exact: then always to this short side, the long side as ffmpeg's `scale=iw*S/min(iw,ih):...` then
    # even (Synchformer's re-encode), and `crop` takes the centre square of that side
    exact_short_side: bool = False
    crop: int | None = None
    resample: str = "bilinear"  # bilinear | bicubic, antialiased (bicubic matches PIL's within one level)
    audio: bool = False  # the mean of the channels, at sample_rate
    sample_rate: int = 16000
    # ffmpeg: torchcodec resamples (ffmpeg's swresample) | librosa: as librosa 0.9.2's load(sr=...) does it (the file's
    # own rate, the mean of the channels, resampy's kaiser_best; sound that soundfile cannot read, as in every video
    # container or an mp3, arrives through audioread's 16-bit PCM)
    audio_resampler: str = "ffmpeg"

    def __post_init__(self):
        for name in ("num_frames", "fps", "max_frames", "short_side", "crop", "sample_rate"):
            value = getattr(self, name)
            if value is not None and value < (1 if name in ("max_frames", "short_side", "crop", "sample_rate") else 0):
                raise ValueError(f"{name} must be {'at least 1' if name in ('max_frames', 'short_side', 'crop', 'sample_rate') else 'positive or 0'}, not {value}")
        if self.sampling not in ("centres", "linspace", "segments", "rate", "rule"):
            raise ValueError(f"sampling must be 'centres', 'linspace', 'segments', 'rate' or 'rule', not {self.sampling!r}")
        if (self.sampling == "rule") != (self.index_rule is not None):
            raise ValueError("sampling 'rule' and index_rule go together")
        if self.sampling == "rate" and self.fps <= 0:
            raise ValueError("sampling 'rate' needs fps")
        if self.crop and not (self.exact_short_side and self.short_side and self.crop <= self.short_side):
            raise ValueError("crop needs exact_short_side and a short_side of at least the crop")
        if self.resample not in ("bilinear", "bicubic"):
            raise ValueError(f"resample must be 'bilinear' or 'bicubic', not {self.resample!r}")
        if self.audio_resampler not in ("ffmpeg", "librosa"):
            raise ValueError(f"audio_resampler must be 'ffmpeg' or 'librosa', not {self.audio_resampler!r}")

    @property
    def wants_video(self) -> bool:
        return self.num_frames > 0 or self.fps > 0 or self.every_frame or self.index_rule is not None


@dataclass
class Media:
    """One decoded view of a clip."""

    info: dict  # container, durations and per-stream metadata (shared by every view of the clip)
    frames: np.ndarray | torch.Tensor | None = None  # uint8 [T, H, W, 3]
    frame_times: list[float] = field(default_factory=list)  # presentation time of each frame, as in the file (s)
    frame_indices: list[int] = field(default_factory=list)  # each frame's index among the stream's decoded frames
    audio: np.ndarray | torch.Tensor | None = None  # float32 [S], the mean of the channels
    sample_rate: int = 0
    audio_start: float | None = None  # presentation time of the first audio sample (s)
    audio_error: tuple[str, str] | None = None  # (error_type, message) when the audio stream would not decode

    @property
    def has_audio(self) -> bool:
        return bool(self.info.get("audio_streams"))

    @property
    def video(self) -> dict:
        """The decoded video stream's metadata ({} without one)."""
        index = self.info.get("video_stream_index")
        return next((s for s in self.info.get("video_streams", []) if s["index"] == index), {})


class DecodeFailure(Exception):
    """A clip (or one view of it) that cannot be decoded; `error_type` is a short stable code for counting."""

    def __init__(self, error_type: str, message: str):
        super().__init__(error_type, message)
        self.error_type, self.message = error_type, message

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------- what a member is


# pictures FFmpeg opens as a one-frame "video" (ffprobe: jpeg_pipe, png_pipe, gif, webp_pipe); crawls save them as .mp4
IMAGE_CONTAINERS = ("jpeg", "png", "gif", "webp", "bmp")


def sniff_container(data: bytes) -> str:
    """The container format from its magic bytes (torchcodec does not report it)."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM") and len(head) >= 26 and head[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return "mov" if brand == "qt" else f"mp4 ({brand})"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in data[:4096] else "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "wav"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    if head[:1] == b"\x47" and len(data) > 376 and data[188] == 0x47 and data[376] == 0x47:
        return "mpegts"
    return "unknown"


def _looks_like_text(data: bytes) -> str | None:
    start = data[:512].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return "the file is an HTML/XML page, not a video (a failed download?)"
    if start.startswith((b"{", b"[")) or (start and all(32 <= c < 127 or c in b"\r\n\t" for c in start)):
        return "the file is text, not a video"
    return None


def refuse_early(head: bytes) -> str | None:
    """Why a member whose first bytes are `head` cannot be media, before the rest is read; None if it may be.

    A compressed shard can hold a member of a gigabyte of one repeated byte in a megabyte: such a
    member is refused here, before it is held in memory.
    """
    if len(head) >= 4096 and head.count(head[:1]) == len(head):
        return f"the file is one byte value (0x{head[0]:02x}) repeated, not media"
    return _looks_like_text(head)


def _reason(exc: Exception, limit: int = 200) -> str:
    """ffmpeg's own words from a torchcodec error, without its source-file location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"^\w+, \S+\.cpp:\d+, ", "", lines[0]) if lines else type(exc).__name__
    return text[:limit]


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _seconds(value) -> float | None:
    value = _finite(value)
    return round(value, 6) if value is not None else None


# ---------------------------------------------------------------------------- container and streams


def _video_decoder(data: bytes, stream_index: int | None = None):
    """torchcodec's decoder of a video stream, frames in [H, W, 3]. Without a duration in its headers (a piped
    Matroska) the approximate mode refuses a file that the exact mode (one scan of the packets) opens."""
    try:
        return codecs.VideoDecoder(data, seek_mode="approximate", dimension_order="NHWC", stream_index=stream_index)._decoder
    except ValueError:
        return codecs.VideoDecoder(data, seek_mode="exact", dimension_order="NHWC", stream_index=stream_index)._decoder


def average_rates(data: bytes) -> dict[int, float | None]:
    """{stream index: average frame rate} of the video streams, exactly as ffprobe prints avg_frame_rate and decord's
    get_avg_fps() returns it (FFmpeg's AVStream.avg_frame_rate, unrounded; None where FFmpeg has none). torchcodec
    reports av_guess_frame_rate instead, mostly r_frame_rate: 30 for a variable-rate phone clip averaging 10.7. For mp4
    FFmpeg takes it from the sample table, before the edit list, so a stream-copied cut keeps its source's rate."""
    av = codecs.av  # outside the try: PyAV missing is an installation to fix, not a file without a rate
    try:
        with av.open(io.BytesIO(data)) as container:
            return {stream.index: float(stream.average_rate) if stream.average_rate else None for stream in container.streams.video}
    except Exception:  # PyAV's FFmpeg refuses what torchcodec's opened: no declared rate
        return {}


def _container_info(data: bytes) -> dict:
    """Container and per-stream metadata from the headers; DecodeFailure(not_media) if ffmpeg cannot open it."""
    try:
        try:
            decoder = _video_decoder(data)
        except Exception as exc:
            if "no valid stream" not in str(exc).lower() and "best video stream is unknown" not in str(exc).lower():
                raise
            decoder = codecs.AudioDecoder(data)._decoder  # no video stream: the container's metadata comes through its audio
        container = codecs.core.get_container_metadata(decoder)
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError for unreadable input
        container = sniff_container(data)
        if container != "unknown":  # a known container that does not open: cut short or corrupt
            raise DecodeFailure("decode_error", f"the {container} file cannot be read, truncated or corrupt ({_reason(exc)})") from exc
        raise DecodeFailure("not_media", _looks_like_text(data) or f"ffmpeg cannot read it as media ({_reason(exc)})") from exc
    video, audio, subtitles = [], [], []
    rates = average_rates(data) if any(isinstance(s, codecs.core.VideoStreamMetadata) for s in container.streams) else {}
    for stream in container.streams:
        if isinstance(stream, codecs.core.VideoStreamMetadata):
            # fps, num_frames, duration_s and first_frame_s are measured when the stream is decoded (null for the others)
            video.append({"index": stream.stream_index, "codec": stream.codec, "width": stream.width, "height": stream.height,
                          "fps": None, "fps_header": rates.get(stream.stream_index), "num_frames": None,
                          "num_frames_header": stream.num_frames_from_header, "duration_s": None,
                          "duration_s_header": _seconds(stream.duration_seconds_from_header),
                          "start_s": _seconds(stream.begin_stream_seconds_from_header), "first_frame_s": None,
                          "color_space": stream.color_space})
        elif isinstance(stream, codecs.core.AudioStreamMetadata):
            audio.append({"index": stream.stream_index, "codec": stream.codec, "sample_rate": stream.sample_rate,
                          "channels": stream.num_channels, "start_s": _seconds(stream.begin_stream_seconds_from_header),
                          "duration_s_header": _seconds(stream.duration_seconds_from_header)})
        elif getattr(stream, "media_type", None) == "subtitle":
            subtitles.append({"index": stream.stream_index, "codec": stream.codec})
    if not video and not audio:
        raise DecodeFailure("not_media", "the file has neither a video nor an audio stream")
    kind = sniff_container(data)
    return {"container": kind, "still_image": kind in IMAGE_CONTAINERS, "duration_s": _seconds(container.duration_seconds_from_header),
            "bit_rate": container.bit_rate_from_header, "video_streams": video, "audio_streams": audio,
            "subtitle_streams": subtitles, "video_stream_index": container.best_video_stream_index,
            "audio_stream_index": ffmpeg_default_audio(audio)}


def ffmpeg_default_audio(streams: list[dict]) -> int | None:
    """The audio stream ffmpeg's command line keeps by default, which the authors' loaders read (librosa through
    ffmpeg, Synchformer's ffmpeg re-encode). fftools maps the default-flagged stream with the most channels; muxers
    flag the first stream of each kind, and torchcodec does not show the flag, so: the first audio stream (ffmpeg's
    pick whenever no later default stream has more channels). torchcodec's own choice (av_find_best_stream) goes by
    bit rate and can differ: NASA's clip of two stereo streams, 8 and 16 kHz, ffmpeg reads the first."""
    return streams[0]["index"] if streams else None


@dataclass
class _Timeline:
    """Where the video stream's frames are, before decoding them: from a scan of its packets, else its headers."""

    begin: float
    end: float
    count: int | None
    exact: bool

    @classmethod
    def of(cls, data: bytes, stream: dict, container_duration: float | None) -> "_Timeline":
        try:  # the exact mode reads every packet's timestamp (no decoding)
            meta = codecs.VideoDecoder(data, seek_mode="exact", stream_index=stream["index"]).metadata
            begin, end = meta.begin_stream_seconds_from_content, meta.end_stream_seconds_from_content
            scanned = int(meta.num_frames_from_content) if meta.num_frames_from_content else None
            if begin is not None and end is not None and end > begin > _NO_PTS and scanned:
                return cls(float(begin), float(end), scanned, True)
        except Exception:  # some valid files refuse the scan's seek (negative start times): fall back to the headers
            scanned = None
        # packets without timestamps (a copy cut's pre-roll): the scan still counts them; the span comes from the headers
        begin = stream["start_s"] or 0.0
        duration = stream["duration_s_header"] or container_duration
        count = scanned or stream["num_frames_header"]
        if not duration and count and stream["fps_header"]:
            duration = count / stream["fps_header"]
        if not count and duration and stream["fps_header"]:
            count = int(round(duration * stream["fps_header"]))
        return cls(begin, begin + (duration or 0.0), count or None, False)


class _ViewFrames:
    """The frames one view selects during the sequential pass, resized as they arrive."""

    def __init__(self, spec: MediaSpec, timeline: _Timeline, height: int, width: int, max_decoded_bytes: int,
                 origin: float = 0.0, declared_fps: float | None = None):
        self.spec = spec
        self.height, self.width = _target_size(spec, height, width)
        self.crop = (spec.crop, spec.crop) if spec.crop else None
        self.times: list[float] = []  # wanted presentation times (time-based views)
        self.indices: list[int] = []  # wanted frame indices (index-based views)
        duration = timeline.end - timeline.begin
        if spec.every_frame:
            self.indices = list(range(spec.max_frames if timeline.count is None else min(spec.max_frames, timeline.count)))
        elif spec.sampling in ("linspace", "segments") and spec.num_frames > 0:
            if not timeline.count:
                raise DecodeFailure("decode_error", "the video stream's frame count is unknown")
            self.indices = sample_indices(spec.sampling, timeline.count, spec.num_frames)
        elif spec.sampling == "rule":
            if not timeline.count:
                raise DecodeFailure("decode_error", "the video stream's frame count is unknown")
            try:
                self.indices = sorted(int(i) for i in spec.index_rule(timeline.count, declared_fps))
            except Exception as exc:  # the rule is a checkpoint's code: a clip it refuses is that clip's error
                raise DecodeFailure("decode_error", f"no frames to sample from {timeline.count} at {declared_fps} fps: "
                                    f"{_reason(exc)}") from exc
        elif spec.sampling == "rate":
            # ffmpeg's fps filter: a frame at pts p fills slot round(p * fps) (halves up) and each slot shows the
            # last frame of a slot at or before it, i.e. the last frame with p < (slot + 0.5) / fps
            start = first_slot_time(origin, timeline.begin, spec.fps)
            slots = math.floor((timeline.end - origin) * spec.fps + 0.5) - round((start - origin) * spec.fps)  # to the end's slot
            count = min(spec.max_frames, max(1, slots))
            self.times = [start + (i + 0.5) / spec.fps - 1e-7 for i in range(count)]
        else:
            if duration <= 0:
                raise DecodeFailure("decode_error", "the video stream has no duration (no decodable frames)")
            count = spec.num_frames or min(spec.max_frames, max(1, int(duration * spec.fps)))
            step = duration / count
            self.times = [timeline.begin + (i + 0.5) * step for i in range(count)]
        count = len(self.times) + len(self.indices)
        decoded_bytes = count * (spec.crop ** 2 if spec.crop else self.height * self.width) * 3
        if decoded_bytes > max_decoded_bytes:
            raise DecodeFailure("too_large", f"{count} frames of {self.width}x{self.height} would take "
                                f"{decoded_bytes / 2**30:.1f} GiB (limit {max_decoded_bytes / 2**30:.1f} GiB, max_decoded_gb)")
        self.frames: list[torch.Tensor] = []
        self.frame_times: list[float] = []
        self.frame_indices: list[int] = []
        self._next_time = self._next_index = 0

    def offer(self, index: int, pts: float, next_pts: float | None, frame: torch.Tensor, cache: dict) -> None:
        """The frame shown from `pts` until `next_pts` (None: the last frame)."""
        copies = 0
        while self._next_time < len(self.times) and (next_pts is None or self.times[self._next_time] < next_pts):
            copies, self._next_time = copies + 1, self._next_time + 1
        # past the end, the frames an index-based sample still wants are the last one (the count was an estimate);
        # a view of every frame simply has fewer
        fill = next_pts is None and not self.spec.every_frame
        while self._next_index < len(self.indices) and (self.indices[self._next_index] <= index or fill):
            copies, self._next_index = copies + 1, self._next_index + 1
        if copies:
            key = (self.height, self.width, self.spec.resample, self.crop)
            if key not in cache:
                cache[key] = _centre_crop(_resize(frame, self.height, self.width, self.spec.resample), self.crop)
            self.frames += [cache[key]] * copies
            self.frame_times += [round(pts, 4)] * copies
            self.frame_indices += [index] * copies

    @property
    def satisfied(self) -> bool:
        return self._next_time >= len(self.times) and self._next_index >= len(self.indices)

    def result(self) -> tuple[np.ndarray, list[float], list[int]]:
        return torch.stack(self.frames).numpy(), self.frame_times, self.frame_indices

    def finish(self) -> None:
        """Past the last frame: a view of every frame wants no more."""
        if self.spec.every_frame:
            self._next_index = len(self.indices)


def time_origin(info: dict) -> float:
    """Where ffmpeg's command line puts time 0: the earliest stream start (it shifts every stream by it)."""
    starts = [s["start_s"] for s in info.get("video_streams", []) + info.get("audio_streams", []) if s.get("start_s") is not None]
    return min(starts) if starts else 0.0


def first_slot_time(origin: float, first_frame: float, fps: float) -> float:
    """When the fps filter's first output frame is shown: the slot of the first frame, counted from `origin`."""
    return origin + math.floor((first_frame - origin) * fps + 0.5) / fps


def sample_indices(rule: str, total: int, count: int) -> list[int]:
    """Frame indices of `count` frames out of `total` by an index rule (see MediaSpec.sampling)."""
    if rule == "linspace":  # LLaVA-Video's load_video(force_sample=True)
        return [int(i) for i in np.linspace(0, total - 1, count)]
    segment = (total - 1) / count  # InternVL's get_index without bounds: from frame 0 to the last, max_frame = total - 1
    return [int(segment / 2 + np.round(segment * i)) for i in range(count)]


def _target_size(spec: MediaSpec, height: int, width: int) -> tuple[int, int]:
    if spec.size:
        return spec.size
    if spec.short_side and spec.exact_short_side:
        def scaled(side: int) -> int:
            return max(2, int(side * spec.short_side / min(height, width)) // 2 * 2)
        return (spec.short_side, scaled(width)) if height <= width else (scaled(height), spec.short_side)
    if spec.short_side and min(height, width) > spec.short_side:
        scale = spec.short_side / min(height, width)
        return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)
    return height, width


def _centre_crop(frame: torch.Tensor, crop: tuple[int, int] | None) -> torch.Tensor:
    """The centre (height, width) of [H, W, 3], offsets rounded as Synchformer's RGBSpatialCrop rounds them."""
    if crop is None:
        return frame
    top, left = int(round((frame.shape[0] - crop[0]) / 2.0)), int(round((frame.shape[1] - crop[1]) / 2.0))
    return frame[top:top + crop[0], left:left + crop[1]].contiguous()


def _resize(frame: torch.Tensor, height: int, width: int, resample: str) -> torch.Tensor:
    """uint8 [H, W, 3] -> [height, width, 3], antialiased (torch's uint8 kernels; bicubic is PIL's to one level)."""
    if frame.shape[0] == height and frame.shape[1] == width:
        return frame.clone()
    resized = F.interpolate(frame.permute(2, 0, 1)[None], size=(height, width), mode=resample, antialias=True)
    return resized[0].permute(1, 2, 0).contiguous()


def _yuv_to_rgb(kr: float, kb: float) -> np.ndarray:
    """The matrix from (Y, Cb, Cr), each scaled to its range, to (R, G, B) for luma weights kr, kb."""
    kg = 1 - kr - kb
    return np.array([[1, 0, 2 * (1 - kr)], [1, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg], [1, 2 * (1 - kb), 0]])


# RGB converted with BT.709's matrix -> the same pixels converted with BT.601's (both share the range scaling)
_BT709_TO_BT601 = _yuv_to_rgb(0.299, 0.114) @ np.linalg.inv(_yuv_to_rgb(0.2126, 0.0722))


def as_bt601(frames: np.ndarray, color_space: str | None) -> np.ndarray:
    """uint8 RGB frames as a decoder that always converts with BT.601 gives them (PyAV's `to_rgb()`, under
    torchvision's `read_video`): ffmpeg converts a stream tagged BT.709 with BT.709; other tags are left as they are."""
    if color_space != "bt709":
        return frames
    converted = np.asarray(frames, dtype=np.float32) @ _BT709_TO_BT601.T.astype(np.float32)
    return np.clip(np.rint(converted), 0, 255).astype(np.uint8)


_NO_PTS = -1e12  # ffmpeg's "no timestamp" arrives as about -9.2e15 s
MAX_UNTIMED_FRAMES = 600  # pre-roll frames kept while waiting for the first timed one (a GOP is rarely longer)


def _decode_video(data: bytes, info: dict, specs: list[MediaSpec], max_decoded_bytes: int) -> dict:
    """{spec: (frames, times, indices) or DecodeFailure} from one sequential pass over the video stream."""
    stream = next(s for s in info["video_streams"] if s["index"] == info["video_stream_index"])
    timeline = _Timeline.of(data, stream, info["duration_s"])
    views, outcome = {}, {}
    for spec in specs:
        try:
            views[spec] = _ViewFrames(spec, timeline, stream["height"], stream["width"], max_decoded_bytes, time_origin(info),
                                      stream["fps_header"])  # the declared rate: the measured one comes after the pass
        except DecodeFailure as exc:
            outcome[spec] = exc
    try:
        decoder = _video_decoder(data, stream["index"])
    except Exception as exc:
        raise DecodeFailure("decode_error", f"the video stream cannot be opened: {_reason(exc)}") from exc

    if not views:
        return outcome
    index, pending, last_pts, first_pts, step = 0, None, None, None, 1.0 / (stream["fps_header"] or 25.0)
    untimed: list = []  # frames before the first timed one (a copy cut's pre-roll, its timestamps lost)
    reached_end = False
    while not all(view.satisfied for view in views.values()):
        try:
            frame, pts, _ = codecs.core.get_next_frame(decoder)
        except (IndexError, StopIteration):
            reached_end = True
            break
        except RuntimeError as exc:
            if "no more frames" in str(exc):
                reached_end = True
                break
            raise DecodeFailure("decode_error", f"frames could not be decoded: {_reason(exc)}") from exc
        pts = float(pts)
        if pts < _NO_PTS:
            if last_pts is None:
                if len(untimed) < MAX_UNTIMED_FRAMES:
                    untimed.append(frame)
                continue
            pts = last_pts + step
        timed = [(early, pts - (len(untimed) - k) * step) for k, early in enumerate(untimed)] + [(frame, pts)]
        untimed = []
        # ffmpeg keeps the pre-roll (its frame count includes it): placed one nominal step apart before the first
        # timed frame; a timestamp out of order is moved just past the one before it, never dropped
        for frame, pts in timed:
            pts = pts if last_pts is None else max(pts, last_pts + 1e-6)
            first_pts = pts if first_pts is None else first_pts
            if pending is not None:
                cache = {}
                for view in views.values():
                    view.offer(index - 1, pending[1], pts, pending[0], cache)
            pending, last_pts, index = (frame, pts), pts, index + 1
    if pending is None:
        raise DecodeFailure("decode_error", "the video stream has no decodable frames")
    cache = {}
    for view in views.values():
        if not view.satisfied:
            view.offer(index - 1, pending[1], None, pending[0], cache)
        view.finish()
    for spec, view in views.items():
        outcome[spec] = view.result()
    # measured from the stream itself: frames and duration from the packet scan (or from the pass when it saw
    # every frame), the rate from the spacing of the frames decoded (a header's nominal rate can be far off)
    spacing = (last_pts - first_pts) / (index - 1) if index > 1 and last_pts > first_pts else None
    if timeline.exact:
        count, duration = timeline.count, timeline.end - timeline.begin
    elif reached_end and spacing:
        count, duration = index, spacing * index
    else:
        count, duration = timeline.count, None
    stream.update(num_frames=count, first_frame_s=round(first_pts, 6), duration_s=_seconds(duration),
                  fps=round(1 / spacing, 3) if spacing else stream["fps_header"])
    if info.get("still_image"):  # a picture has no rate and no length: FFmpeg's 25 fps and 0.04 s are its defaults
        stream.update(fps=None, fps_header=None, duration_s=None, duration_s_header=None)
    return outcome


# what soundfile 0.11 (libsndfile 1.0.31) reads itself; librosa 0.9.2 hands everything else to audioread (ffmpeg, s16le)
SOUNDFILE_CONTAINERS = ("wav", "flac", "ogg")


def _all_samples(decoder):
    """Every sample of the stream, sound before time 0 included (a negative-timestamp mkv, a codec's pre-roll kept by
    the muxer): the ffmpeg command line the authors' loaders read through (librosa's audioread, Synchformer's
    re-encode) writes all of them, while torchcodec's get_all_samples starts at 0."""
    start = decoder.metadata.begin_stream_seconds_from_header
    if start is not None and start < 0:
        return decoder.get_samples_played_in_range(start_seconds=start - 1.0)
    return decoder.get_all_samples()


def _decode_audio(data: bytes, info: dict, sample_rate: int, resampler: str = "ffmpeg") -> tuple[np.ndarray, float]:
    """(mean of the channels at `sample_rate`, time of the first sample)."""
    if resampler == "ffmpeg":
        samples = _all_samples(codecs.AudioDecoder(data, stream_index=info["audio_stream_index"], sample_rate=sample_rate))
        return samples.data.mean(dim=0).numpy().astype(np.float32), float(samples.pts_seconds)
    samples = _all_samples(codecs.AudioDecoder(data, stream_index=info["audio_stream_index"]))  # at the file's own rate
    sound = samples.data.numpy().astype(np.float32)
    if info.get("container") not in SOUNDFILE_CONTAINERS:  # audioread's ffmpeg output: 16-bit, as ffmpeg rounds to it
        sound = np.clip(np.rint(sound * 32768.0), -32768, 32767).astype(np.float32) / 32768.0
    return librosa_resample(sound.mean(axis=0), samples.sample_rate, sample_rate), float(samples.pts_seconds)


def librosa_resample(sound: np.ndarray, rate: int, target: int) -> np.ndarray:
    """librosa 0.9.2's resample(res_type='kaiser_best'): resampy's kaiser_best filter, then the length fixed to
    ceil(n x target / rate); nothing done at the same rate."""
    if rate == target:
        return sound.astype(np.float32)
    import resampy

    resampled = resampy.resample(sound, rate, target, filter="kaiser_best", axis=-1)
    length = int(np.ceil(len(sound) * target / rate))
    resampled = np.pad(resampled, (0, max(0, length - len(resampled))))[:length]
    return resampled.astype(np.float32)


def decode_views(data: bytes, specs: list[MediaSpec], max_decoded_bytes: int = 4 << 30) -> dict:
    """{spec: Media or DecodeFailure} for every view, from one opening of the clip.

    A clip that cannot be opened raises DecodeFailure (every view fails). A view that needs video
    fails alone when the video does not decode; audio that does not decode is `Media.audio_error`,
    for the heads that need it to report.
    """
    if not data:
        raise DecodeFailure("empty_file", "the file is empty (0 bytes)")
    refused = refuse_early(data[:SNIFF_BYTES])
    if refused:
        raise DecodeFailure("not_media", refused)
    specs = list(dict.fromkeys(specs))
    info = _container_info(data)
    video_specs = [s for s in specs if s.wants_video]
    frames: dict = {}
    if video_specs:
        if info["video_stream_index"] is None:
            frames = {s: DecodeFailure("no_video_stream", "the file has no video stream") for s in video_specs}
        else:
            try:
                frames = _decode_video(data, info, video_specs, max_decoded_bytes)
            except DecodeFailure as exc:
                frames = {s: exc for s in video_specs}
    audio: dict = {}
    for rate, resampler in sorted({(s.sample_rate, s.audio_resampler) for s in specs if s.audio}):
        if info["audio_stream_index"] is None:
            audio[rate, resampler] = (None, None, None)
            continue
        try:
            samples, start = _decode_audio(data, info, rate, resampler)
            audio[rate, resampler] = (samples, start, None)
        except Exception as exc:
            audio[rate, resampler] = (None, None, ("audio_decode_error", f"the audio stream could not be decoded: {_reason(exc)}"))

    ends = [s["first_frame_s"] + s["duration_s"] for s in info["video_streams"] if s.get("duration_s")]
    ends += [start + len(samples) / rate for (rate, _), (samples, start, _) in audio.items() if samples is not None]
    starts = [s["first_frame_s"] for s in info["video_streams"] if s.get("first_frame_s") is not None]
    starts += [start for samples, start, _ in audio.values() if start is not None]
    info["duration_s_measured"] = round(max(ends) - min(starts), 6) if ends and starts else None

    out = {}
    for spec in specs:
        picked = frames.get(spec)
        if isinstance(picked, DecodeFailure):
            out[spec] = picked
            continue
        media = Media(info=info)
        if picked is not None:
            media.frames, media.frame_times, media.frame_indices = picked
        if spec.audio:
            media.audio, media.audio_start, media.audio_error = audio[spec.sample_rate, spec.audio_resampler]
            media.sample_rate = spec.sample_rate
        out[spec] = media
    return out


def decode_media(data: bytes, spec: MediaSpec, max_decoded_bytes: int = 4 << 30) -> Media:
    """One view of one clip; raises DecodeFailure with a readable message."""
    media = decode_views(data, [spec], max_decoded_bytes)[spec]
    if isinstance(media, DecodeFailure):
        raise media
    return media


# ---------------------------------------------------------------------------- watchdog


class DecodeWatchdog:
    """Runs `decode(data, specs)` in a forked child with a time limit and an address-space limit.

    A DataLoader worker is a daemon process and may not start `multiprocessing` children, so the
    child is a plain fork. It is started lazily, kept for the next clips, and replaced after a
    timeout or a crash. `timeout_s <= 0` decodes in-process without a watchdog.
    """

    def __init__(self, decode: Callable, timeout_s: float, memory_limit_bytes: int = 0):
        self.decode = decode
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self._pid: int | None = None
        self._conn = None

    def __call__(self, data: bytes, specs):
        if self.timeout_s <= 0:
            return self.decode(data, specs)
        if self._pid is None:
            self._start()
        try:
            self._conn.send_bytes(pickle.dumps(specs))
            self._conn.send_bytes(data)  # as is: pickling it would copy the clip once more
            ready = self._conn.poll(self.timeout_s)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            ready = True  # the child is gone; recv below reports it
        if not ready:
            self.close()
            raise DecodeFailure("decode_timeout", f"decoding took longer than {self.timeout_s:g}s (decode_timeout); abandoned")
        try:
            status, payload = pickle.loads(self._conn.recv_bytes())
        except (EOFError, OSError):
            self.close()
            raise DecodeFailure("decoder_crashed", "the decoder process died (killed for memory, or a crash in ffmpeg)") from None
        if status == "error":
            raise DecodeFailure(*payload)
        return payload

    def _start(self) -> None:
        codecs.core  # loaded here, before the fork (see _Codecs)
        parent_end, child_end = Pipe(duplex=True)
        pid = os.fork()
        if pid == 0:  # child: serve decodes until the parent goes away
            code = 0
            try:
                parent_end.close()
                _serve_decodes(child_end, self.decode, self.memory_limit_bytes)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        child_end.close()
        self._pid, self._conn = pid, parent_end

    def close(self) -> None:
        if self._pid is None:
            return
        try:
            os.kill(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass
        self._conn.close()
        self._pid, self._conn = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def die_with_parent(_worker_id: int | None = None) -> None:
    """Have the kernel kill this process when its parent dies (Linux). A DataLoader worker or a
    decode child left behind by a killed rank holds that rank's sockets, and a restarted job can
    connect to them and wait for ever."""
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _serve_decodes(conn, decode, memory_limit_bytes: int) -> None:
    die_with_parent()
    torch.set_num_threads(1)  # the parent's thread pools did not survive the fork
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # drop wrappers (loggers) installed in the parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_limit_bytes > 0:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = _address_space_bytes() + memory_limit_bytes
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    while True:
        try:
            specs = pickle.loads(conn.recv_bytes())
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            reply = ("ok", decode(data, specs))
        except DecodeFailure as exc:
            reply = ("error", (exc.error_type, exc.message))
        except MemoryError:
            reply = ("error", ("too_large", "decoding ran out of the memory allowed to it (decode_memory_gb)"))
        except Exception as exc:
            reply = ("error", ("decode_error", f"{type(exc).__name__}: {str(exc)[:300]}"))
        del data
        conn.send_bytes(pickle.dumps(reply, protocol=5))


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
