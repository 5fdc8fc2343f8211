"""LR scaling rules: how the learning rate found at one batch size, width and depth moves to another.

Pure arithmetic, no I/O. Every rule is `lr_target = lr_base * (target / base) ** exponent` on one
axis, and the factors of the three axes multiply. These are rules of thumb: each holds for the model
family and training regime of its source, and its validity depends on the model, the optimizer and
the training length. `python -m src.transfer --measure` checks one on your own setting.

| axis  | rule           | exponent | source                                                           |
|-------|----------------|----------|------------------------------------------------------------------|
| batch | `linear`       | 1        | Goyal et al. 2017 (SGD with warmup)                              |
| batch | `sqrt`         | 1/2      | Malladi et al. 2022 (Adam family, SDE scaling rule)              |
| width | `mup`          | 0        | Yang et al. 2022 (muP: the optimum does not move with width)     |
| width | `inverse_sqrt` | -1/2     | Haas et al. 2025 (standard param., Adam, cross-entropy)          |
| width | `inverse`      | -1       | Yang et al. 2022 (standard param., Adam: hidden LR ~ 1/width)    |
| depth | `inverse_sqrt` | -1/2     | Yang et al. 2023; Bordelon et al. 2023 (depth-muP, residual)     |
| any   | `none`         | 0        | no change (the only named rule of `epochs`, training length)     |

Defaults (`default_rules`): batch follows the optimizer family (SGD: `linear`, Adam family:
`sqrt`); width follows the parametrisation (muP: `mup`; standard: `inverse_sqrt` under the Adam
family, as Haas et al. 2025 found under cross-entropy and docs/transfer.md measured, `none` under
SGD); depth follows the optimizer family (Adam family: `inverse_sqrt`, as depth-muP
scales Adam's LR by 1/sqrt(depth) with 1/sqrt(depth) branch multipliers; SGD: `none`, as depth-muP
keeps SGD's LR constant).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lrsweep.grid import SweepConfigError

AXES = ("batch", "width", "depth", "epochs")
FAMILIES = ("sgd", "adam")
PARAMETRISATIONS = ("standard", "mup")


@dataclass(frozen=True)
class Rule:
    name: str
    exponent: float  # lr ~ scale ** exponent
    source: str


NONE_SOURCE = "no change"
RULES: dict[str, dict[str, Rule]] = {
    "batch": {
        "linear": Rule("linear", 1.0, "Goyal et al. 2017, linear scaling with warmup (SGD)"),
        "sqrt": Rule("sqrt", 0.5, "Malladi et al. 2022, square-root scaling (Adam family)"),
        "none": Rule("none", 0.0, NONE_SOURCE),
    },
    "width": {
        "mup": Rule("mup", 0.0, "Yang et al. 2022, muP: the optimal LR does not move with width"),
        "inverse_sqrt": Rule(
            "inverse_sqrt",
            -0.5,
            "Haas et al. 2025 (arXiv 2505.22491), standard parametrisation under cross-entropy: "
            "LR ~ width^-1/2 (Adam)",
        ),
        "inverse": Rule(
            "inverse",
            -1.0,
            "Yang et al. 2022, standard parametrisation: hidden LR ~ 1/width (Adam)",
        ),
        "none": Rule("none", 0.0, NONE_SOURCE),
    },
    "depth": {
        "inverse_sqrt": Rule(
            "inverse_sqrt",
            -0.5,
            "Yang et al. 2023, Bordelon et al. 2023, depth-muP: residual branches x 1/sqrt(depth)",
        ),
        "none": Rule("none", 0.0, NONE_SOURCE),
    },
    # Training length: no published rule we trust for it; `measured` (a check of your own) or none.
    "epochs": {"none": Rule("none", 0.0, NONE_SOURCE)},
}

CAVEAT = (
    "these are rules of thumb: whether they hold depends on the model family, the optimizer and "
    "the training length; check with `python -m src.transfer --measure`"
)


def parametrisation(model: Mapping[str, Any], optimizer: Mapping[str, Any]) -> str:
    """ "mup" for a muP model (it has a `base_width`) with a muP optimizer (`mup.Mu*`), "standard"
    for neither; a mixture is a SweepConfigError (muP needs both)."""
    mup_model = "base_width" in model
    mup_optimizer = str(optimizer.get("_target_", "")).startswith("mup.")
    if mup_model != mup_optimizer:
        raise SweepConfigError(
            f"model {model.get('_target_')} with optimizer {optimizer.get('_target_')}: muP needs "
            "a muP model (model=mlp_mup|cnn_mup) with a muP optimizer (optimizer=musgd|muadam|"
            "muadamw), or neither"
        )
    return "mup" if mup_model else "standard"


class RuleError(ValueError):
    """An impossible input: an unknown rule or axis, a size <= 0."""


def rule(axis: str, name: str) -> Rule:
    if axis not in RULES:
        raise RuleError(f"unknown axis {axis!r}: one of {list(RULES)}")
    if name not in RULES[axis]:
        raise RuleError(f"rules.{axis}={name!r} is unknown: one of {list(RULES[axis])}")
    return RULES[axis][name]


def optimizer_family(target: str) -> str | None:
    """'sgd' or 'adam' from an optimizer `_target_` (torch.optim.SGD, mup.MuAdamW, ...); None when
    it is neither."""
    name = target.rsplit(".", 1)[-1].lower()
    if "sgd" in name:
        return "sgd"
    if "adam" in name:
        return "adam"
    return None


def default_rules(family: str, parametrisation: str) -> dict[str, str]:
    """The rule per axis when the user names none (see the module docstring)."""
    if family not in FAMILIES:
        raise RuleError(f"optimizer family {family!r}: one of {list(FAMILIES)}")
    if parametrisation not in PARAMETRISATIONS:
        raise RuleError(f"parametrisation {parametrisation!r}: one of {list(PARAMETRISATIONS)}")
    adam = family == "adam"
    return {
        "batch": "sqrt" if adam else "linear",
        "width": "mup" if parametrisation == "mup" else ("inverse_sqrt" if adam else "none"),
        "depth": "inverse_sqrt" if adam else "none",
        "epochs": "none",
    }


# Rules our own measurements (docs/transfer.md, "Measurements on mnist1d") found wrong, the
# default of their setting or the rule a user may still choose: (axis, rule, optimizer family,
# parametrisation) -> what was measured. Printed beside the factor.
MEASURED_MISSES = {
    ("width", "inverse", "adam", "standard"): (
        "measured on mnist1d (MLP, 2 hidden layers, Adam, width 64 -> 2048): the optimum moved as "
        "width^-0.39, 95% interval [-0.53, -0.25] (Student t, df=3), not width^-1 (x0.28 where "
        'this rule says x1/32); see docs/transfer.md, "Measurements on mnist1d" (b)'
    ),
    ("width", "inverse_sqrt", "adam", "standard"): (
        "measured on mnist1d (MLP, 2 hidden layers, Adam, width 64 -> 2048, 3 seeds): the optimum "
        "moved as width^-0.38, 95% interval [-0.45, -0.30] (fit and bootstrap over the seeds), a "
        "little slower than width^-1/2: from width 64 this rule predicts x0.67 of the measured "
        "optimum at 2048 (inverse: x0.12); on digits (same MLP, batch 32) it moved as width^-1.05 "
        "[-1.70, -0.40], and this rule was x6.4 the measured optimum at 2048; measure yours "
        '(--measure); see docs/transfer.md, "Measurements with error bars" (c) and (h)'
    ),
    ("epochs", "none", "sgd", "standard"): (
        "measured on mnist1d (MLP 128x2, SGD, 5 -> 50 epochs, 3 seeds): the optimum moved as "
        "epochs^-0.28, 95% interval [-0.43, -0.08] (fit and bootstrap over the seeds), x0.54 at "
        "10x the epochs, with a cliff above it; see docs/transfer.md, "
        '"Measurements with error bars" (e)'
    ),
    ("depth", "inverse_sqrt", "adam", "standard"): (
        "measured on mnist1d (residual MLP with 1/sqrt(depth) branches, model=resmlp, Adam, depth "
        "2 -> 16, 3 seeds): the optimum moved as depth^-0.32, 95% interval [-0.44, -0.20] (fit "
        "and bootstrap over the seeds), x0.51 at 8x the depth where this rule says x0.35; see "
        'docs/transfer.md, "Measurements with error bars" (f)'
    ),
    ("width", "mup", "adam", "mup"): (
        "measured on mnist1d (MLP, 2 hidden layers, MuAdam, width 64 -> 2048): the optimum moved "
        "up as width^0.24, 95% interval [0.16, 0.32] (Student t, df=3), x2.35 over 32x width, "
        'where this rule says x1; see docs/transfer.md, "Measurements on mnist1d" (b)'
    ),
}


def measured_caveat(axis: str, name: str, family: str | None, parametrisation: str) -> str | None:
    """What our measurements say against rule `name` on `axis` for this optimizer family and
    parametrisation (`MEASURED_MISSES`), None when they did not find it wrong."""
    return MEASURED_MISSES.get((axis, name, family, parametrisation))


def _check_size(what: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise RuleError(f"{what}={value!r} is invalid: a number > 0")


def factor(axis: str, name: str, base: float, target: float) -> float:
    """The LR multiplier of rule `name` on `axis` from size `base` to size `target`."""
    r = rule(axis, name)
    _check_size(f"base.{axis}", base)
    _check_size(f"target.{axis}", target)
    return float((target / base) ** r.exponent)


@dataclass(frozen=True)
class Factor:
    axis: str
    rule: str
    base: float
    target: float
    factor: float
    source: str


def transfer(
    lr: float,
    base: Mapping[str, float | None],
    target: Mapping[str, float | None],
    rules: Mapping[str, str],
) -> tuple[float, list[Factor]]:
    """(target LR, one Factor per axis) for `lr` found at sizes `base`; an axis whose base or
    target is None (the model has no such size) gets no factor."""
    _check_size("base.lr", lr)
    factors = []
    for axis in AXES:
        b, t = base.get(axis), target.get(axis)
        if b is None or t is None:
            continue
        name = rules[axis]
        factors.append(Factor(axis, name, b, t, factor(axis, name, b, t), rule(axis, name).source))
    return lr * math.prod(f.factor for f in factors), factors


# ---------------------------------------------------------------- the measured check


MIN_SCALES_FOR_VERDICT = 4  # a line through 3 points has 1 degree of freedom: t(0.975, 1) = 12.7


@dataclass(frozen=True)
class PowerFit:
    alpha: float  # lr_opt ~ scale ** alpha
    alpha_se: float  # standard error of alpha (nan with 2 points: no residual degrees of freedom)
    log10_prefactor: float
    n: int

    @property
    def df(self) -> int:
        """The residual degrees of freedom of the line: n - 2."""
        return self.n - 2

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95% interval of alpha: alpha ± t(0.975, n - 2) * se (Student t; nan with 2
        points)."""
        if self.df < 1 or not math.isfinite(self.alpha_se):
            return (math.nan, math.nan)
        from scipy import stats

        half = float(stats.t.ppf(0.975, self.df)) * self.alpha_se
        return (self.alpha - half, self.alpha + half)


def alpha_verdict(
    fit: PowerFit,
    rule_alphas: Mapping[str, float],
    interval: tuple[float, float] | None = None,
) -> str:
    """Which rules the measured alpha supports: the rules whose exponent lies in the 95% interval
    (`interval`, default the fit's Student t interval). "undecided" from fewer than
    `MIN_SCALES_FOR_VERDICT` scales, and when the interval holds rules of more than one exponent
    (rules of equal exponents predict the same and count as one)."""
    if fit.n < MIN_SCALES_FOR_VERDICT:
        return f"undecided: need >= {MIN_SCALES_FOR_VERDICT} scales"
    low, high = fit.ci95 if interval is None else interval
    inside = {name: e for name, e in rule_alphas.items() if low <= e <= high}
    names = " = ".join(inside)
    if not inside:
        return "no rule: the interval holds none of the rules' alphas"
    if len(set(inside.values())) > 1:
        return f"undecided: the interval holds {', '.join(inside)}"
    return f"consistent with {names} (alpha {next(iter(inside.values())):g})"


def rule_verdicts(
    fit: PowerFit, rule_alphas: Mapping[str, float], interval: tuple[float, float] | None
) -> dict[str, str]:
    """Per rule: "consistent" when its exponent lies in alpha's 95% `interval`, "not consistent"
    when outside, "undecided" from fewer than `MIN_SCALES_FOR_VERDICT` scales or without an
    interval: no verdict the data cannot carry."""
    if fit.n < MIN_SCALES_FOR_VERDICT:
        return {n: f"undecided: need >= {MIN_SCALES_FOR_VERDICT} scales" for n in rule_alphas}
    if interval is None or not all(math.isfinite(v) for v in interval):
        return {n: "undecided: no interval" for n in rule_alphas}
    low, high = interval
    return {
        n: "consistent" if low <= e <= high else "not consistent" for n, e in rule_alphas.items()
    }


def hull(*intervals: tuple[float, float] | None) -> tuple[float, float] | None:
    """The smallest interval holding every given one (None ones and NaN ends left out): a rule is
    judged against the seeds' noise and the fit's scatter together."""
    ends = [i for i in intervals if i is not None and all(math.isfinite(v) for v in i)]
    if not ends:
        return None
    return (min(i[0] for i in ends), max(i[1] for i in ends))


def fit_power_law(scales: Sequence[float], lrs: Sequence[float]) -> PowerFit:
    """Least squares of log(lr) on log(scale): the slope alpha and its standard error
    sqrt(SSR / (n - 2) / sum((x - mean x)^2))."""
    if len(scales) != len(lrs) or len(scales) < 2:
        raise RuleError(f"a power-law fit needs >= 2 (scale, lr) pairs, got {len(scales)}")
    for s, v in zip(scales, lrs, strict=True):
        _check_size("scale", s)
        _check_size("lr", v)
    x = [math.log10(s) for s in scales]
    y = [math.log10(v) for v in lrs]
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxx = sum((xi - mx) ** 2 for xi in x)
    if sxx == 0:
        raise RuleError("a power-law fit needs at least two different scales")
    alpha = sum((xi - mx) * (yi - my) for xi, yi in zip(x, y, strict=True)) / sxx
    intercept = my - alpha * mx
    ssr = sum((yi - intercept - alpha * xi) ** 2 for xi, yi in zip(x, y, strict=True))
    se = math.sqrt(ssr / (n - 2) / sxx) if n > 2 else math.nan
    return PowerFit(alpha=alpha, alpha_se=se, log10_prefactor=intercept, n=n)
