"""The registry of heads and the contract every head follows.

A head is one module here (named as the head) plus one YAML in `conf/model/`. It declares:

- `media_spec`: the view of each clip it needs decoded (frames, size, audio). The decoder makes
  every view the chosen heads asked for from one opening of the clip.
- `fields`: its record fields and their types (`str`, `float`, `list[float]`, TypedDicts...), so
  every record of the head has the same fields, null where a clip gave nothing.
- `prepare(clip)`: its per-clip CPU step (processor, tokenising, windowing), run in the DataLoader
  workers. It may return a `Result` at once (a clip with nothing to do is `skipped` there).
- `load(device)` and `infer(clips)`: the model step in the main process, on a batch of prepared
  clips; one `Result` per clip, same order.

A head never reads environment variables or touches ranks: the runner owns distribution, batching
and per-clip error isolation, the writer owns the output, the data module owns shards and decoding.
A head runs in its own dtype (its authors'), with no autocast around it. A head's module is
imported only when the head is chosen.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import pkgutil
from pathlib import Path
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from extract.decode import Media, MediaSpec
from extract.errors import ConfigError

log = logging.getLogger(__name__)
_HEADS: dict[str, type["Head"]] = {}

# the extra of setup.cfg that brings each optional package a head may need
EXTRA_OF_PACKAGE = {"transformers": "models", "tokenizers": "models", "pycocotools": "models", "torchvision": "models",
                    "resampy": "models", "PIL": "models", "huggingface_hub": "models"}


@dataclass
class Clip:
    key: str
    video_id: str | None
    start: float | None
    end: float | None
    media: Media
    prepared: Any = None  # what the head's `prepare` made of this clip in a worker


@dataclass
class Result:
    """A head's answer for one clip: declared fields, optional arrays (`{key}.{name}.npy`), a status."""

    fields: dict = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "ok"  # ok | skipped | error
    error_type: str | None = None
    error: str | None = None


class Head:
    name: ClassVar[str]
    fields: ClassVar[dict[str, Any]] = {}  # record field -> type; every record of the head carries each one
    requires: ClassVar[tuple[str, ...]] = ()  # optional packages (import names) the head needs
    arrays: ClassVar[dict[str, tuple[str, int]]] = {}  # {key}.<name>.npy it writes: name -> (dtype, dimensions)
    model_id: str | None = None  # the checkpoint, recorded in every record
    media_spec: MediaSpec
    # whether `infer` reads the decoded frames, or only what `prepare` made of them (then they stay in the worker)
    frames_in_model_step: ClassVar[bool] = True
    # clips a model call on a GPU unless the head's batch_size is given (runner.batch_size_on); None: the run's batch_size
    device_batch_size: ClassVar[int | None] = None
    # whether a picture named as a video (a JPEG saved as .mp4) is something the head describes; other heads that need
    # frames skip it (`still_image`)
    takes_still_images: ClassVar[bool] = False

    def open(self, device: torch.device) -> None:
        """CPU-side set-up that `prepare` needs (processor, tokenizer); runs before the workers start."""

    def prepare(self, clip: Clip) -> Any:
        """The per-clip CPU step, in a DataLoader worker; its value arrives as `clip.prepared` in `infer`."""
        return None

    def load(self, device: torch.device) -> None:
        """Load weights onto `device`; heads without a model do nothing."""

    def infer(self, clips: list[Clip]) -> list[Result]:
        raise NotImplementedError


def register(cls: type[Head]) -> type[Head]:
    from extract.schema import BASE_FIELDS

    clashes = sorted(set(cls.fields) & set(BASE_FIELDS))
    if clashes:
        raise TypeError(f"head {cls.name}: field(s) {', '.join(clashes)} collide with the base record fields")
    _HEADS[cls.name] = cls
    return cls


def available() -> list[str]:
    """Every head's name, without importing any (a head's optional packages may be missing)."""
    return sorted(module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_"))


def head_class(name: str) -> type[Head]:
    """The class of head `name` (registered already, or the module of that name here); ConfigError if there
    is none or a package it needs is missing."""
    if name not in _HEADS:
        if name not in available():
            raise ConfigError(f"unknown head {name!r}; available: {', '.join(available())}")
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            raise _missing_package(name, exc.name) from None
    cls = _HEADS[name]
    for package in cls.requires:
        if importlib.util.find_spec(package) is None:
            raise _missing_package(name, package)
    return cls


def _missing_package(head: str, package: str | None) -> ConfigError:
    top = (package or "").split(".")[0]
    extra = EXTRA_OF_PACKAGE.get(top)
    how = f"pip install 'extract[{extra}]'" if extra else f"pip install {top}"
    return ConfigError(f"head {head} needs the package {top!r}, which is not installed: {how}")


def build(name: str, options: dict) -> Head:
    cls = head_class(name)
    hints = typing.get_type_hints(cls.__init__)
    for option, value in options.items():
        if option in hints and not fits(value, hints[option]):
            raise ConfigError(f"head {name}: {option}={value!r} is not {_describe(hints[option])}")
    if options.get("dtype") not in (None, *DTYPES):
        raise ConfigError(f"head {name}: dtype={options['dtype']!r} is not one of {', '.join(DTYPES)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"options of head {name}: {exc}") from None


def fits(value, hint) -> bool:
    """Whether an option's value is of its declared type (an int serves where a float is asked)."""
    if hint is typing.Any:
        return True
    if hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in typing.get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in typing.get_args(hint))
    return {bool: "true or false", int: "a whole number", float: "a number", str: "a string", type(None): "null"}.get(
        hint, getattr(hint, "__name__", str(hint)))


# ---------------------------------------------------------------------------- helpers the model heads share


def with_preset(head: str, presets: dict[str, dict], preset: str, given: dict) -> dict:
    """The options of a preset (`authors` reproduces the checkpoint's authors), with those given explicitly on top."""
    if preset not in presets:
        raise ConfigError(f"head {head}: unknown preset {preset!r}; presets: {', '.join(presets)}")
    return {**presets[preset], **{name: value for name, value in given.items() if value is not None}}


def load_tokenizer(checkpoint: str, revision: str | None = None, trust_remote_code: bool = False, option: str | None = None):
    """A checkpoint's tokenizer (CPU only, light): what `prepare` runs in the workers. `trust_remote_code` runs the
    tokenizer code a checkpoint ships (InternLM2's), only when the user asks for it."""
    from transformers import AutoTokenizer

    folder = local_checkpoint(checkpoint, revision, option)
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        hint = "; its tokenizer is code shipped with the checkpoint: allow it with trust_remote_code=true" \
            if "trust_remote_code" in str(exc) else ""
        raise checkpoint_error(checkpoint, exc, hint, option=option) from exc


def load_config(checkpoint: str, revision: str | None = None, option: str | None = None):
    from transformers import AutoConfig

    folder = local_checkpoint(checkpoint, revision, option)
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise checkpoint_error(checkpoint, exc, option=option) from exc


def checkpoint_error(checkpoint: str, exc: Exception, hint: str = "", fetch: str = "", option: str | None = None) -> ConfigError:
    """One line that names a checkpoint that would not load, the option that names it (`model.<head>.checkpoint`), and
    how to fetch it (`fetch`: the head's own recipe)."""
    where = option or "the head's checkpoint option"
    if _looks_like_a_path(checkpoint) and not Path(checkpoint).expanduser().exists():
        return ConfigError(f"the checkpoint folder {checkpoint} does not exist{hint}; "
                           f"{fetch or f'point {where} at a folder in transformers format, or at a hub id'}")
    if fetch:
        return ConfigError(f"cannot load checkpoint {checkpoint!r} ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}){hint}. {fetch}")
    return ConfigError(
        f"cannot load checkpoint {checkpoint!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}){hint}. "
        f"Fetch it first with `hf download {checkpoint}`, or point {where} at a local folder in transformers format"
    )


def _looks_like_a_path(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~"))


def local_checkpoint(checkpoint: str, revision: str | None = None, option: str | None = None, fetch: str = "") -> str:
    """The folder a checkpoint is read from: a local folder as it is, a hub id as its snapshot in the Hugging Face
    cache. Nothing is downloaded at run time (eight ranks fetching one checkpoint at once, or a node without a way
    out retrying for half a minute): a checkpoint on neither is one line at once, saying how to fetch it."""
    if Path(checkpoint).expanduser().exists():
        return str(Path(checkpoint).expanduser())
    if _looks_like_a_path(checkpoint):
        raise checkpoint_error(checkpoint, FileNotFoundError(checkpoint), fetch=fetch, option=option)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(checkpoint, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise checkpoint_error(checkpoint, FileNotFoundError("not on this machine: neither a folder nor in the Hugging Face "
                                                             "cache"), fetch=fetch, option=option) from None
    except Exception as exc:  # not a hub id at all
        raise checkpoint_error(checkpoint, exc, fetch=fetch, option=option) from None


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, float32 elsewhere; `bfloat16` and `float16` run as float32 on a CPU, where they are slow."""
    if name == "auto" or device.type != "cuda":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def load_processor(checkpoint: str, revision: str | None = None, processor_class=None, option: str | None = None):
    """A checkpoint's processor (CPU only, light): what `prepare` runs in the workers."""
    from transformers import AutoProcessor

    folder = local_checkpoint(checkpoint, revision, option)
    try:
        return (processor_class or AutoProcessor).from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise checkpoint_error(checkpoint, exc, option=option) from exc
    except ImportError as exc:  # a processor that needs a package of its own (SmolVLM's num2words)
        raise ConfigError(f"the processor of checkpoint {checkpoint!r} needs a package that is not installed: "
                          f"{str(exc).strip().splitlines()[0][:300]}") from exc


def load_model(model_class, checkpoint: str, device: torch.device, dtype: torch.dtype, revision: str | None = None,
               option: str | None = None, **model_options):
    """A model from a hub id or a local folder, on `device` in eval mode; one clear error if absent."""
    folder = local_checkpoint(checkpoint, revision, option)
    try:
        model = model_class.from_pretrained(folder, dtype=dtype, **model_options)
    except (OSError, ValueError) as exc:
        raise checkpoint_error(checkpoint, exc, option=option) from exc
    return model.to(device).eval()


def pick_attention(requested: str) -> str:
    """flash_attention_2 only when the flash-attn package is installed: never a kernel download at run time."""
    if requested != "auto":
        return requested
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


ENGINES = ("continuous", "generate")  # the captioning heads' generation: the engine, or transformers' generate


def check_engine(head: str, engine: str, max_slots: int) -> str:
    if engine not in ENGINES:
        raise ConfigError(f"head {head}: engine={engine!r} is not one of {', '.join(ENGINES)}")
    if max_slots < 1:
        raise ConfigError(f"head {head}: max_slots={max_slots!r} must be at least 1")
    return engine


def end_tokens(model) -> set[int]:
    """The end-of-sequence ids of a checkpoint's generation config."""
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos])


def generation_engine(head):
    """The head's generation engine over its model's language model and lm_head, made once and kept (its cache and
    captured steps serve every batch)."""
    from extract.models.generation import GenerationEngine

    if head.engine is None or head.engine.lm_head is not head.model.lm_head:
        head.engine = GenerationEngine(head.model.model.language_model, head.model.lm_head, end_tokens(head.model), head.max_slots,
                                       vocab_rows=getattr(head, "vocab_rows", None))
    head.engine.eos_ids = end_tokens(head.model)
    return head.engine


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


def datasets_features(head: str):
    """`datasets.Features` of a head's output tars, for the generic WebDataset loader, which otherwise guesses the
    types from the first rows and fails on a column whose first values are null:

        load_dataset("webdataset", data_files=sorted(glob("out/probe/*.tar")), features=datasets_features("probe"))
    """
    import datasets

    from extract.schema import card_features

    return datasets.Features._from_yaml_list(card_features(head_class(head)))
