"""Stage 2: narrow the LR range around the stage-1 optimum and sweep it again, finer.

    python -m src.refine [--run] [--points N] [hydra overrides...]

The overrides are those of the stage-1 sweep (`python -m src.train -m <overrides>`): they name the
same study. Prints the per-LR table, the proposed range and the overrides for stage 2; with `--run`
creates the study `<name>-stage2` (user attrs `parent_study`, `stage`) and runs stage 2 into it, in
this process (`src.train.run_multirun`: the printed command, without a second interpreter).

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
- nothing usable (fewer than 2 LRs with a finished, non-diverged trial): ConfigError.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from lrsweep.stats import aggregate, format_table, rank, top_set
from src.cli import run_cli
from src.errors import ConfigError
from src.overrides import override_key, replace_overrides
from src.study import (
    STAGE2_SUFFIX,
    compose_config,
    create_child_study,
    direction_of,
    open_study,
    shown_url,
    trials_frame,
)

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
        raise ConfigError(
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


def stage2_overrides(
    overrides: Sequence[str], name: str, proposal: Proposal, points: int
) -> list[str]:
    return replace_overrides(
        overrides,
        {
            "study.name": name + STAGE2_SUFFIX,
            "sweep.low": proposal.low,
            "sweep.high": proposal.high,
            "sweep.points": int(points),
        },
    )


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.refine",
        description="Propose (and with --run, sweep) the stage-2 LR range from a stage-1 study. "
        "Other arguments are the stage-1 Hydra overrides.",
    )
    parser.add_argument("--run", action="store_true", help="create <name>-stage2 and sweep it")
    parser.add_argument(
        "--points", type=int, default=None, help="stage-2 points (default: stage 1's)"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.points is not None and args.points < 2:
        raise ConfigError(f"--points: must be >= 2, got {args.points}")

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    study = open_study(name, storage_url)
    direction = direction_of(study)
    agg = aggregate(trials_frame(study))
    proposal = propose_bounds(agg, float(cfg.sweep.low), float(cfg.sweep.high), direction)
    points = args.points or int(cfg.sweep.points)
    stage2 = stage2_overrides(overrides, name, proposal, points)

    print(f"study {name} ({shown_url(storage_url)}): {len(agg)} LRs")
    print(format_table(agg))
    print(f"proposal: [{proposal.low:.4g}, {proposal.high:.4g}] -- {proposal.reason}")
    shown = [
        f"{o.split('=', 1)[0]}={shown_url(o.split('=', 1)[1])}"
        if override_key(o) == "study.storage"
        else o
        for o in stage2
    ]
    print("stage 2: python -m src.train -m " + " ".join(shown))
    sys.stdout.flush()
    if not args.run:
        return 0
    create_child_study(
        name + STAGE2_SUFFIX,
        storage_url,
        parent=name,
        stage="stage2",
        meta={"proposal": {"low": proposal.low, "high": proposal.high, "reason": proposal.reason}},
        direction=direction,
        identity=study.user_attrs.get("config"),  # stage 1's experiment
    )
    from src.train import run_multirun  # imports torch: only when a sweep runs

    return run_multirun(stage2)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
