"""The report of a sweep: every stage's trials, the accuracy-vs-LR curve and the chosen LR.

    python -m src.report [--out DIR] [hydra overrides...]

The overrides are those of the stage-1 sweep: they name the study `<name>`; the report also reads
`<name>-stage2` and `<name>-confirm` when they exist, and writes under `outputs/reports/<name>/`
(relative to the current directory, or `--out DIR`):

- `trials.csv`: one row per trial of every stage;
- `curve.png`: mean +/- std accuracy per LR and stage (log x), diverged LRs as red x at 0, the
  chosen LR as a vertical line;
- `best.yaml`: the chosen LR (`choose`), its mean/std, the good range, the interpolated optimum
  (only when there is one), the overrides to train with it, and stage 2's gain over stage 1.

The choice: the best mean of the confirm stage when it has a finished trial, else of the finest
sweep stage (stage 2 if it has a finished trial, else stage 1). `good_range` is taken in that same
stage; the interpolated optimum is fitted on the finest sweep stage (the dense grid).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import yaml

from src.errors import ConfigError
from src.refine import (
    STAGE2_SUFFIX,
    aggregate,
    check_direction,
    create_child_study,
    format_table,
    override_key,
    rank,
    replace_overrides,
    run_cli,
)

STAGES = ("stage1", "stage2", "confirm")
SUFFIX = {"stage1": "", "stage2": STAGE2_SUFFIX, "confirm": "-confirm"}
COLOURS = {"stage1": "tab:blue", "stage2": "tab:orange", "confirm": "tab:green"}
# Override keys that belong to the sweep, not to training one model.
SWEEP_KEYS = ("lr", "seed", "trial")
SWEEP_PREFIXES = ("sweep.", "study.", "hydra.", "hydra/")
TIE = 1e-12


def study_names(name: str) -> dict[str, str]:
    return {stage: name + SUFFIX[stage] for stage in STAGES}


# ---------------------------------------------------------------- pure parts


def interpolated_optimum(agg: pd.DataFrame, half_window: int = 2) -> float | None:
    """The peak of a parabola fitted (least squares) to mean accuracy vs log10(lr) over the best LR
    and up to `half_window` finished neighbours on each side (3 to 5 points). None unless the
    parabola is concave and its peak lies strictly inside the fitted LRs: it never extrapolates."""
    usable = agg[agg["n"] > 0].sort_values("lr")
    ranked = rank(agg)
    if len(usable) < 3:
        return None
    b = usable.index.get_loc(ranked.index[0])
    window = usable.iloc[max(0, b - half_window) : b + half_window + 1]
    if len(window) < 3:
        return None
    x = np.log10(window["lr"].to_numpy(dtype=float))
    y = window["mean"].to_numpy(dtype=float)
    a, b1, _ = np.polyfit(x, y, 2)
    if not a < -TIE:
        return None
    peak = -b1 / (2 * a)
    if not x.min() < peak < x.max():
        return None
    return float(10**peak)


def finest_stage(aggs: Mapping[str, pd.DataFrame]) -> str:
    """stage2 when it has a finished non-diverged trial, else stage1."""
    if "stage2" in aggs and len(rank(aggs["stage2"])):
        return "stage2"
    return "stage1"


@dataclass(frozen=True)
class Choice:
    stage: str  # where the chosen LR comes from
    lr: float
    mean: float
    std: float
    n: int
    good_range: tuple[float, float]
    interpolated_optimum: float | None
    stage2_gain: dict | None = field(default=None)


def _row_at(agg: pd.DataFrame, lr: float) -> pd.Series | None:
    rows = agg[np.isclose(agg["lr"], lr, rtol=1e-9, atol=0) & (agg["n"] > 0)]
    return rows.iloc[0] if len(rows) else None


def stage2_gain(aggs: Mapping[str, pd.DataFrame]) -> dict | None:
    """Is stage 2's best LR really better than stage 1's? None without both stages.

    With a confirm stage that re-ran both best LRs on fresh seeds, the answer comes from there:
    the picked maximum of a noisy sweep flatters itself, fresh seeds do not. The gain counts as
    real when it exceeds two standard errors of the difference, sqrt(s1^2/n1 + s2^2/n2). Without
    them: the sweeps' own means against the combined std of the two best LRs."""
    if not all(s in aggs and len(rank(aggs[s])) for s in ("stage1", "stage2")):
        return None
    b1, b2 = rank(aggs["stage1"]).iloc[0], rank(aggs["stage2"]).iloc[0]
    c1 = _row_at(aggs["confirm"], b1["lr"]) if "confirm" in aggs else None
    c2 = _row_at(aggs["confirm"], b2["lr"]) if "confirm" in aggs else None
    if c1 is not None and c2 is not None and min(c1["n"], c2["n"]) >= 2:
        m1, m2 = float(c1["mean"]), float(c2["mean"])
        gain = m2 - m1
        noise = 2 * math.hypot(c1["std"] / math.sqrt(c1["n"]), c2["std"] / math.sqrt(c2["n"]))
        exceeds = bool(gain > noise)
        verdict = (
            f"on {int(c2['n'])} fresh seeds, stage 2's best lr={b2['lr']:.4g} scored "
            f"{c2['mean']:.4f} vs stage 1's best lr={b1['lr']:.4g} {c1['mean']:.4f}: gain "
            f"{gain:+.4f}, {'larger' if exceeds else 'not larger'} than the noise "
            f"({noise:.4f}, two standard errors)"
        )
        source = "confirm"
    else:
        m1, m2 = float(b1["mean"]), float(b2["mean"])
        gain = m2 - m1
        noise = float(math.hypot(b1["std"], b2["std"]))
        source = "sweeps"
        if noise > 0:
            exceeds = bool(abs(gain) > noise)
            verdict = (
                f"stage 2's gain {gain:+.4f} is {'larger' if exceeds else 'not larger'} than the "
                f"noise ({noise:.4f}, combined std of the two best LRs)"
            )
        else:
            exceeds = None
            verdict = f"stage 2's gain {gain:+.4f}: noise unknown (one seed per LR, std 0)"
    return {
        "stage1_lr": float(b1["lr"]),  # each stage's best LR, and its mean where measured
        "stage2_lr": float(b2["lr"]),
        "stage1_mean": m1,
        "stage2_mean": m2,
        "gain": gain,
        "noise": noise,
        "exceeds_noise": exceeds,
        "measured_on": source,
        "verdict": verdict,
    }


def choose(aggs: Mapping[str, pd.DataFrame]) -> Choice:
    """The chosen LR (rules: module docstring). `aggs`: stage -> `refine.aggregate`."""
    sweep = finest_stage(aggs)
    stage = "confirm" if "confirm" in aggs and len(rank(aggs["confirm"])) else sweep
    ranked = rank(aggs[stage]) if stage in aggs else pd.DataFrame()
    if not len(ranked):
        raise ConfigError(
            "report: no finished non-diverged trial in any stage; nothing to choose from"
        )
    best = ranked.iloc[0]
    good = ranked.loc[ranked["mean"] >= best["mean"] - best["std"] - TIE, "lr"]
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


def confirm_candidates(
    agg: pd.DataFrame, top_k: int = 3, extra: Sequence[float | None] = ()
) -> list[float]:
    """The `top_k` best LRs of `agg` (best first), then each of `extra` (the interpolated optimum,
    stage 1's best) unless it is None or (to 1e-9 relative) already there."""
    lrs = [float(x) for x in rank(agg)["lr"].iloc[:top_k]]
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
    frames: Mapping[str, pd.DataFrame], top_k: int = 3, n_seeds: int = 3
) -> ConfirmPlan:
    """The confirm step from the stage-1/2 trial frames: the top `top_k` LRs of the finest stage, its
    interpolated optimum and stage 1's best LR, on `n_seeds` seeds that neither sweep stage used. Deterministic, so a
    re-run plans the same trials (and the resumable sweep adds none)."""
    if top_k < 1 or n_seeds < 1:
        raise ConfigError(
            f"confirm: need --confirm-top >= 1 and --confirm-seeds >= 1, got {top_k}, {n_seeds}"
        )
    sweeps = {s: f for s, f in frames.items() if s in ("stage1", "stage2")}
    aggs = {s: aggregate(f) for s, f in sweeps.items()}
    stage = finest_stage(aggs)
    if stage not in aggs or not len(rank(aggs[stage])):
        raise ConfigError("confirm: no finished non-diverged trial in stage 1 or 2")
    extra = [interpolated_optimum(aggs[stage])]
    if stage == "stage2":
        # Stage 1's best re-runs too: the report weighs stage 2's gain on the same fresh seeds.
        extra.append(float(rank(aggs["stage1"])["lr"].iloc[0]))
    lrs = confirm_candidates(aggs[stage], top_k, extra)
    used = pd.concat([f["seed"] for f in sweeps.values()]).dropna().astype(int).tolist()
    return ConfirmPlan(stage=stage, lrs=lrs, seeds=fresh_seeds(used, n_seeds))


def train_overrides(overrides: Sequence[str], lr: float) -> list[str]:
    """The overrides to train one model with `lr`: the experiment's own overrides, less the sweep's."""
    kept = [
        o
        for o in overrides
        if override_key(o) not in SWEEP_KEYS and not override_key(o).startswith(SWEEP_PREFIXES)
    ]
    return replace_overrides(kept, {"lr": float(lr)})


# ---------------------------------------------------------------- studies and files


def load_frames(name: str, storage_url: str) -> dict[str, pd.DataFrame]:
    """stage -> `trials_frame` of each stage's study that exists (stage 1 must)."""
    from src.study import open_study, storage, trials_frame

    existing = set(optuna.study.get_all_study_names(storage(storage_url)))
    frames = {}
    for stage, study_name in study_names(name).items():
        if stage != "stage1" and study_name not in existing:
            continue
        study = open_study(study_name, storage_url)
        check_direction(study)
        frames[stage] = trials_frame(study)
    return frames


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


def best_summary(
    name: str, frames: Mapping[str, pd.DataFrame], choice: Choice, overrides: Sequence[str]
) -> dict:
    train = train_overrides(overrides, choice.lr)
    best = {
        "study": name,
        "stages": {s: n for s, n in study_names(name).items() if s in frames},
        "stage": choice.stage,
        "lr": choice.lr,
        "mean": choice.mean,
        "std": choice.std,
        "n": choice.n,
        "good_range": [choice.good_range[0], choice.good_range[1]],
    }
    if choice.interpolated_optimum is not None:
        best["interpolated_optimum"] = choice.interpolated_optimum
    best["overrides"] = train
    best["command"] = "python -m src.train " + " ".join(train)
    if choice.stage2_gain is not None:
        best["stage2_gain"] = choice.stage2_gain
    return best


def write_report(
    name: str,
    frames: Mapping[str, pd.DataFrame],
    out_dir: Path,
    overrides: Sequence[str] = (),
    ylabel: str = "validation accuracy",
) -> dict:
    """Writes trials.csv, curve.png and best.yaml under `out_dir`; returns best.yaml's content."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = pd.concat(
        [f.assign(stage=s, study=name + SUFFIX[s]) for s, f in frames.items()], ignore_index=True
    )
    cols = [
        "stage",
        "study",
        "number",
        "state",
        "lr",
        "seed",
        "value",
        "diverged",
        "epochs_run",
        "seconds",
    ]
    trials[cols].to_csv(out_dir / "trials.csv", index=False)
    aggs = {s: aggregate(f) for s, f in frames.items()}
    choice = choose(aggs)
    plot_curve(aggs, choice, f"{name}: {ylabel} vs learning rate", out_dir / "curve.png", ylabel)
    best = best_summary(name, frames, choice, overrides)
    (out_dir / "best.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
    return {"aggs": aggs, "best": best}


def format_summary(aggs: Mapping[str, pd.DataFrame], best: Mapping) -> str:
    lines = []
    for stage, agg in aggs.items():
        lines += [f"== {stage}: {best['stages'][stage]} ({len(agg)} LRs)", format_table(agg), ""]
    rows = [
        ("chosen lr", f"{best['lr']!r} (from {best['stage']})"),
        ("mean ± std", f"{best['mean']:.4f} ± {best['std']:.4f} (n={best['n']})"),
        ("good range", "[{:.4g}, {:.4g}]".format(*best["good_range"])),
        (
            "interpolated optimum",
            f"{best['interpolated_optimum']:.4g}" if "interpolated_optimum" in best else "none",
        ),
        ("stage 2 gain", best["stage2_gain"]["verdict"] if "stage2_gain" in best else "no stage 2"),
        ("train with", best["command"]),
    ]
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- entry points


def prepare_confirm(overrides: Sequence[str], top_k: int = 3, n_seeds: int = 3) -> list[str]:
    """Plans the confirm step for the stage-1 `overrides`, creates the study `<name>-confirm`
    (user attrs parent_study, stage="confirm") and returns the overrides for
    `python -m src.train -m`."""
    from src.study import compose_config

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    frames = load_frames(name, storage_url)
    plan = plan_confirm(frames, top_k, n_seeds)
    names = study_names(name)
    create_child_study(
        names["confirm"],
        storage_url,
        parent=names[plan.stage],
        stage="confirm",
        meta={"candidates": plan.lrs, "seeds": plan.seeds},
    )
    print(f"confirm: lrs {[f'{x:.4g}' for x in plan.lrs]} from {plan.stage}, seeds {plan.seeds}")
    return replace_overrides(
        overrides,
        {
            "study.name": names["confirm"],
            "hydra.sweeper.params.lr": ChoiceOverride(plan.lrs),
            "sweep.seeds": plan.seeds,
        },
    )


class ChoiceOverride:
    """`'choice(a,b,...)'` with exact float reprs, quoted: Hydra refuses a sweep override of a
    `hydra.` key ("Sweeping over Hydra's configuration is not supported"), so the sweeper gets the
    string and parses it like the `params` in its config."""

    def __init__(self, values: Sequence[float]):
        self.values = [float(v) for v in values]

    def __str__(self) -> str:
        return "'choice(" + ",".join(repr(v) for v in self.values) + ")'"


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Report a sweep (stage 1, and stage 2 / confirm when they exist). Other "
        "arguments are the stage-1 Hydra overrides.",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/reports/<name>")
    args, overrides = parser.parse_known_args(argv)

    from src.study import compose_config

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    frames = load_frames(name, storage_url)
    out_dir = args.out or Path("outputs") / "reports" / name
    metric = str(cfg.get("metric", "val_acc"))
    ylabel = {"val_acc": "validation accuracy"}.get(metric, metric)
    result = write_report(name, frames, out_dir, overrides, ylabel)
    print(format_summary(result["aggs"], result["best"]))
    print(f"wrote {out_dir}/trials.csv, curve.png, best.yaml")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
