"""When a fused batch pays, and how many arms one batch holds (`src.fused_jobs.train_batch`).

Two questions the fused launcher asks before it trains a batch's arms together:

1. **Does fusing pay on this device?** Fusing saves per-step Python and kernel-launch overhead,
   the same for every arm; it costs a batched kernel (`baddbmm`, a grouped convolution) in place of
   a plain one. On a GPU, where such small models are launch-bound, it always pays. On the CPU it
   pays while the arms' weights are small. Measured (`benchmarks/bench_fused.py --parts d`,
   docs/benchmarks.md) on mlps of widths 128..2048 at batch sizes 32 and 128, the fused batch took
   0.27-0.57x the sequential trials' time up to 85k parameters per arm, 0.78-1.14x at 301k, and
   1.9-5.1x from 1.1M on; the arithmetic per step (`StepCost.flops`, counted by
   `torch.utils.flop_counter`) did not separate them (212 MFLOP per arm-step lost 5x at batch 32,
   222 MFLOP won at batch 128). So above `CPU_FUSE_MAX_PARAMS` parameters per arm the batch runs
   one job at a time, as the sequential launcher would.
2. **How many arms fit?** Every arm holds its parameters, their gradients and its optimizer's
   state, and its activations for the batch; a batch's arms must fit in the device's free memory
   (on a GPU, `torch.cuda.mem_get_info`; on the CPU, the available RAM) with room to spare
   (`MEMORY_SHARE`). A launch with more arms than that trains them in consecutive fused batches.

Pure calculations apart from the measurement of a model (`step_cost`), so the rule reads in one
place and the tests check it on numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# The CPU rule: fuse up to this many trainable parameters per arm (measured: 85k paid, 0.27-0.57x;
# 301k was near even, 0.78-1.14x; 1.1M lost, 1.9-5.1x): below the near-even point, so that a
# model run sequentially by this rule could have gained little, and one fused never loses.
CPU_FUSE_MAX_PARAMS = 200_000
# The share of the free memory a fused batch may plan to take: the estimate below leaves out the
# allocator's rounding and the framework's workspaces.
MEMORY_SHARE = 0.5
# Per trainable value: the parameter, its gradient, the update's temporaries; plus the optimizer's
# state (SGD with momentum: 1 buffer; Adam: 2).
_PARAM_COPIES = 3


@dataclass(frozen=True)
class StepCost:
    """One arm's training step, measured on its model: floating-point operations (forward and
    backward), trainable parameters, and the bytes it holds while training and evaluating."""

    flops: float
    params: int
    train_bytes: int
    eval_bytes: int

    @property
    def mflop(self) -> float:
        return self.flops / 1e6


def step_cost(
    model: nn.Module, example: torch.Tensor, batch_size: int, eval_batch_size: int, states: int
) -> StepCost:
    """One arm's cost, measured by one forward and backward pass of `model` on a batch of
    `batch_size` copies of `example` (one input, without a batch axis), on the model's device.
    `states`: the optimizer's state tensors per parameter (SGD with momentum 1, Adam 2). The
    model's gradients and state (BatchNorm's statistics) are put back as they were. (Not a deep
    copy: it would drop the attributes `mup` sets on parameters.)"""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in params]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    activations = 0

    def count(_module: nn.Module, _inputs: object, output: object) -> None:
        nonlocal activations
        if isinstance(output, torch.Tensor):
            activations += output[0].numel()  # per example

    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        x = example.unsqueeze(0).expand(batch_size, *example.shape)
        with FlopCounterMode(display=False) as counter:
            model(x).float().sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.load_state_dict(state)
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad
    values = sum(p.numel() for p in params)
    bytes_per = example.element_size()
    train = bytes_per * (values * (_PARAM_COPIES + states) + 3 * batch_size * activations)
    evaluation = bytes_per * (values + 2 * eval_batch_size * activations)
    return StepCost(float(counter.get_total_flops()), values, train, evaluation)


def fusing_pays(device: torch.device, cost: StepCost) -> str | None:
    """None when a fused batch of this model is expected to be faster than its trials one after
    another on `device`; else why not (one phrase, for the launcher's line)."""
    if device.type == "cpu" and cost.params > CPU_FUSE_MAX_PARAMS:
        return (
            f"on the CPU a model of {cost.params:,} parameters per arm trains faster one arm at "
            f"a time (fused arms pay up to {CPU_FUSE_MAX_PARAMS:,}; benchmarks/bench_fused.py "
            "--parts d)"
        )
    return None


def free_memory(device: torch.device) -> int:
    """Bytes free for a fused batch on `device`: the GPU's free memory, or the available RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)


def arms_per_batch(cost: StepCost, free_bytes: int, shared_bytes: int = 0) -> int:
    """How many arms one fused batch may hold: `MEMORY_SHARE` of `free_bytes`, less what the batch
    holds once whatever its arms (`shared_bytes`: the data), over one arm's training or
    evaluation footprint, whichever is larger. At least 1."""
    budget = MEMORY_SHARE * free_bytes - shared_bytes
    per_arm = max(cost.train_bytes, cost.eval_bytes, 1)
    return max(1, math.floor(budget / per_arm))


def batches_of(count: int, size: int) -> list[range]:
    """`count` arms in consecutive batches of at most `size`, as even as they come: 35 arms in
    batches of 30 are 18 + 17, not 30 + 5 (the same number of fused batches, each as cheap)."""
    if count <= 0:
        return []
    parts = math.ceil(count / max(1, size))
    base, extra = divmod(count, parts)  # the first `extra` batches take one arm more
    sizes = [base + (i < extra) for i in range(parts)]
    starts = [sum(sizes[:i]) for i in range(parts)]
    return [range(start, start + n) for start, n in zip(starts, sizes, strict=True)]
