"""A user's own Hydra app, not lrsweep's trial: its "training" scores an LR by a known curve.

The score peaks at `optimum` in log10(lr) (a parabola: -x**2 maximising, x**2 minimising), with a
seed-dependent wobble of `noise`; it returns NaN above `diverge_above` (a run that blew up) and
raises at `fail_at`; each run first sleeps `sleep` seconds, and appends whether the garbage
collector is on to the file `gc_log`. With `kill_once` (a file path), the first run at `fail_at`
to find no such file creates it and kills its own process (a worker the OOM killer took, a
cancelled task): it ends without a result. The LR lives at `optim.lr`, as in many real apps' configs.
"""

import gc
import math
import os
import random
import signal
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="peak")
def main(cfg: DictConfig) -> float | dict:
    lr = float(cfg.optim.lr)
    time.sleep(cfg.sleep)
    if cfg.gc_log is not None:  # whether the garbage collector runs while jobs run
        with open(cfg.gc_log, "a") as log:
            log.write(f"{int(gc.isenabled())}\n")
    if cfg.fail_at is not None and math.isclose(lr, cfg.fail_at, rel_tol=1e-9):
        if cfg.kill_once is not None and not Path(cfg.kill_once).exists():
            Path(cfg.kill_once).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if cfg.kill_once is None:
            raise RuntimeError("boom")
    if lr > cfg.diverge_above:
        return math.nan
    x = math.log10(lr) - math.log10(cfg.optimum)
    wobble = random.Random(f"{cfg.seed}-{lr:.12g}").gauss(0.0, cfg.noise) if cfg.noise else 0.0
    score = (x * x if cfg.minimize else -x * x) + wobble
    return {"score": score, "lr": lr} if cfg.as_dict else score


if __name__ == "__main__":
    main()
