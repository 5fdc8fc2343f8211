"""The method's original write-up as a program: its `lr_finder` loop, for benchmarks/bench_sweep.py.

    python benchmarks/seed_loop.py [--points 10] [--low 1e-5] [--high 1] [--epochs 5]
                                   [--warmup-epochs 1] [--pure]

One process, one model, `--points` LRs log-spaced in [low, high]: before each LR the initial state
dict (a deepcopy kept in memory) is restored, a fresh optimizer is built, and the model trains
through a `DataLoader` with the write-up's warmup (the LR rewritten per batch during warmup), then is
scored by validation accuracy. Same data (digits), model (MLP 128x2), optimizer (SGD momentum 0.9)
and batch size (32) as lrsweep's default trial, one torch thread as lrsweep's trials use.

`--pure` replaces the loop by pure forward/backward/step over batches made before timing (no
shuffling, no LR writes, no evaluation): the floor of the same work. Prints one line,
`trained_s=<seconds inside the loop>`, after the per-LR lines.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from src.data import digits  # noqa: E402
from src.models import mlp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--low", type=float, default=1e-5)
    parser.add_argument("--high", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pure", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    splits = digits()
    (x, y), (vx, vy) = splits.train, splits.val
    torch.manual_seed(0)
    model = mlp(splits.input_shape, splits.num_classes, width=128, depth=2)
    init_wts = copy.deepcopy(model.state_dict())
    train_loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(TensorDataset(vx, vy), batch_size=args.batch_size)
    premade = [
        (x[i : i + args.batch_size], y[i : i + args.batch_size])
        for i in range(0, len(y), args.batch_size)
    ]
    started = time.perf_counter()
    for lr in np.logspace(np.log10(args.low), np.log10(args.high), args.points):
        model.load_state_dict(init_wts)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(lr), momentum=0.9)
        if args.pure:
            for _ in range(args.epochs):
                for inputs, targets in premade:
                    loss = F.cross_entropy(model(inputs), targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            continue
        warmup_batches = args.warmup_epochs * len(train_loader)
        batch_cnt = 1
        if warmup_batches:
            for group in optimizer.param_groups:
                group["lr"] = lr * batch_cnt / warmup_batches
        model.train()
        for _ in range(args.epochs):
            for inputs, targets in train_loader:
                optimizer.zero_grad()
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()
                batch_cnt += 1
                if batch_cnt < warmup_batches:
                    for group in optimizer.param_groups:
                        group["lr"] = lr * batch_cnt / warmup_batches
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for inputs, targets in val_loader:
                correct += (model(inputs).argmax(1) == targets).sum().item()
                total += targets.size(0)
        print(f"LR={lr:.2e}: acc={correct / total:.4f}")
    print(f"trained_s={time.perf_counter() - started:.4f}")


if __name__ == "__main__":
    main()
