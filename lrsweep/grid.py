"""The grid: axes, their product, point keys. Pure calculations: no Hydra, no Optuna, no I/O.

A grid point is a dict `{axis name: value}`; its key (`point_key`, canonical JSON) is what the
study records per trial. The Hydra sweeper builds axes from Hydra's override grammar
(`hydra_plugins/lrsweep_sweeper/grid.py`), the Python API from numbers (`log_axis`).
"""

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Every point is a trial row written before the sweep starts and a job launched; a bigger grid is a
# typo (`sweep.points=100000`) or a search better done coarse first and refined (stage 2).
MAX_GRID_POINTS = 10_000


class SweepConfigError(ValueError):
    """Bad sweep settings: reported as one line before the study is touched."""


@dataclass(frozen=True)
class Axis:
    name: str
    values: list[Any]
    log: bool = False  # a log interval: recorded as a log-scale float distribution
    interval: bool = False


def log_axis(name: str, low: float, high: float, points: int) -> Axis:
    """`points` values log-uniform in [low, high] (numpy.logspace), ends included."""
    import numpy as np

    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise SweepConfigError(f"{name}: points={points!r} is invalid: need an integer >= 2")
    for label, bound in (("low", low), ("high", high)):
        if not (isinstance(bound, int | float) and math.isfinite(bound) and bound > 0):
            raise SweepConfigError(
                f"{name}: {label}={bound!r} is invalid: must be a finite positive number"
            )
    if low >= high:
        raise SweepConfigError(f"{name}: low must be < high, got [{low:g}, {high:g}]")
    values = np.logspace(math.log10(low), math.log10(high), points)
    return Axis(name, [float(v) for v in values], log=True, interval=True)


def build_grid(axes: Sequence[Axis], fastest: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Every point of the product of `axes`, by key, in axis order (the last axis varies
    fastest), but for the axes named in `fastest`, which vary faster than every other; each
    point's params in axis order. At most MAX_GRID_POINTS."""
    size = math.prod(len(axis.values) for axis in axes)
    if size > MAX_GRID_POINTS:
        shape = " x ".join(f"{len(axis.values)} {axis.name}" for axis in axes)
        raise SweepConfigError(
            f"the grid has {size} points ({shape}); at most {MAX_GRID_POINTS}: each point is a "
            "trial queued in the study and a job to run. Sweep a coarser grid and refine it "
            "(stage 2)"
        )
    ordered = [a for a in axes if a.name not in fastest] + [a for a in axes if a.name in fastest]
    grid = {}
    for values in itertools.product(*(axis.values for axis in ordered)):
        by_name = {axis.name: value for axis, value in zip(ordered, values, strict=True)}
        params = {axis.name: by_name[axis.name] for axis in axes}
        grid[point_key(params)] = params
    return grid


def point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)
