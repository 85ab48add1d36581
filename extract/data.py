"""The input side: which shards, tar members -> clips, and decoding in DataLoader workers.

The pipeline is a list of stages (WebDataset's own where they fit):

    shard list -> split by worker -> read clip members -> decode -> batches of items

WebDataset's tar reader keys samples by the name up to the first dot and silently skips
members it does not like; clip names contain dots and every member must be accounted for,
so `read_clip_members` walks the tar stream itself and reports each member.
"""

from __future__ import annotations

import glob
import os
import tarfile
from functools import partial
from pathlib import Path

import torch
import webdataset as wds

from extract.clips import BadMemberName, member_key, parse_member_name, printable
from extract.decode import DecodeFailure, DecodeWatchdog, MediaSpec, decode_media, die_with_parent
from extract.errors import ConfigError

SHARD_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def resolve_shards(tar_folder: str | None, shards) -> list[str]:
    """The input shards: `shards` as WebDataset takes it, else `tar_folder/*.tar.gz` and `*.tar`."""
    if shards:
        urls = wds.shardlists.expand_urls(shards) if isinstance(shards, str) else [str(s) for s in shards]
        if not urls:
            raise ConfigError(f"shards={shards!r} names no shard")
        return list(urls)
    if not tar_folder:
        raise ConfigError("give the input: tar_folder=DIR (or shards=PATTERN)")
    folder = Path(tar_folder)
    if not folder.is_dir():
        raise ConfigError(f"tar_folder {folder} is not a folder")
    found = {p for suffix in SHARD_SUFFIXES for p in glob.glob(glob.escape(str(folder)) + "/*" + suffix)}
    return sorted(found)


def shard_stem(url: str) -> str:
    """The output name of an input shard: its file name without the tar suffix."""
    name = url.split()[-1] if url.startswith("pipe:") else url
    name = os.path.basename(name.rstrip("/").split("?")[0]) or "shard"
    for suffix in SHARD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _item(url: str, member: str, key: str, **fields) -> dict:
    return {"kind": "clip", "shard": url, "member": printable(member), "key": key, "status": "ok",
            "error_type": None, "error": None, "video_id": None, "start": None, "end": None, **fields}


def _rejected(url, name, error_type, error, clip=None) -> dict:
    fields = {"video_id": clip.video_id, "start": clip.start, "end": clip.end} if clip else {}
    key = clip.key if clip else member_key(name)
    status = "error" if clip else "rejected"
    return _item(url, name, key, status=status, error_type=error_type, error=error, **fields)


_KIND_NAMES = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
               tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}


def _drain(tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
    """Read past a member's data in large chunks. tarfile's own skip in stream mode reads 10 KiB at a
    time and keeps looping after the end of the data, so a header declaring a terabyte would stall."""
    member, remaining = tar.extractfile(info), info.size
    while remaining:
        chunk = member.read(min(remaining, 1 << 20))  # raises ReadError if the shard ends first
        remaining -= len(chunk)


def _member_item(url: str, name: str, info: tarfile.TarInfo):
    """The item for one tar member (before its bytes are read), and its parsed clip name if any."""
    if not info.isreg():
        kind = _KIND_NAMES.get(info.type, f"a tar entry of type {info.type!r}")
        return _rejected(url, name, "not_a_file", f"member is {kind}; only regular files are read"), None
    try:
        clip = parse_member_name(name)
    except BadMemberName as exc:
        return _rejected(url, name, "bad_name", f"not a clip: {exc}"), None
    return _item(url, name, clip.key, video_id=clip.video_id, start=clip.start, end=clip.end, ext=clip.ext), clip


def read_clip_members(shards, done_keys: dict[str, set], max_member_bytes: int):
    """Stage: {url} -> one item per tar member, then a `shard_end` item per shard.

    Clips already in a partial output (`done_keys`) are skipped without decoding. A shard that
    cannot be opened or breaks mid-way keeps what was read before the fault.
    """
    for shard in shards:
        url = shard["url"]
        done = done_keys.get(url, set())
        seen: set[str] = set()
        duplicates: list[str] = []
        fault = None
        stream = None
        try:
            stream = wds.gopen(url, "rb")
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    name = info.name
                    while name.startswith("./"):
                        name = name[2:]
                    if info.isdir() or not name:
                        continue  # folders carry no data; their files are reported one by one
                    item, clip = _member_item(url, name, info)
                    emit = item["key"] not in seen and item["key"] not in done
                    if item["key"] in seen:
                        duplicates.append(item["member"])
                    seen.add(item["key"])
                    too_large = emit and clip is not None and info.size > max_member_bytes
                    if too_large:
                        item = _rejected(url, name, "too_large", f"member is {info.size / 2**20:.0f} MiB, over max_member_mb", clip)
                    read = emit and clip is not None and not too_large
                    if read:
                        try:
                            item["data"] = tar.extractfile(info).read()
                        except Exception as exc:
                            fault = f"shard ends inside member {printable(name, 80)!r}: {type(exc).__name__}: {exc}"
                            yield _rejected(url, name, "truncated", "the shard's data ends inside this member", clip)
                            break
                    if emit:
                        yield item
                    if info.isreg() and not read:
                        try:
                            _drain(tar, info)
                        except Exception as exc:
                            fault = f"shard ends inside member {printable(name, 80)!r}: {type(exc).__name__}: {exc}"
                            break
        except Exception as exc:  # gzip/tar corruption, a missing file, a failing pipe: the shard's fault
            fault = fault or f"{type(exc).__name__}: {exc}"
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception as exc:  # a `pipe:` command that failed reports it on close
                    fault = fault or f"{type(exc).__name__}: {exc}"
        yield {"kind": "shard_end", "shard": url, "fault": fault, "duplicates": duplicates}


def decode_clips(items, spec: MediaSpec, decode_timeout: float, memory_limit_bytes: int, max_decoded_bytes: int):
    """Stage: clip bytes -> `media` (decoded as the head asked), or an error on the item."""
    watchdog = DecodeWatchdog(partial(decode_media, max_decoded_bytes=max_decoded_bytes), decode_timeout, memory_limit_bytes)
    try:
        for item in items:
            data = item.pop("data", None)
            if item["kind"] == "clip" and item["status"] == "ok":
                try:
                    item["media"] = watchdog(data, spec)
                except DecodeFailure as exc:
                    item.update(status="error", error_type=exc.error_type, error=str(exc))
            yield item
    finally:
        watchdog.close()


def clip_pipeline(urls: list[str], done_keys: dict[str, set], spec: MediaSpec, limits) -> wds.DataPipeline:
    return wds.DataPipeline(
        wds.SimpleShardList(urls),
        wds.split_by_worker,
        partial(read_clip_members, done_keys=done_keys, max_member_bytes=limits.max_member_bytes),
        partial(decode_clips, spec=spec, decode_timeout=limits.decode_timeout,
                memory_limit_bytes=limits.decode_memory_bytes, max_decoded_bytes=limits.max_decoded_bytes),
    )


def as_list(batch: list) -> list:
    """Batches stay lists of items: heads stack what they need, errors travel beside clips."""
    return batch


def make_loader(urls, done_keys, spec: MediaSpec, limits, batch_size: int, num_workers: int):
    if not urls:  # a rank with no shard left (or none at all) has nothing to load
        return []
    workers = min(num_workers, len(urls))  # a worker without a shard would only idle
    return torch.utils.data.DataLoader(
        clip_pipeline(urls, done_keys, spec, limits),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=as_list,
        prefetch_factor=4 if workers else None,
        worker_init_fn=die_with_parent,
    )
