"""Per-epoch training time of three loops, side by side in one process, on the default MLP.

    python scripts/bench_train.py [--reps R] [--epochs E] [--data digits mnist1d]

Loops (same model, same initial weights, same optimizer, same number of optimizer steps):

- ours:       `src.train.fit` as a trial calls it: `Batches` over in-memory tensors (one randperm and
              gather per epoch, then slices), `lr_at` written to every param group on every step,
              loss summed on-device and checked with one `torch.isfinite` host sync every
              `log_every` steps, one `.item()` per epoch.
- dataloader: the original write-up's loop: `DataLoader(TensorDataset(x, y), batch_size,
              shuffle=True)`, `.to(device)` per batch, LR rewritten in the param groups during
              warmup.
- pure:       forward / backward / step over a list of (x, y) batches made before timing: no
              shuffling, no LR writes, no loss bookkeeping. The floor for this model and batch size.

What is timed: one run of `--epochs` epochs, divided by the epoch count. `fit` evaluates on the
validation split after every epoch, so the other two loops make the identical call
(`src.train.evaluate` on the same validation `Batches`): the "train+eval" columns compare like with
like. The cost of that evaluation alone is timed as a fourth, interleaved entry ("eval"), and the
"train" columns are train+eval minus the median eval time.

Every repetition restores the same initial state dict and builds a fresh optimizer, then runs each
loop once; the loop order rotates each repetition, so drift in machine load (other processes) hits
every loop alike. Medians over the repetitions are reported. One torch thread, as trials use.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from src.data import Batches, as_splits  # noqa: E402
from src.models import mlp  # noqa: E402
from src.study import compose_config  # noqa: E402
from src.train import EVAL_BATCH_SIZE, evaluate, fit  # noqa: E402

LOOPS = ("ours", "dataloader", "pure", "eval")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def make_loops(cfg: DictConfig, model: torch.nn.Module, initial: dict) -> dict[str, Callable]:
    """One callable per loop; each restores the initial weights, builds a fresh SGD and runs
    `cfg.epochs` epochs (the state restore is outside the timed region: see `time_once`)."""
    splits = as_splits(instantiate(cfg.data))
    device = torch.device("cpu")
    train_x, train_y = splits.train
    train_batches = Batches(
        splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, device=device
    )
    val_batches = Batches(splits.val, EVAL_BATCH_SIZE, shuffle=False, device=device)
    steps_per_epoch = len(train_batches)
    # Write-up style: a DataLoader over the same tensors, shuffled; seeded so runs are repeatable.
    loader = DataLoader(
        TensorDataset(train_x, train_y),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    assert len(loader) == steps_per_epoch
    premade = [
        (train_x[i : i + cfg.batch_size].clone(), train_y[i : i + cfg.batch_size].clone())
        for i in range(0, len(train_y), cfg.batch_size)
    ]
    assert len(premade) == steps_per_epoch

    def new_optimizer() -> torch.optim.Optimizer:
        model.load_state_dict(initial)
        return instantiate(cfg.optimizer)(model.parameters(), lr=cfg.lr)

    def ours(optimizer: torch.optim.Optimizer) -> int:
        diverged, epochs_run, *_ = fit(cfg, model, optimizer, train_batches, val_batches)
        assert not diverged and epochs_run == cfg.epochs, "benchmark run diverged: lower lr"
        return epochs_run * steps_per_epoch

    def dataloader(optimizer: torch.optim.Optimizer) -> int:
        # The write-up's loop (seed file 000, lines 25-45), with fit's per-epoch evaluation.
        warmup_batches = cfg.warmup_epochs * len(loader)
        batch_cnt, steps = 1, 0
        if warmup_batches:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * batch_cnt / warmup_batches
        for _ in range(cfg.epochs):
            model.train()
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad()
                loss = F.cross_entropy(model(inputs), targets)
                loss.backward()
                optimizer.step()
                steps += 1
                batch_cnt += 1
                if batch_cnt < warmup_batches:
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * batch_cnt / warmup_batches
            evaluate(model, val_batches)
        return steps

    def pure(optimizer: torch.optim.Optimizer) -> int:
        steps = 0
        for _ in range(cfg.epochs):
            model.train()
            for x, y in premade:
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
            evaluate(model, val_batches)
        return steps

    def eval_only(optimizer: torch.optim.Optimizer) -> int:
        for _ in range(cfg.epochs):
            evaluate(model, val_batches)
        return cfg.epochs * steps_per_epoch  # no steps taken; keeps the step-count check uniform

    runs = {"ours": ours, "dataloader": dataloader, "pure": pure, "eval": eval_only}
    return {name: (lambda run=run: time_once(new_optimizer, run)) for name, run in runs.items()}


def time_once(setup: Callable, run: Callable) -> tuple[float, int]:
    optimizer = setup()
    start = time.perf_counter()
    steps = run(optimizer)
    return time.perf_counter() - start, steps


def bench(data: str, epochs: int, reps: int) -> dict[str, list[float]]:
    overrides = [
        f"data={data}",
        "model=mlp",
        "optimizer=sgd",
        f"epochs={epochs}",
        f"warmup_epochs={min(1, epochs - 1)}",
        "batch_size=32",
        "threads=1",
        "device=cpu",
    ]
    cfg = compose_config(overrides)
    splits = as_splits(instantiate(cfg.data))
    torch.manual_seed(cfg.init_seed)
    model = mlp(splits.input_shape, splits.num_classes, width=128, depth=2)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loops = make_loops(cfg, model, initial)
    expected_steps = epochs * math.ceil(len(splits.train[1]) / cfg.batch_size)
    for loop in loops.values():  # warm-up, untimed: first-call allocations, lazy imports
        loop()
    times: dict[str, list[float]] = {name: [] for name in LOOPS}
    for rep in range(reps):
        order = LOOPS[rep % len(LOOPS) :] + LOOPS[: rep % len(LOOPS)]
        for name in order:
            seconds, steps = loops[name]()
            assert steps == expected_steps, (name, steps, expected_steps)
            times[name].append(seconds / epochs)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="interleaved repetitions (default 15)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run (default 3)")
    parser.add_argument("--data", nargs="+", default=["digits", "mnist1d"])
    args = parser.parse_args()
    if args.reps < 1 or args.epochs < 1:
        parser.error("--reps and --epochs must be >= 1")
    torch.set_num_threads(1)
    print(
        f"machine: {cpu_model()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(
        f"model: mlp(width=128, depth=2), batch_size 32, SGD(momentum=0.9), "
        f"{args.epochs} epoch(s) per run, {args.reps} interleaved reps, medians in ms/epoch"
    )
    header = (
        f"{'data':<8} {'steps/ep':>8} {'ours':>7} {'dataldr':>7} {'pure':>7} {'eval':>6}"
        f" | {'ours/pure':>9} {'dl/ours':>7} | {'train: ours':>11} {'dl':>6} {'pure':>6}"
        f" {'ours/pure':>9} {'dl/ours':>7}"
    )
    print(header)
    print("-" * len(header))
    for data in args.data:
        times = bench(data, args.epochs, args.reps)
        med = {name: statistics.median(values) * 1e3 for name, values in times.items()}
        train = {name: med[name] - med["eval"] for name in ("ours", "dataloader", "pure")}
        cfg_steps = compose_config([f"data={data}"])
        steps = math.ceil(len(as_splits(instantiate(cfg_steps.data)).train[1]) / 32)
        print(
            f"{data:<8} {steps:>8} {med['ours']:>7.2f} {med['dataloader']:>7.2f}"
            f" {med['pure']:>7.2f} {med['eval']:>6.2f}"
            f" | {med['ours'] / med['pure']:>9.3f} {med['dataloader'] / med['ours']:>7.3f}"
            f" | {train['ours']:>11.2f} {train['dataloader']:>6.2f} {train['pure']:>6.2f}"
            f" {train['ours'] / train['pure']:>9.3f} {train['dataloader'] / train['ours']:>7.3f}",
            flush=True,
        )
    print(
        "columns: train+eval ms/epoch (fit's per-epoch validation pass included in every loop); "
        "eval = that validation pass alone; train = train+eval - eval. "
        "Targets: ours/pure <= 1.10, dl/ours > 1."
    )


if __name__ == "__main__":
    main()
