"""Bring your own data and model: a tiny example, used by the tests and shown in the README.

From the repository root (`tests/` is then importable as the namespace package `tests`):

    python -m src.train '~data' +data._target_=tests.byo_example.make_data \\
        '~model' +model._target_=tests.byo_example.TinyNet lr=0.1

`~data` drops the default data config (digits) together with its keys (`val_fraction`,
`split_seed`), which `make_data` would not accept; `+data._target_=...` then names your builder, and
`+data.<arg>=<value>` passes it arguments (e.g. `+data.n=1000`). The same goes for the model
(`+model.hidden=32`). Quote the `~` words: zsh rejects an unquoted `~data` ("no such user"). Add
`-m` for a sweep. To keep such a setup, write it as `conf/data/<name>.yaml` / `conf/model/<name>.yaml`
and select it with `data=<name> model=<name>`.

The contracts (see `src/data.py` and `src/models.py`): a data builder returns
`{"train": (x, y), "val": (x, y)}` (optionally with `"num_classes"`), with `y` integer class ids; a
model builder is called as `builder(input_shape=..., num_classes=..., **its config)` and returns an
`nn.Module` mapping a batch of inputs to class logits. An optimizer `_target_` is called as
`target(params, lr=<lr>, **its config)` (`RecordingSGD` below).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def make_data(
    n: int = 200, features: int = 5, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Two Gaussian blobs (centres -1 and +1 in every feature, std 1): `n` examples, 2 balanced
    classes, a fixed 80/20 train/val split. Same arguments, same tensors."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, features, generator=generator) + (2.0 * y - 1.0).unsqueeze(1)
    order = torch.randperm(n, generator=generator)
    x, y = x[order], y[order]
    n_train = int(0.8 * n)
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


def make_imbalanced_data(
    n: int = 1000, features: int = 5, minority_every: int = 10, seed: int = 0
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Imbalanced blobs: one example in `minority_every` is class 1 (centre +1 in every feature),
    the rest class 0 (centre -1), std 1; `n` examples, a fixed 80/20 split holding the same 90/10
    mix (10% minority by default) in both halves. Learnable far past the majority rate."""
    generator = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % minority_every == 0).long()
    x = torch.randn(n, features, generator=generator) + (2.0 * y - 1.0).unsqueeze(1)
    n_train = int(0.8 * n)  # the classes interleave: both halves hold one minority in ten
    return {"train": (x[:n_train], y[:n_train]), "val": (x[n_train:], y[n_train:])}


class TinyNet(nn.Module):
    """One hidden layer of `hidden` units on the flattened input."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(math.prod(input_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RecordingSGD(torch.optim.SGD):
    """SGD that records the LR of every step in `RecordingSGD.lrs` (shared by all instances; clear
    it before a run): `optimizer._target_=tests.byo_example.RecordingSGD`."""

    lrs: list[float] = []

    def step(self, closure=None):
        RecordingSGD.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


class FailingSGD(torch.optim.SGD):
    """SGD whose every step raises: a job that fails inside training, after every check before
    the sweep passed (`optimizer._target_=tests.byo_example.FailingSGD`)."""

    def step(self, closure=None):
        raise RuntimeError("FailingSGD fails on purpose")


def broken_batch(cfgs: object) -> object:
    """A fused launcher's batch function with a bug (tests/test_fused_launcher.py)."""
    raise RuntimeError("a bug in the batch function")


def declining_batch(cfgs: list) -> list:
    """A fused launcher's batch function that trains nothing: the first job runs with the task
    function without a word (None), the others share one reason (tests/test_fused_launcher.py)."""
    from lrsweep.fusing import CannotFuse

    why = CannotFuse("declined on purpose")
    return [None] + [why] * (len(cfgs) - 1)
