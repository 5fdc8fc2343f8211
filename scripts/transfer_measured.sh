#!/usr/bin/env bash
# The multi-seed width measurement and the held-out prediction behind docs/transfer.md,
# "Measurements with error bars" (resumable: re-run to finish). Outputs under outputs/measured/;
# then scripts/transfer_heldout.py trains width 2048 at the predictions.
#   nohup nice -n 10 scripts/transfer_measured.sh > outputs/transfer_measured.log 2>&1 &
# mnist1d, Adam, standard parametrisation, batch 64, 5 epochs (1 warmup), 3 seeds;
# stage 1: 8 LRs in [1e-5, 0.3], stage 2: 6 LRs per scale; threads=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
COMMON=(data=mnist1d epochs=5 warmup_epochs=1 threads=1 sweep.points=8 sweep.low=1e-5
  sweep.high=0.3 batch_size=64 optimizer=adam paths.output_dir=outputs/measured)
echo "==== $(date +%T) the check: width 64..512, 3 seeds"
"$PY" -m src.transfer --measure --axis width --scales 64,128,256,512 --seeds 3 --points 6 \
  --out docs/transfer/measured-width-adam-sp "${COMMON[@]}"
echo "==== $(date +%T) the held-out sweep at width 2048, 3 seeds"
"$PY" -m src.train -m model.width=2048 'sweep.seeds=[0,1,2]' "${COMMON[@]}"
"$PY" -m src.refine --run --points 6 model.width=2048 'sweep.seeds=[0,1,2]' "${COMMON[@]}"
echo "==== $(date +%T) the check over all five widths, 2048 included (its trials are done above)"
"$PY" -m src.transfer --measure --axis width --scales 64,128,256,512,2048 --seeds 3 --points 6 \
  --out docs/transfer/measured-width-adam-sp-64-2048 "${COMMON[@]}"
echo "==== $(date +%T) the prediction for width 2048 from width 64's optimum, by the measured law"
LR64=$("$PY" -c "import yaml; print(yaml.safe_load(open('docs/transfer/measured-width-adam-sp/check.yaml'))['scales'][0]['lr_opt'])")
"$PY" -m src.transfer base.lr="$LR64" base.width=64 target.width=2048 \
  rules.width=docs/transfer/measured-width-adam-sp/check.yaml "${COMMON[@]}"
echo "==== $(date +%T) done"
