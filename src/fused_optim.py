"""The optimizer of `src.fused`: `torch.optim.SGD`, `Adam` and `AdamW`'s updates on stacked
parameters (a leading arm axis), each arm at its own LR, as torch.optim computes them (its
single-tensor path, the CPU's default), term by term in the same order.

A muP optimizer (`mup.MuSGD`, `MuAdam`, `MuAdamW`) is one of these with several parameter groups
that differ in LR and weight decay: each parameter keeps its group's multiple of the arm's LR
(`src.base_lr.lr_scales`, as `src.train.fit` keeps it under the schedule) and its group's weight
decay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from src.base_lr import lr_scales


class FusedOptimizer:
    """`torch.optim.SGD`, `Adam` or `AdamW`'s update on stacked parameters, with a per-arm LR
    (a tensor (arms,)): each arm's slice gets the terms of torch.optim's single-tensor update (the
    CPU's default path), in the same order, with its own LR. Parameter `i` has its group's LR
    scale `scales[i]` (a muP optimizer's per-layer multiple of the LR; 1 by default) and weight
    decay `decays[i]` (default: `options["weight_decay"]`)."""

    def __init__(
        self,
        kind: type,
        options: dict,
        params: Sequence[Tensor],
        scales: Sequence[float] | None = None,
        decays: Sequence[float] | None = None,
    ) -> None:
        self.options = options
        self.adam = kind is not torch.optim.SGD
        self.decoupled = kind is torch.optim.AdamW or bool(options.get("decoupled_weight_decay"))
        self.steps = 0
        self.scales = [1.0] * len(params) if scales is None else list(scales)
        self.decays = [options["weight_decay"]] * len(params) if decays is None else list(decays)
        count = 2 if self.adam else 1
        self.state = [[torch.zeros_like(p) for p in params] for _ in range(count)]

    @classmethod
    def of(
        cls, optimizer: torch.optim.Optimizer, model: nn.Module, params: Sequence[Tensor]
    ) -> FusedOptimizer:
        """The fused `optimizer` of `model`, over `params`: the stacked tensors of
        `model.parameters()`, in that order. Each gets its parameter group's LR scale (as
        `src.train.fit` keeps it under the schedule: `lr_scales`) and weight decay."""
        group_scales = lr_scales(optimizer, optimizer.defaults["lr"])
        index = {id(p): i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        groups = [index[id(p)] for p in model.parameters()]
        if len(groups) != len(params):
            raise ValueError(f"{len(params)} stacked tensors for {len(groups)} parameters")
        scales = [group_scales[i] for i in groups]
        decays = [optimizer.param_groups[i]["weight_decay"] for i in groups]
        return cls(type(optimizer), optimizer.defaults, params, scales, decays)

    def keep(self, rows: Tensor) -> None:
        self.state = [[s[rows] for s in group] for group in self.state]

    @torch.no_grad()
    def step(self, params: Sequence[Tensor], grads: Sequence[Tensor], lr: Tensor) -> None:
        self.steps += 1
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            arm_lr = lr.view(-1, *[1] * (param.dim() - 1))  # each arm's LR on its own slice
            if self.scales[i] != 1.0:  # the parameter's group's multiple of the LR (muP)
                arm_lr = arm_lr * self.scales[i]
            decay = self.decays[i]
            if self.adam:
                self._adam(param, grad, self.state[0][i], self.state[1][i], arm_lr, decay)
            else:
                self._sgd(param, grad, self.state[0][i], arm_lr, decay)

    def _sgd(self, param: Tensor, grad: Tensor, buf: Tensor, lr: Tensor, decay: float) -> None:
        o = self.options
        if decay != 0:
            grad = grad.add(param, alpha=decay)
        if o["momentum"] != 0:
            if self.steps == 1:  # torch's first step: the buffer is the gradient, undampened
                buf.copy_(grad)
            else:
                buf.mul_(o["momentum"]).add_(grad, alpha=1 - o["dampening"])
            grad = grad.add(buf, alpha=o["momentum"]) if o["nesterov"] else buf
        param.sub_(lr * grad)

    def _adam(
        self, param: Tensor, grad: Tensor, avg: Tensor, avg_sq: Tensor, lr: Tensor, decay: float
    ) -> None:
        o = self.options
        beta1, beta2 = o["betas"]
        if decay != 0:
            if self.decoupled:
                param.mul_(1 - lr * decay)
            else:
                grad = grad.add(param, alpha=decay)
        avg.lerp_(grad, 1 - beta1)
        avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = lr / (1 - beta1**self.steps)
        denom = (avg_sq.sqrt() / math.sqrt(1 - beta2**self.steps)).add_(o["eps"])
        param.sub_(step_size * (avg / denom))
