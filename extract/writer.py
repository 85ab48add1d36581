"""The output side: one tar of `{key}.json` (+ `{key}.{name}.npy`) per input shard.

Each output tar is written as `<stem>.tar.partial`, flushed after every batch, and renamed to
`<stem>.tar` only when its input shard has been read to the end, so a kill never leaves a
truncated `.tar`. A rerun skips shards whose `.tar` exists and salvages a `.partial`: records
whose JSON and arrays are complete are kept, the file is cut after the last of them, and only the
missing clips are redone. `<stem>.stats.json` beside each tar keeps its counts for run summaries.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import io
import json
import math
import os
import socket
import tarfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from extract.data import SHARD_SUFFIXES, shard_stem
from extract.errors import ConfigError



def jsonable(value):
    """Plain JSON values: numpy scalars and arrays unpacked, NaN/inf as null, strings valid UTF-8."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if value is None or isinstance(value, (bool, int)):
        return value
    return str(value)


def encode_record(record: dict) -> bytes:
    return json.dumps(jsonable(record), ensure_ascii=False, allow_nan=False).encode("utf-8")


def encode_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class ShardTally:
    """Counts for one output shard, kept in its `.stats.json`."""

    def __init__(self):
        self.by_status: Counter = Counter()
        self.by_error_type: Counter = Counter()
        self.clips: list[list] = []  # [video_id, start, end] of every record, for the CSV check
        self.keys: list[str] = []
        self.length_mismatches = 0

    @classmethod
    def of(cls, records: list[dict]) -> "ShardTally":
        tally = cls()
        for record in records:
            tally.add(record)
        return tally

    def add(self, record: dict) -> None:
        self.keys.append(record["key"])
        self.by_status[record.get("status")] += 1
        if record.get("error_type"):
            self.by_error_type[record["error_type"]] += 1
        if record.get("video_id") is not None:
            self.clips.append([record["video_id"], record["start"], record["end"]])
        self.length_mismatches += bool(record.get("length_mismatch"))


class _OpenShard:
    def __init__(self, partial: Path, keep_bytes: int, tally: ShardTally):
        self.file = open(partial, "r+b" if partial.exists() else "wb")
        self.file.seek(keep_bytes)
        self.file.truncate()
        self.tar = tarfile.open(fileobj=self.file, mode="w", format=tarfile.PAX_FORMAT)
        self.tally = tally
        self.written_this_run = 0


def complete_records(path: Path):
    """(record, where its data ends) for every record of an output tar whose JSON and listed arrays are all there,
    in order; a tar cut short (a killed run's `.partial`) ends at its last complete record."""
    arrays_seen = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                data = tar.extractfile(info).read() if info.isreg() else b""
                if len(data) != info.size:
                    return
                key, _, suffix = info.name.partition(".")
                if suffix != "json":
                    arrays_seen.add(info.name)
                    continue
                record = json.loads(data)
                if all(f"{key}.{name}.npy" in arrays_seen for name in record.get("arrays", [])):
                    yield record, info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                arrays_seen = set()
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return  # the tail after the last complete record


def salvage(partial: Path) -> tuple[int, ShardTally, set[str]]:
    """Read what a killed run left: (bytes to keep, tally of complete records, their keys)."""
    tally, keys, keep = ShardTally(), set(), 0
    for record, end in complete_records(partial):
        keys.add(record["key"])
        tally.add(record)
        keep = end
    return keep, tally, keys


# how much of each end of an input shard identifies it: a gzip stream ends with the CRC-32 and length of all it holds
SOURCE_SAMPLE_BYTES = 1 << 20


def shard_source(url: str) -> dict:
    """What identifies an input shard (see _shard_source), computed once per file version."""
    path = Path(url[len("file:"):] if url.startswith("file:") else url)
    try:
        stat = path.stat()
        version = (stat.st_size, stat.st_mtime_ns)
    except OSError:
        version = None
    return dict(_shard_source(url, version))


@functools.lru_cache(maxsize=65536)
def _shard_source(url: str, version) -> tuple:
    return tuple(_identify(url).items())


def _identify(url: str) -> dict:
    """What identifies an input shard whatever folder it sits in: a local file's size and a hash of its first and last
    MiB; anything else (a `pipe:` command, a URL) by its text, since it cannot be read twice cheaply."""
    path = Path(url[len("file:"):] if url.startswith("file:") else url)
    if url.startswith("pipe:"):  # `pipe:cat /data/s-000.tar` reads a local file: that file is the input
        words = url[len("pipe:"):].split()
        files = [Path(w) for w in words[1:] if w.endswith(SHARD_SUFFIXES) and Path(w).is_file()]
        path = files[-1] if files else path
    if not path.is_file():
        return {"url": url}
    size = path.stat().st_size
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        digest.update(f.read(SOURCE_SAMPLE_BYTES))
        f.seek(max(0, size - SOURCE_SAMPLE_BYTES))
        digest.update(f.read(SOURCE_SAMPLE_BYTES))
    return {"size": size, "sha1_ends": digest.hexdigest()}


def recorded_source(folder: Path, stem: str) -> tuple[dict, str] | None:
    """(source, shard url) of the input an output shard of `folder` was made from, if it was recorded."""
    for path in (folder / ".sources" / f"{stem}.json", folder / f"{stem}.stats.json"):  # .sources: where it was last seen
        try:
            written = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if written.get("source"):
            return written["source"], written.get("shard")
    return None


def check_sources(folder: Path, urls: list[str]) -> None:
    """Refuse, before any work, an input shard whose output name in `folder` holds the records of another shard: the
    finished output would make it look done (a silent skip), a `.partial` would mix two shards. The same shard moved
    to another folder is the same source and resumes."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for url in urls:
        stem = shard_stem(url)
        if not any(p.exists() for p in (folder / f"{stem}.tar", folder / f"{stem}.tar.partial")):
            continue
        recorded = recorded_source(folder, stem)
        if recorded is None or recorded[0] == shard_source(url):
            continue
        raise ConfigError(f"input shard {url} would write {folder / stem}.tar, which holds the records of another shard "
                          f"({recorded[1]}, other content); give this run another output_dir, or rename the shard")


class OutputError(Exception):
    """The output cannot be written (disk full, permissions); unfinished shards stay `.partial`."""


@contextmanager
def _writing(what):
    """Turn an OSError while writing into an OutputError that says what to do."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {exc.strerror or exc}; unfinished shards stay .partial "
                          "and rerunning the same command resumes them") from exc


def ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {folder} is not writable: {exc.strerror or exc}") from None


class OutputBusy(ConfigError):
    """Another live run is writing the same output shard."""


class ShardLock:
    """An exclusive lock on one output shard, held while a run may write it.

    `flock` locks belong to the open file: the kernel drops them when the process dies however it
    dies, so a killed run's lock files never block the rerun, while a live run's always do.
    """

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise OutputBusy(f"{path.parent.parent / path.stem}.tar is being written by another run ({holder}); wait for it "
                             "to finish or stop it, or give this run another output_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        self.file.flush()

    def release(self) -> None:
        self.file.close()  # closing drops the lock; the file stays for the next run to lock


class OutputWriter:
    def __init__(self, folder: Path, card: str | None = None, options: dict | None = None):
        self.folder = Path(folder)
        ensure_writable(self.folder)
        if options is not None:
            self._claim(options)
        if card is not None:  # the folder's dataset card: what `datasets.load_dataset(folder)` reads the types from
            with _writing(self.folder / "README.md"):
                _replace_bytes(self.folder / "README.md", card.encode("utf-8"))
        self._resume: dict[str, tuple[int, ShardTally]] = {}
        self._open: dict[str, _OpenShard] = {}
        self._locks: dict[str, ShardLock] = {}
        self._sources: dict[str, dict] = {}

    def _claim(self, options: dict) -> None:
        """One folder, one set of head options: a run whose options differ from those that wrote the records here
        is refused, since resuming would mix the two and a finished shard would not be redone."""
        path = self.folder / "options.json"
        if path.exists() and (any(self.folder.glob("*.tar")) or any(self.folder.glob("*.tar.partial"))):
            try:
                before = json.loads(path.read_text())
            except ValueError:
                before = None
            if before is not None and before != options:
                changed = sorted(k for k in before.keys() | options.keys() if before.get(k) != options.get(k))
                what = ", ".join(f"{k}: {before.get(k)!r} -> {options.get(k)!r}" for k in changed[:3])
                raise ConfigError(f"{self.folder} holds records made with other options of this head ({what}); give this "
                                  "run another output_dir, or delete that folder to redo it")
        with _writing(path):
            _replace_bytes(path, (json.dumps(options, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    def paths(self, url: str) -> tuple[Path, Path, Path]:
        stem = shard_stem(url)
        return self.folder / f"{stem}.tar", self.folder / f"{stem}.tar.partial", self.folder / f"{stem}.stats.json"

    def plan(self, urls: list[str]) -> tuple[list[str], dict[str, set], int]:
        """Shards still to do, the clips already written for each, and how many shards are complete."""
        todo, done_keys, complete = [], {}, 0
        for url in urls:
            final, partial, _ = self.paths(url)
            if final.exists():
                complete += 1
                self._note_where(url)
                continue
            self._locks[url] = ShardLock(self.folder / ".locks" / f"{shard_stem(url)}.lock")
            if final.exists():  # finished by a run that released its lock a moment ago
                self._locks.pop(url).release()
                complete += 1
                continue
            todo.append(url)
            done_keys[url] = set()
            self._record_source(url)
            if partial.exists():
                keep, tally, keys = salvage(partial)
                self._resume[url] = (keep, tally)
                done_keys[url] = keys
        return todo, done_keys, complete

    def _note_where(self, url: str) -> None:
        """A finished shard's input moved (check_sources found it the same): say where it is now, so that select and the
        report find it there, though its records name where it was read."""
        recorded = recorded_source(self.folder, shard_stem(url))
        if recorded is not None and recorded[1] != url and recorded[0] == shard_source(url):
            path = self.folder / ".sources" / f"{shard_stem(url)}.json"
            with _writing(path):
                path.parent.mkdir(exist_ok=True)
                _replace_bytes(path, encode_record({"shard": url, "source": recorded[0], "read_from": recorded[1]}))

    def _record_source(self, url: str) -> None:
        """Name the input this output shard is made from before anything of it is written (check_sources reads it)."""
        path = self.folder / ".sources" / f"{shard_stem(url)}.json"
        source = shard_source(url)
        self._sources[url] = source
        with _writing(path):
            path.parent.mkdir(exist_ok=True)
            _replace_bytes(path, encode_record({"shard": url, "source": source}))

    def _shard(self, url: str) -> _OpenShard:
        if url not in self._open:
            _, partial, _ = self.paths(url)
            keep, tally = self._resume.pop(url, (0, ShardTally()))
            self._open[url] = _OpenShard(partial, keep, tally)
        return self._open[url]

    def write(self, url: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
        with _writing(self.paths(url)[1]):
            self._write(url, record, arrays)

    def _write(self, url: str, record: dict, arrays: dict[str, np.ndarray]) -> None:
        shard = self._shard(url)
        key = record["key"]
        members = [(f"{key}.{name}.npy", encode_array(array)) for name, array in arrays.items()]
        members.append((f"{key}.json", encode_record(record)))  # last: its presence means the clip is complete
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            shard.tar.addfile(info, io.BytesIO(data))
        shard.tally.add(record)
        shard.written_this_run += 1

    def flush(self) -> None:
        with _writing(self.folder):
            for shard in self._open.values():
                shard.file.flush()

    def finish(self, url: str, fault: str | None, duplicates: list[str], head: str) -> dict:
        with _writing(self.paths(url)[0]):
            return self._finish(url, fault, duplicates, head)

    def _finish(self, url: str, fault: str | None, duplicates: list[str], head: str) -> dict:
        """Close the shard's tar, write its stats, then rename it complete."""
        shard = self._shard(url)
        final, partial, stats_path = self.paths(url)
        shard.tar.close()
        shard.file.flush()
        os.fsync(shard.file.fileno())
        shard.file.close()
        del self._open[url]
        stats = {
            "shard": url, "source": self._sources.get(url) or shard_source(url), "output": final.name, "head": head, "records": sum(shard.tally.by_status.values()),
            "by_status": dict(shard.tally.by_status), "by_error_type": dict(shard.tally.by_error_type),
            "fault": fault, "duplicates": duplicates, "clips": shard.tally.clips, "keys": shard.tally.keys,
            "length_mismatches": shard.tally.length_mismatches,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _replace_bytes(stats_path, encode_record(stats))
        os.replace(partial, final)
        if url in self._locks:
            self._locks.pop(url).release()
        return stats

    def close(self) -> None:
        """Leave unfinished shards as flushed `.partial` files for the next run to resume."""
        for shard in self._open.values():
            try:
                shard.file.flush()
                shard.file.close()
            except OSError:
                pass
        self._open.clear()
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()


def _replace_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # the ranks of a run may replace the same file at once
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def drop_cross_shard_duplicates(folder: Path) -> dict[str, list[dict]]:
    """Keep each key in the first complete shard (by input order) that has it; rewrite later ones, and
    return the records dropped from each.

    Ranks cannot see each other's shards while they work, so this runs once on rank 0 after all
    ranks finish. The tar is replaced before its stats, so a crash in between is redone next run.
    """
    seen: dict[str, str] = {}
    dropped: dict[str, list[dict]] = {}
    for stats_path in sorted(Path(folder).glob("*.stats.json"), key=lambda p: json.loads(p.read_text())["shard"]):
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
        repeated = [key for key in stats.get("keys", []) if key in seen]
        for key in stats.get("keys", []):
            seen.setdefault(key, stats["shard"])
        if not repeated:
            continue
        tar_path = folder / stats["output"]
        drop = set(repeated)
        kept_members, kept_records, dropped_records = [], [], []
        with tarfile.open(tar_path) as tar:
            for info in tar:
                data = tar.extractfile(info).read()
                if info.name.partition(".")[0] in drop:
                    if info.name.endswith(".json"):
                        dropped_records.append(json.loads(data))
                    continue
                kept_members.append((info, data))
                if info.name.endswith(".json"):
                    kept_records.append(json.loads(data))
        tmp = tar_path.with_name(tar_path.name + ".dedup")
        with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as out:
            for info, data in kept_members:
                out.addfile(info, io.BytesIO(data))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, tar_path)
        tally = ShardTally.of(kept_records)
        notes = [f"{key} (already in {seen[key]})" for key in repeated]
        stats.update(records=len(kept_records), by_status=dict(tally.by_status), by_error_type=dict(tally.by_error_type),
                     clips=tally.clips, keys=tally.keys, duplicates=stats["duplicates"] + notes,
                     length_mismatches=tally.length_mismatches)
        _replace_bytes(stats_path, encode_record(stats))
        dropped[stats["shard"]] = dropped_records
    return dropped


def output_totals(folder: Path) -> dict:
    """Counts over every complete output shard in `folder` (this run's and earlier runs')."""
    by_status, by_error_type, faults, duplicates, clips, keys = Counter(), Counter(), {}, {}, [], []
    shards = mismatches = 0
    for path in sorted(Path(folder).glob("*.stats.json")):
        stats = json.loads(path.read_text(encoding="utf-8"))
        shards += 1
        by_status.update(stats["by_status"])
        by_error_type.update(stats["by_error_type"])
        clips.extend(stats["clips"])
        keys.extend(stats.get("keys", []))
        mismatches += stats.get("length_mismatches", 0)
        if stats["fault"]:
            faults[stats["shard"]] = stats["fault"]
        if stats["duplicates"]:
            duplicates[stats["shard"]] = stats["duplicates"]
    return {"shards": shards, "records": sum(by_status.values()), "by_status": dict(by_status),
            "by_error_type": dict(by_error_type), "length_mismatches": mismatches, "shard_faults": faults, "duplicates": duplicates,
            "clips": clips, "keys": keys}
