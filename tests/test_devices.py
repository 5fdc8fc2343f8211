"""One GPU per concurrent worker: the slot -> GPU rule, and `device=auto` with the GPU count
faked (this machine has none; the rule is a pure function of slot and count)."""

from __future__ import annotations

import pytest
import torch

from src.devices import gpu_for_slot
from src.train import resolve_device


@pytest.mark.parametrize(
    "slot, count, expected",
    [
        (None, 0, None),  # no GPU: the CPU
        (3, 0, None),
        (None, 4, 0),  # a single run: the first visible GPU
        (0, 4, 0),
        (1, 4, 1),
        (3, 4, 3),
        (4, 4, 0),  # more workers than GPUs: round-robin
        (5, 2, 1),
        (2, 1, 0),  # a SLURM task that sees only its own GPU
    ],
)
def test_gpu_for_slot(slot, count, expected):
    assert gpu_for_slot(slot, count) == expected


def test_k_concurrent_workers_on_g_gpus_each_get_their_own_when_k_le_g():
    for gpus in range(1, 9):
        for workers in range(1, gpus + 1):
            assert len({gpu_for_slot(s, gpus) for s in range(workers)}) == workers
        # K > G: every GPU is used and none gets more than ceil(K / G) workers.
        workers = 2 * gpus + 1
        load = [sum(gpu_for_slot(s, gpus) == g for s in range(workers)) for g in range(gpus)]
        assert min(load) >= 1 and max(load) <= -(-workers // gpus)


def test_a_negative_slot_is_an_error():
    with pytest.raises(ValueError, match="slot"):
        gpu_for_slot(-1, 2)


def test_device_auto_follows_the_worker_slot(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [resolve_device("auto", s) for s in (None, 0, 1, 2, 3, 5)] == [
        torch.device("cuda", i) for i in (0, 0, 1, 2, 3, 1)
    ]
    assert resolve_device("cpu", 2) == torch.device("cpu")  # an explicit device wins


def test_device_auto_without_cuda_is_the_cpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto", 3) == torch.device("cpu")
