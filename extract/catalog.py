"""The dataset CSV (`video_id,start,end,duration`) and its join with clips."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

from extract.clips import normalise_id
from extract.errors import ConfigError

REQUIRED_COLUMNS = ("video_id", "start", "end")


class Catalog:
    """CSV rows indexed by video_id; clips match rows on (start, end) within `tolerance` seconds."""

    def __init__(self, rows: list[dict], tolerance: float):
        self.rows = rows
        self.tolerance = tolerance
        self._by_video: dict[str, list[int]] = defaultdict(list)
        for index, row in enumerate(rows):
            self._by_video[row["video_id"]].append(index)

    @classmethod
    def empty(cls) -> "Catalog":
        return cls([], 0.0)

    @classmethod
    def load(cls, path: str | Path, tolerance: float) -> "Catalog":
        path = Path(path)
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise ConfigError(f"dataset_csv {path}: missing column(s) {', '.join(missing)} (expected video_id,start,end,duration)")
                rows = []
                for line, row in enumerate(reader, start=2):
                    try:
                        duration = row.get("duration")
                        rows.append({
                            "video_id": normalise_id(row["video_id"]),
                            "start": float(row["start"]),
                            "end": float(row["end"]),
                            "duration": float(duration) if duration not in (None, "") else None,
                        })
                    except (TypeError, ValueError) as exc:
                        raise ConfigError(f"dataset_csv {path}, line {line}: {exc}") from None
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"dataset_csv {path} cannot be read: {exc}") from None
        return cls(rows, tolerance)

    def match(self, video_id: str, start: float, end: float) -> int | None:
        """Index of the CSV row for this clip, or None."""
        best, best_gap = None, None
        for index in self._by_video.get(normalise_id(video_id), ()):
            row = self.rows[index]
            gap = max(abs(row["start"] - start), abs(row["end"] - end))
            if gap <= self.tolerance and (best_gap is None or gap < best_gap):
                best, best_gap = index, gap
        return best

    def rows_without_clips(self, clips: list[tuple[str, float, float]]) -> list[dict]:
        matched = {self.match(*clip) for clip in clips}
        return [row for index, row in enumerate(self.rows) if index not in matched]
