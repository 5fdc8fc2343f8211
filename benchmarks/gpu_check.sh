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
