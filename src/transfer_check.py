"""The measured check of a transfer rule: sweep one axis at several scales, fit how the optimum moves.

    python -m src.transfer --measure --axis batch|width|depth|epochs --scales 32,128,512 \\
        [--seeds K] [--points N] [--out DIR] [hydra overrides...]

For each scale (`batch_size=`, `model.width=` / `model.channels=`, `model.depth=` or `epochs=`
added to the overrides) it runs the normal search on K seeds (`--seeds`, default 3: `sweep.seeds=[0,..,K-1]`)
as subprocesses: stage 1 (`python -m src.train -m`) and stage 2 (`python -m src.refine --run`).
Each scale is its own study (the sizes are part of the experiment's identity, hence of the default
study name), and every step is resumable: re-running the command runs only the missing trials.
Then per scale:

- the measured optimum: the curve of stage 1 and stage 2 pooled, averaged over the seeds, its
  interpolated optimum (`lrsweep.stats.fit_optimum`: a parabola in log10(lr) around the best LR)
  when there is one, else the best LR; with its 95% interval, the bootstrap over the seeds
  (`lrsweep.seed_bootstrap`, seeded: the same trials give the same interval);
- for every rule of the axis (`lrsweep.scaling.RULES`), the LR it predicts from the smallest scale's
  optimum, and measured / predicted;
- the fit lr_opt ~ scale^alpha (least squares on log-log): alpha, its standard error and its 95%
  interval (Student t with n - 2 degrees of freedom: from 3 scales, 1 degree of freedom and
  t = 12.7), alpha's 95% bootstrap interval over the seeds, and per rule a verdict against both
  together (`lrsweep.scaling.rule_verdicts` over their hull): consistent or not, and "undecided"
  from fewer than 4 scales.

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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from lrsweep.scaling import RULES, PowerFit, alpha_verdict, fit_power_law, hull, rule_verdicts
from lrsweep.seed_bootstrap import Interval, SeedCurves, alpha_interval, optimum_interval
from lrsweep.stats import aggregate, rank
from src.errors import ConfigError
from src.overrides import override_key, replace_overrides

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
    seeds: SeedCurves | None = None  # the scores per seed, for the bootstrap
    interval: Interval | None = None  # lr_opt's 95% bootstrap interval; None from one seed
    trials: int = 0  # COMPLETE trials of the scale's sweeps
    trial_seconds: float = 0.0  # their training time, summed


@dataclass(frozen=True)
class AlphaIntervals:
    """alpha's intervals: the fit's (Student t), the seeds' (bootstrap) and their hull, against
    which every rule is judged."""

    t: tuple[float, float] | None
    bootstrap: Interval | None

    @property
    def verdict(self) -> tuple[float, float] | None:
        return hull(
            self.t, None if self.bootstrap is None else (self.bootstrap.low, self.bootstrap.high)
        )


def alpha_intervals(fit: PowerFit, results: Sequence[ScaleResult]) -> AlphaIntervals:
    """The fit's 95% interval and the bootstrap's over the seeds (None from one seed)."""
    t = fit.ci95 if math.isfinite(fit.ci95[0]) else None
    curves = [r.seeds for r in results]
    boot = None
    if all(c is not None for c in curves):
        boot = alpha_interval([r.scale for r in results], curves)
    return AlphaIntervals(t, boot)


def axis_key(axis: str, model: dict) -> str:
    """The override key that sets `axis` for this model."""
    from src.sizes import width_key

    if axis in ("batch", "epochs"):
        return "batch_size" if axis == "batch" else "epochs"
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
    """Stage 1 and 2 of one scale (resumable subprocesses), then its optimum and interval."""
    from src.refine import main as refine_main
    from src.study import compose_config, load_frames, metric_direction

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
    return scale_result(scale, name, pd.concat(list(frames.values())), metric_direction(cfg.metric))


def scale_result(scale: int, study: str, trials: pd.DataFrame, direction: str) -> ScaleResult:
    """One scale's optimum from its sweeps' trials (stages pooled), with its bootstrap interval."""
    curves = SeedCurves(trials, direction)
    lr_opt, how = curves.optimum()
    best = rank(curves.aggregate(range(len(curves.seeds))), direction).iloc[0]
    done = trials[trials["state"] == "COMPLETE"]
    return ScaleResult(
        scale=scale,
        study=study,
        lr_opt=lr_opt,
        optimum=how,
        best_lr=float(best["lr"]),
        best_mean=float(best["mean"]),
        curve=aggregate(trials),
        seeds=curves,
        interval=optimum_interval(curves),
        trials=len(done),
        trial_seconds=float(done["seconds"].astype(float).fillna(0.0).sum()),
    )


def interval_text(r: ScaleResult) -> str:
    """lr_opt's 95% interval, `[0.0031, 0.0046]`, or why there is none."""
    if r.interval is None:
        return "none (1 seed)"
    return f"[{r.interval.low:.3g}, {r.interval.high:.3g}]"


def format_table(
    axis: str, results: Sequence[ScaleResult], fit: PowerFit, alphas: AlphaIntervals
) -> list[str]:
    preds = predictions(axis, results)
    head = f"{'scale':>6} {'lr_opt':>9} {'95% interval':>20} {'optimum':>16} {'acc':>6}"
    for name in preds:
        head += f" | {name + ' pred':>17} {'ratio':>6}"
    lines = [head]
    for i, r in enumerate(results):
        row = (
            f"{r.scale:>6} {r.lr_opt:>9.3g} {interval_text(r):>20} {r.optimum:>16} "
            f"{r.best_mean:>6.3f}"
        )
        for values in preds.values():
            row += f" | {values[i]:>17.3g} {r.lr_opt / values[i]:>6.2f}"
        lines.append(row)
    seeds = min(len(r.seeds.seeds) for r in results) if results[0].seeds else 1
    lines.append(
        f"lr_opt: the seeds' mean curve's optimum ({seeds} seed(s) per scale); its 95% interval: "
        "percentile bootstrap over the seeds"
        + (f" ({results[0].interval.resamples} resamples, seeded)" if results[0].interval else "")
    )
    rules = ", ".join(f"{n} {rule.exponent:g}" for n, rule in RULES[axis].items())
    lines.append(
        f"alpha = {alpha_text(fit)} (lr_opt ~ {axis}^alpha, least squares over {fit.n} scales); "
        f"the rules' alphas: {rules}"
    )
    boot = alphas.bootstrap
    lines.append(
        "alpha, bootstrap over the seeds: "
        + (f"{boot.text('.2f')} per scale" if boot else "no interval (one seed)")
    )
    judged = alphas.verdict
    per_rule = rule_verdicts(fit, {n: r.exponent for n, r in RULES[axis].items()}, judged)
    against = f"[{judged[0]:.2f}, {judged[1]:.2f}] (both intervals together)" if judged else "-"
    if len(set(per_rule.values())) == 1:  # e.g. all undecided from 3 scales
        lines.append(f"rules against alpha's {against}: {next(iter(per_rule.values()))}")
    else:
        each = ", ".join(f"{n} {v}" for n, v in per_rule.items())
        lines.append(f"rules against alpha's {against}: {each}")
    lines.append(f"verdict: {verdict(axis, fit, judged)}")
    return lines


def alpha_text(fit: PowerFit) -> str:
    """`0.72, 95% interval [-0.03, 1.47] (Student t, df=1)`, or the bare alpha with 2 scales."""
    low, high = fit.ci95
    if not math.isfinite(low):
        return f"{fit.alpha:.2f} (no interval: df=0)"
    return f"{fit.alpha:.2f}, 95% interval [{low:.2f}, {high:.2f}] (Student t, df={fit.df})"


def verdict(axis: str, fit: PowerFit, interval: tuple[float, float] | None = None) -> str:
    """`lrsweep.scaling.alpha_verdict` against the rules of `axis`."""
    return alpha_verdict(fit, {n: rule.exponent for n, rule in RULES[axis].items()}, interval)


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
    parser.add_argument(
        "--seeds", type=int, default=3, help="seeds per LR (default 3): sweep.seeds=[0,..,K-1]"
    )
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    if args.points is not None and args.points < 2:
        raise ConfigError(f"--points: must be >= 2, got {args.points}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
    if any(override_key(o) == "sweep.seeds" for o in overrides):
        raise ConfigError("give the seeds as --seeds K (seeds 0..K-1), not sweep.seeds=")
    overrides = replace_overrides(overrides, {"sweep.seeds": list(range(args.seeds))})
    scales = parse_scales(args.scales)
    started = time.monotonic()

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
    alphas = alpha_intervals(fit, results)
    out = args.out or report_dir(cfg, results[0].study) / f"transfer-check-{args.axis}"
    out.mkdir(parents=True, exist_ok=True)
    experiment = results[0].study.rsplit("-", 1)[0]  # <data>-<model>-<optimizer>
    title = f"{experiment}: {key} in {scales}, {args.seeds} seed(s)"
    from src.transfer_plots import plot

    plot(args.axis, results, fit, out, title)
    cost = {
        "trials": sum(r.trials for r in results),
        "trial_seconds": round(sum(r.trial_seconds for r in results), 1),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    record = summary(args.axis, key, overrides, results, fit, alphas) | {"cost": cost}
    (out / "check.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    print()
    for line in format_table(args.axis, results, fit, alphas):
        print(line)
    print(
        f"cost: {cost['trials']} trials, {cost['trial_seconds']:.0f} s of training, "
        f"{cost['wall_seconds']:.0f} s wall in this run (trials found done were not re-run)"
    )
    print(f"wrote {out}/check.yaml, lr_vs_scale.png, curves.png")
    return 0


def _pair(interval: tuple[float, float] | Interval | None) -> list[float] | None:
    if interval is None:
        return None
    if isinstance(interval, Interval):
        return [interval.low, interval.high]
    return [float(v) for v in interval]


def summary(
    axis: str,
    key: str,
    overrides: Sequence[str],
    results: Sequence[ScaleResult],
    fit: PowerFit,
    alphas: AlphaIntervals,
) -> dict:
    """check.yaml's content (`src.transfer`'s measured rule reads alpha and its intervals)."""
    preds = predictions(axis, results)
    rule_alphas = {n: rule.exponent for n, rule in RULES[axis].items()}
    boot = alphas.bootstrap
    return {
        "axis": axis,
        "key": key,
        "overrides": list(overrides),
        "seeds": min(len(r.seeds.seeds) for r in results) if results[0].seeds else 1,
        "scales": [
            {
                "scale": r.scale,
                "study": r.study,
                "lr_opt": r.lr_opt,
                "lr_opt_ci95": _pair(r.interval),
                "optimum": r.optimum,
                "best_lr": r.best_lr,
                "best_mean": r.best_mean,
                "predicted": {n: v[i] for n, v in preds.items()},
                "ratio": {n: r.lr_opt / v[i] for n, v in preds.items()},
            }
            for i, r in enumerate(results)
        ],
        "alpha": fit.alpha,
        "log10_prefactor": fit.log10_prefactor,
        "alpha_se": fit.alpha_se if math.isfinite(fit.alpha_se) else None,
        "alpha_ci95": _pair(alphas.t),
        "alpha_df": fit.df,
        "alpha_bootstrap_ci95": _pair(boot),
        "bootstrap": None
        if boot is None
        else {"method": "percentile", "resamples": boot.resamples, "over": "seeds"},
        "alpha_interval": _pair(alphas.verdict),
        "rule_alphas": rule_alphas,
        "rule_verdicts": rule_verdicts(fit, rule_alphas, alphas.verdict),
        "verdict": verdict(axis, fit, alphas.verdict),
    }
