"""The grid's axes from the sweeper's `params` and the command line, in Hydra's override grammar,
and a grid point back as overrides. Pure calculations; the grid itself is `lrsweep.grid`.
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import math
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from omegaconf import DictConfig, ListConfig

from lrsweep.grid import Axis, SweepConfigError


def _python(value: Any) -> Any:
    """numpy scalars are not JSON-serialisable: Optuna params must be plain Python."""
    return value.item() if hasattr(value, "item") else value


def axis_from_override(override: Override, points: int) -> Axis:
    import numpy as np

    name = override.get_key_element()
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        log_scale = "log" in sweep.tags
        if not isinstance(points, int) or isinstance(points, bool) or points < 2:
            raise SweepConfigError(
                f"{name}: points={points!r} is invalid: need an integer, at least 2 points"
            )
        for bound in (low, high):
            if not math.isfinite(bound) or (log_scale and bound <= 0):
                raise SweepConfigError(
                    f"{name}: each bound of a {'log ' if log_scale else ''}interval must be a "
                    f"finite {'positive ' if log_scale else ''}number, got [{low:g}, {high:g}]"
                )
        if low >= high:
            raise SweepConfigError(f"{name}: low must be < high, got [{low:g}, {high:g}]")
        grid = (
            np.logspace(math.log10(low), math.log10(high), points)
            if log_scale
            else np.linspace(low, high, points)
        )
        return Axis(name, [float(v) for v in grid], log=log_scale, interval=True)
    if isinstance(sweep, ChoiceSweep):
        values = list(sweep.list)
    elif isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
    else:  # a plain value: a one-point axis
        values = [sweep]
    if not values:
        raise SweepConfigError(f"{name}: empty choice")
    return Axis(name, [_python(v) for v in values])


def build_axes(
    params: DictConfig | dict | None, arguments: Sequence[str], points: int
) -> tuple[list[Axis], list[str]]:
    """Axes from the config's `params` and the sweep overrides on the command line; the other
    command-line overrides are passed to every job unchanged."""
    parser = OverridesParser.create()
    axes: dict[str, Axis] = {}
    for name, spec in (params or {}).items():
        if isinstance(spec, ListConfig | list | tuple):
            values = [_python(v) for v in spec]
            if not values:
                raise SweepConfigError(f"{name}: empty list of values")
            axes[name] = Axis(name, values)
        else:
            axes[name] = axis_from_override(parser.parse_override(f"{name}={spec}"), points)
    fixed = []
    for override in parser.parse_overrides(list(arguments)):
        # The command line wins: `lr=0.1` pins the `lr` axis to one point, `seed=0,1` replaces it.
        if override.is_sweep_override() or override.get_key_element() in axes:
            axes[override.get_key_element()] = axis_from_override(override, points)
        else:
            fixed.append(override.input_line)
    for axis in axes.values():
        if len(set(map(repr, axis.values))) != len(axis.values):
            raise SweepConfigError(f"{axis.name}: repeated values {axis.values}")
    return list(axes.values()), fixed


def format_value(value: Any) -> str:
    """An override value that Hydra parses back to the same value (floats as repr). The plugin
    depends on Hydra and Optuna only, so it keeps this two-line twin of `src.overrides.format_value`
    rather than importing the application."""
    return repr(value) if isinstance(value, float) else str(value)


def param_overrides(params: dict[str, Any]) -> list[str]:
    """A grid point as Hydra overrides for its job."""
    return [f"{name}={format_value(value)}" for name, value in params.items()]
