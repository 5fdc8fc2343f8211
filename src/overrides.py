"""Hydra command-line overrides: reading their keys, writing exact values, deriving one stage's
overrides from another's.

Every tool takes the stage-1 sweep's overrides (`python -m src.train -m <overrides>`) and derives
its own from them by `replace_overrides`: the same overrides name the same study, and a float
written here (`repr`) reads back bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# Override keys that belong to the sweep, not to training one model.
SWEEP_KEYS = ("lr", "seed", "trial")
SWEEP_PREFIXES = ("sweep.", "study.", "hydra.", "hydra/")


def override_key(override: str) -> str:
    """The config key an override sets: `+a.b=1` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def format_value(value: object) -> str:
    """An override value: floats as repr() (they survive exactly), lists as `[a,b]`."""
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def replace_overrides(overrides: Iterable[str], values: dict[str, object]) -> list[str]:
    """`overrides` less those that set a key of `values`, then `key=value` for each of `values`."""
    kept = [o for o in overrides if override_key(o) not in values]
    return kept + [f"{key}={format_value(value)}" for key, value in values.items()]


def train_overrides(overrides: Sequence[str], lr: float) -> list[str]:
    """The overrides to train one model with `lr`: the experiment's own overrides, less the sweep's."""
    kept = [
        o
        for o in overrides
        if override_key(o) not in SWEEP_KEYS and not override_key(o).startswith(SWEEP_PREFIXES)
    ]
    return replace_overrides(kept, {"lr": float(lr)})


class ChoiceOverride:
    """`'choice(a,b,...)'` with exact float reprs, quoted: Hydra refuses a sweep override of a
    `hydra.` key ("Sweeping over Hydra's configuration is not supported"), so the sweeper gets the
    string and parses it like the `params` in its config."""

    def __init__(self, values: Sequence[float]):
        self.values = [float(v) for v in values]

    def __str__(self) -> str:
        return "'choice(" + ",".join(repr(v) for v in self.values) + ")'"
