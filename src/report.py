"""The report of a search: every stage's trials, the accuracy-vs-LR curve and the chosen LR.

    python -m src.report [--out DIR] [hydra overrides...]

The overrides are those of the stage-1 sweep: they name the study `<name>`; the report also reads
`<name>-stage2` and `<name>-confirm` when they exist, and writes under `<paths.reports_dir>/<name>/`
(default `outputs/reports/<name>/`, relative to the current directory; or `--out DIR`):

- `trials.csv`: one row per trial of every stage;
- `curve.png`: mean +/- std accuracy per LR and stage (log x), diverged LRs as red x at 0, the
  chosen LR as a vertical line;
- `best.yaml`: the chosen LR (`choose`), its mean/std, the good range, the interpolated optimum
  (only when there is one), the overrides to train with it, and stage 2's gain over stage 1.

The choice: the best mean of the confirm stage when it has a finished trial, else of the finest
sweep stage (stage 2 if it has a finished trial, else stage 1). `good_range` is taken in that same
stage; the interpolated optimum is fitted on the finest sweep stage (the dense grid).

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

from src.checks import check_writable
from src.cli import run_cli
from src.errors import ConfigError
from src.overrides import train_overrides
from src.stats import aggregate, finest_stage, format_table, interpolated_optimum, rank, top_set
from src.study import (
    SUFFIXES,
    TRIAL_COLUMNS,
    compose_config,
    load_frames,
    report_dir,
    study_names,
)

COLOURS = {"stage1": "tab:blue", "stage2": "tab:orange", "confirm": "tab:green"}

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


def stage2_gain(aggs: Mapping[str, pd.DataFrame]) -> Stage2Gain | None:
    """Is stage 2's best LR really better than stage 1's? None without both stages."""
    if not all(s in aggs and len(rank(aggs[s])) for s in ("stage1", "stage2")):
        return None
    b1, b2 = rank(aggs["stage1"]).iloc[0], rank(aggs["stage2"]).iloc[0]
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
    gain = m2 - m1
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
    good_range: tuple[float, float]
    interpolated_optimum: float | None
    stage2_gain: Stage2Gain | None = None


def choose(aggs: Mapping[str, pd.DataFrame]) -> Choice:
    """The chosen LR (rules: module docstring). `aggs`: stage -> `src.stats.aggregate`."""
    sweep = finest_stage(aggs)
    stage = "confirm" if "confirm" in aggs and len(rank(aggs["confirm"])) else sweep
    ranked = rank(aggs[stage]) if stage in aggs else pd.DataFrame()
    if not len(ranked):
        raise ConfigError(
            "report: no finished non-diverged trial in any stage; nothing to choose from"
        )
    best = ranked.iloc[0]
    good = top_set(ranked)["lr"]
    return Choice(
        stage=stage,
        lr=float(best["lr"]),
        mean=float(best["mean"]),
        std=float(best["std"]),
        n=int(best["n"]),
        good_range=(float(good.min()), float(good.max())),
        interpolated_optimum=interpolated_optimum(aggs[sweep]),
        stage2_gain=stage2_gain(aggs),
    )


@dataclass(frozen=True)
class Report:
    """What `write_report` found and wrote; `best()` is the content of best.yaml."""

    study: str  # stage 1's study name
    stages: dict[str, str]  # stage -> study name, for the stages that exist
    aggs: dict[str, pd.DataFrame]  # stage -> `src.stats.aggregate`
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
            "good_range": list(c.good_range),
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
        ("good range", "[{:.4g}, {:.4g}]".format(*c.good_range)),
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
    """The whole range, and beside it (when there is a stage 2 or confirm step) a zoom on the range
    they cover, where the seed-to-seed error bars are visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fine = [agg for stage, agg in aggs.items() if stage != "stage1" and (agg["n"] > 0).any()]
    fig, axes = plt.subplots(
        1, 2 if fine else 1, figsize=(13 if fine else 8, 5), squeeze=False, layout="constrained"
    )
    for ax in axes[0]:
        _draw_curve(ax, aggs, choice, ylabel)
    axes[0][0].set_title(title)
    if fine:
        lrs = pd.concat([agg.loc[agg["n"] > 0, "lr"] for agg in fine])
        means = pd.concat([agg.loc[agg["n"] > 0, ["mean", "std"]] for agg in fine])
        zoom = axes[0][1]
        zoom.set_xlim(lrs.min() / 1.15, lrs.max() * 1.15)
        low = float((means["mean"] - means["std"].fillna(0)).min())
        high = float((means["mean"] + means["std"].fillna(0)).max())
        pad = max(0.005, 0.1 * (high - low))
        zoom.set_ylim(low - pad, high + pad)
        zoom.set_title("zoom: stage 2 and confirm range")
        zoom.get_legend().remove()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


def _draw_curve(ax, aggs: Mapping[str, pd.DataFrame], choice: Choice, ylabel: str) -> None:
    marked_diverged = False
    for stage, agg in aggs.items():
        ok = agg[agg["n"] > 0]
        if len(ok):
            ax.errorbar(
                ok["lr"],
                ok["mean"],
                yerr=ok["std"],
                fmt="o" if stage == "confirm" else "o-",
                color=COLOURS[stage],
                capsize=3,
                markersize=5 if stage == "confirm" else 4,
                label=f"{stage} (mean ± std)",
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
                label=None if marked_diverged else "diverged",
            )
            marked_diverged = True
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
    ax.legend(loc="best", fontsize="small")


def write_report(
    name: str,
    frames: Mapping[str, pd.DataFrame],
    out_dir: Path,
    overrides: Sequence[str] = (),
    ylabel: str = "validation accuracy",
) -> Report:
    """Writes trials.csv, curve.png and best.yaml under `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = pd.concat(
        [f.assign(stage=s, study=name + SUFFIXES[s]) for s, f in frames.items()], ignore_index=True
    )
    trials[["stage", "study", *TRIAL_COLUMNS]].to_csv(out_dir / "trials.csv", index=False)
    aggs = {s: aggregate(f) for s, f in frames.items()}
    choice = choose(aggs)
    plot_curve(aggs, choice, f"{name}: {ylabel} vs learning rate", out_dir / "curve.png", ylabel)
    report = Report(
        study=name,
        stages={s: n for s, n in study_names(name).items() if s in frames},
        aggs=aggs,
        choice=choice,
        overrides=train_overrides(overrides, choice.lr),
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
    out_dir = args.out or report_dir(cfg, name)
    check_writable(out_dir, "--out" if args.out else "paths.reports_dir")
    frames = load_frames(name, storage_url)
    metric = str(cfg.get("metric", "val_acc"))
    ylabel = {"val_acc": "validation accuracy"}.get(metric, metric)
    report = write_report(name, frames, out_dir, overrides, ylabel)
    print(format_summary(report))
    print(f"wrote {out_dir}/trials.csv, curve.png, best.yaml")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
