"""What stopping hopeless trials saves: a stage-1 grid with and without `stop_at_chance`.

    python benchmarks/bench_stop_at_chance.py [--data digits mnist1d] [--points 10] [--epochs 5]

For every LR of the default log grid both settings run in-process, side by side (interleaved),
from the same initial weights: the script prints each LR's accuracy and epochs with and without the
stop, the total training time of each, and the ratio. A stop is only sound if no stopped LR was a
contender: the script also prints the best accuracy among the stopped LRs' full runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.study import compose_config  # noqa: E402
from src.train import train  # noqa: E402


def trial(data: str, lr: float, epochs: int, stop: bool):
    overrides = [f"data={data}", f"lr={lr!r}", f"epochs={epochs}", f"stop_at_chance={stop}"]
    return train(compose_config(overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["digits", "mnist1d"])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    os.chdir(
        tempfile.mkdtemp(prefix="bench_stop_")
    )  # paths.output_dir (checkpoints, mnist1d cache) here
    for data in args.data:
        lrs = [float(lr) for lr in np.logspace(-5, 0, args.points)]
        seconds = {True: 0.0, False: 0.0}
        best_full, best_stopped = 0.0, 0.0
        print(
            f"\n{data}: mlp, sgd, {args.epochs} epochs (1 warmup), {args.points} LRs in [1e-5, 1]"
        )
        print(
            f"{'lr':>10}  {'acc (stop)':>10}  {'epochs':>6}  {'s':>5}  {'acc (full)':>10}  "
            f"{'epochs':>6}  {'s':>5}"
        )

        trial(
            data, lrs[0], args.epochs, False
        )  # untimed: data, checkpoint and torch's first-step costs
        for i, lr in enumerate(lrs):
            runs = {}
            for stop in (True, False) if i % 2 else (False, True):  # alternate the order
                runs[stop] = trial(data, lr, args.epochs, stop)
                seconds[stop] += runs[stop].seconds
            best_full = max(best_full, runs[False].val_acc)
            if runs[True].stopped_at_chance:
                best_stopped = max(best_stopped, runs[False].val_acc)
            print(
                f"{lr:>10.3e}  {runs[True].val_acc:>10.4f}  {runs[True].epochs_run:>6}  "
                f"{runs[True].seconds:>5.2f}  {runs[False].val_acc:>10.4f}  "
                f"{runs[False].epochs_run:>6}  {runs[False].seconds:>5.2f}"
                + ("  stopped" if runs[True].stopped_at_chance else "")
            )
        print(
            f"time: with stop {seconds[True]:.2f}s, without {seconds[False]:.2f}s, "
            f"ratio {seconds[True] / seconds[False]:.3f} (saved {1 - seconds[True] / seconds[False]:.0%})"
        )
        print(
            f"best full-run accuracy {best_full:.4f}; best full-run accuracy of a stopped LR {best_stopped:.4f}"
        )


if __name__ == "__main__":
    main()
