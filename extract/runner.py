"""`run(cfg)`: one loop from shards to every chosen head's output, on every rank, in-process or under torchrun."""

from __future__ import annotations

import datetime
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from extract import heads as registry
from extract.catalog import Catalog
from extract.data import ClipItem, ShardEnd, ShardPlan, make_loader, resolve_shards, shard_stem
from extract.errors import ConfigError
from extract.heads import Clip, Head, Result
from extract.progress import Progress, RankCounts, totals_line
from extract.records import UndeclaredField, head_record
from extract.schema import BaseRecord, dataset_card
from extract.writer import OutputWriter, check_sources, drop_cross_shard_duplicates, output_totals

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


def _stop_when_the_agent_dies(poll_s: float = 1.0) -> None:
    """torchrun starts each rank in a session of its own, so a killed agent (a lost node, a scheduler's
    SIGKILL) leaves its ranks running, writing files that a rerun is about to resume. A rank that
    finds itself orphaned kills itself (its workers and decode children follow: they die with it)."""
    agent = os.getppid()

    def watch():
        while True:
            time.sleep(poll_s)
            if os.getppid() != agent:
                log.error("the torchrun agent (pid %d) is gone; stopping this rank", agent)
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="agent-watch", daemon=True).start()


@dataclass
class Distributed:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    store: dist.Store | None = None  # the rendezvous store (several ranks): where they share their progress

    @classmethod
    def start(cls, device_choice: str, timeout_s: float) -> "Distributed":
        """Rank and world from torchrun's environment; a single process without it."""
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if "TORCHELASTIC_RUN_ID" in os.environ:
            _stop_when_the_agent_dies()
        use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
        device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        store = None
        if world > 1 and not dist.is_initialized():
            # ranks meet only at the end (the summary): the timeout must outlast the slowest rank's work
            store = _attempt_store(rank, world)
            dist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=rank,
                                    world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
        return cls(rank, world, local_rank, device, store)

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        gathered = [None] * self.world
        dist.all_gather_object(gathered, obj)
        return gathered

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---------------------------------------------------------------------------- configuration


def chosen_heads(cfg: DictConfig) -> dict[str, Head]:
    """The heads of `+model=...`, built from their options (`model.<head>.<option>`), with their batch sizes."""
    if "model" not in cfg or not cfg.model:
        raise ConfigError(f"choose heads with +model=<head> or +model=[<head>,<head>]; available: {', '.join(registry.available())}")
    heads = {}
    for name, node in cfg.model.items():
        if node is not None and not OmegaConf.is_dict(node):  # a head YAML whose options landed beside the heads
            raise ConfigError(f"model.{name}={node!r} is not a head's options: a conf/model/<head>.yaml must start with the "
                              f"line '# @package model.<head>' (Hydra reads it only as the first line)")
        options = OmegaConf.to_container(node, resolve=True) if node is not None else {}
        batch_size = options.pop("batch_size", None)
        if batch_size is not None and not (registry.fits(batch_size, int) and batch_size >= 1):
            raise ConfigError(f"head {name}: batch_size={batch_size!r} is not a whole number of at least 1")
        head = registry.build(str(name), options)
        head.batch_size = batch_size  # None: chosen once the device is known (batch_size_on)
        # what the records depend on (batch sizes do not): a folder's records come from one set of these
        head.options = {key: value for key, value in options.items() if not key.endswith("_batch")}
        heads[str(name)] = head
    return heads


def batch_size_on(head: Head, device: torch.device, run_batch_size: int) -> int:
    """A head's own batch_size, else on a GPU the one it asks for there (the captioning heads: a long queue for the
    generation engine), else the run's."""
    if head.batch_size is not None:
        return head.batch_size
    return head.device_batch_size if device.type == "cuda" and head.device_batch_size else run_batch_size


# the run's settings that must be numbers, and their least values
NUMBERS = {"batch_size": (int, 1), "num_workers": (int, 0), "csv_tolerance": (float, 0), "decode_timeout": (float, 0),
           "decode_memory_gb": (float, 0), "max_member_mb": (float, 1), "max_decoded_gb": (float, 0),
           "dist_timeout_s": (float, 1), "log_every_s": (float, 0)}
WANDB_MODES = ("online", "offline", "disabled", "dryrun", "shared")


def check_settings(cfg: DictConfig) -> None:
    for key, (kind, least) in NUMBERS.items():
        value = cfg.get(key)
        if not registry.fits(value, kind) or value < least:
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{key}={value!r} is not {what} of at least {least}")
    mode = OmegaConf.to_container(cfg.wandb, resolve=True).get("mode") if "wandb" in cfg else "disabled"
    if mode not in WANDB_MODES:
        raise ConfigError(f"wandb.mode={mode!r} is not online, offline or disabled")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={cfg.device!r} is not auto, cpu or cuda (each rank takes cuda:LOCAL_RANK)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda, but this machine's torch sees no CUDA device")


def check_inputs(cfg: DictConfig) -> tuple[list[str], Catalog, dict[str, Head]]:
    """Everything that can be wrong with the command line, found before any work starts."""
    check_settings(cfg)
    heads = chosen_heads(cfg)
    shards = resolve_shards(cfg.tar_folder, cfg.shards)
    stems = Counter(shard_stem(url) for url in shards)
    clashes = [stem for stem, count in stems.items() if count > 1]
    if clashes:
        raise ConfigError(f"several input shards share the output name {clashes[0]!r}; rename them")
    for name in heads:  # an output name that holds another shard's records would make this one look done
        check_sources(Path(cfg.output_dir) / name, shards)
    catalog = Catalog.load(cfg.dataset_csv, cfg.csv_tolerance) if cfg.dataset_csv else Catalog.empty(cfg.csv_tolerance)
    return shards, catalog, heads


# ---------------------------------------------------------------------------- one head's batch


def infer_isolated(head: Head, clips: list[Clip]) -> list[Result]:
    """Run the head on a batch; if the batch fails, run each clip alone so one bad clip fails alone."""
    try:
        results = head.infer(clips)
        if len(results) != len(clips):
            raise RuntimeError(f"head {head.name} returned {len(results)} results for {len(clips)} clips")
        return results
    except Exception:
        if len(clips) == 1:
            return [_head_error(head, clips[0])]
    return [infer_isolated(head, [clip])[0] for clip in clips]


def _head_error(head: Head, clip: Clip) -> Result:
    import traceback

    exc = traceback.format_exc(limit=0).strip().splitlines()[-1]
    log.warning("clip %s failed in %s: %s", clip.key, head.name, exc)
    return Result(status="error", error_type="head_error", error=exc[:500])


class HeadRunner:
    """One head's queue of clips, its batches through the model, and its records to its writer."""

    def __init__(self, head: Head, writer: OutputWriter, catalog: Catalog):
        self.head, self.writer, self.catalog = head, writer, catalog
        self.queue: list[ClipItem] = []
        self.counts: Counter = Counter()
        self.finished: list[str] = []  # shards this run completed
        self.infer_s = 0.0  # time in the head's model step

    def add(self, item: ClipItem) -> list[dict]:
        """Queue a clip; when the head's batch is full, run it and return the records written."""
        self.queue.append(item)
        return self.flush() if len(self.queue) >= self.head.batch_size else []

    def flush(self) -> list[dict]:
        items, self.queue = self.queue, []
        if not items:
            return []
        name = self.head.name
        ready = [item for item in items if item.status == "ok" and name in item.media and not isinstance(item.prepared.get(name), Result)]
        clips = [Clip(i.key, i.video_id, i.start, i.end, i.media.pop(name), i.prepared.pop(name)) for i in ready]
        started = time.perf_counter()
        results = dict(zip(map(id, ready), infer_isolated(self.head, clips))) if clips else {}
        self.infer_s += time.perf_counter() - started
        records = []
        for item in items:
            result = results.get(id(item)) or item.prepared.pop(name, None)  # or the Result `prepare` gave
            record, arrays = self._record(item, result if isinstance(result, Result) else None)
            self.writer.write(item.shard, record, arrays)
            self.counts[record["status"]] += 1
            records.append(record)
        self.writer.flush()
        return records

    def _length_mismatch(self, item: ClipItem, duration: float | None) -> str | None:
        """Whether the decoded length disagrees with what the clip's name or the CSV says it lasts, by more than
        csv_tolerance plus one frame (a length is counted in whole frames)."""
        if item.length_s is None:
            return None
        slack = self.catalog.tolerance + (item.frame_s or 0.0)
        claims = [("the name's window", item.end - item.start if item.start is not None and item.end is not None else None),
                  ("the CSV's duration", duration)]
        off = [f"{what} is {value:.3f} s" for what, value in claims if value is not None and abs(item.length_s - value) > slack]
        return f"decoded {item.length_s:.3f} s; {' and '.join(off)}" if off else None

    def _record(self, item: ClipItem, result: Result | None) -> tuple[dict, dict]:
        row = self.catalog.match(item.video_id, item.start, item.end, key=item.key if item.sample is not None else None)
        duration = self.catalog.rows[row]["duration"] if row is not None else None
        base = BaseRecord(key=item.key, video_id=item.video_id, start=item.start, end=item.end,
                          duration=duration, in_csv=row is not None,
                          shard=item.shard, member=item.member, head=self.head.name, model=self.head.model_id,
                          status=item.status, error_type=item.error_type, error=item.error, sample=item.sample,
                          length_s=item.length_s, length_mismatch=self._length_mismatch(item, duration))
        failure = item.failures.get(self.head.name)
        if item.status == "ok" and failure is not None:
            if item.audio_only and failure.error_type == "no_video_stream":  # a sound sample: nothing for a picture head
                base = replace(base, status="skipped", error_type="no_video", error="the sample is audio only")
            elif failure.error_type == "still_image":  # nothing wrong with the file; it is just not a video
                base = replace(base, status="skipped", error_type=failure.error_type, error=failure.message)
            else:
                base = replace(base, status="error", error_type=failure.error_type, error=failure.message)
        if item.status != "ok" or failure is not None or result is None:
            return head_record(base, self.head.fields, {}), {}
        base = replace(base, status=result.status, error_type=result.error_type, error=result.error, arrays=sorted(result.arrays))
        try:
            return head_record(base, self.head.fields, result.fields), result.arrays
        except UndeclaredField as exc:
            base = replace(base, status="error", error_type="head_error", error=str(exc), arrays=[])
            return head_record(base, self.head.fields, {}), {}


# ---------------------------------------------------------------------------- the run


def plan_shards(runners: dict[str, HeadRunner], mine: list[str]) -> tuple[ShardPlan, dict]:
    """Which shards each head still needs, and the keys it already has of each (resume per head)."""
    done: dict[str, dict[str, set[str]]] = {url: {} for url in mine}
    report = {"shards_already_complete": {}, "clips_resumed": {}}
    for name, runner in runners.items():
        todo, done_keys, complete = runner.writer.plan(mine)
        report["shards_already_complete"][name] = complete
        report["clips_resumed"][name] = sum(len(keys) for keys in done_keys.values())
        for url in todo:
            done[url][name] = done_keys[url]
    return ShardPlan({url: heads for url, heads in done.items() if heads}), report


def run(cfg: DictConfig) -> dict:
    started = time.monotonic()
    shards, catalog, heads = check_inputs(cfg)
    output_dir = Path(cfg.output_dir)
    # the card names the run, and `datasets` keys its cache on the card: a run id, since two runs can share a second
    run_of = f"{time.strftime('%Y-%m-%dT%H:%M:%S')}, {uuid.uuid4().hex[:12]}"
    runners = {name: HeadRunner(head, OutputWriter(output_dir / name, dataset_card(head, f"{(output_dir / name).resolve()} (run of {run_of})"),
                                                   head.options), catalog) for name, head in heads.items()}
    ranks = Distributed.start(cfg.device, cfg.dist_timeout_s)
    progress = None
    try:
        mine = shards[ranks.rank :: ranks.world]
        plan, resumed = plan_shards(runners, mine)
        for head in heads.values():
            head.batch_size = batch_size_on(head, ranks.device, cfg.batch_size)
            head.open(ranks.device)
        wandb_on = ranks.rank == 0 and OmegaConf.to_container(cfg.wandb, resolve=True).get("mode") != "disabled"
        loader = make_loader(plan, heads, Limits.from_cfg(cfg), cfg.batch_size, cfg.num_workers, pin_memory=ranks.device.type == "cuda",
                             thumbnail_every=50 if wandb_on else 0)
        batches = iter(loader)  # workers fork here, before the models load and before W&B starts (its hooks must not run in them)
        for head in heads.values():
            head.load(ranks.device)
        progress = Progress(ranks.rank == 0, OmegaConf.to_container(cfg.wandb, resolve=True), OmegaConf.to_container(cfg, resolve=True),
                            str(output_dir), cfg.log_every_s, "done" if ranks.world == 1 else f"done on {ranks.world} ranks",
                            shards=len(shards), shards_done=len(mine) - len(plan.urls),
                            share=RankCounts(ranks.store, ranks.rank, ranks.world) if ranks.store is not None else None)
        shard_faults, clips_read, waiting = {}, 0, 0.0
        loop_started, cpu_started = time.perf_counter(), time.process_time()
        # no autocast: each head runs in the precision its authors run it in (its dtype), not a mix autocast would choose
        with torch.inference_mode():
            while True:
                wait_started = time.perf_counter()
                batch = next(batches, None)
                waiting += time.perf_counter() - wait_started
                if batch is None:
                    break
                for item in batch:
                    if isinstance(item, ShardEnd):
                        records = [r for runner in runners.values() for r in runner.flush()]
                        finish_shard(runners, plan, item, shard_faults)
                        progress.update(records)  # the shard's last clips are done before the shard is
                        records = []
                        progress.shard_done()
                    else:
                        clips_read += 1
                        progress.read(item.key, len(item.heads))
                        if item.thumbnail is not None:
                            progress.picture(item.key, item.thumbnail)
                        records = [r for name in item.heads for r in runners[name].add(item)]
                    progress.update(records)
        loop, loop_cpu = time.perf_counter() - loop_started, time.process_time() - cpu_started
        wall = time.monotonic() - started
        # where the main loop's time went: waiting for the workers, in each head's model step, the rest (records, batching)
        timing = {"loop_s": round(loop, 3), "loop_cpu_s": round(loop_cpu, 3), "waiting_for_data_s": round(waiting, 3),
                  "infer_s": {n: round(r.infer_s, 3) for n, r in runners.items()}}
        rank_report = {"rank": ranks.rank, "shards": len(mine), "shards_to_do": len(plan.urls), **resumed,
                       "clips_read": clips_read, "records": {n: sum(r.counts.values()) for n, r in runners.items()},
                       "by_status": {n: dict(r.counts) for n, r in runners.items()}, "shard_faults": shard_faults,
                       "shards_finished": {n: r.finished for n, r in runners.items()}, "timing": timing,
                       "wall_s": round(wall, 2), "clips_per_s": round(clips_read / wall, 2) if wall > 0 else None}
        reports = ranks.gather(rank_report)
        summaries = {}
        if ranks.rank == 0:
            for name, runner in runners.items():
                summaries[name] = write_summary(runner.writer.folder, runner.head, catalog, reports, wall)
                log.info("%s: %s (summary %s)", name, runner.writer.folder, runner.writer.folder / "summary.json")
            progress.finish(reports)
        progress.close({name: s["this_run"] for name, s in summaries.items()})
        if summaries:
            print(totals_line(summaries), file=sys.stderr, flush=True)
        progress = None
        return (summaries[next(iter(summaries))] if len(summaries) == 1 else summaries) if summaries else rank_report
    finally:
        if progress is not None:
            progress.close()
        for runner in runners.values():
            runner.writer.close()
        ranks.stop()


def finish_shard(runners: dict[str, HeadRunner], plan: ShardPlan, end: ShardEnd, shard_faults: dict) -> None:
    for name in plan.done_keys.get(end.shard, {}):
        stats = runners[name].writer.finish(end.shard, end.fault, end.duplicates, name)
        runners[name].finished.append(end.shard)
        if stats["duplicates"]:
            log.warning("%s, shard %s: %d duplicate member(s) not written twice", name, end.shard, len(stats["duplicates"]))
    if end.fault:
        shard_faults[end.shard] = end.fault
        log.warning("shard %s: %s (clips read before the fault are kept)", end.shard, end.fault)


def write_summary(folder: Path, head: Head, catalog: Catalog, reports: list[dict], wall: float) -> dict:
    dropped = drop_cross_shard_duplicates(folder)
    finished_now = {url for r in reports for url in r["shards_finished"].get(head.name, [])}
    by_status = sum((Counter(r["by_status"].get(head.name, {})) for r in reports), Counter())
    for shard, records in dropped.items():
        log.warning("%s, shard %s: %d clip(s) already written from an earlier shard were dropped", head.name, shard, len(records))
        if shard in finished_now:  # written by this run, then dropped: not this run's records after all
            by_status.subtract(Counter(record["status"] for record in records))
    by_status = +by_status
    totals = output_totals(folder)
    clips = totals.pop("clips")
    missing = catalog.rows_without_clips([tuple(c) for c in clips], totals.pop("keys"))
    records = sum(by_status.values())
    summary = {
        "head": head.name, "model": head.model_id, "output": str(folder),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "this_run": {"records": records, "wall_s": round(wall, 2), "clips_per_s": round(records / wall, 2) if wall else None,
                     "by_status": dict(by_status), "clips_read": sum(r["clips_read"] for r in reports),
                     "clips_resumed": sum(r["clips_resumed"].get(head.name, 0) for r in reports)},
        "output_totals": totals,
        "csv_rows_without_clips": {"count": len(missing), "rows": missing[:1000]},
        "ranks": reports,
    }
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{time.time_ns() // 1000 % 1_000_000:06d}"
    (folder / f"summary-{stamp}.json").write_text(text, encoding="utf-8")
    (folder / "summary.json").write_text(text, encoding="utf-8")
    return summary
