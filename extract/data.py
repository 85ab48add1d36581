"""The input side: which shards, tar members -> clips, decoding and the heads' CPU steps in the workers.

The pipeline is a list of stages run in each DataLoader worker (WebDataset's own where they fit):

    shard list -> split by worker -> read members -> decode every view once -> each head's prepare

WebDataset's tar reader keys samples by the name up to the first dot and silently skips members
it does not like; clip names contain dots and every member must be accounted for, so
`read_members` walks the tar stream itself and reports each member. A clip is read and decoded
only for the heads that still lack its record (`ShardPlan`), and each head gets its own view.
Arrays leave the workers as torch tensors, which the DataLoader hands over in shared memory.
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import tarfile
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds

from extract.clips import (AUDIO_SUFFIXES, VIDEO_SUFFIXES, BadMemberName, member_key, parse_member_name, parse_sample_name,
                           printable, sidecar_fields)
from extract.decode import SNIFF_BYTES, DecodeFailure, DecodeWatchdog, Media, decode_views, die_with_parent, refuse_early
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
    if not found:
        below = sorted(p for suffix in SHARD_SUFFIXES for p in glob.glob(glob.escape(str(folder)) + "/**/*" + suffix, recursive=True))
        where = (f"; {len(below)} sit in its subfolders (e.g. {below[0]}): point tar_folder at one of them, or list them "
                 "with shards=[a.tar,b.tar] or a brace pattern") if below else ""
        raise ConfigError(f"tar_folder {folder} holds no shards (*.tar.gz, *.tgz, *.tar){where}")
    return sorted(found)


def shard_stem(url: str) -> str:
    """The output name of an input shard: its file name without the tar suffix (and without a URL's query). For a
    `pipe:` command, the file name of the argument that names the shard: the last one with a tar suffix, else the
    last one that is neither an option nor `-` (`pipe:aws s3 cp s3://b/s-000.tar -` is `s-000`)."""
    name = url
    if url.startswith("pipe:"):
        try:
            words = shlex.split(url[len("pipe:"):])
        except ValueError:  # unbalanced quotes: the shell would refuse it too, but the name can still be found
            words = url[len("pipe:"):].split()
        plain = [w for w in words[1:] if w != "-" and not w.startswith("-") and w not in ("|", ">", "<", "&&", ";")]
        named = [w for w in words if _without_query(w).endswith(SHARD_SUFFIXES)]
        name = (named or plain or ["shard"])[-1]
    name = os.path.basename(_without_query(name).rstrip("/")) or "shard"
    for suffix in SHARD_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)] or "shard"
    return name


def _without_query(url: str) -> str:
    return url.split("?")[0].split("#")[0]


# ---------------------------------------------------------------------------- items


@dataclass
class ClipItem:
    """One tar member on its way to the heads that still need it."""

    shard: str
    member: str
    key: str
    heads: tuple[str, ...]  # the heads that still lack this clip's record
    video_id: str | None = None
    start: float | None = None
    end: float | None = None
    status: str = "ok"  # ok | error | rejected: the clip as a whole
    error_type: str | None = None
    error: str | None = None
    data: bytes | bytearray | None = None  # the member's bytes, until decoded
    sample: dict | None = None  # a WebDataset sample's caption and sidecar fields (None for a clip named with its window)
    audio_only: bool = False  # a sample whose media is a sound file: heads that need frames skip it
    length_s: float | None = None  # the decoded video stream's length (s), and its frame period, once decoded
    frame_s: float | None = None
    thumbnail: torch.Tensor | None = None  # uint8 [96, 172, 3] letterboxed, for W&B's sample table
    media: dict[str, Media] = field(default_factory=dict)  # per head: its view of the clip
    prepared: dict[str, Any] = field(default_factory=dict)  # per head: what its `prepare` made
    failures: dict[str, DecodeFailure] = field(default_factory=dict)  # per head: why it gets an error record

    def fail(self, status: str, error_type: str, error: str) -> "ClipItem":
        self.status, self.error_type, self.error, self.data = status, error_type, error, None
        return self

    def pin_memory(self) -> "ClipItem":
        """Called by the DataLoader's pinning thread on CUDA runs: the tensors bound for the device go to page-locked
        memory there, so the main loop's copies are DMA transfers that cost it no CPU."""
        self.prepared = {name: _pinned(value) for name, value in self.prepared.items()}
        self.media = {name: replace(media, frames=_pinned(media.frames), audio=_pinned(media.audio)) for name, media in self.media.items()}
        return self


def _pinned(value):
    if isinstance(value, torch.Tensor):
        return value.pin_memory()
    if isinstance(value, dict):
        return {key: _pinned(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_pinned(item) for item in value)
    return value


@dataclass
class ShardEnd:
    """A shard read to its end, or to the fault that stopped it."""

    shard: str
    fault: str | None
    duplicates: list[str]


@dataclass
class ShardPlan:
    """What each head still needs of each shard: the heads not done with it, the keys each already has."""

    done_keys: dict[str, dict[str, set[str]]]  # url -> head -> keys already written (only heads still to finish it)

    def heads_for(self, url: str, key: str) -> tuple[str, ...]:
        return tuple(head for head, keys in self.done_keys.get(url, {}).items() if key not in keys)

    @property
    def urls(self) -> list[str]:
        return list(self.done_keys)


# ---------------------------------------------------------------------------- stage: read members


_KIND_NAMES = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.CHRTYPE: "a character device",
               tarfile.BLKTYPE: "a block device", tarfile.FIFOTYPE: "a FIFO"}


def _drain(member, remaining: int) -> None:
    """Read past a member's data in large chunks. tarfile's own skip in stream mode reads 10 KiB at a
    time and keeps looping after the end of the data, so a header declaring a terabyte would stall."""
    while remaining:
        chunk = member.read(min(remaining, 1 << 20))  # raises ReadError if the shard ends first
        if not chunk:
            raise tarfile.ReadError("unexpected end of data")
        remaining -= len(chunk)


def _rejected(url: str, name: str, plan: ShardPlan, error_type: str, error: str) -> ClipItem:
    key = member_key(name)
    return ClipItem(url, printable(name), key, plan.heads_for(url, key)).fail("rejected", error_type, error)


def _read_bytes(tar: tarfile.TarFile, info: tarfile.TarInfo, sniff: bool) -> tuple[bytearray | None, str | None]:
    """(the member's bytes, None), or (None, why not) when its first bytes show it is not media: then its data is
    skipped unread, so a gigabyte of zeros compressed into a megabyte is never held in memory."""
    member = tar.extractfile(info)
    head = member.read(min(info.size, SNIFF_BYTES))
    refused = refuse_early(head) if sniff else None
    if refused:
        _drain(member, info.size - len(head))
        return None, refused
    data = bytearray(info.size)  # one buffer, filled in place
    data[: len(head)] = head
    got = len(head)
    view = memoryview(data)
    while got < info.size:
        read = member.readinto(view[got : got + (64 << 20)])
        if not read:
            raise tarfile.ReadError("unexpected end of data")
        got += read
    del view
    return data, None


class _Sample:
    """The members of one WebDataset sample, read as they come (a sample's members are adjacent in its tar)."""

    SIDECAR_BYTES = 1 << 20  # larger .json/.txt members are left out, and the record says so

    def __init__(self, url: str, key: str, plan: ShardPlan):
        self.url, self.key, self.heads = url, key, plan.heads_for(url, key)
        self.names: list[str] = []
        self.media: tuple[str, str] | None = None  # (member name, suffix)
        self.data: bytearray | None = None
        self.failure: tuple[str, str] | None = None
        self.meta, self.caption, self.notes = None, None, []

    def add(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str, suffix: str, max_member_bytes: int) -> None:
        self.names.append(name)
        is_media = suffix in VIDEO_SUFFIXES or suffix in AUDIO_SUFFIXES
        if not self.heads or (is_media and self.media is not None) or (not is_media and suffix not in ("json", "txt")):
            if is_media and self.heads:
                self.notes.append(f"{name} not read: the sample's media is {self.media[0]}")
            _drain(tar.extractfile(info), info.size)
            return
        if is_media:
            self.media = (name, suffix)
            if info.size > max_member_bytes:
                self.failure = ("too_large", f"member is {info.size / 2**20:.0f} MiB, over max_member_mb")
                _drain(tar.extractfile(info), info.size)
                return
            self.data, refused = _read_bytes(tar, info, sniff=True)
            if refused:
                self.failure = ("not_media", refused)
            return
        if info.size > self.SIDECAR_BYTES:
            self.notes.append(f"{name} left out: {info.size / 2**20:.1f} MiB")
            _drain(tar.extractfile(info), info.size)
            return
        text = bytes(_read_bytes(tar, info, sniff=False)[0]).decode("utf-8", "replace")
        if suffix == "txt":
            self.caption = text.strip()
            return
        try:
            meta = json.loads(text)
            self.meta = meta if isinstance(meta, dict) else {"value": meta}
        except ValueError as exc:
            self.notes.append(f"{name} is not JSON ({exc})")

    def item(self) -> ClipItem:
        member = self.media[0] if self.media else self.names[0]
        video_id, start, end, small, dropped = sidecar_fields(self.meta or {}, self.key)
        item = ClipItem(self.url, printable(member), self.key, self.heads, video_id, start, end,
                        sample={"caption": self.caption, "meta": json.dumps(small, ensure_ascii=False, default=str),
                                "dropped": dropped, "notes": self.notes})
        if self.media is None:
            return item.fail("error", "no_media", f"the sample has no video or audio member ({', '.join(self.names)})")
        item.audio_only = self.media[1] in AUDIO_SUFFIXES
        if self.failure:
            return item.fail("error", *self.failure)
        item.data = self.data
        return item


def read_members(shards, plan: ShardPlan, max_member_bytes: int):
    """Stage: {url} -> one ClipItem per clip member or WebDataset sample that some head still needs, one per other
    member (rejected), then a ShardEnd per shard. Both layouts may mix in one shard.

    A shard that cannot be opened or breaks mid-way keeps what was read before the fault.
    """
    for shard in shards:
        url = shard["url"]
        seen: set[str] = set()
        duplicates: list[str] = []
        fault = None
        stream = None
        sample: _Sample | None = None

        def finished(sample):
            """The item of a sample whose members have all been read (None if no head needs it)."""
            seen.add(sample.key)
            if sample.media is None and not any(name.endswith(".json") for name in sample.names):
                # text alone, no media and no sidecar (README.txt, notes.txt): not a sample
                item = _rejected(url, sample.names[0], plan, "bad_name",
                                 "not a clip or a WebDataset sample: a text file with no media or .json beside it")
                return item if item.heads else None
            return sample.item() if sample.heads else None

        try:
            stream = wds.gopen(url, "rb")
            with tarfile.open(fileobj=stream, mode="r|*") as tar:
                for info in tar:
                    name = info.name
                    while name.startswith("./"):
                        name = name[2:]
                    if info.isdir() or not name:
                        continue  # folders carry no data; their files are reported one by one
                    sample_name = parse_sample_name(name) if info.isreg() else None
                    if sample is not None and (sample_name is None or sample_name[0] != sample.key):
                        item, sample = finished(sample), None
                        if item is not None:
                            yield item
                    if sample_name is not None and not _is_clip_name(name) and (sample is not None or _known(sample_name[1])):
                        key, suffix = sample_name
                        if sample is None:
                            if key in seen:  # the same key again, apart from its first members: a duplicate
                                duplicates.append(printable(name))
                                _drain(tar.extractfile(info), info.size)
                                continue
                            sample = _Sample(url, key, plan)
                        try:
                            sample.add(tar, info, name, suffix, max_member_bytes)
                        except Exception as exc:
                            fault = f"shard ends inside member {printable(name, 80)!r}: {type(exc).__name__}: {exc}"
                            if sample.heads:
                                yield sample.item().fail("error", "truncated", "the shard's data ends inside this sample")
                            seen.add(sample.key)
                            sample = None
                            break
                        continue
                    item, is_clip = _member_item(url, name, info, plan)
                    if item.key in seen:
                        duplicates.append(item.member)
                    emit = item.key not in seen and bool(item.heads)
                    seen.add(item.key)
                    if emit and is_clip and info.size > max_member_bytes:
                        item.fail("error", "too_large", f"member is {info.size / 2**20:.0f} MiB, over max_member_mb")
                    read = emit and is_clip and item.status == "ok"
                    if emit and not read:
                        yield item  # its record does not depend on the data, which may not even be there
                    try:
                        if read:
                            item.data, refused = _read_bytes(tar, info, sniff=True)
                            if refused:
                                item.fail("error", "not_media", refused)
                        elif info.isreg():
                            _drain(tar.extractfile(info), info.size)
                    except Exception as exc:
                        fault = f"shard ends inside member {printable(name, 80)!r}: {type(exc).__name__}: {exc}"
                        if read:
                            yield item.fail("error", "truncated", "the shard's data ends inside this member")
                        break
                    if read:
                        yield item
                if sample is not None:
                    item, sample = finished(sample), None
                    if item is not None:
                        yield item
        except Exception as exc:  # gzip/tar corruption, a missing file, a failing pipe: the shard's fault
            fault = fault or f"{type(exc).__name__}: {exc}"
            if sample is not None and sample.heads:  # the shard broke inside a sample
                yield sample.item().fail("error", "truncated", "the shard's data ends inside this sample")
        finally:
            if stream is not None:
                try:
                    stream.close()
                except Exception as exc:  # a `pipe:` command that failed reports it on close
                    fault = fault or f"{type(exc).__name__}: {exc}"
        yield ShardEnd(url, fault, duplicates)


def _is_clip_name(name: str) -> bool:
    try:
        parse_member_name(name)
        return True
    except BadMemberName:
        return False


def _known(suffix: str) -> bool:
    """A suffix that makes a member part of a WebDataset sample (other files alone are not clips: README.md)."""
    return suffix in VIDEO_SUFFIXES or suffix in AUDIO_SUFFIXES or suffix in ("json", "txt")


def _member_item(url: str, name: str, info: tarfile.TarInfo, plan: ShardPlan) -> tuple[ClipItem, bool]:
    """The item for one member named as a clip, or rejected (before its bytes are read); and whether to read it."""
    if not info.isreg():
        kind = _KIND_NAMES.get(info.type, f"a tar entry of type {info.type!r}")
        return _rejected(url, name, plan, "not_a_file", f"member is {kind}; only regular files are read"), False
    try:
        clip = parse_member_name(name)
    except BadMemberName as exc:
        return _rejected(url, name, plan, "bad_name", f"not a clip or a WebDataset sample: {exc}"), False
    return ClipItem(url, printable(name), clip.key, plan.heads_for(url, clip.key), clip.video_id, clip.start, clip.end), True


# ---------------------------------------------------------------------------- stage: decode


def decode_items(items, heads: dict, decode_timeout: float, memory_limit_bytes: int, max_decoded_bytes: int):
    """Stage: a clip's bytes -> each of its heads' view, from one decode (identical views shared)."""
    watchdog = DecodeWatchdog(partial(decode_views, max_decoded_bytes=max_decoded_bytes), decode_timeout, memory_limit_bytes)
    try:
        for item in items:
            if isinstance(item, ClipItem) and item.status == "ok":
                data, item.data = item.data, None
                specs = list(dict.fromkeys(heads[name].media_spec for name in item.heads))
                try:
                    views = watchdog(data if decode_timeout > 0 else bytes(data), specs)
                except DecodeFailure as exc:
                    item.fail("error", exc.error_type, exc.message)
                else:
                    for name in item.heads:
                        view = views[heads[name].media_spec]
                        if isinstance(view, DecodeFailure):
                            item.failures[name] = view
                        elif view.info.get("still_image") and heads[name].media_spec.wants_video and not heads[name].takes_still_images:
                            item.failures[name] = DecodeFailure("still_image", f"the file is a {view.info['container'].upper()} "
                                                                "image, not a video")
                        else:
                            item.media[name] = view
                            stream = view.video
                            if stream.get("duration_s") is not None:
                                item.length_s, item.frame_s = stream["duration_s"], 1 / stream["fps"] if stream.get("fps") else None
                del data
            yield item
    finally:
        watchdog.close()


# ---------------------------------------------------------------------------- stage: the heads' CPU steps


def _as_tensors(media: Media, keep_frames: bool) -> Media:
    """The view as torch tensors (the DataLoader moves those through shared memory, numpy it would pickle)."""
    frames = media.frames if keep_frames else None
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    audio = torch.from_numpy(media.audio) if isinstance(media.audio, np.ndarray) else media.audio
    return replace(media, frames=frames, audio=audio)


THUMBNAIL_HEIGHT, THUMBNAIL_WIDTH = 96, 172


def _thumbnail(item: "ClipItem") -> torch.Tensor | None:
    """A small picture of the clip (its middle sampled frame in a 96 x 172 box), for W&B's sample table."""
    media = next((m for m in item.media.values() if m.frames is not None and len(m.frames)), None)
    if media is None:
        return None
    frame = torch.as_tensor(media.frames[len(media.frames) // 2]).permute(2, 0, 1)[None]
    scale = min(THUMBNAIL_HEIGHT / frame.shape[2], THUMBNAIL_WIDTH / frame.shape[3])
    height, width = max(2, round(frame.shape[2] * scale)), max(2, round(frame.shape[3] * scale))
    small = torch.nn.functional.interpolate(frame, size=(height, width), mode="bilinear", antialias=True)[0]
    # one size for every thumbnail (W&B warns at pictures of several sizes in one panel): letterboxed in black
    top, left = (THUMBNAIL_HEIGHT - height) // 2, (THUMBNAIL_WIDTH - width) // 2
    return torch.nn.functional.pad(small, (left, THUMBNAIL_WIDTH - width - left, top, THUMBNAIL_HEIGHT - height - top)).permute(1, 2, 0)


def prepare_items(items, heads: dict, thumbnail_every: int = 0):
    """Stage: each head's `prepare` on its view of the clip; a failure there is that head's error alone. With
    `thumbnail_every`, one clip in that many (and the first few) also carries a thumbnail for W&B."""
    from extract.heads import Clip

    count = 0
    for item in items:
        if isinstance(item, ClipItem):
            if thumbnail_every and item.media and (count < 4 or count % thumbnail_every == 0):
                item.thumbnail = _thumbnail(item)
            count += bool(item.media)
            for name, media in list(item.media.items()):
                head = heads[name]
                try:
                    item.prepared[name] = head.prepare(Clip(item.key, item.video_id, item.start, item.end, media))
                except Exception as exc:
                    item.failures[name] = DecodeFailure("head_error", f"{type(exc).__name__}: {exc}"[:500])
                    del item.media[name]
                    continue
                item.media[name] = _as_tensors(media, head.frames_in_model_step)
        yield item


def clip_pipeline(plan: ShardPlan, heads: dict, limits, thumbnail_every: int = 0) -> wds.DataPipeline:
    return wds.DataPipeline(
        wds.SimpleShardList(plan.urls),
        wds.split_by_worker,
        partial(read_members, plan=plan, max_member_bytes=limits.max_member_bytes),
        partial(decode_items, heads=heads, decode_timeout=limits.decode_timeout,
                memory_limit_bytes=limits.decode_memory_bytes, max_decoded_bytes=limits.max_decoded_bytes),
        partial(prepare_items, heads=heads, thumbnail_every=thumbnail_every),
    )


def as_list(batch: list) -> list:
    """Batches stay lists of items: each head batches its own clips in the main process."""
    return batch


def make_loader(plan: ShardPlan, heads: dict, limits, batch_size: int, num_workers: int, pin_memory: bool = False,
                thumbnail_every: int = 0):
    if not plan.urls:  # a rank with no shard left (or none at all) has nothing to load
        return []
    workers = min(num_workers, len(plan.urls))  # a worker without a shard would only idle
    return torch.utils.data.DataLoader(
        clip_pipeline(plan, heads, limits, thumbnail_every),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=as_list,
        prefetch_factor=2 if workers else None,
        worker_init_fn=die_with_parent,
        pin_memory=pin_memory,
        multiprocessing_context="fork" if workers else None,  # the heads (processors loaded) reach the workers as they are
    )
