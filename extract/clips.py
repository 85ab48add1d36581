"""Clip member names and output keys.

Input members are named ``{video_id} ({start}-{end}).{ext}``. A video_id may contain dots,
spaces, dashes (a leading one too) and non-ASCII, so the name is parsed from the right: the
extension is the last dot-free suffix and the time range is the last ``(start-end)`` group.
Ids are compared in Unicode NFC (macOS writes names decomposed, NFD); a name holding a control
character (a newline, a tab...) is refused: crawls produce them by accident, and they break every
line-based tool downstream.
"""

from __future__ import annotations

import hashlib
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
