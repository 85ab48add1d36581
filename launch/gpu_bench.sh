#!/usr/bin/env bash
# Every GPU benchmark in one command, sized for one 15-minute loan: about 7 minutes of steps, so that the machine's
# start and a second command still fit. Run it through the device tool with carry [".whl", ".bench-shards"]
# (bash launch/gpu_wheels.sh makes both here). Everything it prints is also in $OUT/bench.log, line by line as it
# comes (unbuffered), so a step stopped by its time limit still leaves what it printed.
#
# That machine has Python 3.12, torch, transformers and triton but no package registry: the pure-Python packages it
# lacks come as pinned wheels in .whl/. It may have no FFmpeg libraries: no step imports torchcodec unless it decodes
# (extract.decode loads its codecs on first use), and the end-to-end step runs only where torchcodec loads.
#
# SMALL=1 shrinks every step (one layer, few tokens) to rehearse the whole script on a CPU in a venv with the GPU
# image's versions; its timings mean nothing.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rm -f /tmp/extract-no-decode  # the preflight's word for this run only
LOG="${OUT:-/tmp}/bench.log"
mkdir -p "$(dirname "$LOG")"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1 WANDB_MODE=disabled
PYTHON=${PYTHON:-python}
started=$(date +%s)

if compgen -G ".whl/*.whl" >/dev/null; then
  # torchvision only where the machine lacks it: its own build matches its own torch
  wheels=(.whl/*.whl)
  "$PYTHON" -c "import torchvision" 2>/dev/null && wheels=($(ls .whl/*.whl | grep -v torchvision))
  "$PYTHON" -m pip install --quiet --no-index --no-deps "${wheels[@]}" 2>&1 | tail -3
fi

# first: versions, kernels and every import the steps need, so a missing piece is one line, not an empty table
"$PYTHON" - <<'PY'
import importlib, platform, sys, time
import torch, transformers
cuda = torch.cuda.is_available()
try:
    import torchvision
    from transformers import LlavaOnevisionVideoProcessor
    LlavaOnevisionVideoProcessor()  # transformers' video processors need torchvision, and one that matches torch
    vision = f"torchvision {torchvision.__version__}"
except Exception as exc:
    vision = f"torchvision MISSING or broken ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:100]})"
print(f"# {torch.cuda.get_device_name(0) if cuda else 'no CUDA device'}, Python {platform.python_version()}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}), {vision}, transformers {transformers.__version__}, "
      f"{time.strftime('%Y-%m-%d %H:%M')}")
if cuda:
    free, total = torch.cuda.mem_get_info()
    b = torch.backends.cuda
    print(f"# GPU memory {total / 2**30:.0f} GiB ({free / 2**30:.0f} free); SDPA backends enabled: flash {b.flash_sdp_enabled()}, "
          f"memory-efficient {b.mem_efficient_sdp_enabled()}, cuDNN {b.cudnn_sdp_enabled()}, math {b.math_sdp_enabled()}")
missing = []
for name in ("extract.bench.__main__", "extract.bench.generation", "extract.bench.llava_video", "extract.bench.internvl",
             "extract.bench.vlm_caption", "extract.models.generation", "extract.models.random_models", "extract.heads.llava_video",
             "extract.heads.internvl", "extract.heads.vlm_caption"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        missing.append(f"{name}: {type(exc).__name__}: {exc}")
if "MISSING" in vision:
    missing.append(vision)
print("# imports: " + ("all there" if not missing else "MISSING " + "; ".join(missing)))
try:
    from extract.decode import codecs
    codecs.core
    print("# decoding: torchcodec loads (the end-to-end step runs)")
except Exception as exc:
    print(f"# decoding: torchcodec does not load here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); end-to-end step skipped")
    open("/tmp/extract-no-decode", "w").close()
sys.exit(1 if missing else 0)
PY
[ $? = 0 ] || { echo "## preflight failed: see the MISSING line above"; exit 1; }

step() {  # step SECONDS ARGS...: one benchmark under its own limit (times 4 in a SMALL rehearsal on a CPU)
  local limit=$(( $1 * ${LIMIT_SCALE:-1} )); shift
  echo; echo "## python -m extract.bench $* (limit ${limit} s, $(( $(date +%s) - started )) s in)"
  timeout "$limit" "$PYTHON" -m extract.bench "$@" 2>&1 | grep --line-buffered -v -e '^Loading weights' -e 'it/s]$'
  local status=${PIPESTATUS[0]}
  [ "$status" = 0 ] || echo "## (stopped: exit $status after at most ${limit} s)"
}

if [ "${SMALL:-0}" = 1 ]; then
  LIMIT_SCALE=${LIMIT_SCALE:-4}
  full=(--size full --layers 1); tokens=4; llava_batches=(--batches 2 --generate-batches 2 --frames 4)
  requests=(--requests 4 --slots 2 --cap 8 --frames 4)
  run_input=(--clips 2 --shards 1 --seconds 1); run_size=(--layers 1 --frames 4 --workers 1); small_requests=(--requests 8 --slots 4 --cap 16)
  internvl_batches=(--batches 1 --preset fast); vlm_batches=(--batches 2 --seconds 2)
else
  full=(--size full); tokens=256; llava_batches=(--batches 8,32 --generate-batches 8); requests=(--requests 16 --slots 8 --cap 512)
  run_input=(--input .bench-shards); run_size=(--workers 8); small_requests=(--requests 32 --slots 8 --cap 256)
  internvl_batches=(--batches 4); vlm_batches=(--batches 8)
fi
step 45  generation "${small_requests[@]}"                                # the small model: decode steps and wall time
step 150 llava_video "${full[@]}" "${llava_batches[@]}" --new-tokens "$tokens"   # the part that matters: clips/hour vs floor
step 60  generation "${full[@]}" "${requests[@]}"                          # long-tailed captions: refills at full size
step 60  internvl "${full[@]}" "${internvl_batches[@]}" --new-tokens "$(( tokens / 2 ))"
step 60  vlm_caption "${full[@]}" "${vlm_batches[@]}" --new-tokens "$(( tokens / 4 ))"  # Qwen3-VL-8B's shape through the engine
if [ -f /tmp/extract-no-decode ]; then
  echo; echo "## run: skipped (torchcodec does not load on this machine)"
elif [ -d .bench-shards ] || [ "${SMALL:-0}" = 1 ]; then
  step 60 run "${run_input[@]}" --new-tokens "$tokens" "${run_size[@]}"
else
  echo; echo "## run: skipped (no .bench-shards/; make them with bash launch/gpu_wheels.sh)"
fi
echo; echo "## done in $(( $(date +%s) - started )) s; log: $LOG"
