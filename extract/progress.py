"""Progress on rank 0: a tqdm bar, and W&B (offline unless told otherwise, never fatal)."""

from __future__ import annotations

import logging
import os
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, enabled: bool, wandb_cfg: dict | None, run_config: dict, output_dir: str, every_s: float = 10.0,
                 label: str = "records"):
        self.enabled = enabled
        self.records = self.errors = 0
        self.started = time.monotonic()
        self.every_s = every_s
        self._last_log = 0.0
        self.bar = tqdm(desc=label, unit="record", dynamic_ncols=True, disable=not enabled)
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

    def update(self, records: list[dict]) -> None:
        """Records just written (every head's)."""
        self.records += len(records)
        self.errors += sum(1 for record in records if record["status"] in ("error", "rejected"))
        if not self.enabled or not records:
            return
        self.bar.update(len(records))
        elapsed = time.monotonic() - self.started
        self.bar.set_postfix(errors=self.errors, refresh=False)
        if self.wandb is None:
            return
        for record in records:
            if record["key"] in self.pictures and len(self.samples) < 500:
                self.samples.append([record["key"], record["head"], self.pictures[record["key"]], record["status"], said(record)])
        if time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            self.wandb.log({"records": self.records, "errors": self.errors, "records_per_s": self.records / max(elapsed, 1e-9)})
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
