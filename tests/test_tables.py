"""Tables and pictures of a run: records every tool reads with stable types (datasets, pandas, DuckDB), the
one-table export, and the report page as a browser shows it."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import compose_cfg, make_clip, read_records, write_shard
from extract.export import export
from extract.report import report
from extract.runner import run
from tiny import save_tiny_grounding_dino, save_tiny_internvl, save_tiny_sam


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """probe, av_sync and grounding_sam (tiny models) over good clips first, then bad members: the first records
    of each shard have nothing in the error fields, later ones do."""
    root = tmp_path_factory.mktemp("run")
    (root / "in").mkdir()
    good = [(f"good.{i} (0-1).mp4", make_clip(seconds=1, size="160x120", pattern=("testsrc", "smptebars")[i % 2])) for i in range(7)]
    bad = [("empty (0-1).mp4", b""), ("noise (0-1).mp4", os.urandom(5000)), ("README.md", b"hello")]
    write_shard(root / "in" / "a-000.tar", good + bad, gz=False)
    write_shard(root / "in" / "b-001.tar", [("empty b (0-1).mp4", b""), ("good.7 (0-1).mp4", good[0][1]), ("good.8 (0-1).mp4", good[1][1])],
                gz=False)
    detector, segmenter = save_tiny_grounding_dino(root / "gd"), save_tiny_sam(root / "sam")
    cfg = compose_cfg("+model=[probe,av_sync,grounding_sam]", "model.av_sync.method=onset_xcorr", f"model.grounding_sam.detector={detector}",
                      f"model.grounding_sam.segmenter={segmenter}", "model.grounding_sam.box_threshold=0.0",
                      "model.grounding_sam.text_threshold=0.0", "model.grounding_sam.max_detections=2",
                      f"tar_folder={root / 'in'}", f"output_dir={root / 'out'}", "num_workers=1", "batch_size=4",
                      "wandb.mode=disabled")
    run(cfg)
    return root / "out"


def test_datasets_reads_every_head_of_a_run_errors_and_all(finished_run, tmp_path):
    datasets = pytest.importorskip("datasets")
    for head in ("probe", "av_sync", "grounding_sam"):
        loaded = datasets.load_dataset(str(finished_run / head), split="train", cache_dir=str(tmp_path / head))
        records = read_records(finished_run / head)
        assert len(loaded) == len(records) == 13
        statuses = sorted(example["json"]["status"] for example in loaded)
        assert statuses == sorted(r["status"] for r in records) and "error" in statuses and "rejected" in statuses
        errors = {example["json"]["member"]: example["json"]["error"] for example in loaded}
        assert errors["empty (0-1).mp4"] and (head == "av_sync" or errors["good.0 (0-1).mp4"] is None)


def test_datasets_reads_each_runs_own_records_through_one_cache(tmp_path, monkeypatch):
    """`datasets` caches a local folder by what its card says: runs in two folders, and a rerun that added a shard,
    each read back their own rows from one shared cache, even when every run falls in the same second."""
    import time

    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(time, "strftime", lambda *args: "2026-01-01T00:00:00")  # one second for all three runs

    def probe_run(folder, shard, clips):
        (tmp_path / folder).mkdir(exist_ok=True)
        write_shard(tmp_path / folder / f"{shard}.tar", [(f"{shard} {i} (0-1).mp4", make_clip()) for i in range(clips)])
        run(compose_cfg("+model=probe", f"tar_folder={tmp_path / folder}", f"output_dir={tmp_path / folder / 'out'}",
                        "num_workers=0", "wandb.mode=disabled"))
        return datasets.load_dataset(str(tmp_path / folder / "out" / "probe"), split="train", cache_dir=str(tmp_path / "cache"))

    assert len(probe_run("first", "a", 1)) == 1
    assert len(probe_run("second", "b", 3)) == 3
    again = probe_run("first", "c", 1)  # a rerun of the first folder with one more shard
    assert sorted(example["json"]["video_id"] for example in again) == ["a 0", "c 0"]


def test_datasets_reads_arrays_beside_records_that_have_none(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("a (0-1).mp4", make_clip()), ("b (0-1).mp4", b""), ("c (0-1).mp4", make_clip())])
    cfg = compose_cfg("+model=internvl", f"model.checkpoint={save_tiny_internvl(tmp_path / 'tiny')}", "model.max_new_tokens=3",
                      "model.max_tiles=1", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=0",
                      "wandb.mode=disabled")
    run(cfg)
    loaded = datasets.load_dataset(str(tmp_path / "out" / "internvl"), split="train", cache_dir=str(tmp_path / "cache"))
    by_member = {example["json"]["member"]: example for example in loaded}
    assert by_member["b (0-1).mp4"]["features.npy"] is None and by_member["b (0-1).mp4"]["json"]["status"] == "error"
    assert len(by_member["a (0-1).mp4"]["features.npy"]) == 4  # keyframes x feature_dim


def test_one_row_per_clip_with_every_heads_columns(finished_run, tmp_path):
    done = export(finished_run, tmp_path / "clips.parquet", progress=False)
    table = pq.read_table(tmp_path / "clips.parquet")
    assert done["rows"] == table.num_rows == 13 and done["unfinished_shards"] == {}
    assert table.column_names[:14] == ["key", "video_id", "start", "end", "duration", "in_csv", "length_s", "length_mismatch",
                                       "shard", "member", "sample.caption", "sample.meta", "sample.dropped", "sample.notes"]
    for head in ("probe", "av_sync", "grounding_sam"):
        assert {f"{head}.status", f"{head}.error_type", f"{head}.error", f"{head}.model", f"{head}.arrays"} <= set(table.column_names)
    assert table.schema.field("probe.video_streams").type == pa.list_(pa.struct([
        ("index", pa.int64()), ("codec", pa.string()), ("width", pa.int64()), ("height", pa.int64()), ("fps", pa.float64()),
        ("fps_header", pa.float64()), ("num_frames", pa.int64()), ("num_frames_header", pa.int64()), ("duration_s", pa.float64()),
        ("duration_s_header", pa.float64()), ("start_s", pa.float64()), ("first_frame_s", pa.float64()),
        ("color_space", pa.string())]))
    # structs are flat dotted columns, lists stay nested
    assert "probe.stats" not in table.column_names and table.schema.field("probe.stats.mean_luma").type == pa.float64()
    assert table.schema.field("probe.stats.frame_times").type == pa.list_(pa.float64())
    rows = {row["member"]: row for row in table.to_pylist()}
    good = rows["good.0 (0-1).mp4"]
    assert good["probe.status"] == "ok" and good["probe.video_streams"][0]["width"] == 160
    detection = good["grounding_sam.keyframes"][0]["detections"][0]
    assert set(detection) == {"label", "score", "box", "mask", "area"} and len(detection["box"]) == 4
    assert rows["empty (0-1).mp4"]["probe.error_type"] == "empty_file" and rows["empty (0-1).mp4"]["probe.stats.mean_luma"] is None
    record = next(r for r in read_records(finished_run / "probe") if r["member"] == "good.0 (0-1).mp4")
    assert good["probe.stats.mean_luma"] == record["stats"]["mean_luma"] and good["probe.stats.scene_cuts"] == record["stats"]["scene_cuts"]
    # the types come from the declarations, not from the rows: a table of error rows alone has the same schema
    only_errors = tmp_path / "errors"
    for head in ("probe", "av_sync", "grounding_sam"):
        (only_errors / head).mkdir(parents=True)
        records = [r for r in read_records(finished_run / head) if r["status"] != "ok"]
        with tarfile.open(only_errors / head / "x.tar", "w") as tar:
            for record in records:
                data = json.dumps(record).encode()
                info = tarfile.TarInfo(f"{record['key']}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    export(only_errors, tmp_path / "errors.parquet", progress=False)
    assert pq.read_schema(tmp_path / "errors.parquet").equals(table.schema, check_metadata=False)


def test_pandas_and_duckdb_read_the_table_as_it_is(finished_run, tmp_path):
    pandas = pytest.importorskip("pandas")
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / "clips.parquet"
    export(finished_run, path, progress=False)
    frame = pandas.read_parquet(path)
    assert len(frame) == 13 and (frame["probe.status"] == "ok").sum() == 9
    [(count,)] = duckdb.sql(f"select count(*) from '{path}' where \"av_sync.status\" is not null and \"probe.status\" = 'ok'").fetchall()
    assert count == 9
    widths = duckdb.sql(f"select \"probe.video_streams\"[1].width from '{path}' where \"probe.status\" = 'ok'").fetchall()
    assert {w for (w,) in widths} == {160}
    # the README's examples: flat columns read as they are
    moving = frame.query("`probe.stats.motion_energy` > 0")["key"].tolist()
    assert moving and all(m > 0 for m in frame.set_index("key").loc[moving, "probe.stats.motion_energy"])
    [(bright,)] = duckdb.sql(f"select count(*) from '{path}' where \"probe.stats.mean_luma\" > 0").fetchall()
    assert bright == 9


def test_csv_and_json_lines(finished_run, tmp_path):
    import csv

    export(finished_run, tmp_path / "clips.csv", form="csv", progress=False)
    with open(tmp_path / "clips.csv", newline="", encoding="utf-8") as f:
        rows = {row["member"]: row for row in csv.DictReader(f)}
    assert len(rows) == 13 and json.loads(rows["good.0 (0-1).mp4"]["probe.video_streams"])[0]["width"] == 160
    export(finished_run, tmp_path / "clips.jsonl", form="jsonl", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "clips.jsonl").read_text().splitlines()]
    assert len(lines) == 13 and isinstance(lines[0]["probe.video_streams"], (list, type(None)))


def test_an_unfinished_run_is_exported_with_its_complete_records(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    tar = copy / "probe" / "a-000.tar"
    data = tar.read_bytes()
    (copy / "probe" / "a-000.tar.partial").write_bytes(data[: len(data) // 2])  # as a kill leaves it
    tar.unlink()
    done = export(copy, tmp_path / "clips.parquet", progress=False)
    table = pq.read_table(tmp_path / "clips.parquet")
    assert done["unfinished_shards"] == {"probe": ["a-000"]} and not (tmp_path / "clips.parquet.tmp").exists()
    assert 0 < sum(status is not None for status in table.column("probe.status").to_pylist()) < 13
    assert json.loads(pq.read_metadata(tmp_path / "clips.parquet").metadata[b"extract.unfinished_shards"]) == {"probe": ["a-000"]}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium: install Debian's chromium (launch/test.sh does, when run as root) to test the report page")


def test_the_report_shows_the_counts_a_picture_per_decoded_clip_and_the_failures(finished_run, tmp_path):
    from PIL import Image

    out = tmp_path / "report.html"
    done = report(finished_run, out, limit=50)
    assert done["shown"] == done["pictures"] == 9  # the 9 decoded clips, each with its keyframe
    browser = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000"]
    dom = subprocess.run([*browser, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('<article class="clip"') == 9
    pictures = [part.split('"', 1)[0] for part in dom.split('src="data:image/jpeg;base64,')[1:]]
    assert len(pictures) == 9
    for picture in pictures:
        image = Image.open(io.BytesIO(base64.b64decode(picture)))
        assert image.width == 320 and image.height == 240  # 160x120 frames, shown 320 wide
    assert dom.count("<rect x=") >= 9 * 1  # grounding_sam's boxes, drawn on the keyframes they were found on
    summary = json.loads((finished_run / "probe" / "summary.json").read_text())["output_totals"]["by_status"]
    assert f'data-head="probe" data-status="ok">{summary["ok"]}<' in dom
    assert dom.count("<tr><td>empty (0-1).mp4</td><td>") == 1 and "README.md" in dom  # failed and rejected members listed
    shot = tmp_path / "report.png"
    subprocess.run([*browser, "--window-size=1400,2000", f"--screenshot={shot}", out.as_uri()], capture_output=True, timeout=120)
    assert len(set(Image.open(shot).convert("L").getdata())) > 50  # the page painted something, not a blank


def test_wandb_logs_a_sample_table_of_keyframes_and_what_the_heads_said(tmp_path):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [(f"v{i} (0-1).mp4", make_clip(seconds=1)) for i in range(3)])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    result = subprocess.run([__import__("sys").executable, "-m", "extract", "+model=[probe,av_sync]", "model.av_sync.method=onset_xcorr", f"tar_folder={tmp_path / 'in'}",
                             f"output_dir={tmp_path / 'out'}", "num_workers=1", "wandb.mode=offline"],
                            cwd=str(__import__("conftest").REPO), capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    tables = list((tmp_path / "out" / "wandb").glob("offline-run-*/files/media/table/samples_*.table.json"))
    images = list((tmp_path / "out" / "wandb").glob("offline-run-*/files/media/images/*.png"))
    assert tables and images
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["key", "head", "keyframe", "status", "said"] and len(table["data"]) == 6  # 3 clips x 2 heads


def test_the_duration_chart_leaves_out_clips_no_head_could_read():
    from extract.report import DISTRIBUTIONS

    duration = dict((title, value) for title, _, _, value in DISTRIBUTIONS)["Duration"]
    broken = {"llava_video": {"status": "error", "start": 0.0, "end": 5.0}}
    read = {"llava_video": {"status": "ok", "start": 0.0, "end": 5.0}}
    probed = {"probe": {"status": "ok", "start": 0.0, "end": 5.0, "duration_s_measured": 4.96}}
    assert (duration(broken), duration(read), duration(probed)) == (None, 5.0, 4.96)


def test_an_export_that_fails_leaves_the_previous_table_as_it_was(finished_run, tmp_path, monkeypatch):
    import extract.export as export_module

    out = tmp_path / "clips.parquet"
    out.write_bytes(b"the previous table")

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "shard_rows", broken)
    with pytest.raises(OSError):
        export(finished_run, out, progress=False)
    assert out.read_bytes() == b"the previous table" and list(tmp_path.glob("*.tmp")) == []


@pytest.mark.parametrize("tool", ["extract.export", "extract.report"])
def test_the_tools_say_what_is_wrong_in_one_line(tool, tmp_path):
    import subprocess
    import sys

    (tmp_path / "empty").mkdir()
    for folder, words in ((tmp_path / "nowhere", "is not a folder"), (tmp_path / "empty", "holds no head's output")):
        result = subprocess.run([sys.executable, "-m", tool, str(folder)], capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [f"error: {folder} {words} (<head>/NAME.tar)"
                                                                               if "no head" in words else f"error: {folder} {words}"]


def test_the_generic_webdataset_loader_reads_a_run_with_the_projects_features(finished_run, tmp_path):
    """`load_dataset("webdataset", data_files=...)` guesses types from the first rows and fails on columns whose first
    values are null (error records first); with the features the project gives it reads every record."""
    from glob import glob

    datasets = pytest.importorskip("datasets")
    from extract.heads import datasets_features

    files = sorted(glob(str(finished_run / "probe" / "*.tar")))
    loaded = datasets.load_dataset("webdataset", data_files=files, features=datasets_features("probe"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
    records = {r["key"]: r for r in read_records(finished_run / "probe")}
    assert len(loaded) == len(records) == 13
    for example in loaded:
        record = records[example["__key__"]]
        assert example["json"]["status"] == record["status"] and example["json"]["stats"] == record["stats"]


def test_wandbs_own_dir_variable_wins_over_the_output_folder(tmp_path):
    """README: a run writes nothing outside output_dir unless W&B's own variables say so; when WANDB_DIR says so, the
    run goes there."""
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("v (0-1).mp4", make_clip(seconds=1))])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"WANDB_DIR": str(tmp_path / "mine")}
    (tmp_path / "mine").mkdir()
    result = subprocess.run([__import__("sys").executable, "-m", "extract", "+model=probe", f"tar_folder={tmp_path / 'in'}",
                             f"output_dir={tmp_path / 'out'}", "num_workers=0", "wandb.mode=offline"],
                            cwd=str(__import__("conftest").REPO), capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "mine" / "wandb").glob("offline-run-*"))
    assert not list((tmp_path / "out").glob("**/offline-run-*"))
