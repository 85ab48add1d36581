"""The README's quickstart command, as a user runs it, on the bundled sample."""

import csv
import subprocess

from conftest import REPO, read_records


def test_run_sh_processes_the_bundled_shards(tmp_path):
    result = subprocess.run(["bash", "launch/run.sh", f"output_dir={tmp_path}", "wandb.mode=disabled"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"records: {tmp_path}/<head>/*.tar" in result.stdout
    records = read_records(tmp_path / "probe")
    with open(REPO / "shards" / "sample.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["video_id"] for r in records) == sorted(row["video_id"] for row in rows)
    assert all(r["status"] == "ok" and r["in_csv"] and r["has_audio"] for r in records)
