"""A measured check as a transfer rule: `rules.<axis>=measured` or `rules.<axis>=<check.yaml>`.

`python -m src.transfer --measure` writes `check.yaml`: the exponent alpha of lr_opt ~ scale^alpha
on one axis, its 95% interval (the hull of the fit's Student t interval and the bootstrap over the
seeds; a one-seed check has the t interval only) and the scales it was measured at. As a rule, the
LR moves by (target / base)^alpha, and the interval of alpha gives the interval of the target LR:
base LR x (target / base)^alpha_low .. ^alpha_high. The base LR's own uncertainty is not in it.

`measured` finds the check of this experiment under `<paths.reports_dir>`: the one whose smallest
scale's study is this config's study at that scale (the check writes to
`<paths.reports_dir>/<that study>/transfer-check-<axis>/`). A path names a check anywhere (its
`check.yaml` or its folder).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from src.errors import ConfigError

MEASURED = "measured"


def is_measured(value: str) -> bool:
    """Whether a `rules.<axis>` value names a measured check rather than a named rule."""
    return value == MEASURED or value.endswith((".yaml", ".yml")) or "/" in value


@dataclass(frozen=True)
class MeasuredRule:
    axis: str
    path: Path
    alpha: float
    interval: tuple[float, float] | None  # alpha's 95% interval; None: the check had none
    interval_kind: str  # what the interval is
    scales: tuple[int, ...]  # the scales the check measured, ascending
    overrides: tuple[str, ...]  # the check's training overrides

    def factors(self, base: float, target: float) -> tuple[float, float, float]:
        """(factor, low, high): (target / base)^alpha and its range over alpha's interval (NaN
        ends without an interval)."""
        ratio = target / base
        point = ratio**self.alpha
        if self.interval is None:
            return point, math.nan, math.nan
        ends = sorted(ratio**a for a in self.interval)
        return point, ends[0], ends[1]

    def source(self) -> str:
        """The rule's source line: alpha, its interval and where it was measured."""
        lo, hi = self.scales[0], self.scales[-1]
        spread = (
            f"95% interval [{self.interval[0]:.2f}, {self.interval[1]:.2f}] ({self.interval_kind})"
            if self.interval
            else "no interval"
        )
        return f"measured alpha {self.alpha:.3f}, {spread}, {self.axis} {lo}..{hi}, {self.path}"

    def warning(self, base: float, target: float) -> str | None:
        """Why the fit may not hold at `base` or `target`, when either lies outside the measured
        scales: an extrapolation; further beyond them than their own span, one the fit does not
        support."""
        lo, hi = self.scales[0], self.scales[-1]
        span = hi / lo
        worst = None
        for what, size in (("target", target), ("base", base)):
            beyond = size / hi if size > hi else (lo / size if size < lo else 1.0)
            if beyond > 1 and (worst is None or beyond > worst[2]):
                worst = (what, size, beyond)
        if worst is None:
            return None
        what, size, beyond = worst
        where = f"{what} {self.axis} {size:g} lies x{beyond:.3g} outside the measured {lo}..{hi}"
        if beyond > span:
            return (
                f"{where}, further than the check's own span (x{span:.3g}): the fit does not "
                f"support it; measure a scale nearer {size:g}"
            )
        return f"{where}: an extrapolation; the interval assumes the power law holds there"


def load_check(path: Path, axis: str) -> MeasuredRule:
    """The measured rule of the check at `path` (its check.yaml or its folder), for `axis`."""
    file = path / "check.yaml" if path.is_dir() else path
    key = f"rules.{axis}"
    if not file.is_file():
        raise ConfigError(f"{key}={path}: no such check.yaml (written by src.transfer --measure)")
    try:
        check = yaml.safe_load(file.read_text()) or {}
        alpha = float(check["alpha"])
        scales = tuple(sorted(int(s["scale"]) for s in check["scales"]))
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        raise ConfigError(f"{key}={file}: not a check.yaml of src.transfer --measure") from None
    if check.get("axis") != axis:
        raise ConfigError(f"{key}={file}: that check measured the {check.get('axis')} axis")
    if check.get("alpha_interval"):
        interval, kind = check["alpha_interval"], "fit and bootstrap over the seeds"
    elif check.get("alpha_ci95"):
        interval, kind = check["alpha_ci95"], f"Student t, df={check.get('alpha_df')}"
    else:
        interval, kind = None, "none"
    return MeasuredRule(
        axis=axis,
        path=file,
        alpha=alpha,
        interval=None if interval is None else (float(interval[0]), float(interval[1])),
        interval_kind=kind,
        scales=scales,
        overrides=tuple(check.get("overrides") or ()),
    )


def find_check(reports_dir: Path, axis: str, overrides: Sequence[str]) -> Path:
    """The check of this experiment under `reports_dir` (module docstring)."""
    from src.overrides import replace_overrides
    from src.study import compose_config

    for file in sorted(reports_dir.glob(f"*/transfer-check-{axis}/check.yaml")):
        try:
            check = yaml.safe_load(file.read_text()) or {}
            first = min(check["scales"], key=lambda s: int(s["scale"]))
            at_first = replace_overrides(overrides, {check["key"]: int(first["scale"])})
        except (yaml.YAMLError, KeyError, TypeError, ValueError):
            continue  # not a check: another file of that name
        if str(compose_config(at_first).study.name) == first["study"]:
            return file
    raise ConfigError(
        f"rules.{axis}=measured: no measured check of {axis} for this experiment under "
        f"{reports_dir}: run `python -m src.transfer --measure --axis {axis} --scales ...` with "
        f"the same overrides, or give its path: rules.{axis}=<folder>/check.yaml"
    )
