"""Make the bundled sample: a few short clips with audio, in the input naming format, and a CSV.

    python shards/make_sample.py            # writes shards/sample-000.tar.gz and shards/sample.csv

The clips are synthetic (ffmpeg test patterns and tones), so anyone can regenerate them.
"""

import csv
import io
import tarfile
from pathlib import Path

from extract.bench.synthetic import lavfi_clip

HERE = Path(__file__).resolve().parent
# (video_id, start, end, pattern, tone Hz): ids with dots, spaces and a leading dash, as real data has
CLIPS = [
    ("sample.video.one", 0.0, 3.0, "testsrc2", 440),
    ("sample.video.one", 3.0, 6.0, "smptebars", 660),
    ("-leading dash id", 12.5, 15.5, "testsrc", 330),
    ("id with spaces", 100.0, 102.0, "rgbtestsrc", 880),
]


def main() -> None:
    with tarfile.open(HERE / "sample-000.tar.gz", "w:gz") as tar:
        for video_id, start, end, pattern, tone in CLIPS:
            data = lavfi_clip(end - start, pattern, size="320x240", rate=24, tone=tone, preset="veryfast")
            info = tarfile.TarInfo(f"{video_id} ({start}-{end}).mp4")
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    with open(HERE / "sample.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video_id", "start", "end", "duration"])
        for video_id, start, end, *_ in CLIPS:
            writer.writerow([video_id, start, end, end - start])


if __name__ == "__main__":
    main()
