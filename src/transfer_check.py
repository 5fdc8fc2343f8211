"""The measured check of a transfer rule: sweep one axis at several scales, fit how the optimum moves.

    python -m src.transfer --measure --axis batch|width|depth --scales 32,128,512 \\
        [--points N] [--out DIR] [hydra overrides...]

For each scale (`batch_size=`, `model.width=` / `model.channels=`, or `model.depth=` added to the
overrides) it runs the normal search as subprocesses: stage 1 (`python -m src.train -m`) and stage 2
(`python -m src.refine --run`). Each scale is its own study (the sizes are part of the experiment's
identity, hence of the default study name), and every step is resumable: re-running the command
runs only the missing trials. Then per scale:

- the measured optimum: `lrsweep.choice.choose` over the stages, its interpolated optimum (a parabola in
  log10(lr) over the finest stage's top points) when there is one, else the best LR;
- for every rule of the axis (`lrsweep.scaling.RULES`), the LR it predicts from the smallest scale's
  optimum, and measured / predicted;
- the fit lr_opt ~ scale^alpha (least squares on log-log): alpha, its standard error and its 95%
  interval (Student t with n - 2 degrees of freedom: from 3 scales, 1 degree of freedom and
  t = 12.7), and the verdict `lrsweep.scaling.alpha_verdict`: the rule whose alpha the interval holds,
  "undecided" when it holds more than one, and always from fewer than 4 scales.

Writes under `--out` (default `<paths.reports_dir>/<smallest scale's study>/transfer-check-<axis>`):
`check.yaml` (all numbers), `lr_vs_scale.png` (log-log optimum vs scale, the fit and each rule's
line), `curves.png` (accuracy vs LR of every scale, overlaid).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from lrsweep.scaling import RULES, PowerFit, alpha_verdict, fit_power_law
from lrsweep.stats import aggregate
from src.errors import ConfigError
from src.overrides import replace_overrides

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ScaleResult:
    scale: int
    study: str
    lr_opt: float
    optimum: str  # "interpolated" or "best grid point"
    best_lr: float
    best_mean: float
    curve: pd.DataFrame  # aggregate of stage 1 and stage 2 together: lr, mean, std, ...


def axis_key(axis: str, model: dict) -> str:
    """The override key that sets `axis` for this model."""
    from src.sizes import width_key

    if axis == "batch":
        return "batch_size"
    key = width_key(model) if axis == "width" else ("depth" if "depth" in model else None)
    if key is None:
        raise ConfigError(f"--axis {axis}: model {model.get('_target_')} has no {axis}")
    return f"model.{key}"


def parse_scales(text: str) -> list[int]:
    try:
        scales = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--scales {text!r}: comma-separated integers, e.g. 32,128,512") from None
    if len(set(scales)) < 3 or any(s < 1 for s in scales):
        raise ConfigError(f"--scales {text!r}: at least 3 different integers >= 1")
    return sorted(set(scales))


def predictions(axis: str, results: Sequence[ScaleResult]) -> dict[str, list[float]]:
    """rule -> the LR it predicts at each scale from the smallest scale's measured optimum."""
    base = results[0]
    return {
        name: [base.lr_opt * (r.scale / base.scale) ** rule.exponent for r in results]
        for name, rule in RULES[axis].items()
    }


def rule_lines(axis: str, results: Sequence[ScaleResult]) -> list[tuple[str, list[float]]]:
    """(label, predicted LR per scale), one per distinct exponent: rules that predict the same
    line (`mup` and `none` on width, both alpha 0) share it and its label, instead of one line
    drawn over the other."""
    preds = predictions(axis, results)
    by_exponent: dict[float, list[str]] = {}
    for name, rule in RULES[axis].items():
        by_exponent.setdefault(rule.exponent, []).append(name)
    lines = []
    for exponent, names in by_exponent.items():
        word = "rule" if len(names) == 1 else "rules"
        lines.append((f"{word} {', '.join(names)} (α={exponent:g})", preds[names[0]]))
    return lines


def _step(title: str, args: list[str]) -> None:
    print(f"[transfer-check] {title}: python {' '.join(args)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    rc = subprocess.call([sys.executable, *args], env=env)
    if rc:
        raise SystemExit(rc)


def measure_scale(scale: int, overrides: list[str], points: int | None) -> ScaleResult:
    """Stage 1 and 2 of one scale (resumable subprocesses), then its optimum."""
    from lrsweep.choice import choose
    from src.refine import main as refine_main
    from src.study import compose_config, load_frames

    _step("stage 1", ["-m", "src.train", "-m", *overrides])
    extra = [] if points is None else ["--points", str(points)]
    print(f"[transfer-check] stage 2: python -m src.refine --run {' '.join(extra + overrides)}")
    sys.stdout.flush()
    # refine in this process (it starts the stage-2 sweep as a subprocess): one interpreter less.
    if rc := refine_main(["--run", *extra, *overrides]):
        raise SystemExit(rc)
    cfg = compose_config(overrides)
    name = str(cfg.study.name)
    frames = load_frames(name, str(cfg.study.storage))
    frames.pop("confirm", None)
    choice = choose({s: aggregate(f) for s, f in frames.items()})
    interpolated = choice.interpolated_optimum
    return ScaleResult(
        scale=scale,
        study=name,
        lr_opt=interpolated if interpolated is not None else choice.lr,
        optimum="interpolated" if interpolated is not None else "best grid point",
        best_lr=choice.lr,
        best_mean=choice.mean,
        curve=aggregate(pd.concat(list(frames.values()))),
    )


def format_table(axis: str, results: Sequence[ScaleResult], fit: PowerFit) -> list[str]:
    preds = predictions(axis, results)
    head = f"{'scale':>6} {'lr_opt':>9} {'optimum':>16} {'acc':>6}"
    for name in preds:
        head += f" | {name + ' pred':>13} {'ratio':>6}"
    lines = [head]
    for i, r in enumerate(results):
        row = f"{r.scale:>6} {r.lr_opt:>9.3g} {r.optimum:>16} {r.best_mean:>6.3f}"
        for values in preds.values():
            row += f" | {values[i]:>13.3g} {r.lr_opt / values[i]:>6.2f}"
        lines.append(row)
    rules = ", ".join(f"{n} {rule.exponent:g}" for n, rule in RULES[axis].items())
    lines.append(
        f"alpha = {alpha_text(fit)} (lr_opt ~ {axis}^alpha, least squares over {fit.n} scales); "
        f"the rules' alphas: {rules}"
    )
    lines.append(f"verdict: {verdict(axis, fit)}")
    return lines


def alpha_text(fit: PowerFit) -> str:
    """`0.72, 95% interval [-0.03, 1.47] (Student t, df=1)`, or the bare alpha with 2 scales."""
    low, high = fit.ci95
    if not math.isfinite(low):
        return f"{fit.alpha:.2f} (no interval: df=0)"
    return f"{fit.alpha:.2f}, 95% interval [{low:.2f}, {high:.2f}] (Student t, df={fit.df})"


def verdict(axis: str, fit: PowerFit) -> str:
    """`lrsweep.scaling.alpha_verdict` against the rules of `axis`."""
    return alpha_verdict(fit, {n: rule.exponent for n, rule in RULES[axis].items()})


def plot(axis: str, results: Sequence[ScaleResult], fit: PowerFit, out: Path, title: str) -> None:
    """`lr_vs_scale.png` and `curves.png` under `out`."""
    plot_lr_vs_scale(axis, results, fit, out / "lr_vs_scale.png", title)
    plot_curves(axis, results, out / "curves.png", title)


def plot_lr_vs_scale(
    axis: str, results: Sequence[ScaleResult], fit: PowerFit, path: Path, title: str
) -> None:
    """The measured optimum per scale, the fitted power law, and each rule's prediction from the
    smallest scale (rules with the same exponent as one line: `rule_lines`)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scales = np.array([r.scale for r in results], dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.loglog(scales, [r.lr_opt for r in results], "ko", label="measured optimum", zorder=3)
    xs = np.geomspace(scales.min(), scales.max(), 50)
    low, high = fit.ci95
    ci = f" [{low:.2f}, {high:.2f}] (95%, df={fit.df})" if math.isfinite(low) else ""
    ax.loglog(xs, 10**fit.log10_prefactor * xs**fit.alpha, "k-", label=f"fit α={fit.alpha:.2f}{ci}")
    for (label, values), style in zip(rule_lines(axis, results), ("--", ":", "-."), strict=False):
        ax.loglog(scales, values, style, label=label)
    ax.set_xticks(scales, [f"{s:g}" for s in scales])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel(axis)
    ax.set_ylabel("optimal learning rate")
    ax.set_title(title, fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(axis: str, results: Sequence[ScaleResult], path: Path, title: str) -> None:
    """Accuracy vs LR at each scale, each optimum dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4.5))
    colours = plt.cm.viridis(np.linspace(0, 0.9, len(results)))
    for r, colour in zip(results, colours, strict=True):
        curve = r.curve[r.curve["n"] > 0]
        ax.semilogx(curve["lr"], curve["mean"], "o-", ms=3, color=colour, label=f"{axis}={r.scale}")
        ax.axvline(r.lr_opt, color=colour, ls=":", lw=1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title + " (dotted: optimum)", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main_measure(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.transfer --measure",
        description="Sweep one axis at >= 3 scales (stage 1 + stage 2 each), fit lr_opt ~ "
        "scale^alpha, compare with each rule. Other arguments are Hydra overrides (src.train).",
    )
    parser.add_argument("--axis", choices=list(RULES), required=True)
    parser.add_argument("--scales", required=True, help="comma-separated, >= 3, e.g. 32,128,512")
    parser.add_argument(
        "--points", type=int, default=None, help="stage-2 points (default: stage 1's)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    if args.points is not None and args.points < 2:
        raise ConfigError(f"--points: must be >= 2, got {args.points}")
    scales = parse_scales(args.scales)

    from omegaconf import OmegaConf

    from src.study import compose_config, report_dir
    from src.train import check_config

    cfg = compose_config(overrides)
    check_config(cfg)  # bad input: one line, before any trial
    key = axis_key(args.axis, OmegaConf.to_container(cfg.model, resolve=True))
    results: list[ScaleResult] = []
    for i, scale in enumerate(scales, 1):
        print(f"[transfer-check] scale {i}/{len(scales)}: {key}={scale}", flush=True)
        results.append(
            measure_scale(scale, replace_overrides(overrides, {key: scale}), args.points)
        )
        r = results[-1]
        print(
            f"[transfer-check] {key}={scale}: lr_opt={r.lr_opt:.4g} ({r.optimum}; best "
            f"lr={r.best_lr:.4g}, val_acc {r.best_mean:.4f}) study {r.study}",
            flush=True,
        )

    fit = fit_power_law([r.scale for r in results], [r.lr_opt for r in results])
    out = args.out or report_dir(cfg, results[0].study) / f"transfer-check-{args.axis}"
    out.mkdir(parents=True, exist_ok=True)
    experiment = results[0].study.rsplit("-", 1)[0]  # <data>-<model>-<optimizer>
    title = f"{experiment}: {key} in {scales}"
    plot(args.axis, results, fit, out, title)
    preds = predictions(args.axis, results)
    summary = {
        "axis": args.axis,
        "key": key,
        "overrides": list(overrides),
        "scales": [
            {
                "scale": r.scale,
                "study": r.study,
                "lr_opt": r.lr_opt,
                "optimum": r.optimum,
                "best_lr": r.best_lr,
                "best_mean": r.best_mean,
                "predicted": {n: v[i] for n, v in preds.items()},
                "ratio": {n: r.lr_opt / v[i] for n, v in preds.items()},
            }
            for i, r in enumerate(results)
        ],
        "alpha": fit.alpha,
        "alpha_se": fit.alpha_se if math.isfinite(fit.alpha_se) else None,
        "alpha_ci95": list(fit.ci95) if math.isfinite(fit.ci95[0]) else None,
        "alpha_df": fit.df,
        "rule_alphas": {n: rule.exponent for n, rule in RULES[args.axis].items()},
        "verdict": verdict(args.axis, fit),
    }
    (out / "check.yaml").write_text(yaml.safe_dump(summary, sort_keys=False))
    print()
    for line in format_table(args.axis, results, fit):
        print(line)
    print(f"wrote {out}/check.yaml, lr_vs_scale.png, curves.png")
    return 0
