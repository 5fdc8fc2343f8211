"""Which GPU a trial uses when several run at once.

`device=auto` on a machine with CUDA puts each concurrent trial on its own GPU: the sweeper gives
every job a worker slot (`worker_slot`, 0 .. n_jobs - 1: the lane that runs it, and a lane runs one
job at a time, so the jobs running at one time have distinct slots), and slot `s` uses visible
GPU `s mod G`. GPUs
are counted and numbered as CUDA sees them, so `CUDA_VISIBLE_DEVICES` is honoured: with
`CUDA_VISIBLE_DEVICES=2,3`, slots 0 and 1 run on physical GPUs 2 and 3. A SLURM task given one
GPU (`gpus_per_task: 1`) sees only that one and uses it. More workers than GPUs share them
round-robin.
"""

from __future__ import annotations


def gpu_for_slot(slot: int | None, device_count: int) -> int | None:
    """The CUDA device index for worker `slot` among `device_count` visible GPUs: `slot mod
    device_count`; slot None (a single run) is GPU 0; None when there is no GPU."""
    if device_count < 1:
        return None
    if slot is None:
        return 0
    if slot < 0:
        raise ValueError(f"worker slot must be >= 0, got {slot}")
    return slot % device_count
