"""The runner's own rules, unit by unit (end-to-end runs are in test_end_to_end.py and test_reliability.py)."""

import torch

from extract.heads import Head
from extract.runner import batch_size_on


class _Captioner(Head):
    name = "captioner"
    device_batch_size = 64


def test_a_heads_batch_size_is_its_own_else_its_gpu_queue_else_the_runs():
    head = _Captioner()
    head.batch_size = None
    assert batch_size_on(head, torch.device("cuda", 0), 4) == 64
    assert batch_size_on(head, torch.device("cpu"), 4) == 4
    head.batch_size = 8
    assert batch_size_on(head, torch.device("cuda", 0), 4) == 8
    plain = Head()
    plain.batch_size = None
    assert batch_size_on(plain, torch.device("cuda", 0), 3) == 3


def test_two_inputs_with_one_output_name_are_refused(tmp_path):
    import pytest

    from conftest import compose_cfg
    from extract.errors import ConfigError
    from extract.runner import check_inputs

    for name in ("a.tar", "a.tar.gz", "b.tar"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match="several input shards share the output name 'a'"):
        check_inputs(compose_cfg("+model=probe", f"tar_folder={tmp_path}"))


def test_run_settings_are_checked_with_their_least_values():
    import pytest

    from conftest import compose_cfg
    from extract.errors import ConfigError
    from extract.runner import check_settings

    for setting, words in {"max_member_mb=0": "max_member_mb=0 is not a number of at least 1",
                           "batch_size=0": "batch_size=0 is not a whole number of at least 1",
                           "csv_tolerance=-0.1": "csv_tolerance=-0.1 is not a number of at least 0"}.items():
        with pytest.raises(ConfigError, match=words):
            check_settings(compose_cfg("+model=probe", setting))
    check_settings(compose_cfg("+model=probe", "csv_tolerance=0", "decode_timeout=0", "max_member_mb=1"))


def test_what_records_depend_on_are_the_options_kept_batch_sizes_aside():
    from conftest import compose_cfg
    from extract.runner import chosen_heads

    heads = chosen_heads(compose_cfg("+model=[probe,av_sync]", "model.probe.fps=2", "model.probe.batch_size=3",
                                     "model.av_sync.method=synchformer", "model.av_sync.window_batch=4"))
    assert heads["probe"].options["fps"] == 2 and "batch_size" not in heads["probe"].options
    assert heads["av_sync"].options["method"] == "synchformer" and "window_batch" not in heads["av_sync"].options
    assert heads["probe"].batch_size == 3 and heads["av_sync"].batch_size is None  # the run's, once the device is known


def test_a_results_arrays_are_listed_in_its_record_sorted():
    import numpy as np

    from extract.catalog import Catalog
    from extract.data import ClipItem
    from extract.heads import Result
    from extract.runner import HeadRunner

    class _Writer:
        def write(self, *args):
            pass

    head = _Captioner()
    head.fields, head.model_id = {}, None
    runner = HeadRunner(head, _Writer(), Catalog.empty())
    item = ClipItem("/in/s.tar", "v (0-1).mp4", "v_0_1000_x", ("captioner",), "v", 0.0, 1.0)
    record, arrays = runner._record(item, Result(arrays={"b": np.zeros(1), "a": np.ones(1)}))
    assert record["arrays"] == ["a", "b"] and set(arrays) == {"a", "b"} and record["status"] == "ok"


def test_progress_counts_clips_done_and_each_heads_errors():
    from extract.progress import Progress

    progress = Progress(True, {"mode": "disabled"}, {}, "unused", shards=3)
    progress.read("a", 2)
    progress.read("b", 2)
    progress.update([{"key": "a", "head": "probe", "status": "ok"}, {"key": "b", "head": "probe", "status": "error"}])
    assert (progress.clips, progress.bar.n) == (0, 0)  # av_sync has written neither yet
    progress.update([{"key": "a", "head": "av_sync", "status": "ok"}])
    assert (progress.clips, progress.bar.n) == (1, 1)
    progress.update([{"key": "b", "head": "av_sync", "status": "rejected"}])
    progress.shard_done()
    assert progress.clips == 2 and progress.head_errors == {"probe": 1, "av_sync": 1}
    assert progress.bar.postfix == "shards 1/3, errors: av_sync 1, probe 1"
    progress.close()


def test_each_batchs_records_are_on_disk_when_it_is_done(tmp_path):
    """A kill right after a batch keeps it: the head's batch is written and flushed to its `.partial` before the next."""
    from extract.catalog import Catalog
    from extract.data import ClipItem
    from extract.decode import Media
    from extract.heads import Result
    from extract.runner import HeadRunner
    from extract.writer import OutputWriter, complete_records

    class Counts(Head):
        name, fields = "counts", {"n": int}

        def infer(self, clips):
            return [Result(fields={"n": i}) for i, _ in enumerate(clips)]

    head = Counts()
    head.batch_size, head.model_id = 2, None
    writer = OutputWriter(tmp_path / "counts")
    url = "/in/s-000.tar"
    writer.plan([url])
    runner = HeadRunner(head, writer, Catalog.empty())
    items = [ClipItem(url, f"c{i} (0-1).mp4", f"c{i}", ("counts",), f"c{i}", 0.0, 1.0, media={"counts": Media(info={})},
                      prepared={"counts": None})
             for i in range(3)]
    assert runner.add(items[0]) == []
    written = runner.add(items[1])  # the batch is full: run and written
    assert [r["key"] for r in written] == ["c0", "c1"]
    assert [r["key"] for r, _ in complete_records(tmp_path / "counts" / "s-000.tar.partial")] == ["c0", "c1"]
    writer.close()


def test_the_plan_resumes_each_head_where_it_stopped_and_counts_what_it_kept(tmp_path):
    from extract.catalog import Catalog
    from extract.runner import HeadRunner, plan_shards
    from extract.writer import OutputWriter

    urls = ["/in/s-000.tar", "/in/s-001.tar", "/in/s-002.tar"]
    record = lambda key: {"key": key, "video_id": key, "start": 0.0, "end": 1.0, "status": "ok", "arrays": []}  # noqa: E731
    first = OutputWriter(tmp_path / "probe")
    first.plan(urls)
    first.write(urls[0], record("a"), {})
    first.finish(urls[0], None, [], "probe")
    for key in ("b", "c", "d"):
        first.write(urls[1], record(key), {})
    first.flush()
    first.close()  # killed: s-001 holds three records, s-002 none
    runners = {"probe": HeadRunner(_Captioner(), OutputWriter(tmp_path / "probe"), Catalog.empty()),
               "av_sync": HeadRunner(_Captioner(), OutputWriter(tmp_path / "av_sync"), Catalog.empty())}
    plan, report = plan_shards(runners, urls)
    assert report == {"shards_already_complete": {"probe": 1, "av_sync": 0}, "clips_resumed": {"probe": 3, "av_sync": 0}}
    assert plan.urls == urls and plan.heads_for(urls[0], "a") == ("av_sync",)  # probe is done with s-000
    assert plan.heads_for(urls[1], "b") == ("av_sync",) and plan.heads_for(urls[1], "e") == ("probe", "av_sync")
    for runner in runners.values():
        runner.writer.close()


def test_the_summary_adds_up_every_ranks_clips_and_a_shards_fault_is_reported(tmp_path):
    from extract.catalog import Catalog
    from extract.data import ShardEnd, ShardPlan
    from extract.runner import HeadRunner, finish_shard, write_summary
    from extract.writer import OutputWriter

    head = _Captioner()
    head.model_id = None
    writer = OutputWriter(tmp_path / "captioner")
    url = "/in/s-000.tar"
    writer.plan([url])
    writer.write(url, {"key": "a", "video_id": "a", "start": 0.0, "end": 1.0, "status": "ok", "arrays": []}, {})
    runners = {"captioner": HeadRunner(head, writer, Catalog.empty())}
    faults = {}
    finish_shard(runners, ShardPlan({url: {"captioner": set()}}), ShardEnd(url, "gzip stream ends early", []), faults)
    assert faults == {url: "gzip stream ends early"} and runners["captioner"].finished == [url]
    reports = [{"rank": rank, "clips_read": clips, "clips_resumed": {"captioner": resumed}, "by_status": {"captioner": {"ok": ok}},
                "shards_finished": {"captioner": [url] if rank == 0 else []}} for rank, clips, resumed, ok in ((0, 3, 1, 1), (1, 4, 2, 0))]
    summary = write_summary(tmp_path / "captioner", head, Catalog.empty(), reports, wall=2.0)
    assert summary["this_run"]["clips_read"] == 7 and summary["this_run"]["clips_resumed"] == 3
    assert summary["this_run"]["records"] == 1 and summary["output_totals"]["shard_faults"] == {url: "gzip stream ends early"}


def test_rank_zeros_bar_counts_every_ranks_clips_errors_and_shards():
    import torch.distributed as dist

    from extract.progress import Progress, RankCounts

    store = dist.HashStore()  # what the ranks share: torchrun's store in a run
    zero = Progress(True, {"mode": "disabled"}, {}, "unused", shards=6, shards_done=1, share=RankCounts(store, 0, 2),
                    share_every_s=0)
    one = Progress(False, {"mode": "disabled"}, {}, "unused", shards=6, shards_done=2, share=RankCounts(store, 1, 2),
                   share_every_s=0)
    for key in ("a", "b", "c"):
        one.read(key, 1)
    one.update([{"key": "a", "head": "probe", "status": "ok"}, {"key": "b", "head": "probe", "status": "error"},
                {"key": "c", "head": "probe", "status": "ok"}])
    one.shard_done()
    zero.read("z", 1)
    zero.update([{"key": "z", "head": "probe", "status": "rejected"}])
    assert zero.bar.n == 4  # 1 here and 3 on rank 1
    assert zero.bar.postfix == "shards 4/6, errors: probe 2"  # 1 + 2 complete before the run, 1 finished on rank 1
    zero.close()
    one.close()


def test_every_run_ends_with_its_totals_and_the_bar_counts_the_whole_job(tmp_path):
    """Two ranks over 5 shards: the bar counts every rank's clips, errors (rejected members too) and shards, never more
    shards than the job has, and ends on all 5; then one totals line. A complete rerun says there was nothing to do; a
    rerun that finishes a killed shard counts what it resumed; a rerun where only another head had work is not
    'nothing to do'."""
    import json
    import re

    from conftest import make_clip, run_cli, write_shard
    from extract.writer import complete_records

    (tmp_path / "in").mkdir()
    clip = make_clip(seconds=1, tone=None)
    for shard in range(5):
        members = [(f"v{shard}_{i} (0-1).mp4", clip) for i in range(2 + shard)]
        if shard == 0:
            members += [("README.txt", b"notes"), ("empty (0-1).mp4", b"")]  # rejected, error
        write_shard(tmp_path / "in" / f"s-{shard}.tar", members, gz=False)
    args = ["+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}", "num_workers=1"]
    summary_path = tmp_path / "out" / "probe" / "summary.json"

    def bars(stderr: str) -> list[str]:
        states = [part for part in re.split(r"[\r\n]", stderr) if part.startswith("done")]
        for state in states:  # never more shards done than the job has
            shards = re.search(r"shards (\d+)/(\d+)", state)
            assert shards is None or int(shards[1]) <= int(shards[2]), state
        return states

    first = run_cli(*args, torchrun=2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert re.match(r"done on 2 ranks: 22 clips \[.*shards 5/5, errors: probe 2\]", bars(first.stderr)[-1]), first.stderr[-1500:]
    totals = [line for line in first.stderr.splitlines() if line.startswith("this run:")]
    assert totals == [f"this run: probe 22 records (error 1, ok 20, rejected 1); shard faults: 0; summary: {summary_path}"]

    again = run_cli(*args)
    assert again.returncode == 0 and "0clip" not in again.stderr
    assert re.match(r"done: 0 clips \[.*shards 5/5", bars(again.stderr)[-1])
    assert [line for line in again.stderr.splitlines() if line.startswith("nothing to do")] == [
        f"nothing to do: every shard is complete (22 records already in {tmp_path / 'out'}); summary: {summary_path}"]

    # s-4 killed after 3 of its 6 clips: a .partial with 3 complete records
    probe = tmp_path / "out" / "probe"
    kept = list(complete_records(probe / "s-4.tar"))
    (probe / "s-4.tar.partial").write_bytes((probe / "s-4.tar").read_bytes()[: kept[2][1]])
    for finished in (probe / "s-4.tar", probe / "s-4.stats.json"):
        finished.unlink()
    resumed = run_cli(*args, torchrun=2)
    assert re.match(r"done on 2 ranks: 3 clips \[.*shards 5/5", bars(resumed.stderr)[-1]), resumed.stderr[-1500:]
    assert "this run: probe 3 records (ok 3), 3 resumed; shard faults: 0" in resumed.stderr
    assert json.loads(summary_path.read_text())["output_totals"]["records"] == 22

    other = run_cli("+model=[av_sync,probe]", "model.av_sync.method=onset_xcorr", *args[1:])  # the last head has nothing to do
    assert other.returncode == 0, other.stderr[-2000:]
    assert "nothing to do" not in other.stderr and "this run: av_sync 22 records (" in other.stderr
    assert "; probe 0 records; shard faults: 0" in other.stderr
