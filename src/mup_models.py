"""muP models, built with Microsoft's `mup` package (Yang et al. 2022, "Tensor Programs V").

A muP model is the standard model with its readout layer replaced by `mup.MuReadout` and
`mup.set_base_shapes` applied against the same model at `base_width` (with a `delta` model at twice
that width, so mup knows which dimensions grow). Train it with a muP optimizer
(`optimizer=musgd|muadam|muadamw`: `mup.MuSGD`, `mup.MuAdam`, `mup.MuAdamW`), which scales each
parameter group's LR by its width multiplier; then the optimal LR found at one width holds at the
others. At `width == base_width` a muP model and optimizer behave exactly like the standard ones.

The shared initial checkpoint: `set_base_shapes` rescales the readout at build time, so what
`src.checkpoint.initial_model` saves is the muP-initialised state. Restoring it
(`load_state_dict`) copies into the existing Parameter objects, so the `infshape` attribute that
`set_base_shapes` attached to each of them is kept (tests/test_transfer.py checks that a restored
model trains bit-identically to the freshly built one). The base and delta models are built on the
`meta` device: they cost neither memory nor random numbers.

Compatibility with torch 2.14: `mup` 1.0.0 (2022, pure Python) imports and works; its optimizers
return per-group LRs, which the training loop keeps (warmup scales each group's own LR).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from mup import MuReadout, set_base_shapes
from torch import nn

from src.errors import ConfigError
from src.models import cnn, mlp


def _readout_to_mu(model: nn.Sequential) -> nn.Sequential:
    """The same net with its last `nn.Linear` replaced by a `MuReadout` holding the same initial
    weights (built on `meta` and filled: no random numbers drawn, so the init equals the standard
    model's, before `set_base_shapes` rescales it)."""
    last = model[-1]
    assert isinstance(last, nn.Linear), "the readout of an src.models builder is its last layer"
    readout = MuReadout(
        last.in_features, last.out_features, bias=last.bias is not None, device="meta"
    ).to_empty(device=last.weight.device)
    with torch.no_grad():
        readout.weight.copy_(last.weight)
        if last.bias is not None:
            readout.bias.copy_(last.bias)
    model[-1] = readout
    return model


def _mup(build: Callable[[int], nn.Sequential], width: int, base_width: int) -> nn.Module:
    if not (isinstance(base_width, int) and base_width >= 1):
        raise ConfigError(f"model: base_width must be an integer >= 1, got {base_width!r}")
    with torch.device("meta"):
        base = _readout_to_mu(build(base_width))
        delta = _readout_to_mu(build(2 * base_width))
    model = _readout_to_mu(build(width))
    return set_base_shapes(model, base, delta=delta)


def mlp_mup(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 128,
    depth: int = 2,
    base_width: int = 128,
) -> nn.Module:
    """`src.models.mlp` in muP: MuReadout, base shapes at `base_width` hidden units."""
    if depth < 1:
        raise ConfigError(f"model: mlp_mup needs depth >= 1 (a hidden width), got {depth=}")
    return _mup(lambda w: mlp(input_shape, num_classes, width=w, depth=depth), width, base_width)


def cnn_mup(
    input_shape: tuple[int, ...], num_classes: int, channels: int = 32, base_width: int = 32
) -> nn.Module:
    """`src.models.cnn` in muP: MuReadout, base shapes at `base_width` first-layer channels."""
    return _mup(lambda w: cnn(input_shape, num_classes, channels=w), channels, base_width)
