"""The stacked model of `src.fused`: N copies of one `Sequential` (the arms), trained as one.

Parameters and buffers get a leading arm axis. Each layer's arms are computed by one call of the
kernel the sequential trial uses, each arm's slice from that arm's slice alone:

- `Linear`: one `torch.baddbmm` over activations (arms, batch, features), with the weight
  transposed (arms, in, out) and the bias (arms, 1, out); muP's readout (`mup.MuReadout`, the
  `mlp_mup` and `cnn_mup` models' last layer) first scales its input by `output_mult /
  width_mult()`, as its own forward does;
- `Conv1d`/`Conv2d`: one grouped convolution (groups = arms) over activations in channel layout
  (batch, arms * channels, *spatial);
- `BatchNorm1d`/`2d`: one `batch_norm` over those arms * channels channels: the statistics of arm
  a's channels are over arm a's own batch, by the same kernel, and each arm keeps its own running
  statistics;
- `Flatten`, `Unflatten`, `ReLU`: reshapes between the two layouts, and the activation.

Measured against torch.func (`stack_module_state` + `vmap` over `functional_call`) on the default
stage 1 (digits, mlp 128x2, 10 LRs): 0.40x the sequential trials' time against vmap's 0.58x
(benchmarks/bench_fused.py). torch.func's batched BatchNorm also turned an arm that the
sequential trial keeps finite (lr=1e4 on the cnn) into NaNs: the channel layout calls the same
kernel instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mup import MuReadout
from torch import Tensor, nn

CONVS = (nn.Conv1d, nn.Conv2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
FUSED_LAYERS = (nn.Flatten, nn.Unflatten, nn.Linear, MuReadout, nn.ReLU, *CONVS, *NORMS)
FUSED_LAYERS_TEXT = ", ".join(t.__name__ for t in FUSED_LAYERS)


def layer_problem(layer: nn.Module) -> str | None:
    """Why `Stack` cannot hold this layer, or None."""
    # The exact types: a subclass (mup's MuSharedReadout, a user's Linear) may compute another
    # forward than the one `Stack` reproduces.
    if type(layer) not in FUSED_LAYERS:
        return f"a {type(layer).__name__} layer (only {FUSED_LAYERS_TEXT} fuse)"
    if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
        return "a Flatten other than Flatten(1, -1)"
    if isinstance(layer, nn.Unflatten) and layer.dim != 1:
        return "an Unflatten of another dimension than 1"
    if isinstance(layer, (nn.Linear, *CONVS)) and layer.bias is None:
        return f"a {type(layer).__name__} without bias"
    if isinstance(layer, CONVS) and layer.padding_mode != "zeros":
        return f"a convolution with padding_mode={layer.padding_mode!r}"
    if isinstance(layer, NORMS) and not (
        layer.affine and layer.track_running_stats and layer.momentum is not None
    ):
        return "a BatchNorm without affine parameters, running statistics or momentum"
    return None


def _stacked(tensor: Tensor, arms: int) -> Tensor:
    return tensor.detach().expand(arms, *tensor.shape).clone()


class Stack:
    """`arms` copies of a `Sequential` of `FUSED_LAYERS`, from its current weights (the shared
    initial weights). `params` are the trainable tensors, arm axis first, in the order of
    `model.parameters()` (`src.fused.FusedOptimizer.of` pairs them by it)."""

    def __init__(self, model: nn.Sequential, arms: int) -> None:
        self.layers = list(model)
        self.params: list[Tensor] = []
        self.buffers: list[Tensor] = []
        self.slots: list[tuple[int, int]] = []  # per layer: its first param and buffer index
        for layer in self.layers:
            self.slots.append((len(self.params), len(self.buffers)))
            if isinstance(layer, nn.Linear):
                self.params += [_stacked(layer.weight.t(), arms), _stacked(layer.bias[None], arms)]
            elif isinstance(layer, (*CONVS, *NORMS)):
                self.params += [_stacked(layer.weight, arms), _stacked(layer.bias, arms)]
            if isinstance(layer, NORMS):
                self.buffers += [
                    _stacked(layer.running_mean, arms),
                    _stacked(layer.running_var, arms),
                ]
        self.params = [p.requires_grad_() for p in self.params]

    @classmethod
    def of(cls, model: nn.Sequential, arms: int) -> Stack:
        return cls(model, arms)

    def forward(self, x: Tensor, training: bool = True) -> Tensor:
        """Logits (arms, batch, classes) of inputs (arms, batch, ...); `training`: BatchNorm uses
        the batch's statistics and updates its running ones, else it uses the running ones."""
        arms = self.params[0].shape[0]
        channels = False  # the layout: (arms, batch, ...), or (batch, arms * channels, *spatial)
        for layer, (p, b) in zip(self.layers, self.slots, strict=True):
            if isinstance(layer, nn.Linear):
                if isinstance(layer, MuReadout):  # its forward's input scaling, in its order
                    x = layer.output_mult * x / layer.width_mult()
                x = torch.baddbmm(self.params[p + 1], x, self.params[p])
            elif isinstance(layer, nn.ReLU):
                x = torch.relu(x)
            elif isinstance(layer, nn.Flatten):
                if channels:  # -> (arms, batch, channels * spatial), as Flatten orders it
                    x = x.unflatten(1, (arms, -1)).flatten(2).transpose(0, 1)
                    channels = False
                else:
                    x = x.flatten(2)
            elif isinstance(layer, nn.Unflatten):  # -> (batch, arms * channels, *spatial)
                x = x.unflatten(2, layer.unflattened_size).transpose(0, 1).flatten(1, 2)
                channels = True
            elif isinstance(layer, CONVS):
                weight, bias = self.params[p].flatten(0, 1), self.params[p + 1].flatten()
                conv = F.conv1d if isinstance(layer, nn.Conv1d) else F.conv2d
                x = conv(
                    x,
                    weight,
                    bias,
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    arms * layer.groups,
                )
            else:  # BatchNorm: each arm's channels normalised over its own batch
                x = F.batch_norm(
                    x,
                    self.buffers[b].view(-1),  # views: the kernel updates the stacked buffers
                    self.buffers[b + 1].view(-1),
                    self.params[p].flatten(),
                    self.params[p + 1].flatten(),
                    training,
                    layer.momentum,
                    layer.eps,
                )
        return x

    def keep(self, rows: Tensor) -> None:
        """Only the arms at `rows` (indices into the current stack) stay."""
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.buffers = [b[rows] for b in self.buffers]
