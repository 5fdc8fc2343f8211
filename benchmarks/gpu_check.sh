#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md ("Fused arms on a GPU"), on a machine with one NVIDIA GPU
# and a Python with torch (CUDA), scikit-learn, pandas and matplotlib. The project's other
# dependencies come from wheels in .whl/ when that folder exists (a machine without the internet),
# else from the Python at hand. Results go to ${OUT:-gpu_out}/.
set -o pipefail
out=${OUT:-gpu_out}
mkdir -p "$out"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$out/gpu.txt"
python3 benchmarks/bench_fused.py --parts g --reps 3 2>&1 | tee "$out/fused_gpu.log"
# The README's whole search on the GPU (device=auto), fused and one trial at a time.
for launcher in fused lrsweep; do
    rm -rf outputs
    start=$EPOCHREALTIME
    python3 scripts/two_stage_sweep.py hydra/launcher=$launcher >"$out/search_$launcher.log" 2>&1
    status=$?
    seconds=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
    echo "search hydra/launcher=$launcher: exit $status, $seconds s" | tee -a "$out/search_times.txt"
    grep -E "chosen lr|^\[1/10\]" "$out/search_$launcher.log" | head -3
done
# A muP sweep on the GPU: 10 LRs x 3 seeds of mlp_mup with MuAdamW and a test split, one fused batch.
rm -rf outputs
start=$EPOCHREALTIME
python3 -m src.train -m model=mlp_mup optimizer=muadamw 'sweep.seeds=[0,1,2]' \
    data.test_fraction=0.2 study.name=mup >"$out/mup.log" 2>&1
status=$?
seconds=$(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }")
python3 - "$status" "$seconds" <<'PY' | tee -a "$out/search_times.txt"
import sys
import optuna
trials = optuna.load_study(study_name="mup", storage="sqlite:///outputs/lrsweep.db").trials
done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
fused = {t.user_attrs.get("fused_arms") for t in done}
tested = sum(t.user_attrs.get("test_acc") is not None for t in done)
print(f"mup sweep: exit {sys.argv[1]}, {sys.argv[2]} s, {len(done)}/{len(trials)} COMPLETE, "
      f"fused_arms {sorted(fused, key=str)}, test_acc on {tested}")
PY
