"""Per-epoch training time of three loops, side by side in one process, on the default MLP.

    python benchmarks/bench_train.py [--reps R] [--epochs E] [--data digits mnist1d]

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

What is timed: one run of `--epochs` epochs, divided by the epoch count, as CPU time of this
process (`time.process_time`; every loop runs in this one thread: 1 torch thread, no DataLoader
workers), because wall time on a shared 2-core machine mostly measures the neighbours. Wall-clock
medians are printed too. `fit` evaluates on the validation split after every epoch, so the other two
loops make the identical call (`src.train.evaluate` on the same validation `Batches`): the
"train+eval" ratios compare like with like. That evaluation alone is timed as a fourth, interleaved
entry ("eval"); the "train only" ratios subtract it, rep by rep.

Every repetition restores the same initial state dict and builds a fresh optimizer before each loop
(outside the timed region), then runs each loop once; the loop order rotates each repetition, so
drift in machine load hits every loop alike. Times are medians over the repetitions; ratios are
medians of the per-repetition (paired) ratios. One torch thread, as trials use.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from src.batches import Batches  # noqa: E402
from src.data import as_splits  # noqa: E402
from src.models import mlp  # noqa: E402
from src.study import compose_config  # noqa: E402
from src.train import EVAL_BATCH_SIZE, evaluate, fit  # noqa: E402

# "plain" is a diagnostic, not one of the three loops: the real `fit`, handed the same config as a
# SimpleNamespace of plain values instead of a DictConfig (OmegaConf attribute access costs ~7 us).
LOOPS = ("ours", "plain", "dataloader", "pure", "eval")


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
        fitted = fit(cfg, model, optimizer, train_batches, val_batches)
        assert fitted.stop is None, f"benchmark run stopped early ({fitted.stop}): change lr"
        return fitted.epochs_run * steps_per_epoch

    plain_cfg = SimpleNamespace(**OmegaConf.to_container(cfg, resolve=False))

    def plain(optimizer: torch.optim.Optimizer) -> int:
        fitted = fit(plain_cfg, model, optimizer, train_batches, val_batches)
        assert fitted.stop is None, f"benchmark run stopped early ({fitted.stop}): change lr"
        return fitted.epochs_run * steps_per_epoch

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
        return 0

    runs = {"ours": ours, "plain": plain, "dataloader": dataloader, "pure": pure, "eval": eval_only}
    return {name: (lambda run=run: time_once(new_optimizer, run)) for name, run in runs.items()}


def time_once(setup: Callable, run: Callable) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, optimizer steps) of one run; `setup` is not timed."""
    optimizer = setup()
    cpu, wall = time.process_time(), time.perf_counter()
    steps = run(optimizer)
    return time.process_time() - cpu, time.perf_counter() - wall, steps


def bench(
    data: str, epochs: int, reps: int
) -> tuple[int, dict[str, list[float]], dict[str, list[float]]]:
    """(steps per epoch, CPU s/epoch per loop per rep, wall s/epoch per loop per rep)."""
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
    steps_per_epoch = math.ceil(len(splits.train[1]) / cfg.batch_size)
    for loop in loops.values():  # warm-up, untimed: first-call allocations, lazy imports
        loop()
    cpu: dict[str, list[float]] = {name: [] for name in LOOPS}
    wall: dict[str, list[float]] = {name: [] for name in LOOPS}
    for rep in range(reps):
        order = LOOPS[rep % len(LOOPS) :] + LOOPS[: rep % len(LOOPS)]
        for name in order:
            cpu_s, wall_s, steps = loops[name]()
            if name != "eval":
                assert steps == epochs * steps_per_epoch, (name, steps, epochs * steps_per_epoch)
            cpu[name].append(cpu_s / epochs)
            wall[name].append(wall_s / epochs)
    return steps_per_epoch, cpu, wall


def paired(times: dict[str, list[float]], num: str, den: str, minus_eval: bool = False) -> float:
    """Median over reps of times[num] / times[den] (each minus that rep's eval time if asked)."""
    off = times["eval"] if minus_eval else [0.0] * len(times[num])
    return statistics.median(
        (a - e) / (b - e) for a, b, e in zip(times[num], times[den], off, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="interleaved repetitions (default 20)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per timed run (default 3)")
    parser.add_argument(
        "--data", nargs="+", default=["digits", "mnist1d"], choices=["digits", "mnist1d"]
    )
    args = parser.parse_args()
    if args.reps < 1 or args.epochs < 1:
        parser.error("--reps and --epochs must be >= 1")
    torch.set_num_threads(1)
    print(
        f"machine: {cpu_model()} ({os.cpu_count()} cores), {torch.get_num_threads()} torch thread, "
        f"torch {torch.__version__}, python {platform.python_version()}"
    )
    print(
        f"model: mlp(width=128, depth=2), batch_size 32, SGD(momentum=0.9), lr 0.01, "
        f"{args.epochs} epoch(s) per run (warmup {min(1, args.epochs - 1)}), {args.reps} interleaved reps"
    )
    rows, wall_lines = [], []
    for data in args.data:
        steps, cpu, wall = bench(data, args.epochs, args.reps)
        med = {name: statistics.median(v) * 1e3 for name, v in cpu.items()}
        wmed = {name: statistics.median(v) * 1e3 for name, v in wall.items()}
        rows.append(
            [
                data,
                str(steps),
                *(f"{med[n]:.2f}" for n in ("ours", "dataloader", "pure", "eval")),
                f"{paired(cpu, 'ours', 'pure'):.3f}",
                f"{paired(cpu, 'dataloader', 'ours'):.3f}",
                f"{paired(cpu, 'ours', 'pure', minus_eval=True):.3f}",
                f"{paired(cpu, 'dataloader', 'ours', minus_eval=True):.3f}",
                f"{med['plain']:.2f}",
                f"{paired(cpu, 'plain', 'pure'):.3f}",
            ]
        )
        wall_lines.append(
            f"wall-clock {data}: "
            + ", ".join(f"{n} {wmed[n]:.2f}" for n in LOOPS)
            + f" ms/epoch; ours/pure {paired(wall, 'ours', 'pure'):.3f}, "
            f"dl/ours {paired(wall, 'dataloader', 'ours'):.3f}"
        )
    header = [
        "data",
        "steps/ep",
        "ours",
        "dataloader",
        "pure",
        "eval",
        "ours/pure",
        "dl/ours",
        "ours/pure (train)",
        "dl/ours (train)",
        "plain cfg",
        "plain/pure",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    print(
        "CPU ms per epoch (medians over reps); ratios are medians of per-rep ratios. Every loop "
        "includes fit's per-epoch validation pass; 'eval' is that pass alone and the (train) ratios "
        "subtract it. 'plain cfg': the real fit given the config as a SimpleNamespace instead of a "
        "DictConfig (diagnostic). Targets: ours/pure <= 1.10, dl/ours > 1."
    )
    print("\n".join(wall_lines))


if __name__ == "__main__":
    main()
