"""The confirm step's plan: which LRs to re-run, on which fresh seeds. Pure calculation; no I/O.

The maximum of a noisy sweep flatters itself: the LR that scored best on the sweep's seeds is
partly the luckiest. The confirm step re-runs the candidates on seeds no sweep stage used, into the
study `<name>-confirm`, and the report chooses among them (`lrsweep.choice`).

Candidates (`plan_confirm`): the top `top_k` LRs of the finest sweep stage (stage 2 when it has a
finished trial, else stage 1) on the smoothed curve the choice reads (`lrsweep.smooth`: a local
quadratic through every trial of stages 1 and 2, bandwidth half of stage 1's grid step), so the
fresh seeds go where the curve, not one lucky seed, puts the optimum; the interpolated optimum of
stages 1 and 2 pooled when there is one; when the finest stage is stage 2, stage 1's best LR too,
so that the report weighs stage 2's gain over stage 1 on the same fresh seeds; when the sweeps'
best LR sits at an end of the finest stage's range (`lrsweep.bounds.sweep_edge`), the LR one grid
step past that end too: the range extends where the optimum may lie. Seeds: `n_seeds` integers
above every seed the sweeps used. The plan is deterministic, so a re-run plans the same trials
(and the resumable sweep adds none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from lrsweep.bounds import sweep_edge
from lrsweep.grid import SweepConfigError
from lrsweep.smooth import bandwidth
from lrsweep.stats import aggregate, finest_stage, interpolated_optimum, pool, rank


def confirm_candidates(
    agg: pd.DataFrame,
    top_k: int = 3,
    extra: Sequence[float | None] = (),
    direction: str = "maximize",
    pooled: pd.DataFrame | None = None,
    h: float | None = None,
) -> list[float]:
    """The `top_k` best LRs of `agg` (best first), then each of `extra` (the interpolated optimum,
    stage 1's best) unless it is None or (to 1e-9 relative) already there. Best: by the smoothed
    score over `pooled` with bandwidth `h` (`lrsweep.smooth.smoothed_rank`, the curve the choice
    reads) when they are given and there is something to smooth, else by mean."""
    from lrsweep.smooth import smoothed_rank

    ranked = rank(agg, direction)
    smoothed = smoothed_rank(ranked, pooled, h, direction) if pooled is not None else None
    lrs = [float(x) for x in (ranked if smoothed is None else smoothed)["lr"].iloc[:top_k]]
    for lr in extra:
        if lr is not None and not any(math.isclose(lr, x, rel_tol=1e-9) for x in lrs):
            lrs.append(float(lr))
    return lrs


def fresh_seeds(used: Sequence[int], count: int) -> list[int]:
    """`count` seeds above every used one."""
    start = max((int(s) for s in used), default=-1) + 1
    return list(range(start, start + count))


@dataclass(frozen=True)
class ConfirmPlan:
    stage: str  # the sweep stage the candidates come from
    lrs: list[float]
    seeds: list[int]


def plan_confirm(
    frames: Mapping[str, pd.DataFrame],
    top_k: int = 3,
    n_seeds: int = 3,
    direction: str = "maximize",
) -> ConfirmPlan:
    """The confirm step from the stage-1/2 trial frames (rules: module docstring)."""
    if top_k < 1 or n_seeds < 1:
        raise SweepConfigError(
            f"confirm: need --confirm-top >= 1 and --confirm-seeds >= 1, got {top_k}, {n_seeds}"
        )
    sweeps = {s: f for s, f in frames.items() if s in ("stage1", "stage2")}
    aggs = {s: aggregate(f) for s, f in sweeps.items()}
    stage = finest_stage(aggs)
    if stage not in aggs or not len(rank(aggs[stage])):
        raise SweepConfigError("confirm: no finished non-diverged trial in stage 1 or 2")
    pooled = pool(list(aggs.values()))  # stage 1's best is part of stage 2's grid
    extra = [interpolated_optimum(pooled, direction=direction)]
    if stage == "stage2":
        extra.append(float(rank(aggs["stage1"], direction)["lr"].iloc[0]))
    edge = sweep_edge(aggs, direction)
    if edge is not None:
        extra.append(edge.beyond)
    h = bandwidth(aggs["stage1"]["lr"].astype(float).tolist()) if "stage1" in aggs else None
    lrs = confirm_candidates(aggs[stage], top_k, extra, direction, pooled, h)
    used = pd.concat([f["seed"] for f in sweeps.values()]).dropna().astype(int).tolist()
    return ConfirmPlan(stage=stage, lrs=lrs, seeds=fresh_seeds(used, n_seeds))
