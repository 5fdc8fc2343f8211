"""Stage 2's range: narrow the LR range around stage 1's optimum. Pure calculation on a stage's
per-LR statistics (`lrsweep.stats.aggregate`); no I/O.

Bound rules (`propose_bounds`), on the grid points that carry information (an LR with at least one
COMPLETE trial; a diverged trial counts, with accuracy 0; an LR whose trials all failed is ignored):
- the top set (`lrsweep.stats.top_set`) is every finished LR whose mean is within one std (the best
  LR's std) of the best mean; with a single seed the std is 0, so only exact ties join the best;
- interior: the new range runs from the grid point just below the lowest LR of the top set to the
  grid point just above the highest one (for a single best: its two neighbours);
- at an edge: when the top set touches the lowest (highest) grid point, the optimum may lie beyond
  it, so that side moves outward by `EDGE_STEPS` stage-1 grid steps (the ratio between the edge
  point and its neighbour) past the edge; the other side follows the interior rule. A diverged point
  is a grid point like any other: a best just below the divergence is interior, bounded above by
  the first diverged LR;
- nothing usable (fewer than 2 LRs with a finished, non-diverged trial): SweepConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from lrsweep.grid import SweepConfigError
from lrsweep.stats import rank, top_set

# How many stage-1 grid steps the range moves past an edge that holds the best point.
EDGE_STEPS = 2


@dataclass(frozen=True)
class Proposal:
    low: float
    high: float
    reason: str
    best_lr: float
    best_mean: float
    best_std: float
    top_lrs: tuple[float, ...]  # the LRs within one std of the best mean (the best included)
    edge: str | None  # "low", "high", "both" or None (interior)


def propose_bounds(
    agg: pd.DataFrame, low: float, high: float, direction: str = "maximize"
) -> Proposal:
    """The stage-2 range from a stage-1 `aggregate` (rules: module docstring). `low`, `high`: the
    stage-1 range, for the message."""
    ranked = rank(agg, direction)
    if len(ranked) < 2:
        total_div, total_fail = int(agg["diverged"].sum()), int(agg["failed"].sum())
        raise SweepConfigError(
            f"refine: need at least 2 LRs with a finished non-diverged trial, got {len(ranked)} "
            f"of {len(agg)} LRs in [{low:g}, {high:g}] ({total_div} diverged, {total_fail} failed "
            "trials); widen or move the stage-1 range"
        )
    best = ranked.iloc[0]
    best_lr, best_mean, best_std = float(best["lr"]), float(best["mean"]), float(best["std"])
    top = sorted(float(x) for x in top_set(ranked, direction)["lr"])

    grid = sorted(float(x) for x in agg.loc[agg["n"] > 0, "lr"])
    i_lo, i_hi = grid.index(top[0]), grid.index(top[-1])
    at_low, at_high = i_lo == 0, i_hi == len(grid) - 1
    new_low = grid[0] / (grid[1] / grid[0]) ** EDGE_STEPS if at_low else grid[i_lo - 1]
    new_high = grid[-1] * (grid[-1] / grid[-2]) ** EDGE_STEPS if at_high else grid[i_hi + 1]
    edge = {(True, True): "both", (True, False): "low", (False, True): "high"}.get(
        (at_low, at_high)
    )

    what = (
        f"best lr={best_lr:.3g} (mean {best_mean:.4f}, std {best_std:.4f})"
        if len(top) == 1
        else f"{len(top)} LRs within one std of the best in [{top[0]:.3g}, {top[-1]:.3g}] "
        f"(best lr={best_lr:.3g}, mean {best_mean:.4f}, std {best_std:.4f})"
    )
    where = {
        None: "interior: the neighbouring grid points become the bounds",
        "low": f"at the low edge: the range moves {EDGE_STEPS} grid steps below it",
        "high": f"at the high edge: the range moves {EDGE_STEPS} grid steps above it",
        "both": f"at both edges: the range moves {EDGE_STEPS} grid steps past each",
    }[edge]
    return Proposal(
        low=float(new_low),
        high=float(new_high),
        reason=f"{what}; {where}",
        best_lr=best_lr,
        best_mean=best_mean,
        best_std=best_std,
        top_lrs=tuple(top),
        edge=edge,
    )
