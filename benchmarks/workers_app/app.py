"""A trivial Hydra app swept by `benchmarks/bench_workers.py`: many sweep processes on one study.

    BENCH_STORAGE=<url> python benchmarks/workers_app/app.py -m study=<name> points=100

Its task sleeps `work_s` seconds (the trial's work), reports through lrsweep's `TrialReporter` as
a real trial does (one transaction of user attributes, with the worker's pid), and returns a
number: the sweep's own cost per trial is all that is left to measure.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.study import TrialReporter  # noqa: E402


@hydra.main(version_base="1.3", config_path=".", config_name="app")
def main(cfg: DictConfig) -> float:
    time.sleep(float(cfg.work_s))
    reporter = TrialReporter(str(cfg.storage), str(cfg.study), cfg.trial)
    reporter.set_attrs(pid=os.getpid(), seconds=float(cfg.work_s))
    return -((math.log10(float(cfg.lr)) + 2.0) ** 2)


if __name__ == "__main__":
    main()
