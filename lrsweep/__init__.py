"""lrsweep, the library: the search for a learning rate, knowing neither Hydra nor lrsweep's own
training loop. The Hydra sweeper (`hydra_plugins/lrsweep_sweeper`) and the Python API are thin
adapters over it; `src/` (lrsweep's built-in trial) is one application among others.

    import lrsweep
    result = lrsweep.search(train_fn, low=1e-5, high=1.0, points=10, seeds=[0])

The public names load on first use (`__getattr__` below), so that `import lrsweep` stays cheap
and imports neither torch nor Optuna."""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_LAZY = {
    "search": "lrsweep.api",
    "SearchResult": "lrsweep.api",
    "transfer": "lrsweep.api",
    "Transferred": "lrsweep.api",
    "same_initial_weights": "lrsweep.weights",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lrsweep' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
