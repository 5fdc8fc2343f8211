#!/usr/bin/env bash
# The second data set of docs/transfer.md's measurements with error bars: digits (sklearn's 8x8,
# 1437 train / 360 validation), Adam, standard parametrisation, width 64..512 on 3 seeds, then the
# held-out width 2048 swept and predicted by the law fitted on 64..512 (resumable).
#   nohup nice -n 10 scripts/transfer_digits.sh > outputs/transfer_digits.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=digits epochs=5 warmup_epochs=1 threads=1 sweep.points=8 sweep.low=1e-5
  sweep.high=0.3 batch_size=32 optimizer=adam paths.output_dir=outputs/digits-width)
echo "==== $(date +%T) the check: width 64..512, 3 seeds"
"$PY" -m src.transfer --measure --axis width --scales 64,128,256,512 --seeds 3 --points 6 \
  --out docs/transfer/digits-width-adam-sp "${COMMON[@]}"
echo "==== $(date +%T) the held-out width 2048, swept on 3 seeds"
"$PY" - "${COMMON[@]}" model.width=2048 'sweep.seeds=[0,1,2]' <<'PY'
import sys

import yaml

from src.transfer_check import interval_text, measure_scale

r = measure_scale(2048, sys.argv[1:], 6)
check = yaml.safe_load(open("docs/transfer/digits-width-adam-sp/check.yaml"))
alpha, c = check["alpha"], check["log10_prefactor"]
low, high = check["alpha_interval"]
lr64 = check["scales"][0]["lr_opt"]
predicted = lr64 * 32**alpha
band = sorted((lr64 * 32**low, lr64 * 32**high))
nearest = min(r.curve["lr"], key=lambda lr: abs(lr / predicted - 1))
acc = float(r.curve.loc[r.curve["lr"] == nearest, "mean"].iloc[0])
print(f"held-out: measured lr_opt={r.lr_opt:.4g} {interval_text(r)} ({r.optimum}); best swept "
      f"lr={r.best_lr:.4g} mean {r.best_mean:.4f}")
print(f"held-out: measured law from width 64: predicted {predicted:.4g} [{band[0]:.3g}, "
      f"{band[1]:.3g}]: predicted/measured {predicted / r.lr_opt:.2f}x; inverse_sqrt "
      f"{lr64 / 32**0.5:.4g} ({lr64 / 32**0.5 / r.lr_opt:.2f}x); swept LR nearest the prediction "
      f"{nearest:.4g}: mean {acc:.4f}")
PY
echo "==== $(date +%T) done"
