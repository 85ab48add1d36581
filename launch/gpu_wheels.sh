#!/usr/bin/env bash
# Here (with a package registry): what launch/gpu_bench.sh carries to a GPU machine that has torch 2.11 and
# transformers but none of the rest: pure-Python wheels for Python 3.12 in .whl/ and a few shards in .bench-shards/.
# Then: run the device command `bash launch/gpu_bench.sh` with carry [".whl", ".bench-shards"].
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -rf .whl && mkdir -p .whl
# torchcodec 0.11 is the one built against torch 2.11 (that machine's); it decodes with that machine's ffmpeg libraries
.venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d .whl webdataset braceexpand hydra-core omegaconf tqdm 'torchcodec==0.11.*'
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
