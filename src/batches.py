"""Mini-batches over one split (`src.data.Split`): `Batches.epoch(e)`, the same order for the same
seed. Tensor splits are sliced in memory; a `Dataset` split goes through a `DataLoader`."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from src.data import Split, TensorPair, split_size


class Batches:
    """The mini-batches of one split. `epoch(e)` is a pure function of (seed, e): same seed, same order.

    `num_workers` (e.g. `Splits.num_workers`) sets the DataLoader's worker processes for a Dataset
    split; the order does not depend on it. Tensor splits are sliced in-process and ignore it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        device: torch.device | str = "cpu",
        num_workers: int = 0,
    ) -> None:
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        if isinstance(split, tuple):
            # Moved once: each batch is then a view of a permuted copy, no per-batch transfer.
            self.tensors: TensorPair | None = (split[0].to(self.device), split[1].to(self.device))
            self.dataset = None
        else:
            self.tensors, self.dataset = None, split
        self.n = split_size(split)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def _generator(self, epoch: int) -> torch.Generator:
        # One stream per (seed, epoch), independent of how many epochs ran before.
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(epoch))

    def epoch(self, epoch: int) -> Iterator[TensorPair]:
        if self.tensors is not None:
            x, y = self.tensors
            if self.shuffle:
                order = torch.randperm(self.n, generator=self._generator(epoch)).to(self.device)
                x, y = x[order], y[order]
            for start in range(0, self.n, self.batch_size):
                yield x[start : start + self.batch_size], y[start : start + self.batch_size]
            return
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=self._generator(epoch) if self.shuffle else None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
