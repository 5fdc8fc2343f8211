"""The base LR of an optimizer whose parameter groups keep their own ratios to it.

A plain optimizer has one LR; a muP optimizer (`mup.MuSGD`, `mup.MuAdam`, ...) gives each parameter
group its own multiple of the LR it was built with (the width multipliers that make muP work).
Anything that changes the LR during training (the warmup/cosine schedule in `src.train`, the ramp
of `src.range_test`) sets the *base* LR through `set_base_lr`, so every group keeps its ratio and
the run measures the optimizer that trains.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def lr_scales(optimizer: torch.optim.Optimizer, base_lr: float) -> list[float]:
    """Each parameter group's LR relative to `base_lr`, the LR the optimizer was built with: 1 for
    every group of a plain optimizer, the width multipliers of a muP one."""
    return [group["lr"] / base_lr for group in optimizer.param_groups]


def set_base_lr(optimizer: torch.optim.Optimizer, lr: float, scales: Sequence[float]) -> None:
    """Set every group's LR to `lr` times its scale (`lr_scales`, read once after building)."""
    for group, scale in zip(optimizer.param_groups, scales, strict=True):
        group["lr"] = lr * scale
