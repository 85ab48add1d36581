"""Shared helpers: clips made with ffmpeg at test time, shards built from them, runs of the CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from extract.bench.synthetic import lavfi_clip as make_clip  # noqa: F401 (used by the tests)
from extract.cli import normalise_overrides

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
MEDIA = REPO.parent / "shared" / "media"  # real clips beside the checkout, where there are some


def write_shard(path: Path, members: list[tuple[str, bytes]], gz: bool = True) -> Path:
    with tarfile.open(path, "w:gz" if gz else "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return path


def read_records(folder: Path) -> list[dict]:
    """Every JSON record in the complete output tars of `folder`."""
    records = []
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                if info.name.endswith(".json"):
                    records.append(json.loads(tar.extractfile(info).read()))
    return records


def compose_cfg(*overrides: str):
    """The config a command line would give (checked and expanded as the CLI does: `model.<option>` for one head)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=normalise_overrides(list(overrides)))


def run_cli(*args: str, torchrun: int = 0, timeout: float = 300, **popen) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else [sys.executable]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*launcher, "-m", "extract", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env, **popen)


@pytest.fixture(scope="session")
def clip_bytes() -> bytes:
    return make_clip()


def ready(head, device: str = "cpu"):
    """A head set up as the runner sets it up: processor (`open`), then weights (`load`)."""
    head.open(torch.device(device))
    head.load(torch.device(device))
    return head


def ffmpeg_output(*arguments: str, suffix: str = ".mp4", source: bytes | None = None, seek: str | None = None) -> bytes:
    """ffmpeg's output as bytes, written to a real file (an mp4's index goes at its end)."""
    with tempfile.TemporaryDirectory() as tmp:
        inputs = []
        if source is not None:
            (Path(tmp) / "in").write_bytes(source)
            inputs = [*(["-ss", seek] if seek else []), "-i", str(Path(tmp) / "in")]
        target = Path(tmp) / f"out{suffix}"
        subprocess.run(["ffmpeg", "-loglevel", "error", *inputs, *arguments, str(target)], check=True)
        return target.read_bytes()


def plain_mp4(seconds: float = 2.0, rate: int = 12) -> bytes:
    return ffmpeg_output("-f", "lavfi", "-i", f"testsrc=size=96x64:rate={rate}:duration={seconds}", "-f", "lavfi", "-i",
                   f"sine=duration={seconds}", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest")
