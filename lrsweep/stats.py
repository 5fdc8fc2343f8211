"""Per-LR statistics: the one rule every table and every choice uses.

`aggregate` turns a trials frame (`lrsweep.frames.trials_frame`: columns lr, seed, value, state,
diverged, stopped_at_chance, seconds) into one row per LR; `rank` orders the usable LRs; `top_set`
is "within one std of the best". Stage 2's bounds, the confirm candidates, the chosen LR and the
sweeper's end table all read these, so a diverged seed costs an LR the same everywhere.
`direction` is the study's: "maximize" (an accuracy) or "minimize" (a loss); "best" and "better"
follow it. Pure calculations on DataFrames: no I/O.

Equal scores are equal: two means (or stds) closer than `TIE` (1e-9) are the same number. Scores
are counts over one validation set (accuracy = correct / n_val, averaged over seeds), so two
different means differ by at least 1 / (n_val * seeds), far above 1e-9 for any validation set
under a hundred million examples; what differs by less is the last bits of summing the same
scores in another order, which must not decide a ranking. `rank` compares at this resolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Columns of `aggregate`, in order.
AGG_COLUMNS = ["lr", "mean", "std", "n", "diverged", "stopped", "learned", "failed", "seconds"]
TIE = 1e-9  # means (stds) closer than this are equal (module docstring)


def aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    """Per LR (rows sorted by lr), from a trials frame:

    mean, std -- of the value over COMPLETE trials, a diverged one counting with the value it
                 recorded (lrsweep's trial: accuracy 0.0; any other app: the worst value, -inf or
                 +inf): an LR that diverges on some seeds must not win on the seeds it
                 survived (std: ddof=1 for n >= 2, 0 for n == 1; both NaN for n == 0);
    n         -- COMPLETE trials;  diverged -- of which diverged;
    stopped   -- of which were stopped at chance before their last epoch (scored as they stood);
    learned   -- of which learned something: not diverged, not stopped at chance, a finite value;
    failed    -- FAIL trials;  seconds -- mean wall time of a COMPLETE trial (NaN if unknown).
    Trials without an `lr` are left out; RUNNING/WAITING/PRUNED ones count nowhere but do give
    their LR a row.
    """
    frame = frame[frame["lr"].notna()]
    # A diverged run of another app records an infinite value: its LR's mean is infinite and its
    # std undefined (NaN), without a numpy warning for it.
    with np.errstate(invalid="ignore"):
        return _aggregate(frame)


def _aggregate(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
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
                "learned": int(_learned(complete).sum()),
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


def _learned(complete: pd.DataFrame) -> pd.Series:
    """Which COMPLETE trials learned: not diverged, not stopped at chance, a finite value."""
    values = complete["value"].astype(float)
    return (
        ~_column(complete, "diverged")
        & ~_column(complete, "stopped_at_chance")
        & pd.Series(np.isfinite(values.to_numpy()), index=complete.index)
    )


def pool(aggs: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One `aggregate` of several (stages'), each LR's trials pooled: LRs within 1e-9 relative are
    one LR (the first table's value kept); n, diverged, stopped, learned and failed add up; mean and
    seconds are the n-weighted means; std is that of all the pooled trials (ddof=1), from each
    table's mean, std and n. Rows sorted by lr. The tables must hold different trials (different
    stages run an LR on different seeds, or not at all), or a trial counts twice."""
    tables = [a for a in aggs if len(a)]
    if not tables:
        return pd.DataFrame(columns=AGG_COLUMNS)
    rows = pd.concat(tables, ignore_index=True)
    lrs: list[float] = []
    for lr in rows["lr"].astype(float):
        if not any(math.isclose(lr, x, rel_tol=1e-9) for x in lrs):
            lrs.append(lr)
    rows["lr"] = [next(x for x in lrs if math.isclose(lr, x, rel_tol=1e-9)) for lr in rows["lr"]]
    with np.errstate(invalid="ignore"):
        pooled = [_pool_rows(lr, group) for lr, group in rows.groupby("lr", sort=True)]
    return pd.DataFrame(pooled, columns=AGG_COLUMNS).reset_index(drop=True)


def _pool_rows(lr: float, group: pd.DataFrame) -> dict:
    """One LR's rows of several `aggregate`s as one row (`pool`)."""
    done = group[group["n"] > 0]
    n = int(done["n"].sum())
    counts = {c: int(group[c].sum()) for c in ("diverged", "stopped", "learned", "failed")}
    if not n:
        return {"lr": lr, "mean": math.nan, "std": math.nan, "n": 0, **counts, "seconds": math.nan}
    ns, means = done["n"].to_numpy(float), done["mean"].to_numpy(float)
    mean = float((ns * means).sum() / n)
    if n < 2:
        std = 0.0
    else:
        spread = ((ns - 1) * done["std"].to_numpy(float) ** 2).sum()
        std = float(math.sqrt(max(spread + (ns * (means - mean) ** 2).sum(), 0.0) / (n - 1)))
    timed = done[done["seconds"].notna()]
    seconds = (
        float((timed["n"] * timed["seconds"]).sum() / timed["n"].sum()) if len(timed) else math.nan
    )
    return {"lr": lr, "mean": mean, "std": std, "n": n, **counts, "seconds": seconds}


def sign(direction: str) -> int:
    """+1 when larger values are better (maximize), -1 when smaller are (minimize)."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction={direction!r}: maximize or minimize")
    return 1 if direction == "maximize" else -1


def tie_levels(values: pd.Series) -> pd.Series:
    """Each value's level among `values` (0 for the lowest), values within `TIE` of their sorted
    neighbour sharing one level: equal scores compare equal whatever their last bits."""
    order = values.sort_values(kind="stable")
    new_level = order.diff().fillna(0.0) > TIE
    return new_level.cumsum().reindex(values.index)


def rank(agg: pd.DataFrame, direction: str = "maximize") -> pd.DataFrame:
    """The LRs with a finished non-diverged trial, best first: best mean, then lowest std, then
    lowest LR; means and stds compared at the resolution `TIE` (module docstring)."""
    usable = agg[agg["n"] > agg["diverged"]]
    keys = pd.DataFrame(
        {"mean": tie_levels(usable["mean"]), "std": tie_levels(usable["std"]), "lr": usable["lr"]}
    )
    order = keys.sort_values(
        ["mean", "std", "lr"], ascending=[direction != "maximize", True, True], kind="stable"
    )
    return usable.loc[order.index]


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


def fit_optimum(
    agg: pd.DataFrame, half_window: int = 2, direction: str = "maximize"
) -> tuple[float | None, str]:
    """(the interpolated optimum, how it was found or why there is none).

    The peak of a parabola fitted (least squares) to the mean metric vs log10(lr) over the best LR
    and up to `half_window` neighbours on each side (3 to 5 points), among the LRs that learned
    (`learned` > 0: at least one trial neither diverged, nor stopped at chance). The LRs past the
    cliff, where nothing was learned, are left out: fitted, they drag the peak away from where
    the curve really bends. The means are the LRs' means as `rank` orders them. None when the
    best LR is the lowest or the highest that learned (no interior optimum), when the parabola
    does not open towards the worse side (concave maximising, convex minimising), or when its
    peak lies outside the fitted LRs: it never extrapolates."""
    learned = agg[(agg["learned"] > 0) & np.isfinite(agg["mean"].astype(float))].sort_values("lr")
    ranked = rank(learned, direction)
    if len(learned) < 3:
        return None, f"{len(learned)} LR(s) learned: need 3 to fit"
    b = learned.index.get_loc(ranked.index[0])
    if b in (0, len(learned) - 1):
        side = "lowest" if b == 0 else "highest"
        return None, f"the best LR is the {side} that learned: no interior optimum"
    window = learned.iloc[max(0, b - half_window) : b + half_window + 1]
    x = np.log10(window["lr"].to_numpy(dtype=float))
    y = sign(direction) * window["mean"].to_numpy(dtype=float)
    a, b1, _ = np.polyfit(x, y, 2)
    if not a < -TIE:
        shape = "concave" if direction == "maximize" else "convex"
        return None, f"the parabola over {len(window)} LRs is not {shape}"
    peak = -b1 / (2 * a)
    if not x.min() < peak < x.max():
        return None, f"the parabola over {len(window)} LRs peaks outside them"
    return float(10**peak), f"parabola over the {len(window)} learned LRs around the best"


def interpolated_optimum(
    agg: pd.DataFrame, half_window: int = 2, direction: str = "maximize"
) -> float | None:
    """The interpolated optimum of `fit_optimum`, or None."""
    return fit_optimum(agg, half_window, direction)[0]


@dataclass(frozen=True)
class Difference:
    """`mean_b - mean_a` with its 95% Welch t interval: `diff ± half_width`, `df` degrees of
    freedom (Welch-Satterthwaite)."""

    diff: float
    half_width: float
    df: float
    floored: bool  # a std was below the floor and was raised to it

    @property
    def low(self) -> float:
        return self.diff - self.half_width

    @property
    def high(self) -> float:
        return self.diff + self.half_width


def welch_difference(
    a: Mapping[str, float], b: Mapping[str, float], floor: float | None, level: float = 0.95
) -> Difference | None:
    """The difference of the means of two `aggregate` rows (`b - a`), with its Welch t interval.
    None with fewer than 2 trials on either side (no noise estimate). A std below `floor` is
    raised to it: the same score on every seed is no evidence of zero noise, only of noise below
    the score's resolution (one validation example: 1 / n_val). Without a floor (resolution
    unknown) a zero std makes the noise unknown: None."""
    from scipy import stats as st

    if min(a["n"], b["n"]) < 2:
        return None
    if floor is None:
        if min(float(a["std"]), float(b["std"])) <= 0:
            return None
        floor = 0.0
    sa, sb = max(float(a["std"]), floor), max(float(b["std"]), floor)
    va, vb = sa**2 / a["n"], sb**2 / b["n"]
    df = (va + vb) ** 2 / (va**2 / (a["n"] - 1) + vb**2 / (b["n"] - 1))
    half = float(st.t.ppf(0.5 + level / 2, df)) * math.sqrt(va + vb)
    floored = float(a["std"]) < floor or float(b["std"]) < floor
    return Difference(float(b["mean"] - a["mean"]), half, float(df), floored)


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
