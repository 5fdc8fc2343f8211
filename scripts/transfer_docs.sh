#!/usr/bin/env bash
# The measurements behind docs/transfer.md, one after another (resumable: re-run to finish).
#   nohup nice -n 10 scripts/transfer_docs.sh > outputs/transfer_docs.log 2>&1 &
# mnist1d, 1 seed, 5 epochs (1 warmup), stage 1: 8 LRs, stage 2: 6 LRs per scale; threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d epochs=5 warmup_epochs=1 threads=1 sweep.points=8)
SGD_RANGE=(sweep.low=1e-3 sweep.high=3)
ADAM_RANGE=(sweep.low=1e-5 sweep.high=0.3)
check() {  # name, then arguments
  local name=$1; shift
  echo "==== $(date +%T) $name"
  "$PY" -m src.transfer --measure --seeds 1 --points 6 --out "docs/transfer/$name" "$@" "${COMMON[@]}"
}
# (a) batch 32 -> 128 -> 512, MLP 128x2
check batch-sgd --axis batch --scales 32,128,512 optimizer=sgd "${SGD_RANGE[@]}"
check batch-adamw --axis batch --scales 32,128,512 optimizer=adamw "${ADAM_RANGE[@]}"
# (b) width 64 -> 2048, MLP depth 2, batch 64: standard parametrisation vs muP (base width 128)
WIDTHS=64,128,256,512,2048
check width-sgd-sp --axis width --scales $WIDTHS batch_size=64 optimizer=sgd "${SGD_RANGE[@]}"
check width-sgd-mup --axis width --scales $WIDTHS batch_size=64 model=mlp_mup optimizer=musgd "${SGD_RANGE[@]}"
check width-adam-sp --axis width --scales $WIDTHS batch_size=64 optimizer=adam "${ADAM_RANGE[@]}"
check width-adam-mup --axis width --scales $WIDTHS batch_size=64 model=mlp_mup optimizer=muadam "${ADAM_RANGE[@]}"
echo "==== $(date +%T) done"
