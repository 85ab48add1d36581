"""What the benchmarks share: generated shards, in-process runs, the in-memory clip the model benchmarks time,
timers that wait for the device, and the heads built at each size."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import torch

from extract.bench.synthetic import lavfi_clip
from extract.decode import Media, MediaSpec, sample_indices


def make_shards(folder: Path, clips: int, shards: int, seconds: float) -> list[str]:
    patterns = ("testsrc2", "smptebars", "rgbtestsrc", "testsrc")
    distinct = [lavfi_clip(seconds, patterns[i], size="640x360", rate=30, tone=200 + 40 * i, preset="veryfast") for i in range(4)]
    urls = []
    for s in range(shards):
        path = folder / f"bench-{s:03d}.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            for c in range(s, clips, shards):
                data = distinct[c % 4]
                info = tarfile.TarInfo(f"bench.video.{c} ({c}.0-{c + seconds}).mp4")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        urls.append(str(path))
    return urls


def run_heads(heads: dict, urls: list[str], output_dir: Path, workers: int, batch_size: int) -> tuple[float, dict]:
    """(wall seconds, summary of the first head) of one in-process run of these heads over these shards."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from extract.cli import CONF
    from extract.runner import run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"output_dir={output_dir}", f"num_workers={workers}",
                                                       f"batch_size={batch_size}", "wandb.mode=disabled"])
    with open_dict(cfg):
        cfg.shards = urls
        cfg.model = heads
    started = time.perf_counter()
    summary = run(cfg)
    return time.perf_counter() - started, summary if "this_run" in summary else next(iter(summary.values()))


def captioning_head(name: str, args, folder: str, device: torch.device, full_model, full_description: str, save_tiny,
                     tiny_description: str | None, **options):
    """(head, what it runs): the given checkpoint, a full-size random model attached, or a tiny one saved in `folder`."""
    from extract.heads import build

    size = "checkpoint" if args.checkpoint else getattr(args, "size", "full")
    head = build(name, {"checkpoint": args.checkpoint or (folder if size == "tiny" else "random weights"), **options})
    if size == "full":
        head.attach(*full_model(), device)
        return head, full_description + cut_note(args.layers)
    if size == "tiny":
        save_tiny(folder)
    head.open(device)
    head.load(device)
    return head, args.checkpoint or tiny_description


def cut_note(layers: int | None) -> str:
    return f", CUT to {layers} layers (a check of the path, not a benchmark)" if layers else ""


def moving_pattern(spec: MediaSpec, seconds: float, height: int = 360, width: int = 640, fps: float = 30.0) -> Media:
    """What the decoder would hand a head for a `seconds`-long 640x360 clip at 30 fps with a 440 Hz tone, made
    in memory: the model benchmarks time the model step, whose cost does not depend on the pictures,
    and they need no ffmpeg on the GPU machine."""
    if spec.size:
        height, width = spec.size
    elif spec.crop:
        height = width = spec.crop
    elif spec.short_side and min(height, width) > spec.short_side:
        scale = spec.short_side / min(height, width)
        height, width = round(height * scale / 2) * 2, round(width * scale / 2) * 2
    total = int(fps * seconds)
    if not spec.wants_video:
        indices = []
    elif spec.every_frame:
        indices = list(range(min(spec.max_frames, total)))
    elif spec.sampling == "rule":
        indices = [int(i) for i in spec.index_rule(total, fps)]
    elif spec.sampling != "centres" and spec.num_frames:
        indices = sample_indices(spec.sampling, total, spec.num_frames)
    else:
        count = spec.num_frames or min(spec.max_frames, max(1, int(seconds * spec.fps)))
        indices = [int((i + 0.5) * total / count) for i in range(count)]
    rows, columns = np.mgrid[0:height, 0:width]
    frames = np.stack([np.stack([(columns + 8 * i) % 256, (rows + 4 * i) % 256, (rows + columns) % 256], axis=-1)
                       for i in indices]).astype(np.uint8) if indices else None
    audio = None
    if spec.audio:
        audio = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * spec.sample_rate)) / spec.sample_rate)).astype(np.float32)
    info = {"container": "mp4 (isom)", "duration_s": seconds, "video_stream_index": 0, "audio_stream_index": 1,
            "video_streams": [{"index": 0, "codec": "h264", "width": width, "height": height, "fps": fps, "fps_header": fps,
                               "num_frames": total, "duration_s": seconds}],
            "audio_streams": [{"index": 1, "codec": "aac", "sample_rate": 44100, "channels": 1}]}
    return Media(info=info, frames=frames, frame_times=[round(i / fps, 4) for i in indices], frame_indices=indices, audio=audio,
                 sample_rate=spec.sample_rate if spec.audio else 0)


def time_keyframes(head, device: torch.device, batches: str) -> dict[int, float]:
    """Print keyframes/s and peak memory of the head's model step on batches of the same clip, and the CPU time
    of its `prepare` per clip (a worker's share, off the model's path); return keyframes/s per batch."""
    from extract.heads import Clip

    media = moving_pattern(head.media_spec, seconds=4.0)
    print(f"{'clips':>5}  {'keyframes/s':>11}  {'peak memory':>11}  {'prepare ms/clip':>15}")
    rates = {}
    for batch in [int(b) for b in batches.split(",")]:
        clips = [Clip(f"k{i}", "v", 0.0, 4.0, media) for i in range(batch)]
        try:
            elapsed, prepare = time_infer(head, clips, device)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"{batch:>5}  out of memory")
            continue
        rates[batch] = batch * head.media_spec.num_frames / elapsed
        print(f"{batch:>5}  {rates[batch]:>11.1f}  {peak_memory(device) / 2**30:>9.2f} GiB  {1000 * prepare / batch:>15.0f}")
    return rates


def time_infer(head, clips: list, device: torch.device) -> tuple[float, float]:
    """(seconds for one `head.infer(clips)` after a warm-up call, seconds of `head.prepare` for the clips): the model
    step gets its clips prepared, as the workers prepare them."""
    started = time.perf_counter()
    for clip in clips:
        clip.prepared = head.prepare(clip)
    prepare = time.perf_counter() - started
    with torch.inference_mode():
        head.infer(clips)
        sync(device)
        started = time.perf_counter()
        head.infer(clips)
        sync(device)
        return time.perf_counter() - started, prepare


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def timed(function, device: torch.device, **kwargs) -> float:
    sync(device)
    started = time.perf_counter()
    function(**kwargs)
    sync(device)
    return time.perf_counter() - started


def print_best_clips_per_hour(clips_per_hour: dict[tuple[str, int], float]) -> None:
    """The best clips/hour of each generation path over the batch sizes, and their ratio: {(engine, batch): rate}."""
    best = {engine: max((v for (e, _), v in clips_per_hour.items() if e == engine), default=None) for engine in ("generate", "continuous")}
    if all(best.values()):
        print(f"best clips/hour: engine {best['continuous']:.0f} against generate {best['generate']:.0f} "
              f"({best['continuous'] / best['generate']:.2f} times)")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"


def peak_memory(device: torch.device) -> int:
    import resource

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_size_arguments(parser, preset: bool = False) -> None:
    """The options the model benchmarks share: batch sizes, and which model (tiny, full-size random, a checkpoint)."""
    if preset:
        parser.add_argument("--preset", choices=("authors", "fast"), default="authors")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny",
                        help="tiny: a tiny random checkpoint (or the given one); full: the real architecture with "
                             "random weights built on the device")
    parser.add_argument("--layers", type=int, help="with --size full: cut the depth, for a quick check on a small machine")
