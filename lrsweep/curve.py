"""The curve of a search: the metric against the LR per stage (`curve.png`), a matplotlib Figure
made without pyplot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from lrsweep.choice import Choice

COLOURS = {"stage1": "tab:blue", "stage2": "tab:orange", "confirm": "tab:green"}


def plot_curve(
    aggs: Mapping[str, pd.DataFrame],
    choice: Choice,
    title: str,
    path: Path,
    ylabel: str,
    direction: str = "maximize",
) -> None:
    """`curve_figure` as a PNG file."""
    curve_figure(aggs, choice, title, ylabel, direction).savefig(path, format="png", dpi=100)


def curve_figure(
    aggs: Mapping[str, pd.DataFrame],
    choice: Choice,
    title: str,
    ylabel: str,
    direction: str = "maximize",
):
    """The whole range, and beside it (when there is a stage 2 or confirm step) a zoom on the range
    they cover, where the seed-to-seed error bars are visible. Both panels have a legend.
    A `matplotlib.figure.Figure` made without pyplot: no backend is chosen or changed (a notebook
    keeps its own), and nothing holds the figure but the caller."""
    from matplotlib.figure import Figure

    fine = [agg for stage, agg in aggs.items() if stage != "stage1" and (agg["n"] > 0).any()]
    fig = Figure(figsize=(16 if fine else 8, 5.5), layout="constrained")
    axes = fig.subplots(1, 2 if fine else 1, squeeze=False)
    for ax in axes[0]:
        _draw_curve(ax, aggs, choice, ylabel, direction)
    axes[0][0].set_title(title)
    axes[0][0].legend(loc="best", fontsize="small")
    if fine:
        lrs = pd.concat([agg.loc[agg["n"] > 0, "lr"] for agg in fine])
        means = pd.concat([agg.loc[agg["n"] > 0, ["mean", "std"]] for agg in fine])
        means = means[np.isfinite(means["mean"].astype(float))]  # a partly diverged loss: inf
        zoom = axes[0][1]
        lo, hi = lrs.min() / 1.15, lrs.max() * 1.15
        zoom.set_xlim(lo, hi)
        _sparse_log_ticks(zoom, lo, hi)
        low = float((means["mean"] - means["std"].fillna(0)).min())
        high = float((means["mean"] + means["std"].fillna(0)).max())
        pad = max(0.005, 0.1 * (high - low))
        zoom.set_ylim(low - pad, high + pad)
        zoom.set_title("zoom: stage 2 and confirm range")
        # Outside the panel: a zoom is full of points, and any corner would hide some.
        zoom.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return fig


def _sparse_log_ticks(ax, lo: float, hi: float, count: int = 5) -> None:
    """`count` labelled ticks spread evenly in log(lr) over [lo, hi], as plain numbers: on a
    zoom narrower than a decade matplotlib labels minor ticks too, and their labels collide."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    ticks = [float(f"{v:.2g}") for v in np.geomspace(lo, hi, count + 2)[1:-1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _diverged_height(aggs: Mapping[str, pd.DataFrame], direction: str) -> tuple[float, str]:
    """Where diverged LRs are marked, and their label: at 0 maximising (lrsweep's trial scores a
    diverged run 0 accuracy), at the worst finite mean minimising (a loss: up, not at 0 where the
    best would be)."""
    if direction == "maximize":
        return 0.0, "diverged (scored 0)"
    means = pd.concat([agg["mean"] for agg in aggs.values()]).astype(float)
    finite = means[np.isfinite(means)]
    return (float(finite.max()) if len(finite) else 1.0), "diverged (drawn at the worst mean)"


def _draw_curve(
    ax, aggs: Mapping[str, pd.DataFrame], choice: Choice, ylabel: str, direction: str
) -> None:
    """Each stage's mean per LR (with +/- one std bars when it has 2+ seeds per LR; "one seed"
    and no bars otherwise), the good range shaded, diverged LRs as red x at 0, LRs with a trial
    stopped at chance circled, the chosen LR and the interpolated optimum as vertical lines."""
    if choice.good_range is not None:
        ax.axvspan(
            *choice.good_range,
            color="gold",
            alpha=0.25,
            zorder=0,
            label="good range [{:.3g}, {:.3g}]".format(*choice.good_range),
        )
    else:  # a legend line, nothing drawn
        ax.plot([], [], " ", label="good range: unknown (one seed)")
    marked = set()
    for stage, agg in aggs.items():
        ok = agg[(agg["n"] > 0) & np.isfinite(agg["mean"].astype(float))]
        if len(ok):
            seeds = int(ok["n"].max())
            several = seeds >= 2
            ax.errorbar(
                ok["lr"],
                ok["mean"],
                yerr=ok["std"] if several else None,
                fmt="o" if stage == "confirm" else "o-",
                color=COLOURS[stage],
                capsize=3,
                markersize=5 if stage == "confirm" else 4,
                label=f"{stage} (mean ± std, {seeds} seeds)" if several else f"{stage} (one seed)",
            )
        div = agg[agg["diverged"] > 0]
        if len(div):
            height, label = _diverged_height(aggs, direction)
            ax.scatter(
                div["lr"],
                np.full(len(div), height),
                marker="x",
                color="red",
                s=50,
                zorder=3,
                label=None if "diverged" in marked else label,
            )
            marked.add("diverged")
        stopped = ok[ok["stopped"] > 0] if "stopped" in ok else ok.iloc[:0]
        if len(stopped):
            ax.scatter(
                stopped["lr"],
                stopped["mean"],
                marker="s",
                s=90,
                facecolors="none",
                edgecolors="purple",
                linewidths=1.5,
                zorder=4,
                label=None if "stopped" in marked else "stopped at chance (early)",
            )
            marked.add("stopped")
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
