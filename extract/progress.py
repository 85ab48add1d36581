"""Progress on rank 0: a tqdm bar, and W&B (offline unless told otherwise, never fatal)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """The whole job's progress, shown on rank 0: clips done (every head it needed has written its record), each head's
    errors, and shards done out of all the job's shards (those complete before this run count as done). Each rank
    counts its own; `share` (several ranks) publishes them and reads the others' (`RankCounts`)."""

    def __init__(self, enabled: bool, wandb_cfg: dict | None, run_config: dict, output_dir: str, every_s: float = 10.0,
                 label: str = "done", shards: int = 0, shards_done: int = 0, share: "RankCounts | None" = None,
                 share_every_s: float = 1.0):
        self.enabled = enabled
        self.records = self.errors = self.clips = 0
        self.shards, self.shards_done = shards, shards_done
        self.share, self.share_every_s, self._last_share = share, share_every_s, 0.0
        self.others: dict = {}  # the other ranks' counts, as they last published them
        self.waiting: dict[str, int] = {}  # key -> records still to come for it
        self.head_errors: dict[str, int] = {}
        self.started = time.monotonic()
        self.every_s = every_s
        self._last_log = 0.0
        # "12 clips [00:04, 3.1 clips/s, shards 3/6, errors: none]", never "0clip"
        self.bar = tqdm(desc=label, unit=" clips", dynamic_ncols=True, disable=not enabled,
                        bar_format="{desc}: {n_fmt}{unit} [{elapsed}, {rate_fmt}{postfix}]")
        self.wandb = self._start_wandb(wandb_cfg or {}, run_config, output_dir) if enabled else None
        self.pictures: dict[str, object] = {}  # key -> thumbnail, until the clip's records arrive
        self.samples: list[list] = []  # rows of W&B's sample table
        self._postfix()

    def counts(self) -> dict:
        return {"clips": self.clips, "shards_done": self.shards_done, "head_errors": self.head_errors}

    def job(self) -> dict:
        """This rank's counts plus the others' last published ones."""
        mine = self.counts()
        every = [mine, *self.others.values()]
        errors: dict[str, int] = {}
        for counts in every:
            for head, count in counts["head_errors"].items():
                errors[head] = errors.get(head, 0) + count
        return {"clips": sum(c["clips"] for c in every), "shards_done": sum(c["shards_done"] for c in every), "head_errors": errors}

    def _exchange(self, force: bool = False) -> None:
        if self.share is None or not (force or time.monotonic() - self._last_share >= self.share_every_s):
            return
        self._last_share = time.monotonic()
        self.share.publish(self.counts())
        if self.enabled:
            self.others = self.share.others()

    @staticmethod
    def _start_wandb(cfg: dict, run_config: dict, output_dir: str):
        mode = cfg.get("mode", "offline")
        if mode == "disabled":
            return None
        try:
            # W&B keeps caches, settings and logs under the home folder unless told otherwise: a run writes
            # nothing outside output_dir unless the user set W&B's own variables
            local = os.path.join(os.path.abspath(output_dir), "wandb")
            for variable, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                                  ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")):
                os.environ.setdefault(variable, os.path.join(local, sub) if sub else os.path.abspath(output_dir))
            import wandb

            os.makedirs(output_dir, exist_ok=True)
            # a missing login must not block: offline needs none, and online falls back to offline
            # console capture wraps stdout/stderr, which breaks in the processes forked for decoding
            settings = wandb.Settings(init_timeout=60, silent=True, console="off")
            return wandb.init(project=cfg.get("project", "extract"), entity=cfg.get("entity"), mode=mode,
                              dir=os.environ["WANDB_DIR"], config=run_config, settings=settings)
        except Exception as exc:
            log.warning("W&B is off for this run (%s: %s)", type(exc).__name__, exc)
            return None

    def picture(self, key: str, thumbnail) -> None:
        """A clip's thumbnail, shown in W&B's sample table beside what the heads say about it."""
        if self.wandb is not None and len(self.pictures) < 64:
            self.pictures[key] = thumbnail

    def read(self, key: str, heads: int) -> None:
        """A clip arrived for `heads` heads: it is done when their records are written."""
        if heads:
            self.waiting[key] = self.waiting.get(key, 0) + heads

    def shard_done(self) -> None:
        self.shards_done += 1
        self._exchange(force=True)
        self._show()

    def _postfix(self) -> None:
        if not self.enabled:
            return
        job = self.job()
        errors = ", ".join(f"{head} {count}" for head, count in sorted(job["head_errors"].items())) or "none"
        shards = f"{job['shards_done']}/{self.shards}" if self.shards else str(job["shards_done"])
        self.bar.set_postfix_str(f"shards {shards}, errors: {errors}", refresh=False)

    def _show(self) -> None:
        if not self.enabled:
            return
        self._postfix()
        self.bar.update(self.job()["clips"] - self.bar.n)
        self.bar.refresh()

    def finish(self, reports: list[dict]) -> None:
        """The job's final counts, from every rank's report (the ranks have met): the bar ends on what was done."""
        self.others = {}
        self.clips = sum(r["clips_read"] for r in reports)
        self.shards_done = sum(r["shards"] - r["shards_to_do"] + len(set().union(*r["shards_finished"].values()))
                               for r in reports)
        self.head_errors = {}
        for report in reports:
            for head, counts in report["by_status"].items():
                failed = counts.get("error", 0) + counts.get("rejected", 0)
                if failed:
                    self.head_errors[head] = self.head_errors.get(head, 0) + failed
        self._show()

    def update(self, records: list[dict]) -> None:
        """Records just written (every head's)."""
        self.records += len(records)
        done = 0
        for record in records:
            if record["status"] in ("error", "rejected"):
                self.errors += 1
                self.head_errors[record["head"]] = self.head_errors.get(record["head"], 0) + 1
            left = self.waiting.get(record["key"])
            if left is not None:
                if left <= 1:
                    del self.waiting[record["key"]]
                    done += 1
                else:
                    self.waiting[record["key"]] = left - 1
        self.clips += done
        if not records:
            return
        self._exchange()
        if not self.enabled:
            return
        self._show()
        elapsed = time.monotonic() - self.started
        if self.wandb is None:
            return
        for record in records:
            if record["key"] in self.pictures and len(self.samples) < 500:
                self.samples.append([record["key"], record["head"], self.pictures[record["key"]], record["status"], said(record)])
        if time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            self.wandb.log({"clips": self.clips, "records": self.records, "errors": self.errors,
                            "clips_per_s": self.clips / max(elapsed, 1e-9)})
            self._log_samples()

    def _log_samples(self) -> None:
        if not self.samples:
            return
        try:
            import wandb

            images = {key: wandb.Image(picture.numpy() if hasattr(picture, "numpy") else picture, caption=key)
                      for key, _, picture, _, _ in self.samples}
            table = wandb.Table(columns=["key", "head", "keyframe", "status", "said"],
                                data=[[k, h, images[k], s, t] for k, h, _, s, t in self.samples])
            # the table, and its pictures on their own: an offline run keeps those files (a table holds references)
            self.wandb.log({"samples": table, "keyframes": list(images.values())[:16]})
        except Exception as exc:  # never fatal
            log.warning("W&B sample table not logged (%s)", exc)

    def close(self, summary: dict | None = None) -> None:
        self.bar.close()
        if self.wandb is not None:
            self._log_samples()
            try:
                for head, this_run in (summary or {}).items():
                    self.wandb.summary.update({f"{head}/{k}": v for k, v in this_run.items() if isinstance(v, (int, float))})
                self.wandb.finish()
            except Exception as exc:
                log.warning("W&B did not close cleanly (%s)", exc)


class RankCounts:
    """Each rank's progress counts in the rendezvous store (no collective: a rank never waits on another for them)."""

    def __init__(self, store, rank: int, world: int):
        self.store, self.rank, self.world = store, rank, world

    def publish(self, counts: dict) -> None:
        try:
            self.store.set(f"progress/{self.rank}", json.dumps(counts))
        except Exception as exc:  # progress is never worth a failed run
            log.debug("progress not shared (%s)", exc)

    def others(self) -> dict[int, dict]:
        found = {}
        for rank in range(self.world):
            key = f"progress/{rank}"
            try:
                if rank != self.rank and self.store.check([key]):
                    found[rank] = json.loads(self.store.get(key))
            except Exception as exc:
                log.debug("progress of rank %d not read (%s)", rank, exc)
        return found


def totals_line(summaries: dict[str, dict]) -> str:
    """What a run did, in one line per run: each head's records by status, the clips resumed, shard faults, the summary."""
    parts, faults, nothing = [], set(), True
    for head, summary in summaries.items():
        this_run = summary["this_run"]
        finished = any(rank["shards_finished"].get(head) for rank in summary.get("ranks", []))
        statuses = ", ".join(f"{status} {count}" for status, count in sorted(this_run["by_status"].items()))
        parts.append(f"{head} {this_run['records']} records" + (f" ({statuses})" if statuses else "")
                     + (f", {this_run['clips_resumed']} resumed" if this_run["clips_resumed"] else ""))
        faults |= set(summary["output_totals"]["shard_faults"])
        nothing &= this_run["records"] == 0 and not finished  # finishing a resumed shard is work too
    first = next(iter(summaries.values()))
    where = str(Path(first["output"]).parent / "<head>" / "summary.json") if len(summaries) > 1 else str(Path(first["output"]) / "summary.json")
    if nothing:
        total = sum(s["output_totals"]["records"] for s in summaries.values())
        return f"nothing to do: every shard is complete ({total} records already in {Path(first['output']).parent}); summary: {where}"
    return f"this run: {'; '.join(parts)}; shard faults: {len(faults)}; summary: {where}"


def said(record: dict) -> str:
    """What a head said about a clip, in a line: its caption, descriptions, detections or offset, or why not."""
    if record["status"] != "ok":
        return f"{record['status']}: {record.get('error') or ''}"
    if record.get("caption") is not None:
        return f"{record['caption']} (confidence {record.get('confidence') or 0:.2f})"
    if record.get("keyframes") and "description" in record["keyframes"][0]:
        return " | ".join(k["description"] for k in record["keyframes"])
    if record.get("keyframes"):
        return ", ".join(f"{d['label']} {d['score']:.2f}" for k in record["keyframes"][:1] for d in k["detections"]) or "nothing found"
    if record.get("offset_s") is not None:
        return f"audio offset {record['offset_s']:+.3f} s"
    return json_summary(record)


def json_summary(record: dict) -> str:
    stats = record.get("stats") or {}
    return ", ".join(f"{k} {v}" for k, v in stats.items() if isinstance(v, (int, float)))[:300]
