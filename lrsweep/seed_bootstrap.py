"""How sure a measured optimum is: the bootstrap over seeds of each scale's optimal LR and of the
exponent of lr_opt ~ scale^alpha.

A scale's sweep trains every LR of its grid on the same seeds (stage 1 and stage 2 pooled: an LR
measured in both stages counts its trials of both). A bootstrap replicate draws the seeds with
replacement, averages each LR's score over the drawn seeds and takes the optimum of that curve by
the rule every report uses (`lrsweep.stats.fit_optimum`: the peak of a parabola in log10(lr)
around the best LR, else the best LR itself). The spread of the replicates' optima is the noise
the seeds put into the optimum: the 95% percentile interval of `scipy.stats.bootstrap`, seeded,
so the same trials always give the same interval. The exponent's replicate draws the seeds of
every scale independently and fits the line through the replicate optima.

With k seeds there are only C(2k - 1, k) different replicates (10 from 3 seeds): the interval is
coarse, and a bootstrap from few seeds understates the spread (by about sqrt((k - 1) / k) for a
mean); from one seed there is no interval. Pure calculations: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lrsweep.grid import SweepConfigError
from lrsweep.stats import AGG_COLUMNS, fit_optimum, rank

LEVEL = 0.95
RESAMPLES = 2000
RNG_SEED = 0  # the bootstrap's own seed: the same trials give the same intervals


class SeedCurves:
    """One scale's scores as a seeds x LRs table, and the optimum of any multiset of its seeds
    (memoised: with few seeds the replicates repeat)."""

    def __init__(self, trials: pd.DataFrame, direction: str = "maximize") -> None:
        """`trials`: a trials frame (`lrsweep.frames.trials_frame`) of the scale's sweep stages.
        Only COMPLETE trials count, and only LRs that every seed has a trial of: a replicate must
        compare LRs on the same seeds."""
        done = trials[(trials["state"] == "COMPLETE") & trials["lr"].notna()].copy()
        done["lr"] = done["lr"].astype(float)
        if "stopped_at_chance" not in done:
            done["stopped_at_chance"] = False
        self.direction = direction
        self.seeds = sorted(int(s) for s in done["seed"].unique())
        # A seed that ran an LR twice (both stages) counts the mean of its trials there.
        grouped = done.groupby(["seed", "lr"])
        values = grouped["value"].mean().unstack("lr")
        common = values.columns[values.notna().all(axis=0)]
        self.lrs = np.array(sorted(common), dtype=float)
        self.values = values[self.lrs].to_numpy(dtype=float)
        diverged = grouped["diverged"].any().unstack("lr")[self.lrs]
        stopped = grouped["stopped_at_chance"].any().unstack("lr")[self.lrs]
        self.diverged = diverged.to_numpy(dtype=bool)
        self.learned = ~(self.diverged | stopped.to_numpy(dtype=bool)) & np.isfinite(self.values)
        self._memo: dict[tuple[int, ...], tuple[float, str]] = {}

    def aggregate(self, rows: Sequence[int]) -> pd.DataFrame:
        """`lrsweep.stats.aggregate`'s table for the seeds at `rows` (repeats allowed)."""
        idx = np.asarray(rows, dtype=int)
        values = self.values[idx]
        n = len(idx)
        with np.errstate(invalid="ignore"):
            std = values.std(axis=0, ddof=1) if n >= 2 else np.zeros(len(self.lrs))
        return pd.DataFrame(
            {
                "lr": self.lrs,
                "mean": values.mean(axis=0),
                "std": std,
                "n": n,
                "diverged": self.diverged[idx].sum(axis=0),
                "stopped": 0,
                "learned": self.learned[idx].sum(axis=0),
                "failed": 0,
                "seconds": math.nan,
            },
            columns=AGG_COLUMNS,
        )

    def optimum(self, rows: Sequence[int] | None = None) -> tuple[float, str]:
        """(optimal LR, "interpolated" or "best grid point") of the curve averaged over the seeds
        at `rows` (all seeds when None)."""
        key = tuple(sorted(range(len(self.seeds)) if rows is None else (int(r) for r in rows)))
        if key not in self._memo:
            agg = self.aggregate(key)
            peak, _ = fit_optimum(agg, direction=self.direction)
            if peak is not None:
                self._memo[key] = (peak, "interpolated")
            else:
                ranked = rank(agg, self.direction)
                if not len(ranked):
                    raise SweepConfigError(
                        "no LR with a finished trial on every seed that did not diverge on all"
                    )
                self._memo[key] = (float(ranked.iloc[0]["lr"]), "best grid point")
        return self._memo[key]


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    seeds: int  # per scale (the fewest, for the exponent)
    resamples: int
    level: float = LEVEL

    def text(self, fmt: str = ".3g") -> str:
        """`[0.0031, 0.0046] (95% bootstrap over 3 seeds)`."""
        return (
            f"[{self.low:{fmt}}, {self.high:{fmt}}] ({self.level:.0%} bootstrap over "
            f"{self.seeds} seeds)"
        )


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, resamples: int, seed: int):
    from scipy import stats

    result = stats.bootstrap(
        samples,
        statistic,
        vectorized=False,
        paired=False,
        n_resamples=resamples,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return result.confidence_interval


def optimum_interval(
    curves: SeedCurves, resamples: int = RESAMPLES, seed: int = RNG_SEED
) -> Interval | None:
    """The 95% percentile bootstrap interval of the scale's optimal LR; None from one seed."""
    k = len(curves.seeds)
    if k < 2:
        return None
    ci = _bootstrap(
        (np.arange(k),), lambda rows: math.log10(curves.optimum(rows)[0]), resamples, seed
    )
    return Interval(float(10**ci.low), float(10**ci.high), k, resamples)


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The least-squares slope of y on x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = x - x.mean()
    return float((dx * (y - y.mean())).sum() / (dx * dx).sum())


def alpha_interval(
    scales: Sequence[float],
    curves: Sequence[SeedCurves],
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> Interval | None:
    """The 95% percentile bootstrap interval of alpha in lr_opt ~ scale^alpha, each replicate
    drawing every scale's seeds independently; None when a scale has one seed."""
    seeds = min(len(c.seeds) for c in curves)
    if seeds < 2:
        return None
    x = [math.log10(s) for s in scales]

    def alpha(*rows: np.ndarray) -> float:
        return slope(x, [math.log10(c.optimum(r)[0]) for c, r in zip(curves, rows, strict=True)])

    ci = _bootstrap(tuple(np.arange(len(c.seeds)) for c in curves), alpha, resamples, seed)
    return Interval(float(ci.low), float(ci.high), seeds, resamples)
