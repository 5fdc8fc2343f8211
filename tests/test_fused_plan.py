"""`src.fused_plan`: when a fused batch pays, and how many arms fit, on numbers and a real model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.fused_plan import (
    CPU_FUSE_MAX_PARAMS,
    MEMORY_SHARE,
    StepCost,
    arms_per_batch,
    batches_of,
    fusing_pays,
    step_cost,
)


def test_step_cost_counts_a_linear_layers_flops_and_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost = step_cost(model, torch.zeros(64), batch_size=32, eval_batch_size=1024, states=1)
    # Forward: 2*b*(64*128 + 128*10) for the matmuls. Backward: the weights' gradients (one
    # forward's worth) and the hidden activations' (the last layer's), but not the input's.
    forward = 2 * 32 * (64 * 128 + 128 * 10)
    assert 2 * forward <= cost.flops <= 3 * forward
    assert cost.params == 64 * 128 + 128 + 2 * 128 + 128 * 10 + 10
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm's statistics too


def test_step_cost_measures_a_mup_model():
    """muP's readout needs its weight's `infshape` (set_base_shapes), which a deep copy of the model
    would drop: the measurement leaves the model as it was, runnable."""
    from src.mup_models import mlp_mup

    model = mlp_mup(input_shape=(64,), num_classes=10, width=32, depth=1, base_width=16)
    cost = step_cost(model, torch.zeros(64), batch_size=32, eval_batch_size=1024, states=1)
    assert cost.flops > 0 and all(p.grad is None for p in model.parameters())


def test_fusing_pays_on_a_gpu_always_and_on_the_cpu_up_to_the_measured_size():
    small = CPU_FUSE_MAX_PARAMS
    cheap = StepCost(flops=1e9, params=small, train_bytes=1, eval_bytes=1)
    dear = StepCost(flops=1e3, params=small + 1, train_bytes=1, eval_bytes=1)
    assert fusing_pays(torch.device("cpu"), cheap) is None
    assert fusing_pays(torch.device("cuda"), dear) is None
    why = fusing_pays(torch.device("cpu"), dear)
    assert why is not None and "one arm at a time" in why


def test_arms_per_batch_is_the_memory_share_over_the_larger_footprint_and_at_least_one():
    cost = StepCost(flops=1.0, params=1, train_bytes=100, eval_bytes=300)
    assert arms_per_batch(cost, free_bytes=3000) == int(MEMORY_SHARE * 3000 // 300)
    assert arms_per_batch(cost, free_bytes=3000, shared_bytes=900) == int(
        (MEMORY_SHARE * 3000 - 900) // 300
    )
    assert arms_per_batch(cost, free_bytes=10) == 1  # never none: one arm is a sequential trial


@pytest.mark.parametrize(
    ("count", "size", "sizes"),
    [(35, 30, [18, 17]), (30, 30, [30]), (5, 2, [2, 2, 1]), (1, 30, [1]), (0, 30, [])],
)
def test_batches_of_splits_evenly_into_as_few_batches_as_fit(count, size, sizes):
    parts = batches_of(count, size)
    assert [len(p) for p in parts] == sizes
    assert [i for p in parts for i in p] == list(range(count))
