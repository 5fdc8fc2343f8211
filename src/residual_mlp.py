"""A residual MLP for measuring the depth rule on the model it is meant for.

Depth-muP (Yang et al. 2023, arXiv:2310.02244; Bordelon et al. 2023, arXiv:2309.16620) scales each
residual branch by 1/sqrt(depth), so that the sum of `depth` branches stays of order one at any
depth; with it, the optimal LR transfers across depth (under Adam as 1/sqrt(depth), the
`inverse_sqrt` depth rule). CompleteP (Dey et al. 2025) uses 1/depth instead.
`src.models.mlp` is not residual, so the depth rule measured on it is arithmetic on the wrong
model; this one is the right one:

    x -> Linear(in, width) -> depth x [h + m * Linear(width, width)(ReLU(h))] -> ReLU -> Linear(width, classes)

with the branch multiplier m = 1/sqrt(depth) (`branch_multiplier: sqrt`), 1/depth (`depth`) or 1
(`none`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from src.errors import ConfigError

MULTIPLIERS = {
    "sqrt": lambda depth: 1 / math.sqrt(depth),
    "depth": lambda depth: 1 / depth,
    "none": lambda depth: 1.0,
}


class ResidualBlock(nn.Module):
    """h + multiplier * Linear(ReLU(h))."""

    def __init__(self, width: int, multiplier: float) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.multiplier = multiplier

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.multiplier * self.linear(torch.relu(h))


def residual_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 128,
    depth: int = 2,
    branch_multiplier: str = "sqrt",
) -> nn.Module:
    """`depth` residual blocks of `width` units on the flattened input (module docstring)."""
    if width < 1 or depth < 1:
        raise ConfigError(
            f"model: residual_mlp needs width >= 1 and depth >= 1, got {width=} {depth=}"
        )
    if branch_multiplier not in MULTIPLIERS:
        raise ConfigError(
            f"model.branch_multiplier={branch_multiplier!r}: one of {list(MULTIPLIERS)}"
        )
    multiplier = MULTIPLIERS[branch_multiplier](depth)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        *(ResidualBlock(width, multiplier) for _ in range(depth)),
        nn.ReLU(),
        nn.Linear(width, num_classes),
    )
