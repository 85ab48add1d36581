"""Decoding clip bytes with torchcodec, bounded in time and memory.

`decode_media` turns the bytes of one clip into what a head asked for (a `MediaSpec`).
`DecodeWatchdog` runs it in a forked child process so that a decode that hangs inside ffmpeg, or
blows up in memory, can be killed and reported as one clip's error while the worker goes on.
"""

from __future__ import annotations

import ctypes
import math
import os
import pickle
import re
import resource
import signal
import sys
from dataclasses import dataclass, field
from multiprocessing.connection import Pipe
from typing import Callable

import numpy as np
# imported here, not lazily in the decode child: an import there would run hooks (W&B's) forked from the parent
from torchcodec._core import get_container_metadata
from torchcodec.decoders import AudioDecoder, VideoDecoder
from torchcodec.transforms import Resize


@dataclass(frozen=True)
class MediaSpec:
    """What a head needs decoded for each clip."""

    num_frames: int = 0  # N frames sampled uniformly over the clip...
    fps: float = 0.0  # ...or frames at this rate (capped at max_frames, then uniform)
    max_frames: int = 256
    every_frame: bool = False  # or every frame at the native rate (the first max_frames of the clip)
    size: tuple[int, int] | None = None  # (height, width) resize done in the decoder
    short_side: int | None = None  # or resize so the short side is this, keeping the aspect
    audio: bool = False  # 16 kHz mono float32 (sample_rate)
    sample_rate: int = 16000

    @property
    def wants_video(self) -> bool:
        return self.num_frames > 0 or self.fps > 0 or self.every_frame


@dataclass
class Media:
    """One decoded clip. Arrays are numpy so they cross process boundaries cheaply."""

    info: dict  # container, duration and per-stream metadata
    frames: np.ndarray | None = None  # uint8 [T, H, W, 3]
    frame_times: list[float] = field(default_factory=list)
    audio: np.ndarray | None = None  # float32 [S], mono
    sample_rate: int = 0

    @property
    def has_audio(self) -> bool:
        return bool(self.info.get("audio_streams"))


class DecodeFailure(Exception):
    """A clip that cannot be decoded; `error_type` is a short stable code for counting."""

    def __init__(self, error_type: str, message: str):
        super().__init__(message)
        self.error_type = error_type


# ---------------------------------------------------------------------------- decoding


def sniff_container(data: bytes) -> str:
    """The container format from its magic bytes (torchcodec does not report it)."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("ascii", "replace").strip()
        return "mov" if brand == "qt" else f"mp4 ({brand})"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in data[:4096] else "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"FLV"):
        return "flv"
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


def _stream_info(stream) -> dict:
    info = {"index": stream.stream_index, "codec": stream.codec}
    if stream.media_type == "video":
        info.update(
            width=stream.width,
            height=stream.height,
            fps=_finite(stream.average_fps_from_header or stream.average_fps),
            num_frames=stream.num_frames,
            duration_s=_finite(stream.duration_seconds),
        )
    elif stream.media_type == "audio":
        info.update(
            sample_rate=stream.sample_rate,
            channels=stream.num_channels,
            duration_s=_finite(stream.duration_seconds),
        )
    return info


def _reason(exc: Exception, limit: int = 200) -> str:
    """ffmpeg's own words from a torchcodec error, without its source-file location."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = re.sub(r"^\w+, \S+\.cpp:\d+, ", "", lines[0]) if lines else type(exc).__name__
    return text[:limit]


def _finite(value) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def sample_times(begin: float, duration: float, spec: MediaSpec) -> list[float]:
    """Presentation times to sample: N uniformly (centre of N equal spans) or at `spec.fps`."""
    if spec.num_frames > 0:
        count = spec.num_frames
    else:
        count = min(spec.max_frames, max(1, int(duration * spec.fps)))
    step = duration / count
    return [begin + (i + 0.5) * step for i in range(count)]


def decode_media(data: bytes, spec: MediaSpec, max_decoded_bytes: int = 4 << 30) -> Media:
    """Decode one clip's bytes; raises DecodeFailure with a readable message."""
    if not data:
        raise DecodeFailure("empty_file", "the file is empty (0 bytes)")
    try:
        # exact mode scans the packets once: it works without a duration in the header (piped mkv)
        probe = VideoDecoder(data, seek_mode="exact", dimension_order="NHWC") if spec.wants_video else None
        container = get_container_metadata(probe._decoder) if probe else None
    except Exception as exc:  # torchcodec raises RuntimeError/ValueError for unreadable input
        if spec.wants_video and any(words in str(exc).lower() for words in ("no valid stream", "best video stream is unknown")):
            raise DecodeFailure("no_video_stream", "the file has no video stream") from exc
        reason = _looks_like_text(data) or f"ffmpeg cannot read it as media ({_reason(exc)})"
        raise DecodeFailure("not_media", reason) from exc

    media = Media(info={})
    if container is not None:
        video_streams = [s for s in container.streams if s.media_type == "video"]
        audio_streams = [s for s in container.streams if s.media_type == "audio"]
        media.info = {
            "container": sniff_container(data),
            "duration_s": _finite(container.duration_seconds_from_header),
            "bit_rate": container.bit_rate_from_header,
            "video_streams": [_stream_info(s) for s in video_streams],
            "audio_streams": [_stream_info(s) for s in audio_streams],
        }

    if spec.wants_video:
        media.frames, media.frame_times, exact_count = _decode_frames(data, probe, spec, max_decoded_bytes)
        media.info["video_stream_index"] = probe.stream_index
        for stream in media.info["video_streams"]:
            if stream["index"] == probe.stream_index:  # the exact decoder's scan counted its frames
                stream["num_frames"] = exact_count

    if spec.audio and (container is None or media.info["audio_streams"]):
        try:
            decoder = AudioDecoder(data, sample_rate=spec.sample_rate, num_channels=1)
            if container is None:
                media.info = {"container": sniff_container(data), "audio_streams": [_stream_info(decoder.metadata)]}
            media.audio = decoder.get_all_samples().data[0].numpy()
            media.sample_rate = spec.sample_rate
        except Exception as exc:
            if container is None and "best audio stream is unknown" in str(exc) and _has_video_stream(data):
                media.info = {"container": sniff_container(data), "audio_streams": []}  # a clip without sound
                return media
            if container is None:
                reason = _looks_like_text(data) or f"ffmpeg cannot read its audio ({_reason(exc)})"
                raise DecodeFailure("not_media", reason) from exc
            raise DecodeFailure("audio_decode_error", f"audio stream could not be decoded: {_reason(exc)}") from exc
    return media


def _has_video_stream(data: bytes) -> bool:
    try:
        VideoDecoder(data, seek_mode="approximate")
        return True
    except Exception:  # not media at all
        return False


def _decode_frames(data, probe, spec, max_decoded_bytes):
    meta = probe.metadata
    height, width = meta.height, meta.width
    if spec.size:
        height, width = spec.size
    elif spec.short_side and min(height, width) > spec.short_side:
        scale = spec.short_side / min(height, width)
        height, width = max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)
    begin = meta.begin_stream_seconds or 0.0
    end = meta.end_stream_seconds_from_content or meta.end_stream_seconds or 0.0
    if not end or end <= begin:
        raise DecodeFailure("decode_error", "the video stream has no duration (no decodable frames)")
    if spec.every_frame:
        count = min(spec.max_frames, probe.metadata.num_frames or 0)
    else:
        times = sample_times(begin, end - begin, spec)
        count = len(times)
    decoded_bytes = count * height * width * 3
    if decoded_bytes > max_decoded_bytes:
        raise DecodeFailure(
            "too_large",
            f"{count} frames of {width}x{height} would take {decoded_bytes / 2**30:.1f} GiB "
            f"(limit {max_decoded_bytes / 2**30:.1f} GiB, max_decoded_gb)",
        )
    try:
        decoder = probe
        if (height, width) != (meta.height, meta.width):
            decoder = VideoDecoder(data, seek_mode="exact", dimension_order="NHWC", transforms=[Resize((height, width))])
        if spec.every_frame:
            batch = decoder.get_frames_in_range(start=0, stop=count)
        else:
            end = decoder.metadata.end_stream_seconds or end
            batch = decoder.get_frames_played_at(seconds=[min(t, end - 1e-6) for t in times])
    except Exception as exc:
        raise DecodeFailure("decode_error", f"frames could not be decoded: {_reason(exc)}") from exc
    return batch.data.numpy(), [round(float(t), 4) for t in batch.pts_seconds], decoder.metadata.num_frames


# ---------------------------------------------------------------------------- watchdog


class DecodeWatchdog:
    """Runs `decode(data, spec)` in a forked child with a time limit and an address-space limit.

    A DataLoader worker is a daemon process and may not start `multiprocessing` children, so the
    child is a plain fork. It is started lazily, kept for the next clips, and replaced after a
    timeout or a crash. `timeout_s <= 0` decodes in-process without a watchdog.
    """

    def __init__(self, decode: Callable[[bytes, MediaSpec], Media], timeout_s: float, memory_limit_bytes: int = 0):
        self.decode = decode
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self._pid: int | None = None
        self._conn = None

    def __call__(self, data: bytes, spec: MediaSpec) -> Media:
        if self.timeout_s <= 0:
            return self.decode(data, spec)
        if self._pid is None:
            self._start()
        try:
            self._conn.send_bytes(pickle.dumps((data, spec), protocol=5))
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
    import torch

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
            data, spec = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            reply = ("ok", decode(data, spec))
        except DecodeFailure as exc:
            reply = ("error", (exc.error_type, str(exc)))
        except MemoryError:
            reply = ("error", ("too_large", "decoding ran out of the memory allowed to it (decode_memory_gb)"))
        except Exception as exc:
            reply = ("error", ("decode_error", f"{type(exc).__name__}: {str(exc)[:300]}"))
        del data
        conn.send_bytes(pickle.dumps(reply, protocol=5))


def _address_space_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
