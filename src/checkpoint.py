"""The shared initial weights: every trial of every stage starts from the same file.

The file is named by a hash of what determines the weights (model config, input shape, number of
classes, init seed), written atomically (temp file + rename: two jobs racing both end with the same
complete file) and loaded with `weights_only=True` (no pickle code execution).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lrsweep.weights import UnreadableWeights, WeightsMismatch, load_checked, save_atomic
from src.errors import ConfigError

__all__ = ["checkpoint_key", "initial_model", "load_into", "save_atomic"]


def checkpoint_key(
    model_config: dict[str, Any], input_shape: tuple[int, ...], num_classes: int, init_seed: int
) -> str:
    identity = {
        "model": model_config,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "init_seed": init_seed,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def load_into(model: nn.Module, path: Path) -> None:
    """Load `path` into `model` (lrsweep.weights' checked load); anything that does not fit is a
    one-line ConfigError, never a silent re-init."""
    try:
        load_checked(model, path)
    except UnreadableWeights as err:
        raise ConfigError(f"checkpoint {path} cannot be read ({err.reason}); delete it") from None
    except WeightsMismatch as err:
        raise ConfigError(
            f"checkpoint {path} does not match the model (missing {err.missing[:3]}, unexpected "
            f"{err.unexpected[:3]}, other shapes {err.reshaped[:3]}); delete it or change init_seed"
        ) from None


def initial_model(
    build: Callable[[], nn.Module],
    key: str,
    directory: str | Path,
    init_seed: int,
    create: bool = True,
) -> nn.Module:
    """The model with the shared initial weights `<directory>/<key>.pt`, created on first use
    (`create=False`: a missing file is left missing, for checks that must write nothing).

    The model is always built under `init_seed`, so racing creators write identical files."""
    torch.manual_seed(init_seed)
    model = build()
    path = Path(directory) / f"{key}.pt"
    if path.exists():
        load_into(model, path)
    elif create:
        save_atomic(model.state_dict(), path)
    return model
