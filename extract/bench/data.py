"""`python -m extract.bench data`: m extract.bench data [--clips 48] [--shards 4] [--workers 0,1,2]
    python -m extract.bench av_sync
    python -m extract.bench generation [--size full] [--requests 32] [--slots 8] [--cap 1024]
    python -m extract.bench run [--input DIR] [--layers N]
    python -m extract.bench select [--clips 20000,200000]
    python -m extract.bench llava_video [--size full] [--checkpoint DIR] [--frames 64] [--new-tokens 32] [--batches 1,2,4,8,16]
    python -m extract.bench grounding_sam [--size full] [--detector DIR --segmenter DIR] [--batches 1,2,4]
    python -m extract.bench internvl [--size full] [--checkpoint DIR] [--new-tokens 32] [--batches 1,2,4]
    python -m extract.bench audio_caption [--size full|tiny] [--seconds 10] [--caption-tokens 20] [--batches 1,4,16]

`data`: the streaming path (tar.gz -> clip member -> N decoded frames + 16 kHz audio, in DataLoader
workers behind the decode watchdog) against the same decode from bytes already in memory (the
floor for this decoder) and against the naive way (extract the archives to disk, then open each
file), with each worker count.
"""

from __future__ import annotations

import os
import platform
import tarfile
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from extract.bench.common import make_shards
from extract.data import ClipItem, ShardPlan, as_list, make_loader
from extract.decode import Media, MediaSpec, decode_media
from extract.heads import Head
from extract.runner import Limits


SPEC = MediaSpec(num_frames=16, size=(224, 224), audio=True)


LIMITS = Limits(decode_timeout=60, decode_memory_bytes=8 << 30, max_member_bytes=4 << 30, max_decoded_bytes=4 << 30)


class _Decode(torch.utils.data.Dataset):
    """Map-style dataset of clips that are already bytes (or files on disk)."""

    def __init__(self, sources: list):
        self.sources = sources

    def __len__(self):
        return len(self.sources)

    def __getitem__(self, index):
        source = self.sources[index]
        data = Path(source).read_bytes() if isinstance(source, Path) else source
        return decode_media(data, SPEC)


class _DecodeOnly(Head):
    """A head that only asks for the data benchmark's view."""

    name = "decode"

    def __init__(self, spec: MediaSpec):
        self.media_spec = spec


def _count(loader) -> int:
    return sum(1 for batch in loader for item in batch if isinstance(item, Media) or (isinstance(item, ClipItem) and item.media))


def time_streaming(urls, workers: int, limits: Limits = LIMITS) -> tuple[int, float]:
    started = time.perf_counter()
    plan = ShardPlan({url: {"decode": set()} for url in urls})
    count = _count(make_loader(plan, {"decode": _DecodeOnly(SPEC)}, limits, batch_size=4, num_workers=workers))
    return count, time.perf_counter() - started


def time_in_memory(blobs: list[bytes], workers: int) -> tuple[int, float]:
    started = time.perf_counter()
    loader = torch.utils.data.DataLoader(_Decode(blobs), batch_size=4, num_workers=workers, collate_fn=as_list)
    return _count(loader), time.perf_counter() - started


def time_extract_then_open(urls, workers: int, scratch: Path) -> tuple[int, float]:
    started = time.perf_counter()
    target = Path(tempfile.mkdtemp(dir=scratch))
    files = []
    for url in urls:
        with tarfile.open(url) as tar:
            tar.extractall(target, filter="data")
            files += [target / m.name for m in tar.getmembers()]
    loader = torch.utils.data.DataLoader(_Decode(files), batch_size=4, num_workers=workers, collate_fn=as_list)
    return _count(loader), time.perf_counter() - started


def bench_data(args) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        urls = make_shards(scratch, args.clips, args.shards, args.seconds)
        blobs = []
        for url in urls:
            with tarfile.open(url) as tar:
                blobs += [tar.extractfile(m).read() for m in tar.getmembers()]
        decode_media(blobs[0], SPEC)  # load ffmpeg's libraries before timing
        print(f"# extract.bench data: {args.clips} clips of {args.seconds:g}s 640x360 h264+aac in {args.shards} tar.gz shards; "
              f"{SPEC.num_frames} frames at 224x224 + 16 kHz audio per clip")
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
        unguarded = Limits(0, LIMITS.decode_memory_bytes, LIMITS.max_member_bytes, LIMITS.max_decoded_bytes)
        print("# streaming: the real path, behind the decode watchdog; no watchdog: the same with decode_timeout=0")
        print(f"{'workers':>7}  {'in-memory floor':>16}  {'streaming':>10}  {'no watchdog':>11}  {'extract+open':>12}  "
              f"{'stream/floor':>12}  {'stream/extract':>14}")
        for w in workers:
            results = {}
            for name, fn in (("floor", partial(time_in_memory, blobs)), ("stream", partial(time_streaming, urls)),
                             ("unguarded", partial(time_streaming, urls, limits=unguarded)),
                             ("extract", partial(time_extract_then_open, urls, scratch=scratch))):
                count, seconds = fn(w)
                assert count == args.clips, (name, count)
                results[name] = count / seconds
            print(f"{w:>7}  {results['floor']:>12.1f} c/s  {results['stream']:>6.1f} c/s  {results['unguarded']:>7.1f} c/s  "
                  f"{results['extract']:>8.1f} c/s  {results['stream'] / results['floor']:>12.2f}  {results['stream'] / results['extract']:>14.2f}")


def add_arguments(parser) -> None:
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--workers", default="0,1,2")
