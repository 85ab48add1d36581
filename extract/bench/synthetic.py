"""Synthetic clips made with ffmpeg, for the tests, the benchmarks and the bundled sample."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

def lavfi_clip(seconds: float = 1.0, pattern: str = "testsrc", size: str = "96x64", rate: int = 12,
               tone: int | None = 440, fmt: str = "mp4", preset: str = "ultrafast") -> bytes:
    """A test-pattern clip with a sine tone (`tone=None`: no audio stream), as bytes."""
    source = f"{pattern}{':' if '=' in pattern else '='}size={size}:rate={rate}:duration={seconds}"
    inputs = ["-f", "lavfi", "-i", source]
    if tone is not None:
        inputs += ["-f", "lavfi", "-i", f"sine=frequency={tone}:duration={seconds}", "-shortest", "-c:a", "aac"]
    muxer = ["-movflags", "+frag_keyframe+empty_moov", "-f", "mp4"] if fmt == "mp4" else ["-f", fmt]
    codec = ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p"] if fmt in ("mp4", "matroska") else []
    command = ["ffmpeg", "-loglevel", "error", *inputs, *codec, *muxer, "pipe:1"]
    return subprocess.run(command, check=True, capture_output=True).stdout


# white flashes and audio clicks at known times, for the av_sync head
FLASH_TIMES = (0.9, 2.3, 3.1, 4.6)  # irregular, so no lag but the true one lines them all up


def flash_click_clip(fps: float, offset: float, seconds: float = 6.0, noise_db: float = -40.0, seed: int = 0,
                     flashes: bool = True, clicks: bool = True, audio_delay: float = 0.0) -> bytes:
    """A Matroska clip (h264 + PCM) whose clicks come `offset` seconds after its flashes in the content; with
    `audio_delay`, the audio stream also starts that late in the container (ffmpeg's -itsoffset)."""
    rng = np.random.default_rng(seed)
    count = int(round(seconds * fps))
    frames = np.clip(rng.normal(40, 3, size=(count, 48, 64)), 0, 255).astype(np.uint8)
    flash_frames = [int(round(t * fps)) for t in FLASH_TIMES]
    if flashes:
        for k in flash_frames:
            frames[k] = 230
    rate = 16000
    audio = rng.normal(0, 10 ** (noise_db / 20), size=int(seconds * rate)).astype(np.float32)
    if clicks:
        for k in flash_frames:
            start = int(round((k / fps + offset) * rate))
            audio[start : start + 80] += rng.uniform(-0.8, 0.8, size=len(audio[start : start + 80]))
    with tempfile.TemporaryDirectory() as tmp:
        audio_path = Path(tmp) / "audio.f32"
        audio_path.write_bytes(audio.tobytes())
        command = ["ffmpeg", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "64x48", "-r", str(fps),
                   "-i", "pipe:0", "-itsoffset", str(audio_delay), "-f", "f32le", "-ar", str(rate), "-ac", "1", "-i", str(audio_path),
                   "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le",
                   "-f", "matroska", "pipe:1"]
        return subprocess.run(command, input=frames.tobytes(), check=True, capture_output=True).stdout
