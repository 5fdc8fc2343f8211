"""Fused arms (`src.fused`) against sequential trials, side by side in one run (issue 19).

    python benchmarks/bench_fused.py [--reps R] [--parts a b c] [--epochs-b 20] [--reps-b R]

(a) The default stage 1: digits, MLP 128x2, SGD momentum 0.9, batch 32, 5 epochs (1 warmup), the
    default grid's 10 LRs (1e-5 .. 1, log-uniform), seed 0. In this process, interleaved (the
    order rotates each repetition, so drift in the machine's load hits every entry alike):
    - sequential: `src.train.train` once per LR, as the in-process launcher runs a sweep's trials;
    - fused:      `src.fused.run_arms`, one stacked model, one `torch.baddbmm` per Linear;
    - vmap:       the same, the stacked model a torch.func `stack_module_state` +
                  `functional_call` + `vmap` over the original module (`VmapStack`).
    Timed: the trials' time, first trial's start to last trial's end (configs composed before).
    Then whole processes: one child process per entry (`--child`), interleaved, wall time from
    start to exit: imports, the config, the data and the trials. A child runs no sweep (no
    Hydra multirun, no study): the sweep's own start-up is the same either way.
(b) A sweep where training dominates: mnist1d, 10 LRs x 3 seeds (30 arms), `--epochs-b` epochs
    (20), whole child processes, sequential and fused interleaved.

(c) Optional (`--parts c`): (a)'s trials with `model=cnn` (convolutions, BatchNorm), sequential and
    fused.
(d) Optional (`--parts d`): where fusing stops paying on this device. (a)'s trials (10 LRs, seed 0,
    `--epochs-d` epochs) with the mlp at each of `--widths` x `--batch-sizes`, sequential and
    fused interleaved; each setting's parameters and MFLOP per arm and step
    (`src.fused_plan.step_cost`) beside its ratio, and what the launcher's check costs before it
    runs a batch one job at a time (`run_arms(..., only_if_pays=True)` up to its NotFusable), as a
    share of the sequential trials. `src.fused_plan.CPU_FUSE_MAX_PARAMS` is the rule this part
    measured on the CPU.
(g) On a GPU (`--parts g`, `device=cuda`): one arm against 30 (10 LRs x 3 seeds) fused, on the
    default trial and on (b)'s mnist1d setting, interleaved, the trials' time; beside it one
    sequential trial on the GPU, the 30 arms' accuracies against 30 sequential trials on the GPU,
    and the peak GPU memory against `src.fused_plan`'s estimate. Last line:
    `gpu 30arms/1arm=<mnist1d ratio> default=<default ratio>`.

Measured here (2 shared CPU cores, Intel Xeon, torch 2.14, 4 other agents at work; default
`--reps 5 --reps-b 3`): (a) trials 1.21 s sequential, fused 0.40x (per rep 0.33-0.43), vmap 0.58x
(0.48-0.59); whole processes 8.1 s sequential, fused 0.71x (0.54-1.01), vmap 0.72x; 9/10 arms the
same accuracy (lr=0.278, at chance: 0.103 fused vs 0.114). (c) cnn trials 6.6 s sequential, fused
0.72x (0.66-1.00); 8/10 arms the same accuracy (lr=0.0215: 0.975 vs 0.978, lr=0.278: 0.978 vs
0.953). (b) whole processes 34.8 s sequential, fused 0.40x (0.39-0.43), trials 0.39x; 17/30 arms
the same accuracy, the others within 0.03: over 20 epochs (2500 steps) the rounding differences of
a batched matmul grow in the arms trained near the edge of stability (lr >= 0.006; one arm agreed
to 1e-7 in train loss for 19 epochs, then parted by 4e-4), to about the spread between seeds.
Last line: `fused/sequential=0.40 whole_30arms=0.40 arms=30`.

Times are medians over the repetitions; ratios are medians of the per-repetition (paired)
ratios. Every entry's per-arm validation accuracies are printed against the sequential ones.
One torch thread, as trials use. The last line:
`fused/sequential=<(a) trials' ratio> whole_30arms=<(b) ratio> arms=<(b)'s arm count>`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.func import functional_call, stack_module_state, vmap  # noqa: E402

from lrsweep.grid import log_axis  # noqa: E402
from src.fused import Arm, NotFusable, run_arms  # noqa: E402
from src.fused_models import Stack  # noqa: E402
from src.study import compose_config  # noqa: E402
from src.train import train  # noqa: E402

ENTRIES = ("sequential", "fused", "vmap")
DEFAULT_LRS = log_axis("lr", 1e-5, 1.0, 10).values


class VmapStack:
    """The torch.func variant of `src.fused_models.Stack`: the arms' parameters and buffers stacked
    by `stack_module_state`, the forward `vmap` over `functional_call` of the original module."""

    def __init__(self, model: nn.Module, arms: int) -> None:
        params, buffers = stack_module_state([model] * arms)
        self.names, self.buffer_names = list(params), list(buffers)
        self.params = [params[n].detach().clone().requires_grad_() for n in self.names]
        self.buffers = [buffers[n].clone() for n in self.buffer_names]
        self.model = model

    def _one(self, params: tuple, buffers: tuple, x: Tensor) -> Tensor:
        state = dict(zip(self.names, params, strict=True))
        state.update(zip(self.buffer_names, buffers, strict=True))
        return functional_call(self.model, state, (x,))

    def forward(self, x: Tensor, training: bool = True) -> Tensor:
        self.model.train(training)
        return vmap(self._one)(tuple(self.params), tuple(self.buffers), x)

    def keep(self, rows: Tensor) -> None:
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.buffers = [b[rows] for b in self.buffers]


def arms_of(lrs: list[float], seeds: list[int]) -> list[Arm]:
    return [Arm(lr, seed) for lr in lrs for seed in seeds]


def run_entry(entry: str, overrides: list[str], arms: list[Arm]) -> tuple[float, list[float]]:
    """(trials' seconds, per-arm validation accuracies) of one entry; configs composed first."""
    if entry == "sequential":
        cfgs = [compose_config([*overrides, f"lr={a.lr}", f"seed={a.seed}"]) for a in arms]
        start = time.perf_counter()
        results = [train(cfg) for cfg in cfgs]
    else:
        cfg = compose_config(overrides)
        start = time.perf_counter()
        results = run_arms(cfg, arms, VmapStack if entry == "vmap" else Stack.of)
    return time.perf_counter() - start, [r.val_acc for r in results]


def child(args: argparse.Namespace) -> None:
    """One whole process's work (`--child ENTRY`): print its trials' time and accuracies."""
    torch.set_num_threads(1)
    seconds, accs = run_entry(args.child, args.overrides, arms_of(args.lrs, args.seeds))
    print(json.dumps({"trials_s": seconds, "val_acc": accs}))


def spawn(entry: str, overrides: list[str], lrs: list[float], seeds: list[int], cwd: str) -> dict:
    """A child process for `entry`; its wall time from start to exit, with what it printed."""
    command = [sys.executable, __file__, "--child", entry, "--lrs", *map(str, lrs)]
    command += ["--seeds", *map(str, seeds), "--overrides", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"child {entry} failed:\n{proc.stderr}")
    return {"whole_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def rotated(entries: tuple[str, ...], rep: int) -> list[str]:
    shift = rep % len(entries)
    return list(entries[shift:] + entries[:shift])


def summarise(label: str, times: dict[str, list[float]], base: str = "sequential") -> dict:
    """Print each entry's median time and its median paired ratio to `base`; return the ratios."""
    ratios = {}
    for entry, values in times.items():
        paired = [v / b for v, b in zip(values, times[base], strict=True)]
        ratios[entry] = statistics.median(paired)
        spread = f"[{min(paired):.2f}, {max(paired):.2f}]"
        print(
            f"  {label} {entry:>10}: median {statistics.median(values):7.2f} s"
            f"  ratio to {base} {ratios[entry]:.2f} (per rep {spread}, n={len(values)})"
        )
    return ratios


def compare_accuracies(accs: dict[str, list[float]], arms: list[Arm]) -> None:
    """Per-arm validation accuracies of every entry against the sequential ones; those that
    differ, listed."""
    for entry, values in accs.items():
        pairs = list(zip(arms, values, accs["sequential"], strict=True))
        other = [f"lr={a.lr:.3g} seed={a.seed}: {v:.4f} vs {s:.4f}" for a, v, s in pairs if v != s]
        print(
            f"  val_acc {entry:>10}: {len(arms) - len(other)}/{len(arms)} arms equal to sequential"
        )
        for line in other:
            print(f"    {line}")


def trials_side_by_side(
    reps: int, overrides: list[str], entries: tuple[str, ...] = ENTRIES
) -> tuple[dict[str, float], dict[str, float]]:
    """The trials' time of each entry on the 10 default LRs (seed 0), in this process,
    interleaved; printed, and the median paired ratios and median seconds returned."""
    arms = arms_of(DEFAULT_LRS, [0])
    for entry in entries:  # warm-up, untimed: the checkpoint, the data, first-call costs
        run_entry(entry, overrides, arms)
    times: dict[str, list[float]] = {e: [] for e in entries}
    accs: dict[str, list[float]] = {}
    for rep in range(reps):
        for entry in rotated(entries, rep):
            seconds, accs[entry] = run_entry(entry, overrides, arms)
            times[entry].append(seconds)
    ratios = summarise("trials", times)
    compare_accuracies(accs, arms)
    return ratios, {entry: statistics.median(values) for entry, values in times.items()}


def part_a(reps: int, work: str) -> float:
    print("(a) default stage 1: digits, mlp 128x2, sgd, batch 32, 5 epochs, 10 LRs, seed 0")
    ratios, _ = trials_side_by_side(reps, [])
    whole: dict[str, list[float]] = {e: [] for e in ENTRIES}
    for rep in range(reps):
        for entry in rotated(ENTRIES, rep):
            whole[entry].append(spawn(entry, [], DEFAULT_LRS, [0], work)["whole_s"])
    summarise("whole process", whole)
    return ratios["fused"]


def part_c(reps: int) -> None:
    """Not in the issue's list: the default stage 1 with the cnn (BatchNorm) instead of the mlp."""
    print("(c) stage 1 with model=cnn: digits, cnn 32 channels, sgd, batch 32, 5 epochs, 10 LRs")
    trials_side_by_side(reps, ["model=cnn"], ("sequential", "fused"))


def part_b(reps: int, epochs: int, work: str) -> tuple[float, int]:
    overrides = ["data=mnist1d", f"epochs={epochs}"]
    seeds = [0, 1, 2]
    print(
        f"(b) mnist1d, mlp 128x2, sgd, batch 32, {epochs} epochs, 10 LRs x 3 seeds, whole processes"
    )
    entries = ("sequential", "fused")
    spawn("fused", overrides, DEFAULT_LRS[:1], [0], work)  # untimed: the data cache, checkpoint
    whole: dict[str, list[float]] = {e: [] for e in entries}
    trials: dict[str, list[float]] = {e: [] for e in entries}
    accs: dict[str, list[float]] = {}
    for rep in range(reps):
        for entry in rotated(entries, rep):
            out = spawn(entry, overrides, DEFAULT_LRS, seeds, work)
            whole[entry].append(out["whole_s"])
            trials[entry].append(out["trials_s"])
            accs[entry] = out["val_acc"]
    ratios = summarise("whole process", whole)
    summarise("trials", trials)
    compare_accuracies(accs, arms_of(DEFAULT_LRS, seeds))
    return ratios["fused"], len(DEFAULT_LRS) * len(seeds)


def part_d(reps: int, epochs: int, widths: list[int], batch_sizes: list[int]) -> None:
    """Fused/sequential trials' time against each setting's arithmetic per arm and step."""
    from src.fused_plan import fusing_pays, step_cost
    from src.train import EVAL_BATCH_SIZE, initial_state, load_data

    print(f"(d) where fusing pays: digits, mlp WIDTHx2, sgd, {epochs} epochs, 10 LRs, seed 0")
    rows = []
    for batch_size in batch_sizes:
        for width in widths:
            overrides = [f"model.width={width}", f"batch_size={batch_size}", f"epochs={epochs}"]
            overrides += ["warmup_epochs=0"] if epochs == 1 else []
            cfg = compose_config(overrides)
            splits = load_data(cfg)
            model, _, _ = initial_state(cfg, splits, torch.device("cpu"), lr=cfg.lr)
            cost = step_cost(model, splits.train[0][0], batch_size, EVAL_BATCH_SIZE, states=1)
            print(
                f"  width {width}, batch {batch_size}: {cost.params:,} parameters,"
                f" {cost.mflop:.2f} MFLOP per arm and step"
            )
            ratios, seconds = trials_side_by_side(reps, overrides, ("sequential", "fused"))
            check = math.nan  # what the launcher spends before it runs the batch sequentially
            if fusing_pays(torch.device("cpu"), cost) is not None:
                start = time.perf_counter()
                with contextlib.suppress(NotFusable):
                    run_arms(cfg, arms_of(DEFAULT_LRS, [0]), only_if_pays=True)
                check = (time.perf_counter() - start) / seconds["sequential"]
            rows.append((width, batch_size, cost, ratios["fused"], check))
    print(
        "  | width | batch | parameters per arm | MFLOP per arm-step | fused / sequential |"
        " the check / sequential |"
    )
    print("  |---|---|---|---|---|---|")
    for width, batch_size, cost, ratio, check in sorted(rows, key=lambda r: r[2].params):
        print(
            f"  | {width} | {batch_size} | {cost.params:,} | {cost.mflop:.1f} | {ratio:.2f} |"
            f" {'fused' if math.isnan(check) else f'{check:.1%}'} |"
        )


def part_g(reps: int, epochs: int, device: str = "cuda") -> None:
    """On the GPU: 30 fused arms against one, and what memory a batch takes against the plan."""
    from src.fused_plan import step_cost
    from src.train import EVAL_BATCH_SIZE, initial_state, load_data

    print(f"(g) GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    seeds = [0, 1, 2]
    thirty = arms_of(DEFAULT_LRS, seeds)
    ratios = {}
    for name, overrides in (
        ("default", [f"device={device}"]),
        ("mnist1d", [f"device={device}", "data=mnist1d", f"epochs={epochs}"]),
    ):
        cfg = compose_config(overrides)
        one = [Arm(0.0215, 0)]
        run_arms(cfg, one)  # warm-up: data, checkpoint, CUDA context and kernels
        times: dict[str, list[float]] = {"1 arm": [], "30 arms": []}
        for rep in range(reps):
            for entry in rotated(("1 arm", "30 arms"), rep):
                arms = one if entry == "1 arm" else thirty
                torch.cuda.synchronize()
                start = time.perf_counter()
                results = run_arms(cfg, arms)
                torch.cuda.synchronize()
                times[entry].append(time.perf_counter() - start)
        one_s, thirty_s = (statistics.median(times[e]) for e in times)
        ratios[name] = thirty_s / one_s
        seq_start = time.perf_counter()
        seq = [train(compose_config([*overrides, f"lr={a.lr}", f"seed={a.seed}"])) for a in thirty]
        seq_s = (time.perf_counter() - seq_start) / len(thirty)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        results = run_arms(cfg, thirty)
        peak = torch.cuda.max_memory_allocated() - before
        splits = load_data(cfg)
        model, _, _ = initial_state(cfg, splits, torch.device(device), lr=cfg.lr)
        x = splits.train[0][0].to(device)
        cost = step_cost(model, x, int(cfg.batch_size), EVAL_BATCH_SIZE, states=1)
        same = sum(r.val_acc == q.val_acc for r, q in zip(results, seq, strict=True))
        close = sum(abs(r.val_acc - q.val_acc) <= 0.01 for r, q in zip(results, seq, strict=True))
        print(
            f"  {name}: 1 arm {one_s:.2f} s, 30 arms {thirty_s:.2f} s (ratio {ratios[name]:.2f};"
            f" per rep 1 arm {[round(t, 2) for t in times['1 arm']]}, 30 arms"
            f" {[round(t, 2) for t in times['30 arms']]}); one sequential trial on the GPU"
            f" {seq_s:.2f} s (30 of them {30 * seq_s:.1f} s)"
        )
        print(
            f"  {name}: val_acc of the 30 fused arms against 30 sequential trials on the GPU:"
            f" {same} equal, {close} within 0.01"
        )
        print(
            f"  {name}: peak GPU memory of 30 arms {peak / 2**20:.1f} MiB; the plan's estimate"
            f" {30 * max(cost.train_bytes, cost.eval_bytes) / 2**20:.1f} MiB"
            f" ({cost.mflop:.2f} MFLOP per arm and step)"
        )
    print(f"gpu 30arms/1arm={ratios['mnist1d']:.2f} default={ratios['default']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions of (a)")
    parser.add_argument("--reps-b", type=int, default=3, help="repetitions of (b)")
    parser.add_argument("--epochs-b", type=int, default=20)
    parser.add_argument("--parts", nargs="+", default=["a", "b"], choices=["a", "b", "c", "d", "g"])
    parser.add_argument("--epochs-d", type=int, default=1)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--child", choices=ENTRIES, help=argparse.SUPPRESS)
    parser.add_argument("--lrs", type=float, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, one torch thread per process")
    with tempfile.TemporaryDirectory(prefix="bench_fused_") as work:
        os.chdir(work)  # outputs/ (initial weights, data cache) shared by this process's children
        ratio_a = part_a(args.reps, work) if "a" in args.parts else float("nan")
        if "c" in args.parts:
            part_c(args.reps)
        if "d" in args.parts:
            part_d(args.reps, args.epochs_d, args.widths, args.batch_sizes)
        if "g" in args.parts:
            part_g(args.reps, args.epochs_b)
            return
        ratio_b, arms = (
            part_b(args.reps_b, args.epochs_b, work) if "b" in args.parts else (float("nan"), 0)
        )
    print(f"fused/sequential={ratio_a:.2f} whole_30arms={ratio_b:.2f} arms={arms}")


if __name__ == "__main__":
    main()
