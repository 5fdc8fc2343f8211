"""The choice of a search: the chosen LR, its good range and interpolated optimum, stage 2's
gain over stage 1, the chosen LR's test score. Pure calculations on the stages' per-LR statistics
(`lrsweep.stats.aggregate`, stage -> table); no I/O.

The choice pools every stage's trials of an LR (`lrsweep.stats.pool`: stage 1's best LR is part
of stage 2's grid, and each confirm candidate keeps the trials the sweeps gave it). Among the
confirm step's candidates when it has a finished trial, else among every LR the sweeps measured,
the pick is the LR whose smoothed score is best: a local quadratic in log10(lr) fitted to every
pooled trial around it (`lrsweep.smooth`, bandwidth half of stage 1's grid step;
`smoothed_pick`, docs/choice.md), so a lucky seed at one LR does not decide; with fewer than 3
LRs to fit, the best mean. `stage` names the latest stage that ran the chosen LR; `mean`, `std`
and `n` are its own pooled trials'. `good_range` spans the candidates whose pooled mean is within
one std (the best LR's) of the best mean, and the chosen LR, and is unknown when the chosen LR has
one trial; the interpolated optimum is fitted on the sweeps (stages 1 and 2 pooled, the same
seeds). `edge` flags a chosen LR at or past an end of the finest sweep stage's range, and, without
a confirm step, a best LR of the sweeps at such an end (`lrsweep.bounds.sweep_edge`; the confirm
step measures one grid step past it, so the choice can move there): the optimum may lie further
out.

Stage 2's gain (`stage2_gain`): stage 2's best LR against stage 1's, on the confirm step's fresh
seeds when both were re-run there on at least 2 seeds, else on the sweeps' own means. One rule for
both: the 95% Welch t interval of the difference of the two means (`lrsweep.stats.welch_difference`,
Welch-Satterthwaite degrees of freedom); a std below one validation example (1 / n_val, the
`val_examples` the trials record) counts as that much, since the same score on every seed is no
evidence of zero noise. "gain" (stage 2 helped) when the whole interval lies above 0, "loss" when
it lies below, "within noise" otherwise; "unknown" with a single seed on either side, or a zero
std where n_val is not recorded. `noise` is the interval's half-width.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from lrsweep.bounds import Edge, finest_range, sweep_edge
from lrsweep.grid import SweepConfigError
from lrsweep.stats import (
    finest_stage,
    fit_optimum,
    pool,
    rank,
    sign,
    top_set,
    welch_difference,
)

# best.yaml's `good_range` and the printed line when the chosen LR has one seed.
GOOD_RANGE_UNKNOWN = "unknown (one seed: no spread to measure)"

Outcome = Literal["gain", "loss", "within noise", "unknown"]


@dataclass(frozen=True)
class Stage2Gain:
    """Stage 2's best LR against stage 1's (rules: module docstring)."""

    stage1_lr: float  # each stage's best LR in its own sweep
    stage2_lr: float
    stage1_mean: float  # their means where measured (`measured_on`)
    stage2_mean: float
    gain: float  # stage2_mean - stage1_mean: negative for a loss
    noise: float | None  # half-width of the 95% interval; None: unknown
    exceeds_noise: bool | None  # gain > noise: stage 2 helped; None when the noise is unknown
    outcome: Outcome
    measured_on: Literal["confirm", "sweeps"]
    verdict: str
    interval: tuple[float, float] | None = None  # 95% Welch t interval of the gain
    df: float | None = None  # its degrees of freedom


def _row_at(agg: pd.DataFrame, lr: float) -> pd.Series | None:
    rows = agg[np.isclose(agg["lr"], lr, rtol=1e-9, atol=0) & (agg["n"] > 0)]
    return rows.iloc[0] if len(rows) else None


def judge_gain(gain: float, noise: float | None) -> Outcome:
    """The one rule: "gain" only if gain > noise (the 95% interval lies above 0), "loss" if
    -gain > noise, else "within noise"; "unknown" without a measured noise."""
    if noise is None:
        return "unknown"
    if gain > noise:
        return "gain"
    if -gain > noise:
        return "loss"
    return "within noise"


def _curve_best(aggs: Mapping[str, pd.DataFrame], direction: str) -> pd.Series:
    """Stage 2's best LR on the smoothed curve of the sweeps (the confirm step's first candidate,
    `lrsweep.confirm`), or its best mean when there is nothing to smooth."""
    from lrsweep.smooth import bandwidth, smoothed_rank

    ranked = rank(aggs["stage2"], direction)
    pooled = pool([aggs["stage1"], aggs["stage2"]])
    h = bandwidth(aggs["stage1"]["lr"].astype(float).tolist())
    ordered = smoothed_rank(ranked, pooled, h, direction)
    return (ranked if ordered is None else ordered).iloc[0]


def stage2_gain(
    aggs: Mapping[str, pd.DataFrame],
    resolution: float | None = None,
    direction: str = "maximize",
) -> Stage2Gain | None:
    """Is stage 2's best LR really better than stage 1's? None without both stages. Each stage's
    best: its best mean; when the confirm step re-ran stage 1's best but not stage 2's, stage 2's
    best on the smoothed curve instead (the LR the confirm step re-ran for it), so that both are
    weighed on the same fresh seeds. `resolution`: one validation example (1 / n_val), the floor
    of a std; None when unknown. The gain is positive when stage 2's LR did better (a higher mean
    maximising, a lower one minimising)."""
    if not all(s in aggs and len(rank(aggs[s])) for s in ("stage1", "stage2")):
        return None
    b1, b2 = rank(aggs["stage1"], direction).iloc[0], rank(aggs["stage2"], direction).iloc[0]
    c1 = _row_at(aggs["confirm"], b1["lr"]) if "confirm" in aggs else None
    c2 = _row_at(aggs["confirm"], b2["lr"]) if "confirm" in aggs else None
    if c1 is not None and c2 is None:  # the confirm step took stage 2's best on the curve
        b2 = _curve_best(aggs, direction)
        c2 = _row_at(aggs["confirm"], b2["lr"])
    if c1 is not None and c2 is not None and min(c1["n"], c2["n"]) >= 2:
        r1, r2, source, where = c1, c2, "confirm", f"on {int(c2['n'])} fresh seeds"
    else:
        r1, r2, source, where = b1, b2, "sweeps", "in the sweeps"
    m1, m2 = float(r1["mean"]), float(r2["mean"])
    diff = welch_difference(r1, r2, floor=resolution)
    noise = None if diff is None else diff.half_width
    gain = sign(direction) * (m2 - m1)
    # The interval of the gain: of m2 - m1 maximising, of m1 - m2 minimising.
    interval = None
    if diff is not None:
        interval = (gain - diff.half_width, gain + diff.half_width)
    outcome = judge_gain(gain, noise)
    scores = (
        f"{where}, stage 2's best lr={b2['lr']:.4g} scored {m2:.4f} vs stage 1's best "
        f"lr={b1['lr']:.4g} {m1:.4f}: gain {gain:+.4f}"
    )
    if diff is None:
        why = "one seed per LR" if min(r1["n"], r2["n"]) < 2 else "zero spread, n_val unknown"
        verdict = f"{scores}, noise unknown ({why})"
    else:
        judged = {
            "gain": "larger than the noise: stage 2 helped",
            "loss": "a loss larger than the noise: stage 2 did worse",
            "within noise": "not larger than the noise",
        }[outcome]
        floored = ", stds floored at 1/n_val" if diff.floored else ""
        verdict = (
            f"{scores}, 95% interval [{interval[0]:+.4f}, {interval[1]:+.4f}] (Welch t, "
            f"df={diff.df:.1f}{floored}): {judged}"
        )
    return Stage2Gain(
        stage1_lr=float(b1["lr"]),
        stage2_lr=float(b2["lr"]),
        stage1_mean=m1,
        stage2_mean=m2,
        gain=gain,
        noise=noise,
        exceeds_noise=None if noise is None else outcome == "gain",
        outcome=outcome,
        measured_on=source,
        verdict=verdict,
        interval=interval,
        df=None if diff is None else diff.df,
    )


@dataclass(frozen=True)
class Choice:
    stage: str  # the latest stage that ran the chosen LR
    lr: float
    mean: float  # over every stage's trials of the chosen LR (pooled)
    std: float
    n: int
    good_range: tuple[float, float] | None  # None: unknown (one seed, no spread to measure)
    interpolated_optimum: float | None
    stage2_gain: Stage2Gain | None = None
    optimum_note: str = ""  # how the interpolated optimum was found, or why there is none
    edge: str | None = None  # "low" / "high": the optimum may lie beyond the searched range
    edge_note: str = ""  # what lies at the edge, and what to do
    rule: str = ""  # how the LR was picked among the candidates (`smoothed_pick`)


def smoothed_pick(
    ranked: pd.DataFrame,
    pooled: pd.DataFrame,
    h: float | None,
    direction: str = "maximize",
) -> tuple[pd.Series, str]:
    """(the picked row of a `rank` of the candidates, the rule as a sentence). The pick: the
    candidate whose smoothed score (`lrsweep.smooth.local_quadratic` over every pooled LR in
    `pooled`, bandwidth `h` in log10(lr)) is best, the lower LR of two equal ones; only
    candidates with a finite mean compete. The best mean itself when there is nothing to smooth
    (`h` None, or fewer than 3 LRs with a finite mean)."""
    from lrsweep.smooth import smoothed_rank

    ordered = smoothed_rank(ranked, pooled, h, direction)
    if ordered is None:
        return ranked.iloc[0], "the best mean (too few LRs to smooth)"
    pick = ordered.iloc[0]
    # The score itself is not printed: next to a cliff the quadratic can bend past every value
    # measured there (docs/choice.md); the pick's own mean is the number to quote.
    return pick, (
        f"the best of {len(ordered)} candidates on the smoothed curve (a local quadratic in "
        f"log10(lr) through every trial, bandwidth {h:.3g} decades)"
    )


def good_lrs(
    ranked: pd.DataFrame, pick: pd.Series, direction: str = "maximize"
) -> pd.Series | None:
    """The LRs of the good range: the candidates whose pooled mean is within one std (the best
    LR's) of the best mean (`top_set`), and the pick, which the smoothed curve may take from just
    outside them. None when the pick has one trial: no std to measure."""
    if pick["n"] < 2:
        return None
    good = top_set(ranked, direction)["lr"]
    return pd.concat([good, pd.Series([float(pick["lr"])])], ignore_index=True)


def _isin(lrs: pd.Series, among: pd.Series) -> pd.Series:
    """Which of `lrs` are (to 1e-9 relative) among `among`."""
    targets = among.astype(float).to_numpy()
    return lrs.astype(float).apply(lambda x: bool(np.isclose(targets, x, rtol=1e-9, atol=0).any()))


def _latest_stage(aggs: Mapping[str, pd.DataFrame], lr: float) -> str:
    """The latest stage (stage1, stage2, confirm) with a finished trial of `lr`."""
    held = [
        s for s in ("stage1", "stage2", "confirm") if s in aggs and _row_at(aggs[s], lr) is not None
    ]
    return held[-1] if held else finest_stage(aggs)


def edge_of(
    aggs: Mapping[str, pd.DataFrame], lr: float, direction: str = "maximize"
) -> tuple[str | None, str]:
    """(side, note) when the chosen `lr` is at or past an end of the finest sweep stage's range,
    or, without a confirm step, when the sweeps' best is at one (module docstring); (None, "")
    when the optimum is inside the range."""
    found = finest_range(dict(aggs), direction)
    if found is None:
        return None, ""
    stage, low, high = found
    where = f"{stage}'s range [{low:.4g}, {high:.4g}]"
    if lr <= low * (1 + 1e-9) or lr >= high * (1 - 1e-9):
        side = "low" if lr <= low * (1 + 1e-9) else "high"
        past = "at" if low * (1 - 1e-9) <= lr <= high * (1 + 1e-9) else "past"
        further = "below" if side == "low" else "above"
        return side, (
            f"the chosen lr={lr:.4g} is {past} the {side} end of {where}: the optimum may lie "
            f"further {further}; search again with a range around it"
        )
    edge: Edge | None = sweep_edge(dict(aggs), direction)
    if edge is not None and "confirm" not in aggs:
        return edge.side, (
            f"the sweeps' best lr={edge.lr:.4g} is at the {edge.side} end of {where}: the "
            f"optimum may lie beyond it (the confirm step would also measure lr={edge.beyond:.4g})"
        )
    return None, ""


def choose(
    aggs: Mapping[str, pd.DataFrame],
    resolution: float | None = None,
    direction: str = "maximize",
) -> Choice:
    """The chosen LR (rules: module docstring). `aggs`: stage -> `lrsweep.stats.aggregate`;
    `resolution`: one validation example, 1 / n_val (None: unknown)."""
    sweeps = pool([aggs[s] for s in ("stage1", "stage2") if s in aggs])
    pooled = pool([aggs[s] for s in ("stage1", "stage2", "confirm") if s in aggs])
    if "confirm" in aggs and len(rank(aggs["confirm"])):
        candidates = pooled[_isin(pooled["lr"], rank(aggs["confirm"])["lr"])]
    else:
        candidates = pooled
    ranked = rank(candidates, direction) if len(candidates) else pd.DataFrame()
    if not len(ranked):
        raise SweepConfigError(
            "report: no finished non-diverged trial in any stage; nothing to choose from"
        )
    from lrsweep.smooth import bandwidth

    stage1_lrs = aggs["stage1"]["lr"].astype(float).tolist() if "stage1" in aggs else []
    best, rule = smoothed_pick(ranked, pooled, bandwidth(stage1_lrs), direction)
    good = good_lrs(ranked, best, direction)
    optimum, note = fit_optimum(sweeps, direction=direction) if len(sweeps) else (None, "no sweep")
    edge, edge_note = edge_of(aggs, float(best["lr"]), direction)
    return Choice(
        stage=_latest_stage(aggs, float(best["lr"])),
        lr=float(best["lr"]),
        mean=float(best["mean"]),
        std=float(best["std"]),
        n=int(best["n"]),
        good_range=None if good is None else (float(good.min()), float(good.max())),
        interpolated_optimum=optimum,
        stage2_gain=stage2_gain(aggs, resolution, direction),
        optimum_note=note,
        edge=edge,
        edge_note=edge_note,
        rule=rule,
    )


SELECTION_NOTE = (
    "the chosen LR's validation score where it was chosen: optimistic, this score chose it"
)


@dataclass(frozen=True)
class Score:
    """The chosen LR's accuracy on the test split, over the trials that chose it."""

    mean: float
    std: float  # ddof=1; 0 for one trial
    n: int


def test_score(frame: pd.DataFrame, lr: float) -> Score | None:
    """The mean test accuracy of the COMPLETE trials of `lr` in a `trials_frame` (the confirm
    seeds when the confirm step chose), or None when they recorded none (no test split)."""
    rows = frame[
        np.isclose(frame["lr"], lr, rtol=1e-9, atol=0)
        & (frame["state"] == "COMPLETE")
        & frame["test_acc"].notna()
    ]
    values = rows["test_acc"].astype(float).to_numpy()
    if not len(values):
        return None
    std = float(values.std(ddof=1)) if len(values) >= 2 else 0.0
    return Score(float(values.mean()), std, len(values))


def resolution(frames: Mapping[str, pd.DataFrame]) -> float | None:
    """One validation example, 1 / n_val, from the trials' `val_examples` (None if unrecorded)."""
    sizes = pd.concat([f["val_examples"] for f in frames.values()]).dropna()
    return 1.0 / float(sizes.max()) if len(sizes) else None
