"""Stage 2: narrow the LR range around the stage-1 optimum and sweep it again, finer.

    python -m src.refine [--run] [--points N] [hydra overrides...]

The overrides are those of the stage-1 sweep (`python -m src.train -m <overrides>`): they name the
same study. Prints the per-LR table, the proposed range and the overrides for stage 2; with `--run`
creates the study `<name>-stage2` (user attrs `parent_study`, `stage`) and runs stage 2 into it.

Bound rules (`propose_bounds`), on the grid points that carry information (an LR with at least one
COMPLETE trial; a diverged trial counts, with accuracy 0; an LR whose trials all failed is ignored):
- the top set is every finished LR whose mean is within one std (the best LR's std) of the best mean;
  with a single seed the std is 0, so only exact ties join the best;
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
import math
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd

from src.errors import ConfigError

# Columns of `aggregate`, in order.
AGG_COLUMNS = ["lr", "mean", "std", "n", "diverged", "failed", "seconds"]
# How many stage-1 grid steps the range moves past an edge that holds the best point.
EDGE_STEPS = 2
STAGE2_SUFFIX = "-stage2"


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per LR (rows sorted by lr), from a `src.study.trials_frame`:

    mean, std -- of the value over COMPLETE trials, a diverged one counting as its value 0.0: an LR
                 that diverges on some seeds must not win on the seeds it survived (std: ddof=1
                 for n >= 2, 0 for n == 1; both NaN for n == 0);
    n         -- COMPLETE trials;  diverged -- of which diverged;
    failed    -- FAIL trials;  seconds -- mean wall time of a COMPLETE trial (NaN if unknown).
    Trials without an `lr` are left out; RUNNING/WAITING/PRUNED ones count nowhere but do give
    their LR a row.
    """
    rows = []
    frame = frame[frame["lr"].notna()]
    for lr, group in frame.groupby("lr", sort=True):
        complete = group[group["state"] == "COMPLETE"]
        values = complete["value"].astype(float).to_numpy()
        n = len(values)
        seconds = complete["seconds"].astype(float)
        rows.append(
            {
                "lr": float(lr),
                "mean": float(values.mean()) if n else math.nan,
                "std": float(values.std(ddof=1)) if n >= 2 else (0.0 if n == 1 else math.nan),
                "n": n,
                "diverged": int(complete["diverged"].astype(bool).sum()),
                "failed": int((group["state"] == "FAIL").sum()),
                "seconds": float(seconds.mean()) if seconds.notna().any() else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=AGG_COLUMNS).reset_index(drop=True)


def rank(agg: pd.DataFrame) -> pd.DataFrame:
    """The LRs with a finished non-diverged trial, best first: highest mean, then lowest std, then
    lowest LR."""
    usable = agg[agg["n"] > agg["diverged"]]
    return usable.sort_values(["mean", "std", "lr"], ascending=[False, True, True], kind="stable")


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


def propose_bounds(agg: pd.DataFrame, low: float, high: float) -> Proposal:
    """The stage-2 range from a stage-1 `aggregate` (rules: module docstring). `low`, `high`: the
    stage-1 range, for the message."""
    ranked = rank(agg)
    if len(ranked) < 2:
        total_div, total_fail = int(agg["diverged"].sum()), int(agg["failed"].sum())
        raise ConfigError(
            f"refine: need at least 2 LRs with a finished non-diverged trial, got {len(ranked)} "
            f"of {len(agg)} LRs in [{low:g}, {high:g}] ({total_div} diverged, {total_fail} failed "
            "trials); widen or move the stage-1 range"
        )
    best = ranked.iloc[0]
    best_lr, best_mean, best_std = float(best["lr"]), float(best["mean"]), float(best["std"])
    threshold = best_mean - best_std - 1e-12
    top = sorted(float(x) for x in ranked.loc[ranked["mean"] >= threshold, "lr"])

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


def override_key(override: str) -> str:
    """The config key an override sets: `+a.b=1` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def format_value(value: object) -> str:
    """An override value: floats as repr() (they survive exactly), lists as `[a,b]`."""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def replace_overrides(overrides: Iterable[str], values: dict[str, object]) -> list[str]:
    """`overrides` less those that set a key of `values`, then `key=value` for each of `values`."""
    kept = [o for o in overrides if override_key(o) not in values]
    return kept + [f"{key}={format_value(value)}" for key, value in values.items()]


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


def check_direction(study: optuna.Study) -> None:
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(
            f"study '{study.study_name}' is {study.direction.name.lower()}d; refine and report "
            "assume a maximized metric (metric=val_acc)"
        )


def create_child_study(
    name: str, storage_url: str, parent: str, stage: str, meta: dict | None = None
) -> optuna.Study:
    """The study a later stage sweeps into, tagged with its parent and stage; reused if it exists."""
    from src.study import storage

    study = optuna.create_study(
        study_name=name, storage=storage(storage_url), direction="maximize", load_if_exists=True
    )
    study.set_user_attr("parent_study", parent)
    study.set_user_attr("stage", stage)
    for key, value in (meta or {}).items():
        study.set_user_attr(key, value)
    return study


def format_table(agg: pd.DataFrame) -> str:
    return agg.to_string(
        index=False,
        formatters={
            "lr": "{:.4g}".format,
            "mean": "{:.4f}".format,
            "std": "{:.4f}".format,
            "seconds": "{:.2f}".format,
        },
    )


def run_cli(main_fn, argv: Sequence[str] | None) -> int:
    """Runs `main_fn(argv)`; bad input (ConfigError, a bad Hydra override) is one line on stderr
    and status 2, unless HYDRA_FULL_ERROR=1."""
    from hydra.errors import HydraException

    try:
        return main_fn(argv)
    except (ConfigError, HydraException) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


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

    from src.study import compose_config, open_study, shown_url, trials_frame

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    study = open_study(name, storage_url)
    check_direction(study)
    agg = aggregate(trials_frame(study))
    proposal = propose_bounds(agg, float(cfg.sweep.low), float(cfg.sweep.high))
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
    )
    return subprocess.call([sys.executable, "-m", "src.train", "-m", *stage2])


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
