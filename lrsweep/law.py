"""A learning-rate law over several axes at once: lr_opt = c * x1^a1 * x2^a2 * ..., fitted to the
optima of a small design of proxy runs (not the product of all scales), the form used for LLM
hyperparameter scaling (DeepSeek LLM 2024, Step Law 2025).

Least squares on log10: log10 lr_opt = log10 c + sum_i a_i log10 x_i. Each exponent gets its
standard error and 95% Student t interval with n - k - 1 degrees of freedom (n design points, k
axes); a prediction gets its 95% prediction interval (the fit's uncertainty and the scatter of one
new optimum); leave-one-out refits say how far each design point lies from the law fitted to the
others, the honest measure of how well the law predicts a point it has not seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


class LawError(ValueError):
    """A design the law cannot be fitted to (one line)."""


@dataclass(frozen=True)
class Exponent:
    axis: str
    value: float
    se: float  # nan without residual degrees of freedom
    ci95: tuple[float, float]  # Student t, `LawFit.df` degrees of freedom


@dataclass(frozen=True)
class LawFit:
    axes: tuple[str, ...]
    log10_c: float
    exponents: tuple[Exponent, ...]
    n: int
    residual_sd: float  # of log10 lr_opt around the law (nan without residual degrees of freedom)
    covariance: np.ndarray  # of (log10 c, a_1, ..., a_k)
    loo_ratios: tuple[float, ...]  # per design point: predicted by the others / measured

    @property
    def df(self) -> int:
        """Residual degrees of freedom: n - k - 1."""
        return self.n - len(self.axes) - 1

    def predict(self, sizes: Mapping[str, float]) -> tuple[float, float, float]:
        """(lr, low, high) at `sizes` (every axis of the law): the law's value and its 95%
        prediction interval for one new optimum (nan ends without residual degrees of freedom)."""
        row = np.array([1.0, *(math.log10(_positive(a, sizes[a])) for a in self.axes)])
        coef = np.array([self.log10_c, *(e.value for e in self.exponents)])
        y = float(row @ coef)
        if self.df < 1:
            return 10**y, math.nan, math.nan
        from scipy import stats

        var = float(row @ self.covariance @ row) + self.residual_sd**2
        half = float(stats.t.ppf(0.975, self.df)) * math.sqrt(var)
        return 10**y, 10 ** (y - half), 10 ** (y + half)

    def outside(self, sizes: Mapping[str, float], design: Sequence[Mapping[str, float]]) -> list:
        """The axes on which `sizes` lies outside the design's range: an extrapolation there."""
        return [
            a
            for a in self.axes
            if not min(d[a] for d in design) <= sizes[a] <= max(d[a] for d in design)
        ]


def _positive(what: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise LawError(f"{what}={value!r}: a law's sizes and LRs must be finite and > 0")
    return value


def _solve(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Least squares: coefficients, residual sum of squares, (X'X)^-1."""
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return coef, float(resid @ resid), np.linalg.inv(x.T @ x)


def fit_law(design: Sequence[Mapping[str, float]], lr_opts: Sequence[float]) -> LawFit:
    """The law through the design's optima (module docstring). `design`: one mapping of sizes per
    point (the same axes in each); the axes are those whose size varies. Raises LawError for a
    design that cannot determine them (fewer points than axes + 1, axes that move together)."""
    if len(design) != len(lr_opts) or not design:
        raise LawError(f"{len(design)} design points for {len(lr_opts)} optima")
    keys = set(design[0])
    if any(set(d) != keys for d in design):
        raise LawError("every design point must name the same axes")
    axes = tuple(sorted(a for a in keys if len({float(d[a]) for d in design}) > 1))
    if not axes:
        raise LawError("the design varies no axis: nothing to fit")
    n, k = len(design), len(axes)
    if n < k + 1:
        raise LawError(
            f"{n} design points cannot fit {k} exponents and a constant: need >= {k + 1}"
        )
    x = np.array([[1.0, *(math.log10(_positive(a, d[a])) for a in axes)] for d in design])
    y = np.array([math.log10(_positive("lr", v)) for v in lr_opts])
    if np.linalg.matrix_rank(x) < k + 1:
        raise LawError(
            f"the design cannot tell the axes {list(axes)} apart (their sizes move together): "
            "vary them independently"
        )
    coef, ssr, inv = _solve(x, y)
    df = n - k - 1
    sd = math.sqrt(ssr / df) if df > 0 else math.nan
    cov = inv * sd**2 if df > 0 else np.full_like(inv, math.nan)
    if df > 0:
        from scipy import stats

        t = float(stats.t.ppf(0.975, df))
    exponents = []
    for i, axis in enumerate(axes, start=1):
        se = math.sqrt(cov[i, i]) if df > 0 else math.nan
        ci = (coef[i] - t * se, coef[i] + t * se) if df > 0 else (math.nan, math.nan)
        exponents.append(Exponent(axis, float(coef[i]), se, (float(ci[0]), float(ci[1]))))
    return LawFit(
        axes=axes,
        log10_c=float(coef[0]),
        exponents=tuple(exponents),
        n=n,
        residual_sd=sd,
        covariance=cov,
        loo_ratios=tuple(_leave_one_out(x, y)),
    )


def _leave_one_out(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Per point: the law fitted to the others, its prediction there / the measured optimum (nan
    where the others cannot determine the law)."""
    ratios = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        if keep.sum() < x.shape[1] or np.linalg.matrix_rank(x[keep]) < x.shape[1]:
            ratios.append(math.nan)
            continue
        coef, *_ = np.linalg.lstsq(x[keep], y[keep], rcond=None)
        ratios.append(float(10 ** (x[i] @ coef - y[i])))
    return ratios
