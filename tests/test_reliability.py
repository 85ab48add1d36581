"""Faults a long run meets: hostile members, hangs, limits, full disks, kills and restarts."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import REPO, compose_cfg, make_clip, read_records, run_cli, write_shard
from processes import descendants, freeze_tree, kill_tree, signal_all, wait_gone
from extract import data as data_module
from extract.decode import decode_views
from extract.runner import run
from extract.schema import BASE_FIELDS
from extract.writer import OutputError, encode_record


def _cfg(tmp_path, *extra):
    return compose_cfg("+model=probe", f"tar_folder={tmp_path / 'in'}", f"output_dir={tmp_path / 'out'}",
                       "num_workers=1", "batch_size=2", "wandb.mode=disabled", *extra)


def _entry(name, kind=tarfile.REGTYPE, data=b"", **fields) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def _wav() -> bytes:
    command = ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=1", "-f", "wav", "pipe:1"]
    return subprocess.run(command, check=True, capture_output=True).stdout


def test_hostile_members_are_reported_and_never_escape(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    long_name = "x" * 4000 + " (0-1).mp4"
    entries = [
        _entry("good (0-1).mp4", data=clip_bytes),
        _entry("../escape (0-1).mp4", data=clip_bytes),
        _entry("/abs/path (0-1).mp4", data=clip_bytes),
        _entry("symlink (0-1).mp4", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _entry("hardlink (0-1).mp4", tarfile.LNKTYPE, linkname="good (0-1).mp4"),
        _entry("device (0-1).mp4", tarfile.CHRTYPE, devmajor=1, devminor=3),
        _entry("fifo (0-1).mp4", tarfile.FIFOTYPE),
        _entry(long_name, data=clip_bytes),
        _entry("new\nline (0-1).mp4", data=clip_bytes),
        _entry("tab\there (0-1).mp4", data=clip_bytes),
        _entry("dup (0-1).mp4", data=clip_bytes),
        _entry("dup (0-1).mp4", data=clip_bytes),  # inside one shard
        _entry("audio only (0-1).mp4", data=_wav()),  # the extension lies: a WAV
        _entry("mkv inside (0-1).mp4", data=make_clip(fmt="matroska", tone=None)),  # a Matroska
    ]
    with tarfile.open(tmp_path / "in" / "a.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    write_shard(tmp_path / "in" / "b.tar", [("dup (0-1).mp4", clip_bytes), ("other (0-1).mp4", clip_bytes)], gz=False)
    # a member that declares a terabyte, in a shard that ends right after its header
    header = tarfile.TarInfo("huge (0-1).mp4")
    header.size = 10**12
    (tmp_path / "in" / "c.tar").write_bytes(header.tobuf(format=tarfile.PAX_FORMAT) + b"\0" * 4096)

    summary = run(_cfg(tmp_path))
    records = read_records(tmp_path / "out" / "probe")
    by_member = {r["member"][:60]: r for r in records}
    assert len({r["key"] for r in records}) == len(records)
    assert all(set(BASE_FIELDS) <= set(r) for r in records)
    assert by_member["good (0-1).mp4"]["status"] == "ok"
    for name in ["../escape (0-1).mp4", "/abs/path (0-1).mp4"]:
        assert by_member[name]["status"] == "rejected" and by_member[name]["error_type"] == "bad_name"
    for name, words in [("symlink", "symbolic link"), ("hardlink", "hard link"), ("device", "character device"), ("fifo", "FIFO")]:
        record = by_member[f"{name} (0-1).mp4"]
        assert record["status"] == "rejected" and record["error_type"] == "not_a_file" and words in record["error"]
    for name in ["new\nline (0-1).mp4", "tab\there (0-1).mp4"]:
        assert by_member[name]["error_type"] == "bad_name" and "control character" in by_member[name]["error"]
    long_record = by_member["x" * 60]
    assert long_record["error_type"] == "bad_name" and "longer than" in long_record["error"] and len(long_record["member"]) < 400
    assert by_member["audio only (0-1).mp4"]["error_type"] == "no_video_stream"
    assert by_member["mkv inside (0-1).mp4"]["status"] == "ok" and by_member["mkv inside (0-1).mp4"]["container"] == "matroska"
    assert by_member["huge (0-1).mp4"]["error_type"] == "too_large"
    # duplicates: written once, the second reported (inside a shard and across shards)
    assert sum(1 for r in records if r["member"] == "dup (0-1).mp4") == 1
    duplicates = summary["output_totals"]["duplicates"]
    assert duplicates[str(tmp_path / "in" / "a.tar")] == ["dup (0-1).mp4"]
    assert any("already in" in note for note in duplicates[str(tmp_path / "in" / "b.tar")])
    # the copy dropped after the run is not counted among this run's records
    assert summary["this_run"]["records"] == summary["output_totals"]["records"] == len(records)
    assert sum(summary["this_run"]["by_status"].values()) == len(records)
    assert any(s.endswith("c.tar") for s in summary["output_totals"]["shard_faults"])
    # nothing was written anywhere but the output folder
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"in", "out"} and not (REPO / "escape (0-1).mp4").exists()


HANG = b"\x00\xffHANG"  # not text: the reader would refuse text before decoding


def _hangs_on_marker(data, specs, **kwargs):
    if bytes(data) == HANG:
        time.sleep(3600)
    return decode_views(data, specs, **kwargs)


def test_a_hung_decode_is_abandoned_and_the_run_goes_on(tmp_path, clip_bytes, monkeypatch):
    monkeypatch.setattr(data_module, "decode_views", _hangs_on_marker)  # the forked workers inherit it
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("before (0-1).mp4", clip_bytes), ("hangs (0-1).mp4", HANG),
                                             ("after (0-1).mp4", clip_bytes)])
    started = time.monotonic()
    run(_cfg(tmp_path, "decode_timeout=2"))
    statuses = {r["member"]: (r["status"], r["error_type"]) for r in read_records(tmp_path / "out" / "probe")}
    assert statuses == {"before (0-1).mp4": ("ok", None), "hangs (0-1).mp4": ("error", "decode_timeout"),
                        "after (0-1).mp4": ("ok", None)}
    assert time.monotonic() - started < 300  # the hung decode sleeps an hour: the run did not wait for it


def test_member_and_decoded_size_limits(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "a.tar", [("big (0-1).mp4", clip_bytes + b"\0" * 2_000_000), ("small (0-1).mp4", clip_bytes)])
    run(_cfg(tmp_path, "max_member_mb=1", "max_decoded_gb=0.00001"))
    records = {r["member"]: r for r in read_records(tmp_path / "out" / "probe")}
    assert records["big (0-1).mp4"]["error_type"] == "too_large" and "max_member_mb" in records["big (0-1).mp4"]["error"]
    assert records["small (0-1).mp4"]["error_type"] == "too_large" and "max_decoded_gb" in records["small (0-1).mp4"]["error"]


def test_records_are_valid_json_whatever_the_error_says():
    nasty = 'quote " backslash \\ newline \n nul \x00 surrogate \udcff emoji 🎬 </script>'
    record = {"key": "k", "video_id": "v", "start": 0.0, "end": float("nan"), "status": "error", "error": nasty}
    decoded = json.loads(encode_record(record).decode("utf-8"))
    assert decoded["error"].startswith('quote " backslash \\ newline \n nul \x00 surrogate ') and "🎬" in decoded["error"]
    assert decoded["end"] is None and set(decoded) == set(record)


def test_full_disk_is_a_clear_error_and_the_rerun_finishes(tmp_path, clip_bytes, monkeypatch):
    (tmp_path / "in").mkdir()
    names = [f"clip {i} (0-1).mp4" for i in range(6)]
    write_shard(tmp_path / "in" / "a.tar", [(n, clip_bytes) for n in names])
    real_addfile, calls = tarfile.TarFile.addfile, []

    def addfile_until_full(self, info, fileobj=None):
        calls.append(info.name)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_addfile(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile_until_full)
    with pytest.raises(OutputError, match="No space left on device.*rerunning"):
        run(_cfg(tmp_path, "batch_size=1"))
    folder = tmp_path / "out" / "probe"
    assert not list(folder.glob("*.tar")) and list(folder.glob("*.partial"))
    monkeypatch.setattr(tarfile.TarFile, "addfile", real_addfile)
    run(_cfg(tmp_path))
    assert sorted(r["member"] for r in read_records(folder)) == sorted(names)


def test_unwritable_output_dir_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_cli("+model=probe", "tar_folder=shards", f"output_dir={tmp_path / 'file' / 'out'}")
    assert result.returncode == 2 and "is not writable" in result.stderr


# ---------------------------------------------------------------- kills and restarts under torchrun

HEADS = ("probe", "av_sync")


def _kill_dataset(tmp_path, shards: int = 4, clips: int = 8, seconds: float = 3) -> tuple[list[str], list[str]]:
    folder = tmp_path / "in"
    folder.mkdir()
    clip = make_clip(seconds=seconds, size="320x240", rate=24)
    names = []
    for s in range(shards):
        members = [f"vid.{s}.{j} ({j}-{j + 1}).mp4" for j in range(clips)]
        write_shard(folder / f"s-{s:03d}.tar.gz", [(n, clip) for n in members])
        names += members
    # two heads in one pass; av_sync writes in batches of 3, so a kill leaves the heads at different points
    args = [f"+model=[{','.join(HEADS)}]", "model.av_sync.method=onset_xcorr", f"tar_folder={folder}", f"output_dir={tmp_path / 'out'}", "batch_size=1",
            "model.av_sync.batch_size=3", "num_workers=1", "model.probe.fps=24", "wandb.mode=disabled"]
    return names, args


def _launch(args, *torchrun_args) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *torchrun_args,
               "-m", "extract", *args]
    return subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _complete_keys(path) -> set[str]:
    """Keys whose JSON record a (possibly cut) output tar holds in full, read without the product's code."""
    keys = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                data = tar.extractfile(info).read()
                if info.name.endswith(".json") and len(data) == info.size:
                    json.loads(data)
                    keys.add(info.name[: -len(".json")])
    except (tarfile.TarError, EOFError, ValueError, OSError):
        pass  # the cut tail
    return keys


def _saved(out) -> dict[str, dict[str, set[str]]]:
    """Per head: the keys in complete tars and the keys a kill left complete in partial ones."""
    return {head: {"complete": set().union(*(_complete_keys(p) for p in (out / head).glob("*.tar"))),
                   "partial": set().union(*(_complete_keys(p) for p in (out / head).glob("*.tar.partial")))} for head in HEADS}


def _partial_keys(out) -> set[str]:
    return set().union(*(_complete_keys(p) for p in out.glob("*/*.tar.partial")))


def _wait_for_partial_records(out, timeout: float = 300) -> None:  # a loaded 2-core machine takes minutes to start
    """Until a partial output tar holds a record it did not hold before: output is being written."""
    before = {p: _complete_keys(p) for p in out.glob("*/*.tar.partial")}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(_complete_keys(p) - before.get(p, set()) for p in out.glob("*/*.tar.partial")):
            return
        time.sleep(0.05)
    raise AssertionError("no output was being written: the kill would prove nothing")


def _check_complete_tars_read_to_the_end(out) -> None:
    for path in out.glob("*/*.tar"):
        with tarfile.open(path) as tar:
            for info in tar:
                assert len(tar.extractfile(info).read()) == info.size


def _check_every_clip_once(out, names) -> None:
    from extract.clips import parse_member_name

    for head in HEADS:
        records = read_records(out / head)
        assert sorted(r["member"] for r in records) == sorted(names), head
        assert [(r["key"], r["error"]) for r in records if r["status"] == "error"] == [], head
        assert not list((out / head).glob("*.partial")), head
        assert {r["key"] for r in records} == {parse_member_name(n).key for n in names}


def test_node_failures_mid_write_then_the_rerun_redoes_only_what_is_missing(tmp_path):
    """A node failure kills the agent, its ranks, their workers and decode children at once. The rerun must
    keep every record the partial tars hold, and read and decode only the clips some head still lacks."""
    names, args = _kill_dataset(tmp_path, clips=16)  # enough that three kills, each after a second or so, leave work
    out = tmp_path / "out"
    rng = random.Random(int(os.environ.get("EXTRACT_KILL_SEED", "0")))
    largest_kill, kills = 0, 0
    # a kill just after a shard's tar was finished leaves nothing partial to resume: then one more, up to 6 kills in all
    while kills < int(os.environ.get("EXTRACT_KILLS", "3")) or (kills < 6 and not _partial_keys(out)):
        kills += 1
        job = _launch(args)
        _wait_for_partial_records(out)
        time.sleep(rng.uniform(0.0, 0.5))
        killed = kill_tree(job.pid)
        job.wait()
        assert wait_gone(killed, timeout=10) == set()
        largest_kill = max(largest_kill, len(killed))
        _check_complete_tars_read_to_the_end(out)
    # one rank may still be starting, or be done with its part, at a kill; some kill must have hit the whole tree:
    # the agent, 2 ranks, their workers, decode children
    assert largest_kill >= 5, largest_kill
    assert list(out.glob("*/.locks/*.lock")), "the killed runs' lock files are there; they must not block the rerun"

    saved = _saved(out)
    assert _partial_keys(out), "the kills left nothing to resume; the test proves nothing"
    job = _launch(args)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    _check_complete_tars_read_to_the_end(out)
    _check_every_clip_once(out, names)
    from extract.clips import parse_member_name

    keys = {parse_member_name(n).key for n in names}
    still_needed = {key for key in keys if any(key not in saved[h]["complete"] | saved[h]["partial"] for h in HEADS)}
    for head in HEADS:
        this_run = json.loads((out / head / "summary.json").read_text())["this_run"]
        assert this_run["clips_resumed"] == len(saved[head]["partial"]), head  # every saved record was kept
        assert this_run["records"] == len(keys) - len(saved[head]["complete"] | saved[head]["partial"]), head
        assert this_run["clips_read"] == len(still_needed)  # only clips some head still lacked were read


def test_ranks_stop_when_their_agent_is_killed_and_the_rerun_finishes(tmp_path):
    names, args = _kill_dataset(tmp_path, shards=4, clips=16, seconds=8)  # minutes of work: orphans would not finish it in time
    out = tmp_path / "out"
    job = _launch(args)
    _wait_for_partial_records(out)
    below = descendants(job.pid)
    os.kill(job.pid, signal.SIGKILL)  # the agent alone: its ranks live in sessions of their own
    job.wait()
    assert wait_gone(below, timeout=15) == set(), "ranks (or their workers) outlived their agent"
    assert list(out.glob("*/*.tar.partial")), "the ranks finished their work instead of stopping with their agent"
    job = _launch(args)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    _check_every_clip_once(out, names)


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(tmp_path):
    names, args = _kill_dataset(tmp_path)
    out = tmp_path / "out"
    first = _launch(args)
    try:
        _wait_for_partial_records(out)
        # the first is frozen mid-write, holding its locks, while the second looks: it cannot end in the meantime
        # however slowly the second starts, and a second that waited for the lock would wait until the timeout
        frozen = freeze_tree(first.pid)
        try:
            second = run_cli(*args, timeout=240)
        finally:
            signal_all(frozen, signal.SIGCONT)
        assert second.returncode == 2, second.stderr
        [line] = second.stderr.strip().splitlines()
        assert line.startswith("error: ") and "is being written by another run" in line and f"pid {first.pid}" not in line
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr.decode()[-3000:]  # the refused second run left the first's output alone
        _check_every_clip_once(out, names)
    finally:
        if first.poll() is None:  # a failed test leaves no run behind
            kill_tree(first.pid)


def test_a_crashed_rank_is_restarted_by_torchrun_and_the_job_completes(tmp_path):
    names, args = _kill_dataset(tmp_path)
    out = tmp_path / "out"
    job = _launch(args, "--max-restarts=2")
    _wait_for_partial_records(out)
    ranks = subprocess.run(["pgrep", "-P", str(job.pid)], capture_output=True, text=True).stdout.split()
    assert ranks and not list(out.glob("*/*.tar")), "the crash must come mid-run"
    os.kill(int(ranks[-1]), signal.SIGKILL)
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr.decode()[-3000:]
    _check_every_clip_once(out, names)


class _Zeros:
    """A file of `size` zero bytes, read in chunks."""

    def __init__(self, size: int):
        self.left = size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def _peak_rss_mib(*arguments: str) -> float:
    """The largest resident size among every process of a run (main, worker, decode child), as the kernel counts it."""
    measure = "import resource, subprocess, sys; subprocess.run(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    command = [sys.executable, "-c", measure, sys.executable, "-m", "extract", "+model=probe", "num_workers=1",
               "wandb.mode=disabled", *arguments]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def test_a_gzip_bomb_is_refused_without_being_held_in_memory(tmp_path, clip_bytes):
    """One member of 1 GiB of zeros is about 1 MB in a .tar.gz: it must be refused from its first bytes,
    never held whole by the reader, a pipe or a decode."""
    for folder, bomb in (("plain", False), ("bomb", True)):
        (tmp_path / folder).mkdir()
        with tarfile.open(tmp_path / folder / "s.tar.gz", "w:gz", compresslevel=1) as tar:
            if bomb:
                info = tarfile.TarInfo("bomb (0-1).mp4")
                info.size = 1 << 30
                tar.addfile(info, _Zeros(info.size))
            info = tarfile.TarInfo("good (0-1).mp4")
            info.size = len(clip_bytes)
            tar.addfile(info, io.BytesIO(clip_bytes))
    assert (tmp_path / "bomb" / "s.tar.gz").stat().st_size < 8 << 20
    baseline = _peak_rss_mib(f"tar_folder={tmp_path / 'plain'}", f"output_dir={tmp_path / 'out-plain'}")
    peak = _peak_rss_mib(f"tar_folder={tmp_path / 'bomb'}", f"output_dir={tmp_path / 'out'}")
    records = {r["member"]: r for r in read_records(tmp_path / "out" / "probe")}
    assert (records["bomb (0-1).mp4"]["status"], records["bomb (0-1).mp4"]["error_type"]) == ("error", "not_media")
    assert "repeated" in records["bomb (0-1).mp4"]["error"] and records["good (0-1).mp4"]["status"] == "ok"
    assert peak < baseline + 200, f"a process of the run held {peak:.0f} MiB, {peak - baseline:.0f} MiB over a run without the bomb"


def test_wandb_follows_its_own_variables_and_writes_nothing_outside_output_dir(tmp_path, clip_bytes):
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "s.tar", [("a (0-1).mp4", clip_bytes)])
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "XDG_"))}
    command = [sys.executable, "-m", "extract", "+model=probe", f"tar_folder={tmp_path / 'in'}", "num_workers=0"]
    # WANDB_MODE=disabled in the environment: no W&B at all
    result = subprocess.run([*command, f"output_dir={tmp_path / 'off'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**env, "HOME": str(home), "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (tmp_path / "off" / "wandb").exists()
    # the default (offline): W&B's files stay under output_dir, nothing lands in the home folder
    result = subprocess.run([*command, f"output_dir={tmp_path / 'on'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300, env={**env, "HOME": str(home)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((tmp_path / "on" / "wandb").glob("offline-run-*"))
    assert [str(p.relative_to(home)) for p in home.rglob("*")] == []


def test_ctrl_c_stops_a_run_in_one_line_and_the_same_command_finishes_it(tmp_path):
    names, args = _kill_dataset(tmp_path, shards=2, clips=8, seconds=6)
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "extract", *args], cwd=REPO, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_partial_records(out)
    os.killpg(job.pid, signal.SIGINT)  # what a terminal sends the foreground process group
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr.decode()[-3000:]
    assert "Traceback" not in stderr.decode() and stderr.decode().rstrip().endswith("error: interrupted; run the same command again to resume")
    assert list(out.glob("*/*.tar.partial")), "the run finished before the interrupt: the test proves nothing"
    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _check_every_clip_once(out, names)


def test_under_the_launcher_a_bad_command_is_one_line_once_and_ctrl_c_is_one_line(tmp_path):
    """`python -m extract.launch` (NGPU>1 in launch/run.sh) checks the command line once before any rank starts, and
    on Ctrl-C stops the ranks with one line, exit 130; the same command then finishes the job."""
    launcher = [sys.executable, "-m", "extract.launch", "--standalone", "--nproc_per_node=2", "--"]
    bad = subprocess.run([*launcher, "+model=probe", f"tar_folder={tmp_path}", "+output_dri=x"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: unknown option 'output_dri' (did you mean output_dir?); known: " + bad.stderr.split("known: ")[1].strip()]
    names, args = _kill_dataset(tmp_path, shards=2, clips=8, seconds=6)
    out = tmp_path / "out"
    job = subprocess.Popen([*launcher, *args], cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_partial_records(out)
    os.killpg(job.pid, signal.SIGINT)  # what a terminal sends the foreground process group
    _, stderr = job.communicate(timeout=120)
    text = stderr.decode()
    assert job.returncode == 130, text[-3000:]
    assert "Traceback" not in text and "ChildFailedError" not in text and "BrokenPipeError" not in text, text[-3000:]
    assert text.rstrip().endswith("error: interrupted; run the same command again to resume")
    assert text.count("error: interrupted") == 1, text[-3000:]  # once, from the launcher, not once per rank
    assert "death signal" not in text and "OMP_NUM_THREADS" not in text, text[-3000:]  # torchrun's notes stay quiet
    rerun = subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _check_every_clip_once(out, names)
