#!/usr/bin/env bash
# The depth rule measured on a residual MLP with depth-muP's 1/sqrt(depth) branch multiplier,
# behind docs/transfer.md (resumable: re-run to finish).
#   nohup nice -n 10 scripts/transfer_depth.sh > outputs/transfer_depth.log 2>&1 &
# mnist1d, model=resmlp width 128, batch 64, 5 epochs (1 warmup), 3 seeds; depth 2, 4, 8, 16.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d model=resmlp epochs=5 warmup_epochs=1 batch_size=64 threads=1 sweep.points=8
  paths.output_dir=outputs/depth)
check() {  # name, then arguments
  local name=$1; shift
  echo "==== $(date +%T) $name"
  "$PY" -m src.transfer --measure --axis depth --scales 2,4,8,16 --seeds 3 --points 6 \
    --out "docs/transfer/$name" "$@" "${COMMON[@]}"
}
check depth-adam-resmlp optimizer=adam sweep.low=1e-5 sweep.high=0.3
check depth-sgd-resmlp optimizer=sgd sweep.low=1e-3 sweep.high=3
echo "==== $(date +%T) done"
