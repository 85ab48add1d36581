#!/usr/bin/env bash
# Here (with a package registry): what launch/gpu_bench.sh carries to a GPU machine that has torch 2.11 and
# transformers but none of the rest: pure-Python wheels for Python 3.12 in .whl/ and a few shards in .bench-shards/.
# Then: run the device command `bash launch/gpu_bench.sh` with carry [".whl", ".bench-shards"].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .whl && mkdir -p .whl
# pinned: the versions this project is tested with, and hydra-core 1.3's omegaconf (<2.4); torchcodec 0.11 is the one
# built against torch 2.11 (that machine's), and decodes with that machine's FFmpeg libraries where it has them;
# torchvision 0.26 is torch 2.11's, for transformers' video processors (installed there only if it is missing)
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl webdataset==1.0.2 braceexpand==0.1.7 hydra-core==1.3.8 \
  omegaconf==2.3.1 tqdm==4.70.1 'torchcodec==0.11.*' av==18.1.0 'torchvision==0.26.*'
# hydra's parser runtime is published as source only: a pure-Python wheel of it, built here
.venv/bin/python -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3
du -sh .whl
rm -rf .bench-shards && mkdir -p .bench-shards
.venv/bin/python - <<'PY'
from pathlib import Path
from extract.bench.common import make_shards
make_shards(Path(".bench-shards"), clips=32, shards=2, seconds=4.0)
PY
du -sh .bench-shards
