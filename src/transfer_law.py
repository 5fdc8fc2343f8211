"""`python -m src.transfer --law`: the LR law over several axes at once, from a small design.

    python -m src.transfer --law --design batch_size=32,model.width=64 \\
        --design batch_size=128,model.width=64 --design batch_size=32,model.width=256 \\
        --design batch_size=128,model.width=256 --predict batch_size=512,model.width=1024 \\
        [--seeds 3] [--points N] [overrides...]

Each design point is one experiment (its overrides on top of the others): stage 1 and stage 2 on
`--seeds` seeds (resumable: a point found done is not trained again), its optimum as the measured
check takes it (`src.transfer_check.measure_scale`). The law lr_opt = c * prod(size^a) is fitted
over the axes the design varies (`lrsweep.law`): each exponent with its 95% Student t interval
(n - k - 1 degrees of freedom), each design point's leave-one-out ratio (the law fitted to the
other points, predicted / measured), and with `--predict`, the LR at a configuration outside the
design with its 95% prediction interval, `target_lr_low=`, `target_lr_high=`, and last
`target_lr=`. Writes `law.yaml` into the first point's report folder (or `--out`).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from lrsweep.law import LawError, LawFit, fit_law
from src.errors import ConfigError
from src.overrides import format_value, override_key, replace_overrides


def parse_point(text: str) -> dict[str, float]:
    """`batch_size=32,model.width=64` as {key: size}; ConfigError for anything else."""
    point = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            size = float(value)
        except ValueError:
            size = math.nan
        if not sep or not key.strip() or not (math.isfinite(size) and size > 0):
            raise ConfigError(
                f"--design/--predict {text!r}: expected key=size pairs joined by commas, each "
                "size a number > 0, e.g. batch_size=32,model.width=64"
            )
        point[key.strip()] = size
    return point


def _as_override(size: float) -> object:
    return int(size) if float(size).is_integer() else size


def law_lines(fit: LawFit, design: Sequence[dict], optima: Sequence[float]) -> list[str]:
    lines = [f"law: lr_opt = {10**fit.log10_c:.4g} * " + " * ".join(
        f"{e.axis}^{e.value:+.3f}" for e in fit.exponents
    ) + f"   ({fit.n} design points, df = {fit.df})"]  # fmt: skip
    for e in fit.exponents:
        ci = "no interval (df = 0)" if fit.df < 1 else f"[{e.ci95[0]:+.3f}, {e.ci95[1]:+.3f}]"
        lines.append(f"  exponent of {e.axis:<14} {e.value:+.3f}  95% interval {ci}")
    lines.append(
        "design point                               lr_opt   leave-one-out predicted/measured"
    )
    for point, lr, ratio in zip(design, optima, fit.loo_ratios, strict=True):
        where = ",".join(f"{k}={format_value(_as_override(v))}" for k, v in point.items())
        loo = "n/a" if not math.isfinite(ratio) else f"{ratio:.2f}x"
        lines.append(f"  {where:<40} {lr:9.4g}   {loo}")
    return lines


def main_law(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.transfer --law",
        description="Fit lr_opt = c * prod(size^a) over a design of proxy runs (stage 1 + stage 2 "
        "each) and predict a larger configuration. Other arguments are Hydra overrides.",
    )
    parser.add_argument("--design", action="append", required=True, help="key=size,key=size")
    parser.add_argument(
        "--predict", default=None, help="key=size,...: the configuration to predict"
    )
    parser.add_argument("--points", type=int, default=None, help="stage-2 points")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per LR (default 3)")
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args(argv)
    if args.seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
    if any(override_key(o) == "sweep.seeds" for o in overrides):
        raise ConfigError("give the seeds as --seeds K (seeds 0..K-1), not sweep.seeds=")
    design = [parse_point(text) for text in args.design]
    target = parse_point(args.predict) if args.predict else None
    try:  # the design can determine the law, with intervals: checked before any training
        shape = fit_law(design, [1.0] * len(design))
    except LawError as err:
        raise ConfigError(str(err)) from None
    if shape.df < 1:
        raise ConfigError(
            f"{len(design)} design points fit {len(shape.axes)} exponent(s) and a constant "
            f"exactly, with no interval: give >= {len(shape.axes) + 2}"
        )
    if target is not None and set(target) != set(design[0]):
        raise ConfigError(f"--predict names {sorted(target)}, the design {sorted(design[0])}")
    overrides = replace_overrides(overrides, {"sweep.seeds": list(range(args.seeds))})

    from src.study import compose_config, report_dir
    from src.train import check_config
    from src.transfer_check import measure_scale

    runs = [
        replace_overrides(overrides, {k: _as_override(v) for k, v in p.items()}) for p in design
    ]
    for run in runs:
        check_config(compose_config(run))  # bad input: one line, before any trial
    started = time.monotonic()
    results = []
    for i, (point, run) in enumerate(zip(design, runs, strict=True), 1):
        print(f"[transfer-law] design point {i}/{len(design)}: {point}", flush=True)
        results.append(measure_scale(i, run, args.points))
    optima = [r.lr_opt for r in results]
    fit = fit_law(design, optima)
    print()
    for line in law_lines(fit, design, optima):
        print(line)
    record = {
        "design": [dict(p) for p in design],
        "studies": [r.study for r in results],
        "lr_opt": optima,
        "law": {
            "c": 10**fit.log10_c,
            "exponents": {e.axis: e.value for e in fit.exponents},
            "ci95": {e.axis: list(e.ci95) if fit.df > 0 else None for e in fit.exponents},
            "df": fit.df,
            "residual_sd_log10": fit.residual_sd if fit.df > 0 else None,
        },
        "leave_one_out_ratio": [r if math.isfinite(r) else None for r in fit.loo_ratios],
        "cost": {
            "trials": sum(r.trials for r in results),
            "trial_seconds": round(sum(r.trial_seconds for r in results), 1),
            "wall_seconds": round(time.monotonic() - started, 1),
        },
    }
    if target is not None:
        lr, low, high = fit.predict(target)
        outside = fit.outside(target, design)
        record["prediction"] = {"at": target, "lr": lr, "ci95": [low, high], "outside": outside}
        if outside:
            print(f"note: {target} lies outside the design on {outside}: an extrapolation")
    out = args.out or report_dir(compose_config(runs[0]), results[0].study) / "transfer-law"
    out.mkdir(parents=True, exist_ok=True)
    (out / "law.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    print(f"wrote {out}/law.yaml")
    if target is not None:
        if math.isfinite(low):
            print(f"target_lr_low={format_value(low)}")
            print(f"target_lr_high={format_value(high)}")
        print(f"target_lr={format_value(lr)}")
    return 0
