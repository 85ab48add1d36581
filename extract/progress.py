"""Progress on rank 0: a tqdm bar, and W&B (offline unless told otherwise, never fatal)."""

from __future__ import annotations

import logging
import os
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Clips done (every head it needed has written its record), each head's errors, and the rank's shards done."""

    def __init__(self, enabled: bool, wandb_cfg: dict | None, run_config: dict, output_dir: str, every_s: float = 10.0,
                 label: str = "clips", shards: int = 0):
        self.enabled = enabled
        self.records = self.errors = self.clips = self.shards_done = 0
        self.shards = shards
        self.waiting: dict[str, int] = {}  # key -> records still to come for it
        self.head_errors: dict[str, int] = {}
        self.started = time.monotonic()
        self.every_s = every_s
        self._last_log = 0.0
        self.bar = tqdm(desc=label, unit="clip", dynamic_ncols=True, disable=not enabled)
        self.wandb = self._start_wandb(wandb_cfg or {}, run_config, output_dir) if enabled else None
        self.pictures: dict[str, object] = {}  # key -> thumbnail, until the clip's records arrive
        self.samples: list[list] = []  # rows of W&B's sample table

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
                              dir=output_dir, config=run_config, settings=settings)
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
        self._postfix()

    def _postfix(self) -> None:
        if not self.enabled:
            return
        errors = ", ".join(f"{head} {count}" for head, count in sorted(self.head_errors.items())) or "none"
        shards = f"{self.shards_done}/{self.shards}" if self.shards else str(self.shards_done)
        self.bar.set_postfix_str(f"shards {shards}, errors: {errors}", refresh=False)

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
        if not self.enabled or not records:
            return
        self._postfix()
        self.bar.update(done)
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
