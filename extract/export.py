"""One table of a run: a row per clip across every head in an output folder.

    python -m extract.export OUTPUT_DIR [--format parquet|csv|jsonl] [--out FILE]

The clip's base fields come once (key, video_id, start, end, duration, in_csv, shard, member,
sample); each head's fields follow as `<head>.<field>`, with its `status`, `error_type`, `error`,
`model` and `arrays` (references `<head>/NAME.tar#<key>.<name>.npy` to the arrays left in the tars).
Struct fields become flat dotted columns (`probe.stats.mean_luma`, `sample.caption`); lists (streams,
windows, keyframes) stay nested. Parquet keeps them under an explicit schema built from the heads'
declarations, so column types never depend on which rows come first; CSV holds them as JSON
text; JSON lines as they are. The export reads one input shard of every head at a time (memory
bounded by a shard), writes to a temporary name and renames it when done, and reads unfinished
runs: `.tar.partial` outputs give their complete records and are named as incomplete.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from extract.errors import ConfigError, or_exit
from extract.schema import arrow_type, at_path, base_types, conform, flat_columns
from extract.writer import complete_records

BASE = ("key", "video_id", "start", "end", "duration", "in_csv", "length_s", "length_mismatch", "shard", "member", "sample")
PER_HEAD = ("status", "error_type", "error", "model")


def head_folders(output_dir: Path) -> dict[str, Path]:
    """The heads of a run: the folders of `output_dir` that hold output tars."""
    if not output_dir.is_dir():
        raise ConfigError(f"{output_dir} is not a folder")
    from extract.heads import available

    with_tars = {p.name: p for p in sorted(output_dir.iterdir())
                 if p.is_dir() and (any(p.glob("*.tar")) or any(p.glob("*.tar.partial")))}
    heads = {name: path for name, path in with_tars.items() if name in available()}
    if not heads and output_dir.name in available() and list(output_dir.glob("*.stats.json")):
        raise ConfigError(f"{output_dir} is the folder of one head ({output_dir.name}); give the run's output_dir, the folder "
                          f"above it: {output_dir.parent}")
    if not heads:
        shards = sorted(p.name for suffix in ("*.tar", "*.tar.gz", "*.tgz") for p in output_dir.glob(suffix))
        shards += [f"{name}/" for name in with_tars]
        if shards:  # an input folder given by mistake: its shards are not any head's records
            raise ConfigError(f"{output_dir} holds shards ({', '.join(shards[:3])}) but no head's records: it looks like an "
                              f"input folder; give the output_dir of a run, whose <head>/ folders ({', '.join(available())}) "
                              "hold NAME.tar")
        raise ConfigError(f"{output_dir} holds no head's output (<head>/NAME.tar)")
    return heads


def current_location(shard: str, folders: dict[str, Path]) -> str:
    """Where an input shard is now: where its records say it was read, else where a later run found it (the same shard
    moved to another folder resumes, and its output's `.sources/NAME.json` says where it went)."""
    from extract.data import shard_stem
    from extract.writer import recorded_source

    if "://" in shard or shard.startswith("pipe:") or Path(shard).is_file():
        return shard
    for folder in folders.values():
        recorded = recorded_source(folder, shard_stem(shard))
        if recorded is not None and recorded[1] and Path(recorded[1]).is_file():
            return recorded[1]
    return shard


def declared_fields(head: str) -> dict:
    from extract.heads import head_class

    return head_class(head).fields


def table_schema(heads: dict[str, dict]) -> pa.Schema:
    """Base fields, then for every head its status columns, array references and declared fields; struct fields as
    flat dotted columns (`probe.stats.mean_luma`), lists as they are."""
    base = base_types()
    columns = [pa.field(column, arrow_type(leaf)) for name in BASE for column, _, leaf in flat_columns(name, base[name])]
    for head, fields in heads.items():
        columns += [pa.field(f"{head}.{name}", pa.string()) for name in PER_HEAD]
        columns.append(pa.field(f"{head}.arrays", pa.list_(pa.string())))
        columns += [pa.field(f"{head}.{column}", arrow_type(leaf)) for name, declared in fields.items()
                    for column, _, leaf in flat_columns(name, declared)]
    return pa.schema(columns)


def read_records(path: Path) -> tuple[dict[str, dict], bool]:
    """{key: record} of an output tar, and whether it is complete (a `.partial` yields its complete records)."""
    return {record["key"]: record for record, _ in complete_records(path)}, not path.name.endswith(".partial")


def shard_stems(folders: dict[str, Path]) -> list[str]:
    """The input shards any head wrote (finished or not), by their output name."""
    return sorted({p.name.split(".tar")[0] for folder in folders.values() for p in [*folder.glob("*.tar"), *folder.glob("*.tar.partial")]})


def shard_records(stem: str, folders: dict[str, Path]) -> tuple[dict[str, dict[str, dict]], list[str]]:
    """{head: {key: record}} of one input shard, and the heads whose output of it is unfinished."""
    per_head, unfinished = {}, []
    for head, folder in folders.items():
        path = next((p for p in (folder / f"{stem}.tar", folder / f"{stem}.tar.partial") if p.exists()), None)
        if path is not None:
            per_head[head], complete = read_records(path)
            if not complete:
                unfinished.append(head)
    return per_head, unfinished


def shard_rows(stem: str, folders: dict[str, Path], heads: dict[str, dict], types: dict) -> tuple[list[dict], list[str]]:
    """The rows of one input shard (every head's records joined on the key), and the heads whose shard is unfinished."""
    per_head, unfinished = shard_records(stem, folders)
    keys = list(dict.fromkeys(key for records in per_head.values() for key in records))
    rows = []
    for key in keys:
        first = next(records[key] for records in per_head.values() if key in records)
        row = {}
        for name in BASE:
            _flatten_into(row, "", name, types[name], first)
        for head, fields in heads.items():
            record = per_head.get(head, {}).get(key)
            for name in PER_HEAD:
                row[f"{head}.{name}"] = record.get(name) if record else None
            row[f"{head}.arrays"] = [f"{head}/{stem}.tar#{key}.{name}.npy" for name in record.get("arrays", [])] if record else None
            for name, declared in fields.items():
                _flatten_into(row, f"{head}.", name, declared, record)
        rows.append(row)
    return rows, unfinished


def _flatten_into(row: dict, prefix: str, name: str, declared, record: dict | None) -> None:
    value = conform(record.get(name), declared) if record else None
    for column, path, _ in flat_columns(name, declared):
        row[prefix + column] = at_path(value, path)


class _Sink:
    """Writes batches of rows as Parquet, CSV (nested values as JSON text) or JSON lines."""

    def __init__(self, path: Path, schema: pa.Schema, form: str):
        self.path, self.schema, self.form = path, schema, form
        self.file = open(path, "wb" if form == "parquet" else "w", **({} if form == "parquet" else {"encoding": "utf-8", "newline": ""}))
        if form == "parquet":
            import pyarrow.parquet as pq

            self.writer = pq.ParquetWriter(self.file, schema, compression="zstd")
        elif form == "csv":
            self.writer = csv.writer(self.file)
            self.writer.writerow(schema.names)

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        if self.form == "parquet":
            self.writer.write_table(pa.Table.from_pylist(rows, schema=self.schema))
        elif self.form == "csv":
            for row in rows:
                self.writer.writerow([_csv_value(row[name]) for name in self.schema.names])
        else:
            for row in rows:
                self.file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self, metadata: dict) -> None:
        if self.form == "parquet":
            self.writer.add_key_value_metadata({k: json.dumps(v) for k, v in metadata.items()})
            self.writer.close()
        self.file.close()


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return value


def export(output_dir: Path, out: Path | None = None, form: str = "parquet", progress: bool = True) -> dict:
    """Write the table; returns what it wrote: rows, shards, the unfinished shards of each head."""
    output_dir = Path(output_dir)
    folders = head_folders(output_dir)
    heads = {head: declared_fields(head) for head in folders}
    out = Path(out) if out else output_dir / f"clips.{form}"
    schema = table_schema(heads)
    types = base_types()
    stems = shard_stems(folders)
    temporary = out.with_name(out.name + ".tmp")
    sink = _Sink(temporary, schema, form)
    unfinished: dict[str, list[str]] = {}
    total = 0
    try:
        for stem in tqdm(stems, desc="shards", unit="shard", disable=not progress):
            rows, heads_unfinished = shard_rows(stem, folders, heads, types)
            for head in heads_unfinished:
                unfinished.setdefault(head, []).append(stem)
            sink.write(rows)
            total += len(rows)
        sink.close({"extract.heads": list(heads), "extract.unfinished_shards": unfinished})
        os.replace(temporary, out)
    except BaseException:
        sink.file.close()
        temporary.unlink(missing_ok=True)
        raise
    return {"out": str(out), "rows": total, "shards": len(stems), "heads": list(heads), "unfinished_shards": unfinished}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m extract.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path, help="a run's output_dir (its <head>/ folders)")
    parser.add_argument("--format", choices=("parquet", "csv", "jsonl"), default="parquet")
    parser.add_argument("--out", type=Path, help="the file to write (default: OUTPUT_DIR/clips.<format>)")
    args = parser.parse_args(argv)
    done = or_exit(lambda: export(args.output_dir, args.out, args.format))
    for head, stems in done["unfinished_shards"].items():
        print(f"note: {head}: {len(stems)} shard(s) unfinished (their complete records are in): {', '.join(stems[:10])}", file=sys.stderr)
    print(f"wrote {done['out']}: {done['rows']} clips x {len(done['heads'])} heads ({', '.join(done['heads'])}) from {done['shards']} shards")


if __name__ == "__main__":
    main()
