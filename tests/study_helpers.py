"""Real Optuna studies with hand-made trials, for the tests of the stages that read studies."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import FloatDistribution, IntDistribution

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {"lr": FloatDistribution(1e-6, 100.0, log=True), "seed": IntDistribution(0, 10_000)}
GRID = [float(x) for x in np.logspace(-5, 0, 10)]  # stage 1's default grid


def add_trial(
    study: optuna.Study,
    lr: float,
    seed: int,
    value: float | None = None,
    *,
    diverged: bool = False,
    failed: bool = False,
    stopped_at_chance: bool = False,
    test_acc: float | None = None,
) -> None:
    """A finished trial as a job leaves it: COMPLETE (a diverged one scores 0.0; `stopped_at_chance`: it
    stopped at chance) or FAIL."""
    if failed:
        trial = optuna.trial.create_trial(
            params={"lr": lr, "seed": seed},
            distributions=DISTS,
            state=optuna.trial.TrialState.FAIL,
            user_attrs={"error": "boom"},
        )
    else:
        trial = optuna.trial.create_trial(
            params={"lr": lr, "seed": seed},
            distributions=DISTS,
            value=0.0 if diverged else value,
            user_attrs={
                "diverged": diverged,
                "stopped_at_chance": stopped_at_chance,
                "test_acc": test_acc,
                "epochs_run": 2 if stopped_at_chance else 5,
                "seconds": 0.5,
            },
        )
    study.add_trial(trial)


def make_study(
    url: str,
    name: str,
    values: Mapping[float, float],
    seeds: Iterable[int] = (0, 1, 2),
    noise: float = 0.004,
    diverged: Iterable[float] = (),
    failed: Iterable[float] = (),
) -> optuna.Study:
    """A study where seed s of LR `lr` scores values[lr] + noise * (s - mean seed); the LRs in
    `diverged` diverge on every seed, those in `failed` fail on every seed."""
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    seeds = list(seeds)
    diverged, failed = set(diverged), set(failed)
    offsets = np.array(seeds, dtype=float) - np.mean(seeds)
    for lr, mean in values.items():
        for s, off in zip(seeds, offsets, strict=True):
            if lr in failed:
                add_trial(study, lr, s, failed=True)
            else:
                add_trial(study, lr, s, mean + noise * off, diverged=lr in diverged)
    return study


def parabola(lr: float, peak: float = 1e-2, top: float = 0.9, curv: float = 0.05) -> float:
    """A clean concave peak in log10(lr)."""
    return top - curv * (math.log10(lr) - math.log10(peak)) ** 2


def agg_of(values: Mapping[float, float], n: int = 1, std: float = 0.0) -> pd.DataFrame:
    """An `aggregate` with the given means, all LRs with `n` trials and the same `std`."""
    return pd.DataFrame(
        {
            "lr": list(values),
            "mean": list(values.values()),
            "std": std,
            "n": n,
            "diverged": 0,
            "stopped": 0,
            "learned": n,
            "failed": 0,
            "seconds": 0.5,
        }
    )
