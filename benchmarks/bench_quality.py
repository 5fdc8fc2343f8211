"""How good is each way of choosing the LR? Regret against a dense grid, and what it cost.

    python benchmarks/bench_quality.py [--setups digits-mlp-sgd,mnist1d-cnn-adamw] [--quick]

For each setup (data x model x optimizer; default all 8 of digits/mnist1d x mlp/cnn x sgd/adamw):

1. Ground truth: a dense grid, `DENSE_POINTS` LRs log-uniform in [1e-5, 10] x `DENSE_SEEDS` seeds,
   run through the normal sweep (`python -m src.train -m`) into the study `bench-dense-<setup>`.
   Each LR's mean accuracy (a diverged seed counts 0) is averaged with its two neighbours, against
   the max-of-noise bias; the best of that smoothed curve is the reference, and `curve(lr)` is the
   smoothed curve interpolated linearly in log10(lr) (clamped at the grid's ends).
2. The choices, each with its regret `best - curve(lr)` in accuracy points and its cost in trials:
   - `two-stage default`: `scripts/two_stage_sweep.py` with the default bounds [1e-5, 1];
   - `two-stage auto`: `scripts/two_stage_sweep.py --auto-bounds` (range test, then 10 points in
     its 3 decades); its cost also counts the range test, as `+RT`;
   - the range test's own suggestions (`steepest`, `valley`, `min/10`, from that run's
     `range_test.yaml`), one range test each;
   - torch-lr-finder 0.2.2 with its defaults (100 batches 1e-7 -> 10, `smooth_f=0.05`,
     `diverge_th=5`; the suggestion of `LRFinder.plot`: the steepest gradient, skipping 10 points
     at the start and 5 at the end), on the same initial weights and batches.
3. The range test's bounds: whether they contain the dense optimum, their width in decades, and
   the range test's time against stage 1's (the sum of its trials' seconds).

Everything is cached: the sweeps are resumable Optuna studies in `outputs/bench_quality.db` (a
rerun runs nothing), and each finished setup's numbers are kept in
`outputs/bench_quality/<setup>.json`. `--quick` runs a small grid (12 LRs x 2 seeds, 5-point
stages) into separate studies, to try the pipeline. Run it under `nice` on a shared machine; it
uses one thread and one trial at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

SETUPS = [
    f"{d}-{m}-{o}" for d in ("digits", "mnist1d") for m in ("mlp", "cnn") for o in ("sgd", "adamw")
]
STORAGE = "sqlite:///outputs/bench_quality.db"
CACHE = Path("outputs/bench_quality")
DENSE_LOW, DENSE_HIGH = 1e-5, 10.0
# Seconds per trial on this machine (2 shared cores), for the cost estimate printed first.
TRIAL_SECONDS = {"mlp": 0.5, "cnn": 1.5}


@dataclass(frozen=True)
class Mode:
    prefix: str
    dense_points: int
    dense_seeds: int
    stage_args: tuple[str, ...]  # extra arguments of two_stage_sweep.py

    def dense_name(self, setup: str) -> str:
        return f"{self.prefix}dense-{setup}"


FULL = Mode("bench-", 40, 5, ())
QUICK = Mode(
    "bench-quick-", 12, 2, ("--confirm-top", "2", "--confirm-seeds", "2", "sweep.points=5")
)


def setup_overrides(setup: str) -> list[str]:
    data, model, optimizer = setup.split("-")
    return [f"data={data}", f"model={model}", f"optimizer={optimizer}", "threads=1"]


def run(args: list[str], log: Path) -> None:
    """`python <args>` from the repository root, output to `log`; a failure stops the benchmark."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("a") as f:
        f.write(f"\n$ python {' '.join(args)}\n")
        f.flush()
        rc = subprocess.call([sys.executable, *args], cwd=ROOT, env=env, stdout=f, stderr=f)
    if rc:
        raise SystemExit(f"error: python {' '.join(args)} exited {rc}; see {log}")


def study_frame(name: str):
    import optuna

    from lrsweep.stats import aggregate
    from src.study import storage, trials_frame

    study = optuna.load_study(study_name=name, storage=storage(STORAGE))
    return aggregate(trials_frame(study)), study


def trial_count(names: list[str]) -> int:
    import optuna

    from src.study import storage

    total = 0
    for name in names:
        try:
            study = optuna.load_study(study_name=name, storage=storage(STORAGE))
        except KeyError:
            continue
        total += len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))
    return total


# ---------------------------------------------------------------- pure parts


def smooth_neighbours(values: np.ndarray) -> np.ndarray:
    """Each value averaged with its neighbours (two at the ends of the grid)."""
    padded = np.concatenate([[np.nan], values, [np.nan]])
    window = np.stack([padded[:-2], padded[1:-1], padded[2:]])
    return np.nanmean(window, axis=0)


def curve_at(lrs: np.ndarray, curve: np.ndarray, lr: float) -> float:
    """The curve linearly interpolated in log10(lr), clamped at the grid's ends."""
    return float(np.interp(math.log10(lr), np.log10(lrs), curve))


# ---------------------------------------------------------------- one setup


def torch_lr_finder_suggestion(setup: str) -> tuple[float, float]:
    """(torch-lr-finder's suggested LR, seconds of its range test), on our start and batches."""
    import matplotlib

    matplotlib.use("Agg")
    import contextlib
    import io

    import matplotlib.pyplot as plt
    import torch
    from torch import nn
    from torch_lr_finder import LRFinder

    from src.batches import Batches
    from src.range_test import compose_range_config, lr_finder_batches
    from src.train import initial_state, load_data

    cfg = compose_range_config(setup_overrides(setup))
    torch.set_num_threads(1)
    splits = load_data(cfg)
    model, optimizer, _ = initial_state(cfg, splits, torch.device("cpu"), lr=1e-7)
    batches = Batches(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)

    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(lr_finder_batches(batches), end_lr=10, num_iter=100)
        fig, ax = plt.subplots()
        _, lr = finder.plot(ax=ax)
        plt.close(fig)
    return float(lr), time.perf_counter() - start


def measure(setup: str, mode: Mode, log: Path) -> dict:
    base = setup_overrides(setup)
    storage_arg = f"study.storage={STORAGE}"
    seeds = "[" + ",".join(str(s) for s in range(mode.dense_seeds)) + "]"
    print(f"[{setup}] dense grid ({mode.dense_points} LRs x {mode.dense_seeds} seeds)", flush=True)
    run(
        [
            "-m",
            "src.train",
            "-m",
            *base,
            f"sweep.low={DENSE_LOW}",
            f"sweep.high={DENSE_HIGH}",
            f"sweep.points={mode.dense_points}",
            f"sweep.seeds={seeds}",
            f"study.name={mode.dense_name(setup)}",
            storage_arg,
        ],
        log,
    )
    script = str(ROOT / "scripts" / "two_stage_sweep.py")
    names = {
        "default": f"{mode.prefix}2s-{setup}",
        "auto": f"{mode.prefix}auto-{setup}",
    }
    print(f"[{setup}] two-stage, default bounds", flush=True)
    run([script, *mode.stage_args, *base, f"study.name={names['default']}", storage_arg], log)
    print(f"[{setup}] two-stage, auto bounds (range test first)", flush=True)
    run(
        [
            script,
            "--auto-bounds",
            *mode.stage_args,
            *base,
            f"study.name={names['auto']}",
            storage_arg,
        ],
        log,
    )
    print(f"[{setup}] torch-lr-finder", flush=True)
    tlf_lr, tlf_seconds = torch_lr_finder_suggestion(setup)

    dense, _ = study_frame(mode.dense_name(setup))
    lrs = dense["lr"].to_numpy(dtype=float)
    curve = smooth_neighbours(dense["mean"].to_numpy(dtype=float))
    i_best = int(np.argmax(curve))
    best = float(curve[i_best])
    reports = ROOT / "outputs" / "reports"
    rt = yaml.safe_load((reports / names["auto"] / "range_test.yaml").read_text())
    stage1, _ = study_frame(names["default"])

    def chosen(name: str) -> float:
        return float(yaml.safe_load((reports / name / "best.yaml").read_text())["lr"])

    suffixes = ("", "-stage2", "-confirm")
    choices = {
        "two-stage default": (
            chosen(names["default"]),
            trial_count([names["default"] + s for s in suffixes]),
            "",
        ),
        "two-stage auto": (
            chosen(names["auto"]),
            trial_count([names["auto"] + s for s in suffixes]),
            "+RT",
        ),
        "range test steepest": (rt["suggestions"]["steepest"], 0, "RT"),
        "range test valley": (rt["suggestions"]["valley"], 0, "RT"),
        "range test min/10": (rt["suggestions"]["min_over_10"], 0, "RT"),
        "torch-lr-finder": (tlf_lr, 0, "RT"),
    }
    low, high = rt["bounds"]["low"], rt["bounds"]["high"]
    return {
        "setup": setup,
        "dense": {
            "best": best,
            "lr": float(lrs[i_best]),
            "std": float(dense["std"].to_numpy()[i_best]),
            "trials": int(dense["n"].sum()),
        },
        "choices": {
            k: {
                "lr": lr,
                "regret": 100 * (best - curve_at(lrs, curve, lr)),
                "trials": n,
                "extra": x,
            }
            for k, (lr, n, x) in choices.items()
        },
        "range_test": {
            "low": low,
            "high": high,
            "lr_min": rt["suggestions"]["lr_min"],
            "contains_optimum": bool(low <= lrs[i_best] <= high),
            "decades": math.log10(high / low),
            "seconds": rt["seconds"],
            "ramp_seconds": rt["ramp_seconds"],
            "batches": rt["batches"],
        },
        "stage1_seconds": float(np.nansum(stage1["seconds"] * stage1["n"])),
        "torch_lr_finder_seconds": tlf_seconds,
    }


# ---------------------------------------------------------------- the tables


def format_tables(results: list[dict]) -> str:
    lines = [
        "Regret: dense-grid best minus the dense curve at the chosen LR, accuracy points "
        "(seed std at the dense optimum; **>std**: more than one std); trials: sweep trials it "
        "cost (RT: one range test).",
        "",
        "| setup | dense best (lr) | std | " + " | ".join(results[0]["choices"]) + " |",
        "|---|---|---|" + "---|" * len(results[0]["choices"]),
    ]
    for r in results:
        d = r["dense"]
        cells = []
        for c in r["choices"].values():
            cost = f"{c['trials']}{c['extra']}" if c["trials"] else c["extra"]
            beyond = " **>std**" if c["regret"] > 100 * d["std"] + 1e-9 else ""
            cells.append(f"{c['regret']:.1f}{beyond} ({cost}; lr {c['lr']:.2g})")
        lines.append(
            f"| {r['setup']} | {100 * d['best']:.1f} ({d['lr']:.2g}) | {100 * d['std']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    lines += [
        "",
        "| setup | range test bounds | lr at loss minimum | dense optimum | inside | decades | "
        "range test s (ramp s) | stage 1 s | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        t = r["range_test"]
        lines.append(
            f"| {r['setup']} | [{t['low']:.3g}, {t['high']:.3g}] | {t['lr_min']:.3g} | "
            f"{r['dense']['lr']:.3g} | {'yes' if t['contains_optimum'] else 'NO'} | "
            f"{t['decades']:.1f} | {t['seconds']:.2f} ({t['ramp_seconds']:.2f}) | "
            f"{r['stage1_seconds']:.1f} | 1/{r['stage1_seconds'] / t['seconds']:.0f} "
            f"(ramp 1/{r['stage1_seconds'] / t['ramp_seconds']:.0f}) |"
        )
    return "\n".join(lines)


def estimate(setups: list[str], mode: Mode) -> str:
    """Trials still to run, and about how long they take on one core (`TRIAL_SECONDS`)."""
    per_two_stage = 2 * (10 + 10 + 4 * 3) if mode is FULL else 2 * (5 + 5 + 4 * 2)
    trials, seconds = 0, 0.0
    for setup in setups:
        if (CACHE / f"{mode.prefix}{setup}.json").exists():
            continue
        dense = max(0, mode.dense_points * mode.dense_seeds - trial_count([mode.dense_name(setup)]))
        trials += dense + per_two_stage
        # + about 60 s of process starts (the two-stage steps, range test, torch-lr-finder)
        seconds += (dense + per_two_stage) * TRIAL_SECONDS[setup.split("-")[1]] + 60
    return f"estimate: about {trials} trials to run, ~{seconds / 60:.0f} min on one core"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_quality.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help="comma-separated, e.g. digits-mlp-sgd"
    )
    parser.add_argument("--quick", action="store_true", help="a small grid, to try the pipeline")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args(argv)
    setups = [s for s in args.setups.split(",") if s]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        print(
            f"error: --setups: unknown {unknown}; choose from {','.join(SETUPS)}", file=sys.stderr
        )
        return 2
    mode = QUICK if args.quick else FULL
    os.chdir(ROOT)
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / f"{mode.prefix}log.txt"
    print(estimate(setups, mode), f"(log: {log})", flush=True)
    results = []
    for setup in setups:
        cached = CACHE / f"{mode.prefix}{setup}.json"
        if cached.exists():
            results.append(json.loads(cached.read_text()))
            print(f"[{setup}] cached: {cached}", flush=True)
            continue
        start = time.perf_counter()
        result = measure(setup, mode, log)
        cached.write_text(json.dumps(result, indent=1))
        results.append(result)
        print(f"[{setup}] done in {time.perf_counter() - start:.0f}s", flush=True)
    tables = format_tables(results)
    print(tables)
    if args.out:
        args.out.write_text(tables + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
