"""What a sweep costs beyond its trials: lrsweep's stage 1 against the write-up's loop, whole processes.

    python benchmarks/bench_sweep.py [--reps 3] [--large-points 400] [--no-large]

Three programs do the same work -- digits, MLP 128x2, SGD momentum 0.9, batch 32, 5 epochs with 1
warmup epoch, 10 LRs log-uniform in [1e-5, 1], one seed, one torch thread -- each as a fresh
process, as a user runs it, interleaved (the order rotates every repetition) and repeated:

- (a) seed_loop: the method's original write-up, `benchmarks/seed_loop.py` (a `DataLoader`, the
      initial state dict restored from memory, its warmup);
- (b) sweep: `python -m src.train -m` in an empty folder (a fresh study, checkpoint and trial
      folders), with `stop_at_chance=false` so it trains exactly what (a) trains;
- (c) pure: `benchmarks/seed_loop.py --pure`, forward/backward/step only.

Every child runs as Python runs by default, with compiled modules cached in `__pycache__`
(`PYTHONDONTWRITEBYTECODE` is dropped from their environment: with it each process, and a joblib
worker for every job, compiles lrsweep's sources again).

Then (b) once more at `--large-points` LRs of 1-epoch trials (no warmup). For each (b) run the
per-trial overhead is (wall time - the trials' own time) / trials, where a trial's own time is its
`seconds` user attribute (the job's `train()` from start to end: data, model, optimizer,
checkpoint, training, evaluation). Its peak RSS comes from the kernel (`wait4`), the RSS after each
trial from the trials' `rss_mb` user attribute: a leak shows as the last trial's RSS well above the
2nd's.

The last line is exactly
`sweep/seed_loop=<b/a> sweep/trials=<b over its trials' own time> overhead_ms=<per-trial overhead at
the large sweep>` (medians of the paired per-repetition ratios for the first two).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = [
    "data=digits",
    "model=mlp",
    "optimizer=sgd",
    "batch_size=32",
    "threads=1",
    "device=cpu",
    "stop_at_chance=false",
]


def run_timed(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of one child process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    # Python's default: compiled modules cached in __pycache__ (some machines turn it off, and
    # then every process, and a joblib worker for every job, compiles lrsweep's sources again).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out}")
    return wall, usage.ru_maxrss / 1024, out


def sweep_run(points: int, epochs: int, warmup: int) -> dict:
    """One `python -m src.train -m` in a fresh folder: wall, peak RSS, its trials' own times."""
    import optuna

    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "src.train",
            "-m",
            *COMMON,
            f"epochs={epochs}",
            f"warmup_epochs={warmup}",
            f"sweep.points={points}",
            "study.name=bench",
        ]
        wall, peak, _ = run_timed(cmd, Path(tmp))
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp}/outputs/lrsweep.db")
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.datetime_start)
    assert len(trials) == points and all(t.state.name == "COMPLETE" for t in trials)
    own = sum(t.user_attrs["seconds"] for t in trials)
    rss = [t.user_attrs.get("rss_mb") for t in trials]
    return {
        "wall": wall,
        "own": own,
        "overhead_ms": (wall - own) / points * 1e3,
        "peak_mb": peak,
        "rss_2nd": rss[1],
        "rss_last": rss[-1],
    }


def parallel_run(points: int, workers: int, epochs: int = 20) -> float:
    """Wall seconds of a mnist1d stage 1 of `points` LRs x `epochs` on `workers` workers."""
    launcher = [] if workers == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"]
    with tempfile.TemporaryDirectory(prefix="bench_parallel_") as tmp:
        cmd = [
            sys.executable, "-m", "src.train", "-m", *COMMON[3:], "data=mnist1d",
            f"epochs={epochs}", "warmup_epochs=1",
            f"sweep.points={points}", "study.name=parallel", *launcher,
        ]  # fmt: skip
        wall, _, _ = run_timed(cmd, Path(tmp))
    return wall


def seed_loop_run(pure: bool) -> tuple[float, float]:
    """(wall seconds, seconds inside the loop) of benchmarks/seed_loop.py."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "seed_loop.py"), *(["--pure"] if pure else [])]
    wall, _, out = run_timed(cmd, ROOT)
    trained = float(out.strip().splitlines()[-1].split("=", 1)[1])
    return wall, trained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    parser.add_argument("--large-points", type=int, default=400, help="LRs of the large sweep")
    parser.add_argument("--no-large", action="store_true", help="skip the large sweep")
    parser.add_argument(
        "--parallel",
        type=int,
        default=0,
        metavar="POINTS",
        help="also time a mnist1d sweep of POINTS LRs on 1 worker (the default in-process "
        "launcher) and on 2 joblib workers, interleaved --reps times",
    )
    parser.add_argument(
        "--parallel-epochs", type=int, default=20, help="epochs of the --parallel trials (20)"
    )
    args = parser.parse_args()
    if args.reps < 1 or args.large_points < 2:
        parser.error("--reps must be >= 1 and --large-points >= 2")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    print(f"machine: {cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")

    names = ("seed_loop", "sweep", "pure")
    results: dict[str, list] = {n: [] for n in names}
    for rep in range(args.reps):
        order = names[rep % 3 :] + names[: rep % 3]
        for name in order:
            if name == "sweep":
                results[name].append(sweep_run(10, 5, 1))
            else:
                results[name].append(seed_loop_run(pure=name == "pure"))
        s = results["sweep"][-1]
        print(
            f"rep {rep + 1}/{args.reps}: seed_loop {results['seed_loop'][-1][0]:.2f}s, "
            f"sweep {s['wall']:.2f}s (trials {s['own']:.2f}s), pure {results['pure'][-1][0]:.2f}s",
            flush=True,
        )
    sweep_vs_loop = statistics.median(
        s["wall"] / a[0] for s, a in zip(results["sweep"], results["seed_loop"], strict=True)
    )
    sweep_vs_trials = statistics.median(s["wall"] / s["own"] for s in results["sweep"])

    def med(values: list[float]) -> float:
        return statistics.median(values)

    print("\n| program (10 LRs x 5 epochs) | wall s | inside the loop / trials s |")
    print("|---|---|---|")
    print(
        f"| (a) seed_loop | {med([a[0] for a in results['seed_loop']]):.2f} | "
        f"{med([a[1] for a in results['seed_loop']]):.2f} |"
    )
    print(
        f"| (b) python -m src.train -m | {med([s['wall'] for s in results['sweep']]):.2f} | "
        f"{med([s['own'] for s in results['sweep']]):.2f} |"
    )
    print(
        f"| (c) pure | {med([a[0] for a in results['pure']]):.2f} | "
        f"{med([a[1] for a in results['pure']]):.2f} |"
    )
    small = results["sweep"]
    print(
        f"\n10 points: overhead {med([s['overhead_ms'] for s in small]):.0f} ms/trial, "
        f"peak RSS {med([s['peak_mb'] for s in small]):.0f} MiB"
    )
    overhead = float("nan")
    if not args.no_large:
        large = sweep_run(args.large_points, 1, 0)
        overhead = large["overhead_ms"]
        rss = (
            f"RSS after trial 2 {large['rss_2nd']:.0f} MiB, after the last "
            f"{large['rss_last']:.0f} MiB ({large['rss_last'] / large['rss_2nd'] - 1:+.1%})"
            if large["rss_2nd"] and large["rss_last"]
            else "RSS per trial not recorded"
        )
        print(
            f"{args.large_points} points (1 epoch): wall {large['wall']:.1f}s, trials "
            f"{large['own']:.1f}s, overhead {overhead:.0f} ms/trial, peak RSS "
            f"{large['peak_mb']:.0f} MiB, {rss}"
        )
    if args.parallel:
        walls: dict[int, list[float]] = {1: [], 2: []}
        for rep in range(args.reps):
            for workers in (1, 2) if rep % 2 == 0 else (2, 1):
                walls[workers].append(parallel_run(args.parallel, workers, args.parallel_epochs))
        speedups = [one / two for one, two in zip(walls[1], walls[2], strict=True)]
        print(
            f"mnist1d, {args.parallel} LRs x {args.parallel_epochs} epochs: 1 worker {med(walls[1]):.1f}s, 2 joblib "
            f"workers {med(walls[2]):.1f}s: speed-up {statistics.median(speedups):.2f}x (paired "
            f"median of {args.reps})"
        )
    print(
        f"sweep/seed_loop={sweep_vs_loop:.3f} sweep/trials={sweep_vs_trials:.3f} "
        f"overhead_ms={overhead:.0f}"
    )


if __name__ == "__main__":
    main()
