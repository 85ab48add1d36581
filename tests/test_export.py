"""Types, records and the export's table, from records made here (the end-to-end tables are in test_tables.py)."""

import csv
import json
from typing import TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extract.export import export
from extract.records import head_record
from extract.schema import BaseRecord, arrow_type, card_features, conform
from extract.writer import OutputWriter


class Point(TypedDict):
    x: float
    label: str


def test_values_conform_to_their_declared_types_or_fail():
    assert conform(2.0, int) == 2 and conform(3, float) == 3.0 and conform(float("nan"), float) is None
    with pytest.raises(TypeError, match="expected an integer, got 2.5"):
        conform(2.5, int)
    with pytest.raises(TypeError, match="undeclared key"):
        conform({"x": 1.0, "label": "a", "extra": 1}, Point)
    assert conform({"x": 1}, Point) == {"x": 1.0, "label": None}
    assert conform([{"x": 1, "label": 2}], list[Point]) == [{"x": 1.0, "label": "2"}]
    assert conform({"a": 1}, dict) == '{"a": 1}'


def test_types_are_64_bit_in_parquet_and_in_the_dataset_card():
    assert arrow_type(int) == pa.int64() and arrow_type(float) == pa.float64()
    assert arrow_type(list[Point]) == pa.list_(pa.struct([("x", pa.float64()), ("label", pa.string())]))

    class Counter:
        name, fields, arrays = "counter", {"count": int, "points": list[Point]}, {"features": ("float16", 2)}

    features = {f["name"]: f for f in card_features(Counter)}
    record = {f["name"]: f for f in features["json"]["struct"]}
    assert record["count"] == {"name": "count", "dtype": "int64"} and record["start"]["dtype"] == "float64"
    assert features["features.npy"] == {"name": "features.npy", "list": {"list": "float16"}}


def test_a_record_holds_every_declared_field_null_where_not_given():
    base = BaseRecord(key="k", video_id="v", start=0.0, end=1.0, duration=None, in_csv=False, shard="s", member="m", head="h",
                      model=None, status="ok", error_type=None, error=None)
    record = head_record(base, {"count": int, "label": str}, {"count": 3})
    assert record["count"] == 3 and record["label"] is None and "label" in record


def _record(key: str, head: str, **fields) -> dict:
    return {"key": key, "video_id": key, "start": 0.0, "end": 1.0, "duration": None, "in_csv": False, "shard": "/in/a-000.tar",
            "member": f"{key} (0-1).mp4", "head": head, "model": None, "status": "ok", "error_type": None, "error": None,
            "arrays": [], "sample": None, **fields}


def _write(folder, head, records, arrays=None, finish=True):
    writer = OutputWriter(folder / head)
    writer.plan(["/in/a-000.tar"])
    for record in records:
        writer.write("/in/a-000.tar", record, (arrays or {}).get(record["key"], {}))
    if finish:
        writer.finish("/in/a-000.tar", None, [], head)
    else:
        writer.flush()
    writer.close()


def test_the_table_joins_clips_some_heads_wrote_and_references_arrays(tmp_path):
    _write(tmp_path, "probe", [_record("a", "probe"), _record("b", "probe")])
    _write(tmp_path, "internvl", [_record("b", "internvl", arrays=["features"])],
           arrays={"b": {"features": np.zeros((2, 4), np.float16)}}, finish=False)  # only a .partial
    done = export(tmp_path, tmp_path / "clips.parquet", progress=False)
    rows = {row["key"]: row for row in pq.read_table(tmp_path / "clips.parquet").to_pylist()}
    assert done["heads"] == ["internvl", "probe"] and done["unfinished_shards"] == {"internvl": ["a-000"]}
    assert set(rows) == {"a", "b"} and rows["a"]["internvl.status"] is None and rows["a"]["probe.status"] == "ok"
    assert rows["b"]["internvl.arrays"] == ["internvl/a-000.tar#b.features.npy"]


def test_csv_writes_nested_values_as_json(tmp_path):
    _write(tmp_path, "probe", [_record("a", "probe", video_streams=[{"index": 0, "codec": "h264"}])])
    export(tmp_path, tmp_path / "clips.csv", "csv", progress=False)
    [row] = list(csv.DictReader(open(tmp_path / "clips.csv", encoding="utf-8")))
    assert json.loads(row["probe.video_streams"])[0]["codec"] == "h264" and row["probe.arrays"] == "[]"


def test_datasets_reads_the_finished_shards_of_a_folder_only(tmp_path):
    datasets = pytest.importorskip("datasets")
    from extract.heads import head_class
    from extract.schema import dataset_card

    folder = tmp_path / "probe"
    writer = OutputWriter(folder, dataset_card(head_class("probe"), f"{folder} (test)"))
    writer.plan(["/in/a-000.tar", "/in/a-001.tar"])
    writer.write("/in/a-000.tar", _record("done", "probe"), {})
    writer.finish("/in/a-000.tar", None, [], "probe")
    writer.write("/in/a-001.tar", _record("unfinished", "probe"), {})
    writer.flush()
    writer.close()
    loaded = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "cache"))
    assert [example["__key__"] for example in loaded] == ["done"]
