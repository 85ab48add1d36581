#!/usr/bin/env bash
# Every full-size benchmark on a lent GPU machine, in under 8 minutes, printing the tables for the README.
# That machine has torch, transformers and triton but no package registry: the pure-Python packages it lacks
# (webdataset, hydra, ...) come as wheels carried in .whl/ (bash launch/gpu_wheels.sh makes them here), and the
# end-to-end run reads the shards carried in .bench-shards/ (made here too: that machine has no ffmpeg command).
# Each step has its own time limit, so one slow step cannot take the others' time.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python -m pip install --quiet --no-index --no-deps .whl/*.whl 2>&1 | tail -3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 WANDB_MODE=disabled
python - <<'PY'
import platform, time, torch, transformers
print(f"# {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'}, {platform.machine()}, "
      f"torch {torch.__version__}, transformers {transformers.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
PY
step() {  # step SECONDS ARGS...: one benchmark under its own limit
  local limit=$1; shift
  echo; echo "## python -m extract.bench $*"
  timeout "$limit" python -m extract.bench "$@" 2>&1 | grep -v -e '^Loading weights' -e 'it/s]$'
  local status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || echo "## (stopped: exit $status after at most ${limit} s)"
}
step 60  generation --requests 32 --slots 8                      # the small model: decode steps and wall time
step 150 llava_video --size full --batches 1,8,32 --generate-batches 1,8 --new-tokens 256
step 120 generation --size full --requests 8 --slots 8 --cap 1024 # long-tailed captions, LLaVA-Video-7B's shape
step 90  internvl --size full --batches 1,4 --new-tokens 256
if [ -d .bench-shards ]; then
  step 60 run --input .bench-shards --new-tokens 256 --workers 8
else
  echo "## run: skipped (no .bench-shards/; make them with bash launch/gpu_wheels.sh)"
fi
