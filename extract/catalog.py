"""The dataset CSV and its join with clips.

Columns `video_id,start,end[,duration]` join clips named `{video_id} ({start}-{end}).{ext}` on the
id and their window (within `tolerance` seconds); a `key` column joins WebDataset samples on their
key. A CSV may have both.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from extract.clips import normalise_id
from extract.errors import ConfigError

WINDOW_COLUMNS = ("video_id", "start", "end")


class Catalog:
    def __init__(self, rows: list[dict], tolerance: float):
        self.rows = rows
        self.tolerance = tolerance
        self._by_video: dict[str, list[int]] = defaultdict(list)
        self._by_key: dict[str, int] = {}
        for index, row in enumerate(rows):
            if row.get("video_id") is not None and row.get("start") is not None:
                self._by_video[row["video_id"]].append(index)
            if row.get("key"):
                self._by_key.setdefault(row["key"], index)

    @classmethod
    def empty(cls, tolerance: float = 0.0) -> "Catalog":
        return cls([], tolerance)

    @classmethod
    def load(cls, path: str | Path, tolerance: float) -> "Catalog":
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                columns = reader.fieldnames or []
                if "key" not in columns and any(c not in columns for c in WINDOW_COLUMNS):
                    missing = ", ".join(c for c in WINDOW_COLUMNS if c not in columns)
                    raise ConfigError(f"dataset_csv {path}: missing column(s) {missing} (expected video_id,start,end,duration, "
                                      "or key,duration for WebDataset samples)")
                rows = []
                for line, row in enumerate(reader, start=2):
                    try:
                        rows.append(_row(row))
                    except (TypeError, ValueError) as exc:
                        raise ConfigError(f"dataset_csv {path}, line {line}: {exc}") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"dataset_csv {path} cannot be read: {exc}") from None
        return cls(rows, tolerance)

    def match(self, video_id: str | None, start: float | None, end: float | None, key: str | None = None) -> int | None:
        """Index of the CSV row for this clip (by its key when the CSV has one for it, else by its window), or None."""
        if key is not None and key in self._by_key:
            return self._by_key[key]
        if video_id is None or start is None or end is None:
            return None
        best, best_gap = None, None
        for index in self._by_video.get(normalise_id(video_id), ()):
            row = self.rows[index]
            gap = max(abs(row["start"] - start), abs(row["end"] - end))
            if gap <= self.tolerance and (best_gap is None or gap < best_gap):
                best, best_gap = index, gap
        return best

    def rows_without_clips(self, clips: list[tuple[str, float, float]], keys: list[str] = ()) -> list[dict]:
        matched = {self.match(*clip) for clip in clips} | {self._by_key[key] for key in keys if key in self._by_key}
        return [row for index, row in enumerate(self.rows) if index not in matched]


def _row(row: dict) -> dict:
    def number(name):
        value = row.get(name)
        return float(value) if value not in (None, "") else None

    video_id = row.get("video_id")
    return {"key": row.get("key") or None, "video_id": normalise_id(video_id) if video_id not in (None, "") else None,
            "start": number("start"), "end": number("end"), "duration": number("duration")}
