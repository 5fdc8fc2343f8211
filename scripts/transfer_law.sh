#!/usr/bin/env bash
# The law over batch and width behind docs/transfer.md, "A law over several axes" (resumable: re-run
# to finish). A design of 5 proxy configurations (not the 2x2 product plus more: the corners and a
# centre), the law fitted to their optima, a prediction at batch 1024 (4x beyond the design), and
# that configuration swept to check it. Outputs under outputs/law/.
#   nohup nice -n 10 scripts/transfer_law.sh > outputs/transfer_law.log 2>&1 &
# mnist1d, Adam, standard parametrisation, 5 epochs (1 warmup), 3 seeds; stage 1: 8 LRs in
# [1e-5, 0.3], stage 2: 6 LRs per configuration; threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d epochs=5 warmup_epochs=1 threads=1 sweep.points=8 sweep.low=1e-5
  sweep.high=0.3 optimizer=adam paths.output_dir=outputs/law)
echo "==== $(date +%T) the design and the law"
"$PY" -m src.transfer --law --seeds 3 --points 6 --out docs/transfer/law-batch-width-adam \
  --design batch_size=32,model.width=64 --design batch_size=256,model.width=64 \
  --design batch_size=32,model.width=256 --design batch_size=256,model.width=256 \
  --design batch_size=64,model.width=128 --predict batch_size=1024,model.width=256 "${COMMON[@]}"
echo "==== $(date +%T) the held-out configuration, swept: its optimum against the prediction"
"$PY" - "${COMMON[@]}" batch_size=1024 model.width=256 'sweep.seeds=[0,1,2]' <<'PY'
import sys

import yaml

from src.transfer_check import interval_text, measure_scale

r = measure_scale(1024, sys.argv[1:], 6)
law = yaml.safe_load(open("docs/transfer/law-batch-width-adam/law.yaml"))["prediction"]
lo, hi = law["ci95"]
nearest = min(r.curve["lr"], key=lambda lr: abs(lr / law["lr"] - 1) if lr > 0 else 1e9)
acc = float(r.curve.loc[r.curve["lr"] == nearest, "mean"].iloc[0])
print(f"held-out: measured lr_opt={r.lr_opt:.4g} {interval_text(r)} ({r.optimum}); best swept "
      f"lr={r.best_lr:.4g} mean {r.best_mean:.4f}")
print(f"held-out: predicted {law['lr']:.4g} [{lo:.3g}, {hi:.3g}]: predicted/measured "
      f"{law['lr'] / r.lr_opt:.2f}x; swept LR nearest the prediction {nearest:.4g}: mean {acc:.4f}")
PY
echo "==== $(date +%T) done"
