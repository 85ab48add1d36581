"""The writer's rules, on its own: one folder, one set of head options."""

import json
import tarfile
import threading

import pytest

from extract.errors import ConfigError
from extract.writer import OutputWriter


@pytest.mark.parametrize("left_behind", ["s-000.tar", "s-000.tar.partial"])
def test_other_options_are_refused_over_finished_or_unfinished_shards(tmp_path, left_behind):
    """A killed run leaves only `.partial` shards: resuming them with other options would mix two settings."""
    folder = tmp_path / "probe"
    OutputWriter(folder, options={"fps": 2.0})
    (folder / left_behind).write_bytes(b"")
    with pytest.raises(ConfigError, match=r"holds records made with other options of this head \(fps: 2.0 -> 8.0\)"):
        OutputWriter(folder, options={"fps": 8.0})
    assert json.loads((folder / "options.json").read_text()) == {"fps": 2.0}  # the refused run changed nothing
    OutputWriter(folder, options={"fps": 2.0})  # the same options resume


def test_a_folder_without_shards_takes_the_new_options(tmp_path):
    folder = tmp_path / "probe"
    OutputWriter(folder, options={"fps": 2.0})
    OutputWriter(folder, options={"fps": 8.0})
    assert json.loads((folder / "options.json").read_text()) == {"fps": 8.0}


def _record(key: str, status: str = "ok", video_id: str | None = "v", error_type: str | None = None) -> dict:
    return {"key": key, "video_id": video_id, "start": 0.0, "end": 1.0, "status": status, "error_type": error_type,
            "arrays": []}


def test_what_flush_wrote_is_on_disk_before_the_shard_is_finished(tmp_path):
    """A kill right after a batch's flush keeps that batch: the `.partial` on disk holds its complete records."""
    from extract.writer import complete_records

    writer = OutputWriter(tmp_path / "probe")
    url = "/data/s-000.tar"
    writer.plan([url])
    writer.write(url, _record("a"), {})
    writer.flush()
    partial = tmp_path / "probe" / "s-000.tar.partial"
    assert [r["key"] for r, _ in complete_records(partial)] == ["a"]  # read through another handle, as a rerun reads it
    writer.close()


def test_a_shards_stats_count_every_record_and_list_the_clips_for_the_csv(tmp_path):
    writer = OutputWriter(tmp_path / "probe")
    url = "/data/s-000.tar"
    writer.plan([url])
    records = [_record("a"), _record("b", "error", video_id="bad", error_type="not_media"),
               _record("member_1", "rejected", video_id=None, error_type="bad_name")]
    for record in records:
        writer.write(url, record, {})
    stats = writer.finish(url, None, [], "probe")
    assert stats["records"] == 3 and stats["by_status"] == {"ok": 1, "error": 1, "rejected": 1}
    assert stats["by_error_type"] == {"not_media": 1, "bad_name": 1}
    # a clip that failed is still a clip of the CSV's (its row is not "without a clip"); a rejected member is none
    assert stats["clips"] == [["v", 0.0, 1.0], ["bad", 0.0, 1.0]] and stats["keys"] == ["a", "b", "member_1"]
    assert json.loads((tmp_path / "probe" / "s-000.stats.json").read_text())["records"] == 3
    assert (tmp_path / "probe" / "s-000.tar").exists() and not (tmp_path / "probe" / "s-000.tar.partial").exists()


def test_the_plan_counts_finished_shards_and_resumes_partial_ones(tmp_path):
    folder = tmp_path / "probe"
    first = OutputWriter(folder)
    urls = ["/data/s-000.tar", "/data/s-001.tar", "/data/s-002.tar"]
    first.plan(urls)
    first.write(urls[0], _record("a"), {})
    first.finish(urls[0], None, [], "probe")
    first.write(urls[1], _record("b"), {})
    first.write(urls[1], _record("c"), {})
    first.flush()
    first.close()  # as a kill leaves it: s-001 unfinished
    todo, done_keys, complete = OutputWriter(folder).plan(urls)
    assert complete == 1 and todo == urls[1:] and done_keys == {urls[1]: {"b", "c"}, urls[2]: set()}


def test_a_shard_being_written_is_locked_against_a_second_writer(tmp_path):
    from extract.writer import OutputBusy, ShardLock

    lock = ShardLock(tmp_path / ".locks" / "s-000.lock")
    second: list[BaseException] = []

    def take_it_again():
        try:
            ShardLock(tmp_path / ".locks" / "s-000.lock")
        except BaseException as error:  # noqa: BLE001 - the test looks at what it was
            second.append(error)

    attempt = threading.Thread(target=take_it_again, daemon=True)  # a daemon: a lock that waits must not hang the suite
    attempt.start()
    attempt.join(timeout=30)
    assert not attempt.is_alive(), "the second writer waits for the lock instead of being refused"
    [refused] = second
    assert isinstance(refused, OutputBusy) and "is being written by another run" in str(refused)
    lock.release()
    ShardLock(tmp_path / ".locks" / "s-000.lock").release()  # released: the next run takes it


def test_a_different_shard_under_a_finished_shards_name_is_refused_and_the_same_shard_moved_resumes(tmp_path):
    """Two folders each with part-00000.tar.gz into one output_dir: the second is not taken for done (a silent skip of
    all its clips); the first, moved to another folder, is the same shard and is not redone."""
    import shutil

    from conftest import make_clip, run_cli, write_shard

    first, second, moved = tmp_path / "A", tmp_path / "B", tmp_path / "moved"
    for folder in (first, second, moved):
        folder.mkdir()
    clip = make_clip(seconds=1, tone=None)
    write_shard(first / "part-00000.tar.gz", [("a (0-1).mp4", clip), ("b (0-1).mp4", clip)])
    write_shard(second / "part-00000.tar.gz", [(f"other{i} (0-1).mp4", clip) for i in range(3)])
    out = tmp_path / "out"
    done = run_cli("+model=probe", f"tar_folder={first}", f"output_dir={out}", "num_workers=0")
    assert done.returncode == 0, done.stderr

    refused = run_cli("+model=probe", f"tar_folder={second}", f"output_dir={out}", "num_workers=0")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(second / "part-00000.tar.gz") in errors[0] and "another shard" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr
    with tarfile.open(out / "probe" / "part-00000.tar") as tar:
        assert [json.loads(tar.extractfile(m).read())["video_id"] for m in tar.getmembers()] == ["a", "b"]  # untouched

    shutil.move(first / "part-00000.tar.gz", moved / "part-00000.tar.gz")
    again = run_cli("+model=probe", f"tar_folder={moved}", f"output_dir={out}", "num_workers=0")
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "probe" / "summary.json").read_text())
    assert summary["this_run"]["records"] == 0 and summary["output_totals"]["records"] == 2
    # where the shard is now is known to the tools that read it again, without --input-root
    from extract.report import report
    from extract.select import select

    assert select(out, "true", tmp_path / "chosen", progress=False)["clips_written"] == 2
    assert report(out)["pictures"] == 2


def test_a_partial_shard_of_another_input_is_not_resumed_with_this_ones_clips(tmp_path):
    from extract.errors import ConfigError
    from extract.writer import OutputWriter, check_sources

    first, second = tmp_path / "A" / "s.tar", tmp_path / "B" / "s.tar"
    for path, content in ((first, b"one" * 100), (second, b"two" * 100)):
        path.parent.mkdir()
        path.write_bytes(content)
    writer = OutputWriter(tmp_path / "out")
    writer.plan([str(first)])
    writer.write(str(first), {"key": "k", "status": "ok"}, {})
    writer.close()  # killed mid-shard: a .partial is left
    assert (tmp_path / "out" / "s.tar.partial").exists()
    check_sources(tmp_path / "out", [str(first)])  # the same input resumes
    with pytest.raises(ConfigError, match="holds the records of another shard"):
        check_sources(tmp_path / "out", [str(second)])


def test_a_shard_is_known_by_its_ends_by_where_it_is_named_and_old_outputs_resume(tmp_path):
    """The identity reads both ends (a gzip stream ends with the CRC of all it holds); `file:` names the same file; an
    output written before sources were recorded resumes as it always did."""
    from extract.writer import check_sources, shard_source

    body = bytes(range(256)) * (3 * 4096)  # 3 MiB
    first, second = tmp_path / "A" / "s.tar", tmp_path / "B" / "s.tar"
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(body + b"one")
    second.write_bytes(body + b"two")  # same size, same first MiB and more: only the end differs
    assert shard_source(str(first)) != shard_source(str(second))
    assert shard_source(f"file:{first}") == shard_source(str(first)) == shard_source(f"pipe:cat {first}")
    writer = OutputWriter(tmp_path / "out")
    writer.plan([str(first)])
    writer.write(str(first), {"key": "k", "status": "ok"}, {})
    writer.finish(str(first), None, [], "probe")
    writer.close()
    with pytest.raises(ConfigError, match="another shard"):
        check_sources(tmp_path / "out", [str(second)])
    check_sources(tmp_path / "out", [f"file:{first}"])
    # an output from before sources were recorded: no .sources, no source in its stats
    old = tmp_path / "old"
    old.mkdir()
    (old / "s.tar").write_bytes(b"")
    (old / "s.stats.json").write_text(json.dumps({"shard": "/elsewhere/s.tar", "output": "s.tar"}))
    check_sources(old, [str(second)])
