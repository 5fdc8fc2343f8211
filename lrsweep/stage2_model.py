"""A model-based stage 2: Optuna's TPE or GP sampler, seeded with stage 1's trials, proposes
stage 2's LRs one at a time over the narrowed log range, instead of a fixed grid.

Same budget as the grid (`points` LRs on stage 1's seeds), same confirm step after it, same
study `<name>-stage2`. Exactly once and resumable like every stage: LR number i is a pure
function of (the trials before it, i): a fresh in-memory Optuna study gets stage 1's trials
inside the range and stage 2's first i LRs' trials (through `optuna.trial.create_trial` and
`Study.add_trials`, in a fixed order), and a sampler seeded with i asks once. Each LR then joins
stage 2's grid, and the sweep runs what is missing of it. A rerun after a kill replays the same
proposals from the same recorded values (nothing runs again), then goes on where it stopped: the
same search, never a new one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

METHODS = ("grid", "tpe", "gp")
# Stage 2's method when none is given (every adapter): chosen by benchmarks/bench_samplers.py
# (docs/benchmarks.md).
DEFAULT_METHOD = "grid"


def check_method(method: str) -> str:
    """`method`, or ValueError naming the choices."""
    if method not in METHODS:
        raise ValueError(f"stage 2 method={method!r}: one of {', '.join(METHODS)}")
    return method


def _sampler(method: str, seed: int) -> Any:
    import optuna

    if method == "tpe":
        # No random start-up trials: stage 1's trials are the start-up.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=0)
    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=0)


def history(frame: pd.DataFrame, low: float, high: float, direction: str) -> list[tuple]:
    """(lr, value) of the COMPLETE trials of a trials frame inside [low, high] (to 1e-9), sorted
    by (lr, seed): the order never depends on when they ran. A non-finite value (a diverged run
    of an app that records inf) becomes the worst finite value, or is left out without one."""
    done = frame[(frame["state"] == "COMPLETE") & frame["lr"].notna()]
    done = done[(done["lr"] >= low * (1 - 1e-9)) & (done["lr"] <= high * (1 + 1e-9))]
    done = done.sort_values(["lr", "seed"], kind="stable")
    values = done["value"].astype(float)
    finite = values[values.map(math.isfinite)]
    worst = (finite.min() if direction == "maximize" else finite.max()) if len(finite) else None
    pairs = []
    for lr, value in zip(done["lr"].astype(float), values, strict=True):
        if not math.isfinite(value):
            if worst is None:
                continue
            value = float(worst)
        pairs.append((min(max(lr, low), high), value))
    return pairs


def propose(
    method: str, observed: list[tuple], low: float, high: float, direction: str, step: int
) -> float:
    """The next LR in [low, high] (log) of `method`'s sampler (seed `step`) after `observed`,
    a list of (lr, value)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dist = optuna.distributions.FloatDistribution(low, high, log=True)
    study = optuna.create_study(direction=direction, sampler=_sampler(method, step))
    study.add_trials(
        [
            optuna.trial.create_trial(params={"lr": lr}, distributions={"lr": dist}, value=value)
            for lr, value in observed
        ]
    )
    trial = study.ask()
    return float(trial.suggest_float("lr", low, high, log=True))


def model_stage2(
    method: str,
    stage1: pd.DataFrame,
    low: float,
    high: float,
    points: int,
    direction: str,
    run: Callable[[list[float]], pd.DataFrame],
) -> list[float]:
    """Stage 2's `points` LRs, proposed one at a time (module docstring). `stage1`: stage 1's
    trials frame; `run(lrs)` sweeps stage 2 over `lrs` (running only what is missing) and
    returns its trials frame. Returns the LRs in the order they were proposed."""
    seeded = history(stage1, low, high, direction)
    lrs: list[float] = []
    frame = None
    for step in range(points):
        observed = seeded
        if frame is not None:  # only the LRs proposed so far: a rerun finds later ones done too
            ours = frame["lr"].map(lambda x: any(math.isclose(x, y, rel_tol=1e-9) for y in lrs))
            observed = seeded + history(frame[ours], low, high, direction)
        lr = propose(method, observed, low, high, direction, step)
        if any(math.isclose(lr, x, rel_tol=1e-9) for x in lrs):
            continue  # the sampler asked again for a measured LR: that step adds nothing
        lrs.append(lr)
        frame = run(list(lrs))
    return lrs
