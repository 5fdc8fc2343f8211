"""Same initial weights for every trial: the first call saves a model's state, every later call
loads it, so that learning rates are compared from one starting point, never from a fresh random
initialisation each.

The file is written atomically (a temp file beside it, then `os.replace`): a reader never sees a
half-written file, and a crash leaves no torn file under the final name. Racing first calls (trials
started at once) create it under a file lock, so all of them end with the one file's weights even
when their models were initialised differently. It is read with `torch.load(weights_only=True)`
(no pickle code runs) and must fit the model tensor by tensor: a mismatch is an error naming the
tensors, never a silent re-initialisation.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn


class UnreadableWeights(ValueError):
    """The file exists but cannot be read as a state dict (truncated, foreign, unsafe pickle)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"weights {path} cannot be read ({reason})")


class WeightsMismatch(ValueError):
    """The file's tensors do not fit the model: names the missing, unexpected and reshaped ones."""

    def __init__(
        self, path: Path, missing: list[str], unexpected: list[str], reshaped: list[str]
    ) -> None:
        self.path, self.missing, self.unexpected, self.reshaped = (
            path,
            missing,
            unexpected,
            reshaped,
        )
        super().__init__(
            f"weights {path} do not match the model: missing {missing}, unexpected {unexpected}, "
            f"other shapes {reshaped}"
        )


def weights_path(key: str, directory: str | Path) -> Path:
    """Where `same_initial_weights` keeps the weights for `key`: `<directory>/<sha256(key)[:16]>.pt`."""
    return Path(directory) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def save_atomic(state: dict[str, torch.Tensor], path: str | Path) -> None:
    """`torch.save` that a reader never sees half-written: write beside `path`, rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checked(model: nn.Module, path: str | Path) -> None:
    """Load the state dict at `path` into `model`, tensor shapes checked first.

    Raises UnreadableWeights or WeightsMismatch (both ValueError); `model` is untouched then."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a checkpoint, or unsafe pickle content
        raise UnreadableWeights(path, type(err).__name__) from None
    if not isinstance(state, dict):
        state = {}  # e.g. a bare tensor: it fits no model, every tensor is missing
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnreadableWeights(path, "not a state dict of tensors")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise WeightsMismatch(
            path,
            missing=sorted(expected.keys() - found.keys()),
            unexpected=sorted(found.keys() - expected.keys()),
            reshaped=sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k]),
        )
    model.load_state_dict(state)


def same_initial_weights(model: nn.Module, key: str, directory: str | Path) -> Path:
    """Give `model` the initial weights shared by every run that passes the same `key`.

    The first call for `key` saves `model`'s state to `<directory>/<sha256(key)[:16]>.pt`; every
    later call loads that file into `model` (shapes checked: a mismatch raises ValueError naming
    the differing tensors). Put into `key` everything that determines the weights (architecture,
    sizes, init seed), and nothing that varies between the runs compared (learning rate, seed of
    the data order). Returns the path."""
    path = weights_path(key, directory)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if not path.exists():
                save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
                return path
    load_checked(model, path)
    return path
