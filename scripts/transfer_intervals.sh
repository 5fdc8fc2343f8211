#!/usr/bin/env bash
# The batch and the muP width checks of docs/transfer.md on 3 seeds, (i) and (j) (resumable).
#   nohup nice -n 10 scripts/transfer_intervals.sh > outputs/transfer_intervals.log 2>&1 &
# mnist1d, 5 epochs (1 warmup), 3 seeds; stage 1: 8 LRs in [1e-5, 0.3], stage 2: 6; threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d epochs=5 warmup_epochs=1 threads=1 sweep.points=8 sweep.low=1e-5
  sweep.high=0.3 paths.output_dir=outputs/intervals)
echo "==== $(date +%T) batch 32..512, AdamW, MLP 128x2"
"$PY" -m src.transfer --measure --axis batch --scales 32,64,128,256,512 --seeds 3 --points 6 \
  --out docs/transfer/measured-batch-adamw optimizer=adamw "${COMMON[@]}"
echo "==== $(date +%T) width 64..512 under muP, MuAdam, batch 64"
"$PY" -m src.transfer --measure --axis width --scales 64,128,256,512 --seeds 3 --points 6 \
  --out docs/transfer/measured-width-muadam model=mlp_mup optimizer=muadam batch_size=64 \
  "${COMMON[@]}"
echo "==== $(date +%T) done"
