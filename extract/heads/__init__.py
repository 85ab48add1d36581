"""The registry of heads and the contract every head follows.

A head says what it needs decoded (`media_spec`), loads its model once (`load`), and turns a batch
of decoded clips into one `Result` per clip (`infer`). It never reads the environment or touches
ranks: the runner owns distribution and the writer owns output. Every module in this package is
imported on first use, so a new head is one file here plus one YAML in `conf/model/`.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from extract.decode import Media, MediaSpec
from extract.errors import ConfigError

log = logging.getLogger(__name__)
_HEADS: dict[str, type["Head"]] = {}


@dataclass
class Clip:
    key: str
    video_id: str
    start: float
    end: float
    media: Media


@dataclass
class Result:
    """A head's answer for one clip: JSON fields, optional arrays (`{key}.{name}.npy`), a status."""

    fields: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "ok"  # ok | skipped | error
    error_type: str | None = None
    error: str | None = None


class Head:
    name: ClassVar[str]
    model_id: str | None = None  # the checkpoint, recorded in every record
    media_spec: MediaSpec

    def load(self, device: torch.device) -> None:
        """Load weights onto `device`; heads without a model do nothing."""

    def infer(self, clips: list[Clip]) -> list[Result]:
        raise NotImplementedError


def checkpoint_error(checkpoint: str, exc: Exception) -> ConfigError:
    """One line that names a checkpoint that would not load, and how to fetch it."""
    return ConfigError(
        f"cannot load checkpoint {checkpoint!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). "
        f"Fetch it first with `huggingface-cli download {checkpoint}` (then run with HF_HUB_OFFLINE=1), "
        "or point the model's checkpoint option at a local folder in transformers format"
    )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_pretrained(model_class, checkpoint: str, device: torch.device, dtype: torch.dtype, revision: str | None = None,
                    processor_class=None, **model_options):
    """(processor, model) from a hub id or a local folder, on `device` in eval mode; one clear error if absent."""
    from transformers import AutoProcessor

    try:
        processor = (processor_class or AutoProcessor).from_pretrained(checkpoint, revision=revision)
        model = model_class.from_pretrained(checkpoint, revision=revision, dtype=dtype, **model_options)
    except (OSError, ValueError) as exc:
        raise checkpoint_error(checkpoint, exc) from exc
    return processor, model.to(device).eval()


def pick_attention(requested: str) -> str:
    """flash_attention_2 only when the flash-attn package is installed: never a kernel download at run time."""
    if requested != "auto":
        return requested
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


def load_generative(model_class, head: "Head", device: torch.device):
    """(processor, model) of a captioning head from its checkpoint, revision, dtype and attention options."""
    return load_pretrained(model_class, head.model_id, device, resolve_dtype(head.dtype_name, device), head.revision,
                           attn_implementation=pick_attention(head.attn_implementation))


def split_on_oom(run, items: list) -> list:
    """`run(items)`, and on CUDA out-of-memory each half on its own, down to single items."""
    try:
        return run(items)
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        if len(items) == 1:
            raise
        log.warning("out of GPU memory on a batch of %d; retrying in halves", len(items))
        half = len(items) // 2
        return split_on_oom(run, items[:half]) + split_on_oom(run, items[half:])


def register(cls: type[Head]) -> type[Head]:
    _HEADS[cls.name] = cls
    return cls


def _import_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def available() -> list[str]:
    _import_all()
    return sorted(_HEADS)


def build(name: str, options: dict) -> Head:
    _import_all()
    if name not in _HEADS:
        raise KeyError(name)
    return _HEADS[name](**options)
