"""`python -m extract.bench export`: peak memory of `extract.export` against the size of the run."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from extract.bench.fake_run import write_fake_run


def bench_export(args) -> None:
    """Peak memory of `extract.export` against the size of the run: it reads one shard of every head at a time."""
    import subprocess
    import sys

    print(f"# extract.bench export: probe + av_sync records, {args.per_shard} clips a shard, Parquet; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>8}  {'shards':>6}  {'output':>9}  {'table':>8}  {'export s':>8}  {'peak memory':>11}")
    for clips in [int(c) for c in args.clips.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "out"
            write_fake_run(folder, clips, args.per_shard)
            size = sum(p.stat().st_size for p in folder.rglob("*.tar"))
            measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "extract.export", str(folder)],
                                    capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - started
            peak = int(result.stdout.split()[-1]) * 1024
            table = (folder / "clips.parquet").stat().st_size
            print(f"{clips:>8}  {-(-clips // args.per_shard):>6}  {size / 2**20:>6.0f} MiB  {table / 2**20:>5.1f} MiB  "
                  f"{elapsed:>8.1f}  {peak / 2**20:>7.0f} MiB")


def add_arguments(parser) -> None:
    parser.add_argument("--clips", default="20000,200000")
    parser.add_argument("--per-shard", type=int, default=2000)
