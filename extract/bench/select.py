"""`python -m extract.bench select`: extract.select choosing half of a run's clips, against the query alone and a
pass that only reads the input shards."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from extract.bench.fake_run import write_fake_run


def bench_select(args) -> None:
    """extract.select choosing half of a run's clips: clips/s and peak memory, against the query alone and against a
    pass that only reads the input shards (what select cannot do without)."""
    import subprocess
    import sys

    import duckdb

    from extract.data import ClipItem, ShardPlan, read_members
    from extract.export import export, head_folders, shard_records, shard_stems

    where = '"probe.stats.mean_luma" < 127.5'  # about half: the luma is uniform over 0 to 255
    print(f"# extract.bench select: probe + av_sync records, {args.per_shard} clips a shard, input members of {args.media_kb} KiB, "
          f"choosing {where}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"{'clips':>8}  {'chosen':>7}  {'query s':>7}  {'read inputs s':>13}  {'read records s':>14}  {'start-up s':>10}  "
          f"{'select s':>8}  {'clips/s':>8}  {'select/(inputs+records)':>23}  {'peak memory':>11}")
    for clips in [int(c) for c in args.clips.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            folder, inputs = Path(tmp) / "out", Path(tmp) / "in"
            inputs.mkdir()
            write_fake_run(folder, clips, args.per_shard, inputs, args.media_kb * 1024)
            export(folder, folder / "clips.parquet", progress=False)
            started = time.perf_counter()
            [(chosen,)] = duckdb.sql(f"select count(*) from read_parquet('{folder / 'clips.parquet'}') where {where}").fetchall()
            query = time.perf_counter() - started
            started = time.perf_counter()
            for shard in sorted(inputs.glob("*.tar")):
                plan = ShardPlan({str(shard): {"select": set()}})
                sum(isinstance(item, ClipItem) for item in read_members([{"url": str(shard)}], plan, 1 << 40))
            reading = time.perf_counter() - started
            started = time.perf_counter()
            folders = head_folders(folder)
            for stem in shard_stems(folders):
                shard_records(stem, folders)
            records = time.perf_counter() - started
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import extract.select, extract.export, extract.data, duckdb"], check=True)
            startup = time.perf_counter() - started
            measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, capture_output=True); "
                       "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "extract.select", str(folder), "--where", where,
                                     "--out", str(Path(tmp) / "chosen")], capture_output=True, text=True, check=True)
            elapsed = time.perf_counter() - started
            peak = int(result.stdout.split()[-1]) * 1024
            print(f"{clips:>8}  {chosen:>7}  {query:>7.2f}  {reading:>13.1f}  {records:>14.1f}  {startup:>10.1f}  {elapsed:>8.1f}  "
                  f"{clips / elapsed:>8.0f}  {(elapsed - startup) / (reading + records):>23.2f}  {peak / 2**20:>7.0f} MiB")


def add_arguments(parser) -> None:
    parser.add_argument("--clips", default="20000,200000")
    parser.add_argument("--per-shard", type=int, default=2000)
    parser.add_argument("--media-kb", type=int, default=4)
