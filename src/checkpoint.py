"""The shared initial weights: every trial of every stage starts from the same file.

The file is named by a hash of what determines the weights (model config, input shape, number of
classes, init seed), written atomically (temp file + rename: two jobs racing both end with the same
complete file) and loaded with `weights_only=True` (no pickle code execution).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.errors import ConfigError


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


def save_atomic(state: dict[str, torch.Tensor], path: Path) -> None:
    """`torch.save` that a reader never sees half-written: write beside `path`, rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_into(model: nn.Module, path: Path) -> None:
    """Load `path` into `model`; anything that does not fit is a one-line ConfigError, never a
    silent re-init."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a checkpoint, or unsafe pickle content
        raise ConfigError(
            f"checkpoint {path} cannot be read ({type(err).__name__}); delete it"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if expected != found:
        missing = sorted(expected.keys() - found.keys())
        unexpected = sorted(found.keys() - expected.keys())
        reshaped = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
        raise ConfigError(
            f"checkpoint {path} does not match the model (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, other shapes {reshaped[:3]}); delete it or change init_seed"
        )
    model.load_state_dict(state)


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
