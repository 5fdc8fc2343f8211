"""The smoothed curve the choice reads: a local quadratic fit of the metric against log10(lr)
over every pooled trial. Pure calculation on per-LR statistics (`lrsweep.stats.pool`); no I/O.

One run's score is noisy (a seed's luck, a validation set of a few hundred examples), and the
best of many noisy scores is partly the luckiest. The curve underneath is smooth in log10(lr):
neighbouring LRs train alike. So the score of an LR is read off a curve fitted to all the trials
around it, not off its own trials alone: at each LR x, a quadratic in log10(lr) fitted by weighted
least squares to every LR's mean, LR i weighted by n_i * exp(-d^2 / (2 h^2)) (d: its distance to
x in log10(lr); n_i: its trials, so this is the fit to every trial), and the fitted value at x is
the smoothed score (`local_quadratic`). A quadratic, not a weighted mean: a mean of the
neighbours is pulled down at a peak and towards the better side on a slope; a local quadratic is
not (to second order). The bandwidth `h` is half of stage 1's grid step (`bandwidth`): the fit at
x then weighs the LRs within about one stage-1 step of it, which is stage 2's range around
stage 1's best, and gives stage 1's LRs further out (one step: weight 0.14; two: 0.0003) almost
no say.

LRs whose mean is not finite (an app that records inf for a diverged run) are left out of the
fit; an LR whose runs diverged with lrsweep's own trial counts with the accuracy 0 it recorded,
so a cliff pulls its neighbours down, as it should. A steep cliff within reach (a loss jumping
tenfold) also bends the quadratic: the fitted value can then lie beyond every value measured near
x, which is why the choice ranks candidates by it but never reports it (docs/choice.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def bandwidth(stage1_lrs: Sequence[float]) -> float | None:
    """Half of stage 1's grid step in log10(lr) (the median step of its sorted distinct LRs);
    None with fewer than 2 LRs."""
    x = np.unique(np.log10(np.asarray([float(v) for v in stage1_lrs if v > 0], float)))
    if len(x) < 2:
        return None
    return float(np.median(np.diff(x))) / 2


def local_quadratic(agg: pd.DataFrame, at: Sequence[float], h: float) -> np.ndarray:
    """The smoothed score at each LR of `at` (module docstring), from a `pool`/`aggregate`
    table (lr, mean, n); all NaN with fewer than 3 LRs with a finite mean."""
    done = agg[(agg["n"] > 0) & np.isfinite(agg["mean"].astype(float))]
    x = np.log10(done["lr"].to_numpy(float))
    mean = done["mean"].to_numpy(float)
    n = done["n"].to_numpy(float)
    out = np.full(len(at), math.nan)
    if len(x) < 3:
        return out
    for k, lr in enumerate(at):
        d = x - math.log10(float(lr))
        root_w = np.sqrt(n * np.exp(-0.5 * (d / h) ** 2))
        design = np.stack([np.ones_like(d), d, d * d], axis=1) * root_w[:, None]
        coef, *_ = np.linalg.lstsq(design, mean * root_w, rcond=None)
        out[k] = float(coef[0])
    return out


def smoothed_rank(
    ranked: pd.DataFrame, pooled: pd.DataFrame, h: float | None, direction: str = "maximize"
) -> pd.DataFrame | None:
    """The rows of `ranked` (a `lrsweep.stats.rank`) with a finite mean, the best smoothed score
    (`local_quadratic` over `pooled`, bandwidth `h`) first, the lower LR of two equal ones; None
    when there is nothing to smooth (`h` None, or fewer than 3 LRs with a finite mean)."""
    from lrsweep.stats import sign

    finite = ranked[np.isfinite(ranked["mean"].astype(float))]
    if h is None or not len(finite):
        return None
    scores = local_quadratic(pooled, finite["lr"].astype(float).tolist(), h)
    if np.isnan(scores).any():
        return None
    keys = pd.DataFrame(
        {"score": sign(direction) * scores, "lr": finite["lr"].astype(float)}, index=finite.index
    )
    order = keys.sort_values(["score", "lr"], ascending=[False, True], kind="stable").index
    return finite.loc[order]
