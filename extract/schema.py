"""The types of every record field, from the declarations: the base fields every record carries (`BaseRecord`,
declared here), and each head's `Head.fields` and `Head.arrays`.

One description serves three readers: records are conformed to it when written (an int where a
float is declared becomes a float, so a field's type never depends on the clip); the writer puts
it in each head folder's dataset card, so `datasets.load_dataset(<head folder>)` reads any run,
errors and all; and `extract.export` builds its Parquet schema from it. Every field may be null.
Declared types: `str`, `int`, `float`, `bool`, `list[T]`, a TypedDict (a struct), and `dict` (free
form: kept as JSON text).
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import dataclass, field, fields

import pyarrow as pa


@dataclass
class BaseRecord:
    key: str  # unique per clip, stable across runs, [A-Za-z0-9_-] only (WebDataset's __key__)
    video_id: str | None
    start: float | None  # the clip's window in its source video (s)
    end: float | None
    duration: float | None  # from the dataset CSV
    in_csv: bool
    shard: str  # the input shard and the member read from it
    member: str
    head: str
    model: str | None  # the checkpoint
    status: str  # ok | skipped | error | rejected
    error_type: str | None  # a short code for counting (README: error types)
    error: str | None  # what went wrong, in words
    arrays: list[str] = field(default_factory=list)  # names of the {key}.{name}.npy members beside the record
    # a WebDataset sample's caption (.txt), its sidecar's small fields (.json), the fields left out for their size, notes
    sample: dict | None = None
    length_s: float | None = None  # the decoded video stream's length (s), measured
    # why that length disagrees with the name's window or the CSV's duration (beyond csv_tolerance and one frame)
    length_mismatch: str | None = None


BASE_FIELDS = tuple(f.name for f in fields(BaseRecord))


# what BaseRecord's `sample` holds
SAMPLE = {"caption": str, "meta": str, "dropped": list[str], "notes": list[str]}  # meta: the sidecar's small fields, JSON text


def base_types() -> dict[str, object]:
    hints = typing.get_type_hints(BaseRecord)
    out = {}
    for base_field in fields(BaseRecord):
        declared = hints[base_field.name]
        out[base_field.name] = SAMPLE if base_field.name == "sample" else _unoptional(declared)
    return out


def _unoptional(declared):
    """`T | None` -> T."""
    if typing.get_origin(declared) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(declared) if a is not type(None))
    return declared


def _struct_fields(declared) -> dict | None:
    if isinstance(declared, dict):
        return declared
    if isinstance(declared, type) and typing.is_typeddict(declared):
        return typing.get_type_hints(declared)
    return None


def flat_columns(name: str, declared) -> list[tuple[str, tuple[str, ...], object]]:
    """A field as table columns: a struct becomes one column per leaf, named with dots (`stats.mean_luma`), each with
    its path into the value and its type; anything else (lists of structs too) is one column."""
    struct = _struct_fields(declared)
    if struct is None:
        return [(name, (), declared)]
    return [(f"{name}.{column}", (field, *path), leaf) for field, t in struct.items()
            for column, path, leaf in flat_columns(field, _unoptional(t))]


def at_path(value, path: tuple[str, ...]):
    """The leaf of a conformed value along a path (None where a struct on the way is None)."""
    for key in path:
        if value is None:
            return None
        value = value.get(key)
    return value


def arrow_type(declared) -> pa.DataType:
    """The Arrow type of a declared type."""
    struct = _struct_fields(declared)
    if struct is not None:
        return pa.struct([pa.field(name, arrow_type(_unoptional(t))) for name, t in struct.items()])
    if typing.get_origin(declared) is list:
        return pa.list_(arrow_type(_unoptional(typing.get_args(declared)[0])))
    return {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), dict: pa.string()}[declared]


def conform(value, declared):
    """`value` as the declared type (None stays None); TypeError when it cannot be."""
    if value is None:
        return None
    struct = _struct_fields(declared)
    if struct is not None:
        if not isinstance(value, dict):
            raise TypeError(f"expected an object, got {type(value).__name__}")
        extra = sorted(set(value) - set(struct))
        if extra:
            raise TypeError(f"undeclared key(s) {', '.join(map(str, extra))}")
        return {name: conform(value.get(name), _unoptional(t)) for name, t in struct.items()}
    if typing.get_origin(declared) is list:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {type(value).__name__}")
        item = _unoptional(typing.get_args(declared)[0])
        return [conform(v, item) for v in value]
    if declared is float:
        value = float(value)
        return value if math.isfinite(value) else None
    if declared is int:
        if isinstance(value, float) and not value.is_integer():
            raise TypeError(f"expected an integer, got {value}")
        return int(value)
    if declared is bool:
        return bool(value)
    if declared is dict:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return value if isinstance(value, str) else str(value)


def _card_feature(declared) -> dict:
    """A declared type as a Hugging Face datasets feature, as a dataset card's YAML writes one."""
    struct = _struct_fields(declared)
    if struct is not None:
        return {"struct": [{"name": name, **_card_feature(_unoptional(t))} for name, t in struct.items()]}
    if typing.get_origin(declared) is list:
        item = _card_feature(_unoptional(typing.get_args(declared)[0]))
        return {"list": item.get("struct") or item.get("dtype") or item}
    return {"dtype": {str: "string", int: "int64", float: "float64", bool: "bool", dict: "string"}[declared]}


def record_types(head_fields: dict) -> dict:
    """Every field of a head's records: the base fields, then the head's own."""
    return {**base_types(), **{name: _unoptional(t) for name, t in head_fields.items()}}


def card_features(head) -> list[dict]:
    """The columns of a head's output tars as Hugging Face datasets reads them (a WebDataset sample: key, url, the
    record as `json`, each array as `<name>.npy`), in the dataset card's YAML form."""
    features = [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
                {"name": "json", **_card_feature(record_types(head.fields))}]
    for name, (dtype, dims) in head.arrays.items():
        feature = dtype
        for _ in range(dims):
            feature = {"list": feature}
        features.append({"name": f"{name}.npy", **feature})
    return features


def dataset_card(head, origin: str = "") -> str:
    """The dataset card (README.md) of a head's output folder: which files, and every field's type. `origin` (the
    folder and the run writing it) goes into the config's description, which `datasets` hashes into its cache
    key: without it every run's `<head>` folder would share one cache entry and read back the first one's rows."""
    import yaml

    features = card_features(head)
    config = {"config_name": "default", "data_files": "*.tar", **({"description": origin} if origin else {})}
    front = yaml.safe_dump({"configs": [config], "dataset_info": {"features": features}},
                           sort_keys=False, allow_unicode=True)
    return (f"---\n{front}---\n\n# {head.name} records\n\nWritten by extract: one `{{key}}.json` per clip in each `NAME.tar` "
            "(and `{key}.<name>.npy` arrays). `datasets.load_dataset(\"<this folder>\")` reads them with the types above; "
            "`python -m extract.export` joins every head of a run into one Parquet table.\n")
