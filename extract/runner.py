"""`run(cfg)`: one loop from shards to output on every rank, callable in-process or via torchrun."""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from extract import heads
from extract.catalog import Catalog
from extract.data import make_loader, resolve_shards, shard_stem
from extract.errors import ConfigError
from extract.heads import Clip, Result
from extract.progress import Progress
from extract.writer import OutputWriter, drop_cross_shard_duplicates, output_totals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    decode_timeout: float
    decode_memory_bytes: int
    max_member_bytes: int
    max_decoded_bytes: int

    @classmethod
    def from_cfg(cls, cfg) -> "Limits":
        return cls(float(cfg.decode_timeout), int(cfg.decode_memory_gb * 2**30), int(cfg.max_member_mb * 2**20),
                   int(cfg.max_decoded_gb * 2**30))


def _attempt_store(rank: int, world: int) -> dist.Store:
    """The rendezvous store, with keys scoped to this torchrun attempt.

    After `torchrun --max-restarts` restarts the ranks, the agent's store still holds the previous
    attempt's keys, and the new ranks would read the dead ranks' addresses from it and fail.
    """
    agent_hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts_store, timeout=datetime.timedelta(minutes=10),
                          multi_tenant=True)
    return dist.PrefixStore(f"extract/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


@dataclass
class Distributed:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @classmethod
    def start(cls, device_choice: str, timeout_s: float) -> "Distributed":
        """Rank and world from torchrun's environment; a single process without it."""
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        if world > 1 and not dist.is_initialized():
            # ranks meet only at the end (the summary): the timeout must outlast the slowest rank's work
            dist.init_process_group("nccl" if use_cuda else "gloo", store=_attempt_store(rank, world), rank=rank,
                                    world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, local_rank, device)

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def check_inputs(cfg: DictConfig) -> tuple[list[str], Catalog, heads.Head]:
    """Everything that can be wrong with the command line, found before any work starts."""
    if "model" not in cfg or cfg.model is None:
        raise ConfigError(f"choose a head with +model=<head>; available: {', '.join(heads.available())}")
    options = OmegaConf.to_container(cfg.model, resolve=True)
    name = options.pop("name", None)
    try:
        head = heads.build(name, options)
    except KeyError:
        raise ConfigError(f"unknown head {name!r}; available: {', '.join(heads.available())}") from None
    except TypeError as exc:
        raise ConfigError(f"model options for {name}: {exc}") from None
    shards = resolve_shards(cfg.tar_folder, cfg.shards)
    stems = Counter(shard_stem(url) for url in shards)
    clashes = [stem for stem, count in stems.items() if count > 1]
    if clashes:
        raise ConfigError(f"several input shards share the output name {clashes[0]!r}; rename them")
    catalog = Catalog.load(cfg.dataset_csv, cfg.csv_tolerance) if cfg.dataset_csv else Catalog.empty()
    if cfg.batch_size < 1 or cfg.num_workers < 0:
        raise ConfigError("batch_size must be >= 1 and num_workers >= 0")
    return shards, catalog, head


def base_record(item: dict, head: heads.Head, catalog: Catalog) -> dict:
    row = catalog.match(item["video_id"], item["start"], item["end"]) if item["video_id"] is not None else None
    return {
        "key": item["key"], "video_id": item["video_id"], "start": item["start"], "end": item["end"],
        "duration": catalog.rows[row]["duration"] if row is not None else None, "in_csv": row is not None,
        "shard": item["shard"], "member": item["member"], "head": head.name, "model": head.model_id,
        "status": item["status"], "error_type": item["error_type"], "error": item["error"], "arrays": [],
    }


def infer_isolated(head: heads.Head, clips: list[Clip]) -> list[Result]:
    """Run the head on a batch; if the batch fails, run each clip alone so one bad clip fails alone."""
    try:
        results = head.infer(clips)
        if len(results) != len(clips):
            raise RuntimeError(f"head {head.name} returned {len(results)} results for {len(clips)} clips")
        return results
    except Exception:
        if len(clips) == 1:
            raise
    results = []
    for clip in clips:
        try:
            results.extend(head.infer([clip]))
        except Exception as exc:
            log.warning("clip %s failed in %s: %s", clip.key, head.name, exc)
            results.append(Result(status="error", error_type="head_error", error=f"{type(exc).__name__}: {exc}"[:500]))
    return results


def records_for(head: heads.Head, clips: list[dict], catalog: Catalog) -> list[tuple[dict, dict]]:
    """(record, arrays) for every clip item of a batch: the head's answer for decoded clips,
    the decoding or input error for the rest."""
    decoded = [item for item in clips if item["status"] == "ok"]
    results = infer_isolated(head, [Clip(i["key"], i["video_id"], i["start"], i["end"], i.pop("media")) for i in decoded]) if decoded else []
    result_of = {id(item): result for item, result in zip(decoded, results)}
    records = []
    for item in clips:
        record, result = base_record(item, head, catalog), result_of.get(id(item))
        if result is None:
            records.append((record, {}))
            continue
        record.update({k: v for k, v in result.fields.items() if k not in record})
        record.update(status=result.status, error_type=result.error_type, error=result.error, arrays=sorted(result.arrays))
        records.append((record, result.arrays))
    return records


def finish_shard(writer: OutputWriter, end: dict, head_name: str, shard_faults: dict) -> None:
    stats = writer.finish(end["shard"], end["fault"], end["duplicates"], head_name)
    if end["fault"]:
        shard_faults[end["shard"]] = end["fault"]
        log.warning("shard %s: %s (clips read before the fault are kept)", end["shard"], end["fault"])
    if stats["duplicates"]:
        log.warning("shard %s: %d duplicate member(s) not written twice", end["shard"], len(stats["duplicates"]))


def run(cfg: DictConfig) -> dict:
    started = time.monotonic()
    shards, catalog, head = check_inputs(cfg)
    out_folder = Path(cfg.output_dir) / head.name
    writer = OutputWriter(out_folder)
    ranks = Distributed.start(cfg.device, cfg.dist_timeout_s)
    progress = None
    try:
        mine = shards[ranks.rank :: ranks.world]
        todo, done_keys, complete = writer.plan(mine)
        head.load(ranks.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if ranks.device.type == "cuda" else nullcontext()
        loader = make_loader(todo, done_keys, head.media_spec, Limits.from_cfg(cfg), cfg.batch_size, cfg.num_workers)
        batches = iter(loader)  # workers fork here, before W&B starts: its hooks must not run in them
        progress = Progress(ranks.rank == 0, OmegaConf.to_container(cfg.wandb), OmegaConf.to_container(cfg, resolve=True),
                            str(cfg.output_dir), cfg.log_every_s)
        counts, shard_faults = Counter(), {}
        with torch.inference_mode(), autocast:
            for batch in batches:
                clips = [item for item in batch if item["kind"] == "clip"]
                records = records_for(head, clips, catalog)
                for record, arrays in records:
                    writer.write(record["shard"], record, arrays)
                    counts[record["status"]] += 1
                writer.flush()
                for item in batch:
                    if item["kind"] == "shard_end":
                        finish_shard(writer, item, head.name, shard_faults)
                progress.update(len(records), sum(1 for record, _ in records if record["status"] in ("error", "rejected")))
        wall = time.monotonic() - started
        rank_report = {"rank": ranks.rank, "shards": len(mine), "shards_already_complete": complete, "shards_done": len(todo),
                       "clips_resumed": sum(len(k) for k in done_keys.values()), "records": sum(counts.values()),
                       "by_status": dict(counts), "shard_faults": shard_faults, "wall_s": round(wall, 2),
                       "clips_per_s": round(sum(counts.values()) / wall, 2) if wall > 0 else None}
        reports = ranks.gather(rank_report)
        summary = None
        if ranks.rank == 0:
            summary = write_summary(out_folder, head, catalog, reports, wall)
            log.info("output: %s (summary %s)", out_folder, out_folder / "summary.json")
        progress.close(summary and summary["this_run"])
        progress = None
        return summary or rank_report
    finally:
        if progress is not None:
            progress.close()
        writer.close()
        ranks.stop()


def write_summary(folder: Path, head: heads.Head, catalog: Catalog, reports: list[dict], wall: float) -> dict:
    for shard, notes in drop_cross_shard_duplicates(folder).items():
        log.warning("shard %s: %d clip(s) already written from an earlier shard were dropped", shard, len(notes))
    totals = output_totals(folder)
    clips = totals.pop("clips")
    missing = catalog.rows_without_clips([tuple(c) for c in clips])
    records = sum(r["records"] for r in reports)
    summary = {
        "head": head.name, "model": head.model_id, "output": str(folder),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "this_run": {"records": records, "wall_s": round(wall, 2), "clips_per_s": round(records / wall, 2) if wall else None,
                     "by_status": dict(sum((Counter(r["by_status"]) for r in reports), Counter()))},
        "output_totals": totals,
        "csv_rows_without_clips": {"count": len(missing), "rows": missing[:1000]},
        "ranks": reports,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() // 1000 % 1_000_000:06d}"
    (folder / f"summary-{stamp}.json").write_text(text, encoding="utf-8")
    (folder / "summary.json").write_text(text, encoding="utf-8")
    return summary
