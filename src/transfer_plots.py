"""The figures of the measured check (`src.transfer_check`): `lr_vs_scale.png`, the optimum per
scale with its interval, the fit and each rule's line; `curves.png`, the score against the LR at
every scale."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from lrsweep.scaling import PowerFit
from src.transfer_check import ScaleResult, rule_lines


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
    lr_opt = np.array([r.lr_opt for r in results])
    if all(r.interval is not None for r in results):
        low = np.array([min(r.interval.low, r.lr_opt) for r in results])
        high = np.array([max(r.interval.high, r.lr_opt) for r in results])
        ax.errorbar(
            scales,
            lr_opt,
            yerr=[lr_opt - low, high - lr_opt],
            fmt="ko",
            capsize=3,
            label="measured optimum (95% bootstrap over seeds)",
            zorder=3,
        )
    else:
        ax.loglog(scales, lr_opt, "ko", label="measured optimum", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    xs = np.geomspace(scales.min(), scales.max(), 50)
    low, high = fit.ci95
    ci = f" [{low:.2f}, {high:.2f}] (95%, df={fit.df})" if math.isfinite(low) else ""
    ax.loglog(xs, 10**fit.log10_prefactor * xs**fit.alpha, "k-", label=f"fit α={fit.alpha:.2f}{ci}")
    for (label, values), style in zip(
        rule_lines(axis, results), ("--", ":", "-.", (0, (5, 1, 1, 1))), strict=False
    ):
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
