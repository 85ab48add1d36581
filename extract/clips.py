"""Clip member names, WebDataset sample names and their sidecars, and output keys.

Input members are named ``{video_id} ({start}-{end}).{ext}``. A video_id may contain dots,
spaces, dashes (a leading one too) and non-ASCII, so the name is parsed from the right: the
extension is the last dot-free suffix and the time range is the last ``(start-end)`` group.
Ids are compared in Unicode NFC (macOS writes names decomposed, NFD); a name holding a control
character (a newline, a tab...) is refused: crawls produce them by accident, and they break every
line-based tool downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass

# `(start-end)` right before the extension; start/end are non-negative decimals.
_CLIP_NAME = re.compile(
    r"^(?P<video_id>.+) \((?P<start>\d+(?:\.\d+)?)-(?P<end>\d+(?:\.\d+)?)\)\.(?P<ext>[A-Za-z0-9]{1,8})$"
)
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_NAME_BYTES = 1024


@dataclass(frozen=True)
class ClipName:
    video_id: str
    start: float
    end: float
    ext: str

    @property
    def key(self) -> str:
        return clip_key(self.video_id, self.start, self.end)


class BadMemberName(ValueError):
    pass


def parse_member_name(name: str) -> ClipName:
    """Parse a tar member name, refusing anything that is not a plain clip file name."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise BadMemberName(f"member name is longer than {MAX_NAME_BYTES} bytes")
    control = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if control is not None:
        raise BadMemberName(f"member name holds a control character ({control!r})")
    if name.startswith("/") or "/" in name or "\\" in name or name in (".", ".."):
        raise BadMemberName("member is in a sub-folder or has a path; clips must sit at the top of the tar")
    match = _CLIP_NAME.match(name)
    if not match:
        raise BadMemberName("name does not match '{video_id} ({start}-{end}).{ext}'")
    start, end = float(match["start"]), float(match["end"])
    if end <= start:
        raise BadMemberName(f"clip end {end} is not after its start {start}")
    return ClipName(normalise_id(match["video_id"]), start, end, match["ext"].lower())


def normalise_id(video_id: str) -> str:
    """The form ids are compared and keyed in: Unicode NFC."""
    return unicodedata.normalize("NFC", video_id)


def clip_key(video_id: str, start: float, end: float) -> str:
    """A key unique per (video_id, start, end), stable across runs, with no dots or slashes.

    WebDataset readers split keys at the first dot, so the readable part keeps only
    ``[A-Za-z0-9_-]``; a hash of the exact triple keeps keys unique when the readable
    parts collide (non-ASCII ids, ids differing only in punctuation).
    """
    identity = f"{video_id}\x00{start:.3f}\x00{end:.3f}"
    digest = hashlib.sha1(identity.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    readable = _KEY_UNSAFE.sub("_", video_id).strip("_")[:48] or "clip"
    return f"{readable}_{int(round(start * 1000))}_{int(round(end * 1000))}_{digest}"


def member_key(name: str) -> str:
    """Key for a member that is not a clip: it still gets a record, named after its hash."""
    return "member_" + hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def printable(name: str, limit: int = 300) -> str:
    """A member name made safe for JSON and logs (undecodable bytes replaced, long names cut)."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"...(+{len(text) - limit} chars)"


# ---------------------------------------------------------------------------- WebDataset samples

# a WebDataset member is `{key}.{suffix}`: the key is the file name up to its first dot (video2dataset's keys are digits)
_SAMPLE_NAME = re.compile(r"^(?P<key>[A-Za-z0-9_-]{1,200})\.(?P<suffix>[A-Za-z0-9_.-]{1,40})$")
VIDEO_SUFFIXES = ("mp4", "webm", "mkv", "mov", "avi")
AUDIO_SUFFIXES = ("mp3", "wav", "flac", "m4a")
ID_FIELDS = ("video_id", "videoID", "youtube_id", "id")
SMALL_VALUE_CHARS = 1000  # sidecar values longer than this as JSON (subtitles, cut lists) are left out of the record
_YOUTUBE_ID = re.compile(r"(?:youtube\.com/(?:watch\?(?:.*&)?v=|shorts/|embed/)|youtu\.be/)([A-Za-z0-9_-]{11})")


def parse_sample_name(name: str) -> tuple[str, str] | None:
    """(key, suffix) of a WebDataset member at the top of the tar, or None when the name is not one."""
    match = _SAMPLE_NAME.match(name)
    return (match["key"], match["suffix"].lower()) if match else None


def _seconds(value) -> float | None:
    """A time as a number of seconds or "[[HH:]MM:]SS[.fff]" (video2dataset writes clip windows so)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            parts = [float(p) for p in value.strip().split(":")]
        except ValueError:
            return None
        if 1 <= len(parts) <= 3:
            seconds = 0.0
            for part in parts:
                seconds = seconds * 60 + part
            return seconds
    return None


def _window(meta: dict) -> tuple[float | None, float | None]:
    """The clip's window in its source video, from `clips[0]`, `span` or `start`/`end`."""
    for candidate in ((meta.get("clips") or [None])[0] if isinstance(meta.get("clips"), list) else None, meta.get("span")):
        if isinstance(candidate, (list, tuple)) and len(candidate) == 2:
            start, end = _seconds(candidate[0]), _seconds(candidate[1])
            if start is not None and end is not None:
                return start, end
    return _seconds(meta.get("start")), _seconds(meta.get("end"))


def sidecar_fields(meta: dict, key: str) -> tuple[str, float | None, float | None, dict, list[str]]:
    """(video_id, start, end, the small fields, the names of the fields left out for their size) of a sample's JSON."""
    video_id = next((str(meta[f]) for f in ID_FIELDS if isinstance(meta.get(f), (str, int)) and str(meta[f]).strip()), None)
    if video_id is None:
        url = next((meta[f] for f in ("url", "video_url", "youtube_url") if isinstance(meta.get(f), str)), "")
        found = _YOUTUBE_ID.search(url)
        video_id = found.group(1) if found else key
    start, end = _window(meta)
    small, dropped = {}, []
    for name, value in meta.items():
        try:
            size = len(json.dumps(value, ensure_ascii=False, default=str))
        except (TypeError, ValueError):
            size = SMALL_VALUE_CHARS + 1
        if size <= SMALL_VALUE_CHARS:
            small[name] = value
        else:
            dropped.append(str(name))
    return normalise_id(video_id), start, end, small, dropped
