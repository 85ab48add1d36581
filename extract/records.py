"""Output records: the base fields every record carries, declared once, and a head's own fields on top.

Every record of a head has the base fields and every field the head declares (`Head.fields`), in
that order; a field the head did not fill for a clip (an error, a skip) is null. A head that
returns a field it did not declare is a bug, reported as that clip's `head_error`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


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


class UndeclaredField(Exception):
    """A head returned a field it does not declare, or not of the type it declares."""


def head_record(base: BaseRecord, declared: dict, values: dict) -> dict:
    """The record: base fields, then every declared head field (null when not given), each as its declared type."""
    from extract.schema import conform, record_types

    undeclared = sorted(set(values) - set(declared))
    if undeclared:
        raise UndeclaredField(f"head {base.head} returned undeclared field(s) {', '.join(undeclared)}; "
                              f"declare them in its `fields`")
    record = asdict(base)
    record.update({name: values.get(name) for name in declared})
    types = record_types(declared)
    conformed = {}
    for name, value in record.items():
        try:
            conformed[name] = conform(value, types[name])
        except (TypeError, ValueError) as exc:
            raise UndeclaredField(f"head {base.head}: field {name} is not of its declared type ({exc})") from None
    return conformed
