"""The report of a search: every stage's trials, the accuracy-vs-LR curve and the chosen LR.

    python -m src.report [--out DIR] [hydra overrides...]

The overrides are those of the stage-1 sweep: they name the study `<name>`; the report also reads
`<name>-stage2` and `<name>-confirm` when they exist, and writes under `<paths.reports_dir>/<name>/`
(default `outputs/reports/<name>/`, relative to the current directory; or `--out DIR`):

- `trials.csv`: one row per trial of every stage (`diverged`, `stopped_at_chance` flag them);
- `curve.png`: mean +/- std of the metric per LR and stage (log x; "one seed" and no bars with one
  seed), the good range shaded, diverged LRs as red x, LRs with a trial stopped at chance boxed,
  the chosen LR as a vertical line;
- `best.yaml`: the chosen LR (`choose`); its `selection_score` (mean, std, n of the validation
  score that chose it: optimistic, the same split made the choice); its `test_score` on the
  data's test split (`data.test_fraction` > 0: mean, std, n over the trials of the chosen LR in
  the stage that chose it, i.e. the confirm seeds; no choice ever reads it); the good range, the
  interpolated optimum (`lrsweep.stats.fit_optimum`; when there is none, `no_interpolated_optimum`
  says why), the overrides to train with it, and stage 2's gain over stage 1.

The choice: the best mean of the confirm stage when it has a finished trial, else of the finest
sweep stage (stage 2 if it has a finished trial, else stage 1). `good_range` (the LRs within one std of
the best mean) is taken in that same stage, and is unknown when the best LR has one seed; the interpolated optimum is fitted on the finest sweep stage (the dense grid).

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

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from lrsweep.stats import (
    aggregate,
    finest_stage,
    fit_optimum,
    format_table,
    rank,
    sign,
    top_set,
    welch_difference,
)
from src.checks import check_writable
from src.cli import run_cli
from src.errors import ConfigError
from src.identity import train_overrides_from_study
from src.study import (
    SUFFIXES,
    TRIAL_COLUMNS,
    compose_config,
    direction_of,
    experiment_identity,
    load_frames,
    open_study,
    report_dir,
    study_names,
)

COLOURS = {"stage1": "tab:blue", "stage2": "tab:orange", "confirm": "tab:green"}
# best.yaml's `good_range` and the printed line when the chosen LR has one seed.
GOOD_RANGE_UNKNOWN = "unknown (one seed: no spread to measure)"

# ---------------------------------------------------------------- pure parts

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


def stage2_gain(
    aggs: Mapping[str, pd.DataFrame],
    resolution: float | None = None,
    direction: str = "maximize",
) -> Stage2Gain | None:
    """Is stage 2's best LR really better than stage 1's? None without both stages. `resolution`:
    one validation example (1 / n_val), the floor of a std; None when unknown. The gain is
    positive when stage 2's LR did better (a higher mean maximising, a lower one minimising)."""
    if not all(s in aggs and len(rank(aggs[s])) for s in ("stage1", "stage2")):
        return None
    b1, b2 = rank(aggs["stage1"], direction).iloc[0], rank(aggs["stage2"], direction).iloc[0]
    c1 = _row_at(aggs["confirm"], b1["lr"]) if "confirm" in aggs else None
    c2 = _row_at(aggs["confirm"], b2["lr"]) if "confirm" in aggs else None
    if c1 is not None and c2 is not None and min(c1["n"], c2["n"]) >= 2:
        r1, r2, source, where = c1, c2, "confirm", f"on {int(c2['n'])} fresh seeds"
    else:
        r1, r2, source, where = b1, b2, "sweeps", "in the sweeps"
    m1, m2 = float(r1["mean"]), float(r2["mean"])
    diff = welch_difference(r1, r2, floor=resolution)
    noise = None if diff is None else diff.half_width
    gain = sign(direction) * (m2 - m1)
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
            f"{scores}, 95% interval [{diff.low:+.4f}, {diff.high:+.4f}] (Welch t, "
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
        interval=None if diff is None else (diff.low, diff.high),
        df=None if diff is None else diff.df,
    )


@dataclass(frozen=True)
class Choice:
    stage: str  # where the chosen LR comes from
    lr: float
    mean: float
    std: float
    n: int
    good_range: tuple[float, float] | None  # None: unknown (one seed, no spread to measure)
    interpolated_optimum: float | None
    stage2_gain: Stage2Gain | None = None
    optimum_note: str = ""  # how the interpolated optimum was found, or why there is none


def choose(
    aggs: Mapping[str, pd.DataFrame],
    resolution: float | None = None,
    direction: str = "maximize",
) -> Choice:
    """The chosen LR (rules: module docstring). `aggs`: stage -> `lrsweep.stats.aggregate`;
    `resolution`: one validation example, 1 / n_val (None: unknown)."""
    sweep = finest_stage(aggs)
    stage = "confirm" if "confirm" in aggs and len(rank(aggs["confirm"])) else sweep
    ranked = rank(aggs[stage], direction) if stage in aggs else pd.DataFrame()
    if not len(ranked):
        raise ConfigError(
            "report: no finished non-diverged trial in any stage; nothing to choose from"
        )
    best = ranked.iloc[0]
    good = top_set(ranked, direction)["lr"] if best["n"] >= 2 else None  # one seed: no std
    optimum, note = (
        fit_optimum(aggs[sweep], direction=direction) if sweep in aggs else (None, "no sweep")
    )
    return Choice(
        stage=stage,
        lr=float(best["lr"]),
        mean=float(best["mean"]),
        std=float(best["std"]),
        n=int(best["n"]),
        good_range=None if good is None else (float(good.min()), float(good.max())),
        interpolated_optimum=optimum,
        stage2_gain=stage2_gain(aggs, resolution, direction),
        optimum_note=note,
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


@dataclass(frozen=True)
class Report:
    """What `write_report` found and wrote; `best()` is the content of best.yaml."""

    study: str  # stage 1's study name
    stages: dict[str, str]  # stage -> study name, for the stages that exist
    aggs: dict[str, pd.DataFrame]  # stage -> `lrsweep.stats.aggregate`
    choice: Choice
    overrides: list[str]  # to train one model with the chosen LR
    out_dir: Path
    test_score: Score | None = None  # the chosen LR on the test split; None without one

    @property
    def command(self) -> str:
        return "python -m src.train " + " ".join(self.overrides)

    def best(self) -> dict[str, Any]:
        c = self.choice
        best: dict[str, Any] = {
            "study": self.study,
            "stages": dict(self.stages),
            "stage": c.stage,
            "lr": c.lr,
            "selection_score": {
                "mean": c.mean,
                "std": c.std,
                "n": c.n,
                "note": SELECTION_NOTE,
            },
        }
        if self.test_score is not None:
            best["test_score"] = dataclasses.asdict(self.test_score)
        best["good_range"] = GOOD_RANGE_UNKNOWN if c.good_range is None else list(c.good_range)
        if c.interpolated_optimum is not None:
            best["interpolated_optimum"] = c.interpolated_optimum
        else:
            best["no_interpolated_optimum"] = c.optimum_note
        best["overrides"] = list(self.overrides)
        best["command"] = self.command
        if c.stage2_gain is not None:
            gain = dataclasses.asdict(c.stage2_gain)
            gain["interval"] = None if gain["interval"] is None else list(gain["interval"])
            best["stage2_gain"] = gain
        return best


def format_summary(report: Report) -> str:
    lines = []
    for stage, agg in report.aggs.items():
        lines += [f"== {stage}: {report.stages[stage]} ({len(agg)} LRs)", format_table(agg), ""]
    c = report.choice
    rows = [
        ("chosen lr", f"{c.lr!r} (from {c.stage})"),
        ("selection score", f"{c.mean:.4f} ± {c.std:.4f} (n={c.n}; it chose the LR: optimistic)"),
        (
            "test accuracy",
            "no test split (data.test_fraction=0)"
            if report.test_score is None
            else "{:.4f} ± {:.4f} (n={})".format(*dataclasses.astuple(report.test_score)),
        ),
        (
            "good range",
            GOOD_RANGE_UNKNOWN
            if c.good_range is None
            else "[{:.4g}, {:.4g}]".format(*c.good_range),
        ),
        (
            "interpolated optimum",
            f"none ({c.optimum_note})"
            if c.interpolated_optimum is None
            else f"{c.interpolated_optimum:.4g} ({c.optimum_note})",
        ),
        ("stage 2 gain", c.stage2_gain.verdict if c.stage2_gain else "no stage 2"),
        ("train with", report.command),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- files


def plot_curve(
    aggs: Mapping[str, pd.DataFrame], choice: Choice, title: str, path: Path, ylabel: str
) -> None:
    """`curve_figure` as a PNG file."""
    curve_figure(aggs, choice, title, ylabel).savefig(path, format="png", dpi=100)


def curve_figure(aggs: Mapping[str, pd.DataFrame], choice: Choice, title: str, ylabel: str):
    """The whole range, and beside it (when there is a stage 2 or confirm step) a zoom on the range
    they cover, where the seed-to-seed error bars are visible. Both panels have a legend.
    A `matplotlib.figure.Figure` made without pyplot: no backend is chosen or changed (a notebook
    keeps its own), and nothing holds the figure but the caller."""
    from matplotlib.figure import Figure

    fine = [agg for stage, agg in aggs.items() if stage != "stage1" and (agg["n"] > 0).any()]
    fig = Figure(figsize=(16 if fine else 8, 5.5), layout="constrained")
    axes = fig.subplots(1, 2 if fine else 1, squeeze=False)
    for ax in axes[0]:
        _draw_curve(ax, aggs, choice, ylabel)
    axes[0][0].set_title(title)
    axes[0][0].legend(loc="best", fontsize="small")
    if fine:
        lrs = pd.concat([agg.loc[agg["n"] > 0, "lr"] for agg in fine])
        means = pd.concat([agg.loc[agg["n"] > 0, ["mean", "std"]] for agg in fine])
        zoom = axes[0][1]
        lo, hi = lrs.min() / 1.15, lrs.max() * 1.15
        zoom.set_xlim(lo, hi)
        _sparse_log_ticks(zoom, lo, hi)
        low = float((means["mean"] - means["std"].fillna(0)).min())
        high = float((means["mean"] + means["std"].fillna(0)).max())
        pad = max(0.005, 0.1 * (high - low))
        zoom.set_ylim(low - pad, high + pad)
        zoom.set_title("zoom: stage 2 and confirm range")
        # Outside the panel: a zoom is full of points, and any corner would hide some.
        zoom.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return fig


def _sparse_log_ticks(ax, lo: float, hi: float, count: int = 5) -> None:
    """`count` labelled ticks spread evenly in log(lr) over [lo, hi], as plain numbers: on a
    zoom narrower than a decade matplotlib labels minor ticks too, and their labels collide."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ticks = [float(f"{v:.2g}") for v in np.geomspace(lo, hi, count + 2)[1:-1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _draw_curve(ax, aggs: Mapping[str, pd.DataFrame], choice: Choice, ylabel: str) -> None:
    """Each stage's mean per LR (with +/- one std bars when it has 2+ seeds per LR; "one seed"
    and no bars otherwise), the good range shaded, diverged LRs as red x at 0, LRs with a trial
    stopped at chance circled, the chosen LR and the interpolated optimum as vertical lines."""
    if choice.good_range is not None:
        ax.axvspan(
            *choice.good_range,
            color="gold",
            alpha=0.25,
            zorder=0,
            label="good range [{:.3g}, {:.3g}]".format(*choice.good_range),
        )
    else:  # a legend line, nothing drawn
        ax.plot([], [], " ", label="good range: unknown (one seed)")
    marked = set()
    for stage, agg in aggs.items():
        ok = agg[agg["n"] > 0]
        if len(ok):
            seeds = int(ok["n"].max())
            several = seeds >= 2
            ax.errorbar(
                ok["lr"],
                ok["mean"],
                yerr=ok["std"] if several else None,
                fmt="o" if stage == "confirm" else "o-",
                color=COLOURS[stage],
                capsize=3,
                markersize=5 if stage == "confirm" else 4,
                label=f"{stage} (mean ± std, {seeds} seeds)" if several else f"{stage} (one seed)",
            )
        div = agg[agg["diverged"] > 0]
        if len(div):
            ax.scatter(
                div["lr"],
                np.zeros(len(div)),
                marker="x",
                color="red",
                s=50,
                zorder=3,
                label=None if "diverged" in marked else "diverged (scored 0)",
            )
            marked.add("diverged")
        stopped = ok[ok["stopped"] > 0] if "stopped" in ok else ok.iloc[:0]
        if len(stopped):
            ax.scatter(
                stopped["lr"],
                stopped["mean"],
                marker="s",
                s=90,
                facecolors="none",
                edgecolors="purple",
                linewidths=1.5,
                zorder=4,
                label=None if "stopped" in marked else "stopped at chance (early)",
            )
            marked.add("stopped")
    ax.axvline(choice.lr, color="black", linestyle="--", label=f"chosen lr={choice.lr:.4g}")
    if choice.interpolated_optimum is not None:
        ax.axvline(
            choice.interpolated_optimum,
            color="grey",
            linestyle=":",
            label=f"interpolated optimum {choice.interpolated_optimum:.4g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def resolution(frames: Mapping[str, pd.DataFrame]) -> float | None:
    """One validation example, 1 / n_val, from the trials' `val_examples` (None if unrecorded)."""
    sizes = pd.concat([f["val_examples"] for f in frames.values()]).dropna()
    return 1.0 / float(sizes.max()) if len(sizes) else None


def write_report(
    name: str,
    frames: Mapping[str, pd.DataFrame],
    out_dir: Path,
    overrides: Sequence[str] = (),
    ylabel: str = "validation accuracy",
    recorded: Mapping[str, Any] | None = None,
    direction: str = "maximize",
) -> Report:
    """Writes trials.csv, curve.png and best.yaml under `out_dir`. The command to train with is
    rebuilt from `recorded`, the experiment identity the stage-1 study recorded, when given
    (`src.identity.train_overrides_from_study`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = pd.concat(
        [f.assign(stage=s, study=name + SUFFIXES[s]) for s, f in frames.items()], ignore_index=True
    )
    trials[["stage", "study", *TRIAL_COLUMNS]].to_csv(out_dir / "trials.csv", index=False)
    aggs = {s: aggregate(f) for s, f in frames.items()}
    choice = choose(aggs, resolution(frames), direction)
    plot_curve(aggs, choice, f"{name}: {ylabel} vs learning rate", out_dir / "curve.png", ylabel)
    report = Report(
        study=name,
        stages={s: n for s, n in study_names(name).items() if s in frames},
        aggs=aggs,
        choice=choice,
        overrides=train_overrides_from_study(overrides, choice.lr, recorded),
        out_dir=out_dir,
        test_score=test_score(frames[choice.stage], choice.lr),
    )
    (out_dir / "best.yaml").write_text(yaml.safe_dump(report.best(), sort_keys=False))
    return report


# ---------------------------------------------------------------- entry point


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Report a sweep (stage 1, and stage 2 / confirm when they exist). Other "
        "arguments are the stage-1 Hydra overrides.",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: <paths.reports_dir>/<name>"
    )
    args, overrides = parser.parse_known_args(argv)

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    out_dir = args.out or report_dir(cfg, name)
    check_writable(out_dir, "--out" if args.out else "paths.reports_dir")
    frames = load_frames(name, storage_url, experiment_identity(cfg))
    stage1 = open_study(name, storage_url)
    recorded, direction = stage1.user_attrs.get("config"), direction_of(stage1)
    metric = str(cfg.get("metric", "val_acc"))
    ylabel = {"val_acc": "validation accuracy", "val_loss": "validation loss"}.get(metric, metric)
    report = write_report(name, frames, out_dir, overrides, ylabel, recorded, direction)
    print(format_summary(report))
    print(f"wrote {out_dir}/trials.csv, curve.png, best.yaml")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
