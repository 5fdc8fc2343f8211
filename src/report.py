"""The report of a search: every stage's trials, the accuracy-vs-LR curve and the chosen LR.

    python -m src.report [--out DIR] [hydra overrides...]

The overrides are those of the stage-1 sweep: they name the study `<name>`; the report also reads
`<name>-stage2` and `<name>-confirm` when they exist, and writes under `<paths.reports_dir>/<name>/`
(default `outputs/reports/<name>/`, relative to the current directory; or `--out DIR`):

- `trials.csv`: one row per trial of every stage (`diverged`, `stopped_at_chance` flag them);
- `curve.png`: mean +/- std accuracy per LR and stage (log x; "one seed" and no bars with one
  seed), the good range shaded, diverged LRs as red x at 0, LRs with a trial stopped at chance
  boxed, the chosen LR as a vertical line;
- `best.yaml`: the chosen LR (`choose`), its mean/std, the good range, the interpolated optimum
  (only when there is one), the overrides to train with it, and stage 2's gain over stage 1.

The choice: the best mean of the confirm stage when it has a finished trial, else of the finest
sweep stage (stage 2 if it has a finished trial, else stage 1). `good_range` (the LRs within one std of
the best mean) is taken in that same stage, and is unknown when the best LR has one seed; the interpolated optimum is fitted on the finest sweep stage (the dense grid).

Stage 2's gain (`stage2_gain`): stage 2's best LR against stage 1's, on the confirm step's fresh
seeds when both were re-run there on at least 2 seeds, else on the sweeps' own means. The noise is
two standard errors of the difference on fresh seeds, the combined std of the two best LRs in the
sweeps; it is unknown when either side has a single seed. One rule: stage 2 helped only if
gain > noise; a loss larger than the noise is reported as a loss; anything else is within noise.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
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
    format_table,
    interpolated_optimum,
    rank,
    sign,
    top_set,
)
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
    noise: float | None  # None: unknown (a single seed on either side)
    exceeds_noise: bool | None  # gain > noise: stage 2 helped; None when the noise is unknown
    outcome: Outcome
    measured_on: Literal["confirm", "sweeps"]
    verdict: str


def _row_at(agg: pd.DataFrame, lr: float) -> pd.Series | None:
    rows = agg[np.isclose(agg["lr"], lr, rtol=1e-9, atol=0) & (agg["n"] > 0)]
    return rows.iloc[0] if len(rows) else None


def judge_gain(gain: float, noise: float | None) -> Outcome:
    """The one rule: "gain" only if gain > noise, "loss" if -gain > noise, else "within noise";
    "unknown" without a measured noise."""
    if noise is None:
        return "unknown"
    if gain > noise:
        return "gain"
    if -gain > noise:
        return "loss"
    return "within noise"


def stage2_gain(aggs: Mapping[str, pd.DataFrame], direction: str = "maximize") -> Stage2Gain | None:
    """Is stage 2's best LR really better than stage 1's? None without both stages. The gain is
    positive when stage 2's LR did better (a higher mean maximising, a lower one minimising)."""
    if not all(s in aggs and len(rank(aggs[s])) for s in ("stage1", "stage2")):
        return None
    b1, b2 = rank(aggs["stage1"], direction).iloc[0], rank(aggs["stage2"], direction).iloc[0]
    c1 = _row_at(aggs["confirm"], b1["lr"]) if "confirm" in aggs else None
    c2 = _row_at(aggs["confirm"], b2["lr"]) if "confirm" in aggs else None
    if c1 is not None and c2 is not None and min(c1["n"], c2["n"]) >= 2:
        r1, r2, source = c1, c2, "confirm"
        noise = 2 * math.hypot(c1["std"] / math.sqrt(c1["n"]), c2["std"] / math.sqrt(c2["n"]))
        where = f"on {int(c2['n'])} fresh seeds"
        noise_is = "two standard errors"
    else:
        r1, r2, source = b1, b2, "sweeps"
        measured = min(b1["n"], b2["n"]) >= 2
        noise = float(math.hypot(b1["std"], b2["std"])) if measured else None
        where = "in the sweeps"
        noise_is = "combined std of the two best LRs"
    m1, m2 = float(r1["mean"]), float(r2["mean"])
    gain = sign(direction) * (m2 - m1)
    outcome = judge_gain(gain, noise)
    scores = (
        f"{where}, stage 2's best lr={b2['lr']:.4g} scored {m2:.4f} vs stage 1's best "
        f"lr={b1['lr']:.4g} {m1:.4f}: gain {gain:+.4f}"
    )
    if outcome == "unknown":
        verdict = f"{scores}, noise unknown (one seed per LR)"
    else:
        judged = {
            "gain": "larger than the noise: stage 2 helped",
            "loss": "a loss larger than the noise: stage 2 did worse",
            "within noise": "not larger than the noise",
        }[outcome]
        verdict = f"{scores}, {judged} ({noise:.4f}, {noise_is})"
    return Stage2Gain(
        stage1_lr=float(b1["lr"]),
        stage2_lr=float(b2["lr"]),
        stage1_mean=m1,
        stage2_mean=m2,
        gain=gain,
        noise=None if noise is None else float(noise),
        exceeds_noise=None if noise is None else outcome == "gain",
        outcome=outcome,
        measured_on=source,
        verdict=verdict,
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


def choose(aggs: Mapping[str, pd.DataFrame], direction: str = "maximize") -> Choice:
    """The chosen LR (rules: module docstring). `aggs`: stage -> `lrsweep.stats.aggregate`."""
    sweep = finest_stage(aggs)
    stage = "confirm" if "confirm" in aggs and len(rank(aggs["confirm"])) else sweep
    ranked = rank(aggs[stage], direction) if stage in aggs else pd.DataFrame()
    if not len(ranked):
        raise ConfigError(
            "report: no finished non-diverged trial in any stage; nothing to choose from"
        )
    best = ranked.iloc[0]
    good = top_set(ranked, direction)["lr"] if best["n"] >= 2 else None  # one seed: no std
    return Choice(
        stage=stage,
        lr=float(best["lr"]),
        mean=float(best["mean"]),
        std=float(best["std"]),
        n=int(best["n"]),
        good_range=None if good is None else (float(good.min()), float(good.max())),
        interpolated_optimum=interpolated_optimum(aggs[sweep], direction=direction),
        stage2_gain=stage2_gain(aggs, direction),
    )


@dataclass(frozen=True)
class Report:
    """What `write_report` found and wrote; `best()` is the content of best.yaml."""

    study: str  # stage 1's study name
    stages: dict[str, str]  # stage -> study name, for the stages that exist
    aggs: dict[str, pd.DataFrame]  # stage -> `lrsweep.stats.aggregate`
    choice: Choice
    overrides: list[str]  # to train one model with the chosen LR
    out_dir: Path

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
            "mean": c.mean,
            "std": c.std,
            "n": c.n,
            "good_range": GOOD_RANGE_UNKNOWN if c.good_range is None else list(c.good_range),
        }
        if c.interpolated_optimum is not None:
            best["interpolated_optimum"] = c.interpolated_optimum
        best["overrides"] = list(self.overrides)
        best["command"] = self.command
        if c.stage2_gain is not None:
            best["stage2_gain"] = dataclasses.asdict(c.stage2_gain)
        return best


def format_summary(report: Report) -> str:
    lines = []
    for stage, agg in report.aggs.items():
        lines += [f"== {stage}: {report.stages[stage]} ({len(agg)} LRs)", format_table(agg), ""]
    c = report.choice
    rows = [
        ("chosen lr", f"{c.lr!r} (from {c.stage})"),
        ("mean ± std", f"{c.mean:.4f} ± {c.std:.4f} (n={c.n})"),
        (
            "good range",
            GOOD_RANGE_UNKNOWN
            if c.good_range is None
            else "[{:.4g}, {:.4g}]".format(*c.good_range),
        ),
        (
            "interpolated optimum",
            "none" if c.interpolated_optimum is None else f"{c.interpolated_optimum:.4g}",
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
    choice = choose(aggs, direction)
    plot_curve(aggs, choice, f"{name}: {ylabel} vs learning rate", out_dir / "curve.png", ylabel)
    report = Report(
        study=name,
        stages={s: n for s, n in study_names(name).items() if s in frames},
        aggs=aggs,
        choice=choice,
        overrides=train_overrides_from_study(overrides, choice.lr, recorded),
        out_dir=out_dir,
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
    frames = load_frames(name, storage_url, experiment_identity(cfg))
    stage1 = open_study(name, storage_url)
    recorded, direction = stage1.user_attrs.get("config"), direction_of(stage1)
    out_dir = args.out or report_dir(cfg, name)
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
