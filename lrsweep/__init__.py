"""lrsweep, the library: the search for a learning rate, knowing neither Hydra nor lrsweep's own
training loop. The Hydra sweeper (`hydra_plugins/lrsweep_sweeper`) and the Python API are thin
adapters over it; `src/` (lrsweep's built-in trial) is one application among others.

    import lrsweep
    result = lrsweep.search(train_fn, low=1e-5, high=1.0, points=10, seeds=[0])

The public names are loaded on first use, so that `import lrsweep` stays cheap (no torch, no
Optuna until a search runs).
"""

from typing import Any

__all__ = ["SearchResult", "search"]

_PUBLIC = {
    "search": ("lrsweep.api", "search"),
    "SearchResult": ("lrsweep.api", "SearchResult"),
}


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'lrsweep' has no attribute {name!r}")
    import importlib

    module, attr = _PUBLIC[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
