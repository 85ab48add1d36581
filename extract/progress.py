"""Progress on rank 0: a tqdm bar, and W&B (offline unless told otherwise, never fatal)."""

from __future__ import annotations

import logging
import os
import time

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    def __init__(self, enabled: bool, wandb_cfg: dict | None, run_config: dict, output_dir: str, every_s: float = 10.0):
        self.enabled = enabled
        self.clips = self.errors = 0
        self.started = time.monotonic()
        self.every_s = every_s
        self._last_log = 0.0
        self.bar = tqdm(desc="clips", unit="clip", dynamic_ncols=True, disable=not enabled)
        self.wandb = self._start_wandb(wandb_cfg or {}, run_config, output_dir) if enabled else None

    @staticmethod
    def _start_wandb(cfg: dict, run_config: dict, output_dir: str):
        mode = cfg.get("mode", "offline")
        if mode == "disabled":
            return None
        try:
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

    def update(self, clips: int, errors: int) -> None:
        self.clips += clips
        self.errors += errors
        if not self.enabled:
            return
        self.bar.update(clips)
        elapsed = time.monotonic() - self.started
        self.bar.set_postfix(errors=self.errors, refresh=False)
        if self.wandb is not None and time.monotonic() - self._last_log >= self.every_s:
            self._last_log = time.monotonic()
            self.wandb.log({"clips": self.clips, "errors": self.errors, "clips_per_s": self.clips / max(elapsed, 1e-9)})

    def close(self, summary: dict | None = None) -> None:
        self.bar.close()
        if self.wandb is not None:
            try:
                if summary:
                    self.wandb.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})
                self.wandb.finish()
            except Exception as exc:
                log.warning("W&B did not close cleanly (%s)", exc)
