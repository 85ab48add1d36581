#!/usr/bin/env bash
# Set up, then run the main job on the bundled sample shards.
#   bash launch/run.sh                         # probe head over shards/, output in outputs/
#   NGPU=8 bash launch/run.sh +model=llava_video tar_folder=/data/shards output_dir=/data/out
# Extra arguments go to Hydra; NGPU sets torchrun's --nproc_per_node.
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

args=("$@")
case " ${args[*]-} " in *" +model="*|*" model="*) ;; *) args=(+model=probe "${args[@]}") ;; esac
case " ${args[*]} " in *" tar_folder="*|*" shards="*) ;; *) args+=(tar_folder=shards dataset_csv=shards/sample.csv) ;; esac
case " ${args[*]} " in *" output_dir="*) ;; *) args+=(output_dir=outputs) ;; esac

NGPU=${NGPU:-1}
if [ "$NGPU" -gt 1 ]; then
  # the command line is checked once before the ranks start; errors and Ctrl-C are one line (extract/launch.py)
  .venv/bin/python -m extract.launch --standalone --nproc_per_node "$NGPU" -- "${args[@]}"
else
  .venv/bin/python -m extract "${args[@]}"
fi
out=$(printf '%s\n' "${args[@]}" | sed -n 's/^output_dir=//p' | tail -n 1)
echo "[run] records: ${out}/<head>/*.tar, run summary: ${out}/<head>/summary.json"
