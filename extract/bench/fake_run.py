"""A run's output made up at any size (probe and av_sync records of the declared types), for the export and select
benchmarks."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np


def write_fake_run(folder: Path, clips: int, per_shard: int, inputs: Path | None = None, media_bytes: int = 4096) -> None:
    """An output folder of probe and av_sync records as a run writes them (made-up values of the declared types); with
    `inputs`, the input shards too, each clip a member of `media_bytes` bytes that passes the early refusal."""
    from extract.clips import clip_key
    from extract.heads import head_class
    from extract.records import head_record
    from extract.schema import BaseRecord, dataset_card
    from extract.writer import OutputWriter

    rng = np.random.default_rng(0)
    for name in ("probe", "av_sync"):
        head = head_class(name)
        writer = OutputWriter(folder / name, dataset_card(head))
        for first in range(0, clips, per_shard):
            url = str((inputs or Path("/data/shards")) / f"s-{first // per_shard:05d}.tar")
            if inputs is not None and name == "probe":
                media = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * (media_bytes // 256)
                with tarfile.open(url, "w") as tar:
                    for i in range(first, min(first + per_shard, clips)):
                        info = tarfile.TarInfo(f"video{i // 7} ({i % 7}-{i % 7 + 1}).mp4")
                        info.size = len(media)
                        tar.addfile(info, io.BytesIO(media))
            for i in range(first, min(first + per_shard, clips)):
                base = BaseRecord(key=clip_key(f"video{i // 7}", float(i % 7), float(i % 7 + 1)), video_id=f"video{i // 7}", start=float(i % 7), end=float(i % 7 + 1),
                                  duration=1.0, in_csv=True, shard=url, member=f"video{i // 7} ({i % 7}-{i % 7 + 1}).mp4",
                                  head=name, model=None, status="ok", error_type=None, error=None)
                if name == "probe":
                    fields = {"container": "mp4 (isom)", "duration_s": 1.0, "has_audio": True,
                              "video_streams": [{"index": 0, "codec": "h264", "width": 640, "height": 360, "fps": 30.0, "num_frames": 30}],
                              "stats": {"frames_sampled": 4, "frame_times": [0.1, 0.4, 0.6, 0.9], "mean_luma": float(rng.uniform(0, 255)),
                                        "motion_energy": float(rng.uniform(0, 20)), "scene_cuts": 0, "audio_rms_dbfs": -20.0}}
                else:
                    fields = {"offset_s": float(rng.normal(0, 0.1)), "confidence": float(rng.uniform()), "method": "onset_xcorr"}
                writer.write(url, head_record(base, head.fields, fields), {})
            writer.finish(url, None, [], name)
