"""Per-LR statistics: the one rule every table and every choice uses.

`aggregate` turns a trials frame (`lrsweep.frames.trials_frame`: columns lr, seed, value, state,
diverged, seconds) into one row per LR; `rank` orders the usable LRs; `top_set` is "within one
std of the best". Stage 2's bounds, the confirm candidates, the chosen LR and the sweeper's end
table all read these, so a diverged seed costs an LR the same everywhere. `direction` is the
study's: "maximize" (an accuracy) or "minimize" (a loss); "best" and "better" follow it. Pure
calculations on DataFrames: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

# Columns of `aggregate`, in order.
AGG_COLUMNS = ["lr", "mean", "std", "n", "diverged", "stopped", "failed", "seconds"]
TIE = 1e-12  # means closer than this are equal


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per LR (rows sorted by lr), from a trials frame:

    mean, std -- of the value over COMPLETE trials, a diverged one counting with the value it
                 recorded (lrsweep's trial: accuracy 0.0; any other app: the worst value, -inf or
                 +inf): an LR that diverges on some seeds must not win on the seeds it survived (std: ddof=1
                 for n >= 2, 0 for n == 1; both NaN for n == 0);
    n         -- COMPLETE trials;  diverged -- of which diverged;
    stopped   -- of which were stopped at chance before their last epoch (scored as they stood);
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
                "stopped": int(_column(complete, "stopped_at_chance").sum()),
                "failed": int((group["state"] == "FAIL").sum()),
                "seconds": float(seconds.mean()) if seconds.notna().any() else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=AGG_COLUMNS).reset_index(drop=True)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A boolean column of a trials frame; all False when the frame has none (older frames)."""
    if name not in frame:
        return pd.Series(False, index=frame.index)
    return frame[name].fillna(False).astype(bool)


def sign(direction: str) -> int:
    """+1 when larger values are better (maximize), -1 when smaller are (minimize)."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r}: maximize or minimize")
    return 1 if direction == "maximize" else -1


def rank(agg: pd.DataFrame, direction: str = "maximize") -> pd.DataFrame:
    """The LRs with a finished non-diverged trial, best first: best mean, then lowest std, then
    lowest LR."""
    usable = agg[agg["n"] > agg["diverged"]]
    return usable.sort_values(
        ["mean", "std", "lr"], ascending=[direction != "maximize", True, True], kind="stable"
    )


def top_set(ranked: pd.DataFrame, direction: str = "maximize") -> pd.DataFrame:
    """The rows of a `rank` whose mean is within one std (the best LR's) of the best mean; with one
    seed the std is 0, so only exact ties join the best."""
    best = ranked.iloc[0]
    s = sign(direction)
    return ranked[s * ranked["mean"] >= s * best["mean"] - best["std"] - TIE]


def finest_stage(aggs: Mapping[str, pd.DataFrame]) -> str:
    """Of the sweep stages (stage -> `aggregate`): stage2 when it has a finished non-diverged
    trial, else stage1."""
    if "stage2" in aggs and len(rank(aggs["stage2"])):  # any direction: rank only filters here
        return "stage2"
    return "stage1"


def interpolated_optimum(
    agg: pd.DataFrame, half_window: int = 2, direction: str = "maximize"
) -> float | None:
    """The peak of a parabola fitted (least squares) to the mean metric vs log10(lr) over the best
    LR and up to `half_window` finished neighbours on each side (3 to 5 points). None unless the
    parabola opens towards the worse side (concave maximising, convex minimising) and its peak
    lies strictly inside the fitted LRs: it never extrapolates."""
    usable = agg[agg["n"] > 0].sort_values("lr")
    usable = usable[np.isfinite(usable["mean"].to_numpy(dtype=float))]
    ranked = rank(agg, direction)
    if len(usable) < 3:
        return None
    b = usable.index.get_loc(ranked.index[0])
    window = usable.iloc[max(0, b - half_window) : b + half_window + 1]
    if len(window) < 3:
        return None
    x = np.log10(window["lr"].to_numpy(dtype=float))
    y = sign(direction) * window["mean"].to_numpy(dtype=float)
    a, b1, _ = np.polyfit(x, y, 2)
    if not a < -TIE:
        return None
    peak = -b1 / (2 * a)
    if not x.min() < peak < x.max():
        return None
    return float(10**peak)


def format_table(agg: pd.DataFrame) -> str:
    """An `aggregate` as a fixed-width text table."""
    return agg.to_string(
        index=False,
        formatters={
            "lr": "{:.4g}".format,
            "mean": "{:.4f}".format,
            "std": "{:.4f}".format,
            "seconds": "{:.2f}".format,
        },
    )


def best_line(agg: pd.DataFrame, metric: str = "value", direction: str = "maximize") -> str:
    """`best lr=<lr>: <metric> <mean> ± <std> over <n> run(s)`, or why there is none."""
    ranked = rank(agg, direction)
    if not len(ranked):
        return "no finished non-diverged trial: no best lr"
    best = ranked.iloc[0]
    return (
        f"best lr={best['lr']:.4g}: {metric} {best['mean']:.4f} ± {best['std']:.4f} "
        f"over {int(best['n'])} run(s)"
    )
