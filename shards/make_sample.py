"""Make the bundled sample: a few short clips with audio, in the input naming format, and a CSV.

    python shards/make_sample.py            # writes shards/sample-000.tar.gz and shards/sample.csv

The clips are synthetic (ffmpeg test patterns and tones), so anyone can regenerate them.
"""

import csv
import io
import subprocess
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (video_id, start, end, pattern, tone Hz): ids with dots, spaces and a leading dash, as real data has
CLIPS = [
    ("sample.video.one", 0.0, 3.0, "testsrc2", 440),
    ("sample.video.one", 3.0, 6.0, "smptebars", 660),
    ("-leading dash id", 12.5, 15.5, "testsrc", 330),
    ("id with spaces", 100.0, 102.0, "rgbtestsrc", 880),
]


def make_clip(pattern: str, tone: int, seconds: float) -> bytes:
    command = [
        "ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"{pattern}=size=320x240:rate=24:duration={seconds}",
        "-f", "lavfi", "-i", f"sine=frequency={tone}:duration={seconds}", "-shortest",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-movflags", "+frag_keyframe+empty_moov", "-f", "mp4", "pipe:1",
    ]
    return subprocess.run(command, check=True, capture_output=True).stdout


def main() -> None:
    with tarfile.open(HERE / "sample-000.tar.gz", "w:gz") as tar:
        for video_id, start, end, pattern, tone in CLIPS:
            data = make_clip(pattern, tone, end - start)
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
