"""Output records: the base fields every record carries (`schema.BaseRecord`), and a head's own fields on top.

Every record of a head has the base fields and every field the head declares (`Head.fields`), in
that order; a field the head did not fill for a clip (an error, a skip) is null. A head that
returns a field it did not declare is a bug, reported as that clip's `head_error`.
"""

from __future__ import annotations

from dataclasses import asdict

from extract.schema import BaseRecord, conform, record_types


class UndeclaredField(Exception):
    """A head returned a field it does not declare, or not of the type it declares."""


def head_record(base: BaseRecord, declared: dict, values: dict) -> dict:
    """The record: base fields, then every declared head field (null when not given), each as its declared type."""
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
