#!/usr/bin/env bash
# Issue 20, one probe of a direction: fine-tune with the retraining study's recipe (MiniLM, 40 LoRA steps, one thread,
# no injected negatives, `--save-every 10`) plus EXTRA fine-tuning options, then one sweep of that encoder with HEADS
# (kinds spike hard, the study's K grid 0 1 2 4 8 16 25 50, so hijack budgets compare with the study's).
#   results/recipe-search/probes/run.sh RUNS NAME COLLECTION SEED POOLING "HEADS" ["EXTRA"]     (from the checkout)
# writes RUNS/models/NAME/COLLECTION/seedSEED (the adapter) and RUNS/NAME/sweep-COLLECTION-sSEED/results.json.
set -euo pipefail
runs=$1; name=$2; collection=$3; seed=$4; pooling=$5; heads=$6; extra=${7:-}
model=$runs/models/$name/$collection/seed$seed
export LIR_ROBUST_DATA_ROOT=${LIR_ROBUST_DATA_ROOT:-$(cd .. && pwd)/shared/data} OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
python=${PYTHON:-.venv/bin/python}
mkdir -p "$model" "$runs/$name"
echo "$extra" > "$runs/$name/extra.txt"  # the summary labels the probe with it
# shellcheck disable=SC2086  # EXTRA and HEADS are lists of options / heads
[ -f "$model/summary.json" ] || $python -m lir_robust.commands.finetune --model minilm --data "$collection" \
    --pooling "$pooling" --seed "$seed" --output-dir "$model" --save-every 10 --injected-negatives none $extra \
    >> "$model/finetune.log" 2>&1
# shellcheck disable=SC2086
PYTHONPATH=$PWD $python eval/length_sweep.py --model "$model" --data "$collection" --poolings $heads \
    --kinds spike hard --ks 0 1 2 4 8 16 25 50 --out "$runs/$name/sweep-$collection-s$seed"
