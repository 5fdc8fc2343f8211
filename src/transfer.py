"""Transfer: carry the LR found at a small batch size, width and depth to the real run's sizes.

    python -m src.transfer base.lr=0.05 target.batch_size=512 target.width=2048 [overrides...]
    python -m src.transfer base.study=<study> target.batch_size=512 [overrides...]
    python -m src.transfer base.lr=0.01 target.width=2048 rules.width=measured [overrides...]
    python -m src.transfer --measure --axis batch --scales 32,64,128,256 [--seeds 3] [overrides...]
    python -m src.transfer --law --design batch_size=32,model.width=64 --design ... [--predict ...]

The config is `conf/transfer.yaml`: everything of `conf/train.yaml` (the same groups: `data`,
`model`, `optimizer`, ...) plus `base.*`, `target.*` and `rules.*`.

- The base LR: `base.lr`, or `base.study`: the `lr` of the study's report (`best.yaml` under
  `<paths.reports_dir>/<study>`) when it exists, else the LR `src.report` would choose from the study's
  stages. With a study, the base sizes default to those the study was swept with (its recorded
  config), else to the config's `batch_size`, `model.width` (`model.channels`), `model.depth`; each
  target size defaults to its base.
- The rules (`lrsweep.scaling`, docs/transfer.md): `rules.batch` / `rules.width` / `rules.depth` /
  `rules.epochs` (the training length), by default following the optimizer family (SGD or Adam)
  and the parametrisation (muP when the model has a `base_width` and the optimizer is a `mup.Mu*`);
  or a measured check as the rule, `rules.<axis>=measured` or a `check.yaml` path
  (`src.measured_rule`): its alpha, and from alpha's interval `target_lr_low=` and
  `target_lr_high=` printed just before the last line, with a warning when the base or the
  target lies outside the measured scales.
- Output: one line per factor (rule, factor, source), the rule-of-thumb caveat, the overrides and
  the command to train the target (warmup included: the base's warmup epochs, at least 1 when the
  LR grows), and as the last line exactly `target_lr=<value>`. With a study, also
  `<paths.reports_dir>/<study>/transfer.yaml`.
- `--measure`: the measured check (`src.transfer_check`).
- `--law`: the law over several axes from a small design (`src.transfer_law`).

Bad input (a size <= 0, an unknown rule, a missing study, a width or depth rule on a model without
that size) is one line `error: ...` and exit status 2.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from lrsweep.scaling import (
    AXES,
    CAVEAT,
    Factor,
    RuleError,
    default_rules,
    measured_caveat,
    optimizer_family,
    parametrisation,
    transfer,
)
from src.checks import check_lr
from src.cli import run_cli
from src.errors import ConfigError
from src.measured_rule import MEASURED, MeasuredRule, find_check, is_measured, load_check
from src.overrides import format_value, override_key, replace_overrides
from src.sizes import WIDTH_KEYS, model_sizes, width_key
from src.study import compose_config, report_dir

OWN_PREFIXES = ("base.", "target.", "rules.")  # transfer's own keys: never passed on to training


@dataclass(frozen=True)
class Base:
    lr: float
    source: str  # where the LR comes from
    study_config: dict = field(default_factory=dict)  # the study's recorded config, {} if none
    overrides: list[str] | None = None  # best.yaml's training overrides, when there is one


def base_from_study(name: str, storage_url: str, reports: Path) -> Base:
    """The study's LR: its report's best.yaml (in the folder `reports`) when it exists, else
    `lrsweep.choice.choose`."""
    from lrsweep.choice import choose
    from lrsweep.stats import aggregate
    from src.study import check_name, load_frames, open_study

    check_name(name)  # it names the report folder read and written: one safe folder name
    try:
        study = open_study(name, storage_url)
    except ConfigError as err:  # a missing study: the message lists the studies there are
        raise ConfigError(str(err).replace("study.name:", "base.study:", 1)) from None
    config = dict(study.user_attrs.get("config") or {})
    best_path = reports / "best.yaml"
    if best_path.exists():
        best = yaml.safe_load(best_path.read_text()) or {}
        if not isinstance(best.get("lr"), int | float):
            raise ConfigError(f"base.study: {best_path} has no numeric lr; re-run src.report")
        return Base(float(best["lr"]), str(best_path), config, list(best.get("overrides") or []))
    choice = choose({s: aggregate(f) for s, f in load_frames(name, storage_url).items()})
    source = f"study '{name}' ({choice.stage}: mean {choice.mean:.4f} over {choice.n} run(s))"
    return Base(choice.lr, source, config)


def _size(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key}={value!r} is invalid: an integer >= 1")
    return value


@dataclass(frozen=True)
class Plan:
    base: Base
    base_sizes: dict[str, int | None]
    target_sizes: dict[str, int | None]
    rules: dict[str, str]
    family: str | None
    parametrisation: str
    target_lr: float
    factors: list[Factor]
    overrides: list[str]  # to train the target with src.train
    notes: list[str]
    target_low: float | None = None  # the target LR's interval from the measured rules' alphas
    target_high: float | None = None
    warnings: tuple[str, ...] = ()  # a measured rule applied outside what its fit supports


def plan(cfg: DictConfig, overrides: Sequence[str]) -> Plan:
    """Everything `python -m src.transfer` prints, from the composed config and the overrides."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    notes: list[str] = []

    if (cfg.base.lr is None) == (cfg.base.study is None):
        raise ConfigError(
            "give the base LR as exactly one of base.lr=<number> or base.study=<name>"
        )
    if cfg.base.study is not None:
        base = base_from_study(
            str(cfg.base.study),
            str(cfg.study.storage),
            report_dir(cfg, str(cfg.base.study)),
        )
        swept = base.study_config
        for group, mine in (("model", model), ("optimizer", optimizer)):
            theirs = (swept.get(group) or {}).get("_target_")
            if theirs and theirs != mine.get("_target_"):
                raise ConfigError(
                    f"study '{cfg.base.study}' was swept with {group} {theirs}, this config has "
                    f"{mine.get('_target_')}: pass the study's {group} group"
                )
    else:
        lr = cfg.base.lr
        check_lr(lr, "base.lr")  # src.train's rule: an LR it would refuse is refused here
        base = Base(float(lr), "base.lr")
        swept = {}

    swept_model = swept.get("model") or {}
    defaults = {
        "batch": swept.get("batch_size", cfg.batch_size),
        **model_sizes(model),
        "epochs": swept.get("epochs", cfg.epochs),
    }
    for axis, value in model_sizes(swept_model).items():
        if value is not None:
            defaults[axis] = value
    key_of = {"batch": "batch_size", "width": "width", "depth": "depth", "epochs": "epochs"}
    base_sizes: dict[str, int | None] = {}
    target_sizes: dict[str, int | None] = {}
    for axis in AXES:
        b, t = cfg.base[key_of[axis]], cfg.target[key_of[axis]]
        has_size = defaults[axis] is not None
        if not has_size and (b is not None or t is not None or cfg.rules[axis] is not None):
            raise ConfigError(
                f"model {model.get('_target_')} has no {axis} "
                f"({' or '.join('model.' + k for k in (WIDTH_KEYS if axis == 'width' else ('depth',)))}"
                f"): drop base.{key_of[axis]}, target.{key_of[axis]} and rules.{axis}"
            )
        if not has_size:
            base_sizes[axis] = target_sizes[axis] = None
            continue
        base_sizes[axis] = _size(b if b is not None else defaults[axis], f"base.{key_of[axis]}")
        target_sizes[axis] = _size(
            t if t is not None else base_sizes[axis], f"target.{key_of[axis]}"
        )

    param = parametrisation(model, optimizer)
    family = optimizer_family(str(optimizer.get("_target_", "")))
    rules: dict[str, str] = {}
    measured: dict[str, MeasuredRule] = {}
    for axis in AXES:
        if cfg.rules[axis] is not None and is_measured(str(cfg.rules[axis])):
            measured[axis] = measured_rule(cfg, overrides, axis)
            rules[axis] = "measured"
        elif cfg.rules[axis] is not None:
            rules[axis] = str(cfg.rules[axis])
        elif base_sizes[axis] is None:
            rules[axis] = "none"
        elif family is None:
            raise ConfigError(
                f"cannot tell the optimizer family (SGD or Adam) of {optimizer.get('_target_')}: "
                f"set rules.{axis} (and the other rules) explicitly"
            )
        else:
            rules[axis] = default_rules(family, param)[axis]
    if param == "mup" and rules["width"] in ("inverse", "inverse_sqrt"):
        notes.append(
            f"rules.width={rules['width']} on a muP model: muP already scales the LR per layer"
        )
    named = {axis: "none" if axis in measured else rule for axis, rule in rules.items()}
    try:
        target_lr, factors = transfer(base.lr, base_sizes, target_sizes, named)
    except RuleError as err:
        raise ConfigError(str(err)) from None
    target_lr, factors, low, high, warnings = apply_measured(base.lr, factors, measured)
    for rule in measured.values():
        notes.append(f"rules.{rule.axis}: measured with {' '.join(rule.overrides)}")
    if measured:
        notes.append(
            "target_lr_low, target_lr_high: the measured alphas' 95% intervals carried to the "
            "target; the base LR's own uncertainty is not in them"
        )
    try:  # the printed command must be one src.train accepts
        check_lr(target_lr)
    except ConfigError:
        raise ConfigError(
            f"the target LR {target_lr!r} (base.lr x the factors) is not one src.train accepts: "
            "a number > 0 and a finite float32; check base.lr and the sizes"
        ) from None

    warmup = int(swept.get("warmup_epochs", cfg.warmup_epochs))
    epochs = int(target_sizes["epochs"])
    if target_lr > base.lr and warmup == 0 and epochs > 1:
        warmup = 1
        notes.append("warmup_epochs=1 added: the LR grows, and large-batch rules assume warmup")
    values: dict[str, object] = {"batch_size": target_sizes["batch"]}
    wkey = width_key(model)
    if wkey and target_sizes["width"] is not None:
        values[f"model.{wkey}"] = target_sizes["width"]
    if target_sizes["depth"] is not None:
        values["model.depth"] = target_sizes["depth"]
    if target_sizes["epochs"] != base_sizes["epochs"]:
        values["epochs"] = target_sizes["epochs"]
    values["warmup_epochs"] = warmup
    values["lr"] = target_lr
    start = base.overrides if base.overrides is not None else list(overrides)
    kept = [o for o in start if not override_key(o).startswith(OWN_PREFIXES)]
    from src.overrides import train_overrides

    train = replace_overrides(train_overrides(kept, target_lr), values)
    return Plan(
        base,
        base_sizes,
        target_sizes,
        rules,
        family,
        param,
        target_lr,
        factors,
        train,
        notes,
        low,
        high,
        tuple(warnings),
    )


def measured_rule(cfg: DictConfig, overrides: Sequence[str], axis: str) -> MeasuredRule:
    """The check `rules.<axis>` names: `measured` (this experiment's, under the reports folder)
    or a path."""
    value = str(cfg.rules[axis])
    if value != MEASURED:
        return load_check(Path(value), axis)
    train = [o for o in overrides if not override_key(o).startswith(OWN_PREFIXES)]
    return load_check(find_check(Path(cfg.paths.reports_dir), axis, train), axis)


def apply_measured(
    lr: float, factors: list[Factor], measured: dict[str, MeasuredRule]
) -> tuple[float, list[Factor], float | None, float | None, list[str]]:
    """(target LR, factors, its low and high ends, warnings) with each measured axis's factor
    (`(target / base)^alpha`) in place of its placeholder; the ends are None without a measured
    rule or when a check has no interval."""
    if not measured:
        return lr * math.prod(f.factor for f in factors), factors, None, None, []
    out, low, high, warnings = [], lr, lr, []
    for f in factors:
        rule = measured.get(f.axis)
        if rule is None:
            out.append(f)
            low, high = low * f.factor, high * f.factor
            continue
        point, lo, hi = rule.factors(f.base, f.target)
        out.append(Factor(f.axis, "measured", f.base, f.target, point, rule.source()))
        low, high = low * lo, high * hi
        if (warning := rule.warning(f.base, f.target)) is not None:
            warnings.append(warning)
    if not math.isfinite(low):  # a check without an interval: no interval to print
        low = high = None
        warnings.append("no target_lr_low/high: a measured check without an interval of alpha")
    return lr * math.prod(f.factor for f in out), out, low, high, warnings


def format_plan(p: Plan) -> list[str]:
    sizes = " ".join(f"{a}={v}" for a, v in p.base_sizes.items() if v is not None)
    lines = [
        f"base: lr={p.base.lr!r} from {p.base.source}; {sizes}; optimizer family "
        f"{p.family or 'unknown'}, {p.parametrisation} parametrisation"
    ]
    for f in p.factors:
        lines.append(
            f"{f.axis}: rule {f.rule}, x{f.factor:.6g} ({f.base:g} -> {f.target:g}) -- {f.source}"
        )
        caveat = _caveat(p, f)
        if caveat is not None:
            lines.append(f"  caveat: {caveat}")
    lines += [f"warning: {w}" for w in p.warnings]
    lines += [f"note: {n}" for n in p.notes]
    lines.append(f"note: {CAVEAT}")
    lines.append("overrides: " + " ".join(p.overrides))
    lines.append("train the target: python -m src.train " + " ".join(p.overrides))
    return lines


def _caveat(p: Plan, f: Factor) -> str | None:
    """The measured caveat of a factor whose size changes (`lrsweep.scaling.measured_caveat`):
    a rule of factor 1 (`mup`) can miss too."""
    if f.base == f.target:
        return None
    return measured_caveat(f.axis, f.rule, p.family, p.parametrisation)


def transfer_summary(p: Plan) -> dict:
    """transfer.yaml's content."""
    return {
        "base": {"lr": p.base.lr, "source": p.base.source, **p.base_sizes},
        "target": dict(p.target_sizes),
        "parametrisation": p.parametrisation,
        "optimizer_family": p.family,
        "factors": [
            {"axis": f.axis, "rule": f.rule, "factor": f.factor, "source": f.source}
            | ({"caveat": caveat} if (caveat := _caveat(p, f)) else {})
            for f in p.factors
        ],
        "target_lr": p.target_lr,
        **(
            {"target_lr_low": p.target_low, "target_lr_high": p.target_high}
            if p.target_low is not None
            else {}
        ),
        "warnings": list(p.warnings),
        "overrides": p.overrides,
        "command": "python -m src.train " + " ".join(p.overrides),
        "caveat": CAVEAT,
    }


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--law" in argv:
        from src.transfer_law import main_law

        return main_law([a for a in argv if a != "--law"])
    if "--measure" in argv:
        from src.transfer_check import main_measure

        return main_measure([a for a in argv if a != "--measure"])
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0

    cfg = compose_config(argv, config_name="transfer")
    p = plan(cfg, argv)
    for line in format_plan(p):
        print(line)
    if cfg.base.study is not None:
        out = report_dir(cfg, str(cfg.base.study)) / "transfer.yaml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(yaml.safe_dump(transfer_summary(p), sort_keys=False))
        print(f"wrote {out}")
    if p.target_low is not None:
        print(f"target_lr_low={format_value(p.target_low)}")
        print(f"target_lr_high={format_value(p.target_high)}")
    print(f"target_lr={format_value(p.target_lr)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
