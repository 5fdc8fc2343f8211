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

Stage 2's LRs (`stage2_lrs`): stage 1's best LR always lies strictly inside the new range, and
stage 2's grid always holds it, whatever `points`: the range is cut at the best LR, each side gets
a log-uniform share of the grid steps in proportion to its log-length, and the `points` LRs are
every grid point except those stage 1 already measured on the same seeds (the best, and an end
that is a stage-1 grid point; a CPU run is deterministic: running them again would repeat the
same numbers). The report pools every
stage's trials of an LR (`lrsweep.stats.pool`), so the best LR of stage 1 competes in stage 2's
grid with the trials it has.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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


def stage2_lrs(
    low: float, high: float, anchor: float, points: int, measured: Sequence[float] = ()
) -> list[float]:
    """The `points` new LRs of stage 2 in [low, high], on a grid that also holds `anchor` (stage
    1's best) and the range's ends. Neither `anchor` nor an end among `measured` (stage 1's LRs,
    to 1e-9) is returned: stage 1 measured them on the same seeds. The grid's steps are split
    between the two sides of `anchor` in proportion to their log-lengths (at least one each),
    each side log-uniform. An `anchor` outside (low, high): `points` LRs log-uniform."""
    if not low < anchor < high:
        return [float(x) for x in np.logspace(math.log10(low), math.log10(high), points)]
    known_low = any(math.isclose(low, m, rel_tol=1e-9) for m in measured)
    known_high = any(math.isclose(high, m, rel_tol=1e-9) for m in measured)
    steps = points + known_low + known_high
    share = math.log(anchor / low) / math.log(high / low)
    left = min(max(round(steps * share), 1), steps - 1)
    below = np.logspace(math.log10(low), math.log10(anchor), left + 1)[:-1]
    above = np.logspace(math.log10(anchor), math.log10(high), steps - left + 1)[1:]
    lrs = [float(x) for x in (*below, *above)]
    lrs[0], lrs[-1] = float(low), float(high)  # the ends exactly, whatever logspace's rounding
    return lrs[int(known_low) : len(lrs) - int(known_high)]


@dataclass(frozen=True)
class Edge:
    """The sweeps' best LR sits at an end of the finest sweep stage's range: the optimum may lie
    beyond it. `beyond` is one grid step (the end's distance to its neighbour) past that end."""

    stage: str  # the finest sweep stage ("stage2", else "stage1")
    side: str  # "low" or "high"
    lr: float  # the best LR, at the end of the range
    beyond: float
    low: float  # the stage's range
    high: float


def finest_range(
    aggs: dict[str, pd.DataFrame], direction: str = "maximize"
) -> tuple[str, float, float] | None:
    """(the finest sweep stage, its range): stage 2's is the range `propose_bounds` gives on stage
    1's trials (its grid holds stage-1 LRs it does not run again: stage 1's best, a measured end);
    stage 1's runs from its lowest to its highest LR. None with fewer than 2 LRs."""
    from lrsweep.stats import finest_stage

    stage = finest_stage(aggs)
    if stage == "stage2":
        proposal = propose_bounds(aggs["stage1"], 0.0, 0.0, direction)
        return stage, proposal.low, proposal.high
    if stage not in aggs:
        return None
    grid = sorted(float(x) for x in aggs[stage].loc[aggs[stage]["n"] > 0, "lr"])
    return (stage, grid[0], grid[-1]) if len(grid) >= 2 else None


def sweep_edge(aggs: dict[str, pd.DataFrame], direction: str = "maximize") -> Edge | None:
    """Is the best LR of the sweeps (stage 1 and 2 pooled, `lrsweep.stats.pool`) inside the finest
    sweep stage's range (`finest_range`), or at one of its ends? None when inside (or nothing to
    rank)."""
    from lrsweep.stats import pool

    found = finest_range(aggs, direction)
    if found is None:
        return None
    stage, low, high = found
    sweeps = pool([aggs[s] for s in ("stage1", "stage2") if s in aggs])
    inside = sweeps[(sweeps["lr"] >= low * (1 - 1e-9)) & (sweeps["lr"] <= high * (1 + 1e-9))]
    ranked = rank(inside, direction)
    points = sorted(float(x) for x in inside.loc[inside["n"] > 0, "lr"])
    if not len(ranked) or len(points) < 2:
        return None
    best = float(ranked.iloc[0]["lr"])
    if math.isclose(best, low, rel_tol=1e-9):
        return Edge(stage, "low", best, low * low / points[1], low, high)
    if math.isclose(best, high, rel_tol=1e-9):
        return Edge(stage, "high", best, high * high / points[-2], low, high)
    return None
