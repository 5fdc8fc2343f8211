#!/usr/bin/env bash
# Training length as a transfer axis, behind docs/transfer.md (resumable: re-run to finish).
#   nohup nice -n 10 scripts/transfer_epochs.sh > outputs/transfer_epochs.log 2>&1 &
# mnist1d, MLP 128x2, batch 32, 1 warmup epoch, constant LR after it, 3 seeds;
# stage 1: 8 LRs, stage 2: 6 LRs per scale; 5, 10, 20 and 50 epochs; threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d warmup_epochs=1 threads=1 sweep.points=8 paths.output_dir=outputs/epochs)
check() {  # name, then arguments
  local name=$1; shift
  echo "==== $(date +%T) $name"
  "$PY" -m src.transfer --measure --axis epochs --scales 5,10,20,50 --seeds 3 --points 6 \
    --out "docs/transfer/$name" "$@" "${COMMON[@]}"
}
check epochs-sgd optimizer=sgd sweep.low=1e-3 sweep.high=3
check epochs-adamw optimizer=adamw sweep.low=1e-5 sweep.high=0.3
echo "==== $(date +%T) done"
