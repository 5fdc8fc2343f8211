"""What a trial costs in each way of running a sweep on a SLURM cluster, side by side on one grid.

    python benchmarks/bench_slurm.py [--partition debug] [--points 8] [--lanes 2] [--repeats 3]
                                     [--storage URL] [--folder DIR] [overrides...]

Three modes run the same grid (`--points` LRs of the default trial, or of `overrides`) on fresh
studies, `--repeats` times each, interleaved (the order rotates each repeat):
- inprocess: `python -m src.train -m` on this machine, trials one after another in its process;
- submitit: the same with `hydra/launcher=submitit_slurm`, one SLURM job per trial, `--lanes`
  jobs at once (`hydra.launcher.array_parallelism`; 1 CPU and 1 GB a job);
- worker_array: `sbatch --array=0-<lanes-1> scripts/slurm/worker_array.sbatch`, `--lanes`
  sweep processes on one study, each a SLURM task that trains in its own process.

The wall time runs from the command's start (or `sbatch`) to its end (the last task out of the
queue, polled every 0.2 s), Python's start and imports included: what a user waits. Printed per
mode: the wall time, the seconds per trial (wall / trials), the lane-seconds per trial (wall x
lanes / trials: what a trial occupies a lane) and the overhead per trial on a lane (lane-seconds
per trial minus the in-process trial's own time: the mean `seconds` the in-process trials report),
each as the mean over the repeats with its 95% Student t interval (df = repeats - 1). The last line,
`per_trial_s inprocess=.. submitit=.. worker_array=..`, gives the means of wall / trials.

`--storage` (default: LRSWEEP_TEST_POSTGRES_URL when set, else a SQLite file in the folder, which
serves one machine only) is passed to every sweep with its password as
`${oc.env:LRSWEEP_BENCH_DB_PASSWORD}`. `--folder` (default: a temporary folder) must be one every
node sees. The modes share the machine with whatever else runs on it: figures from a busy machine
are slower, not wrong.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_ARRAY = ROOT / "scripts" / "slurm" / "worker_array.sbatch"
PASSWORD_ENV = "LRSWEEP_BENCH_DB_PASSWORD"
MODES = ("inprocess", "submitit", "worker_array")


def typed_storage(url: str) -> tuple[str, dict[str, str]]:
    """The URL the sweeps get (its password as `${oc.env:...}`) and the environment holding it."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.password:
        return url, {}
    typed = parsed.set(password="PASSWORD").render_as_string(hide_password=False)
    typed = typed.replace("PASSWORD", "${oc.env:" + PASSWORD_ENV + "}")
    return typed, {PASSWORD_ENV: str(parsed.password)}


def run(command: list[str], folder: Path, env: dict[str, str]) -> float:
    """Runs `command` in `folder`; its wall time. A failure stops the benchmark with its output."""
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... exited {proc.returncode}:\n{proc.stderr}")
    return wall


def run_array(command: list[str], folder: Path, env: dict[str, str]) -> float:
    """`sbatch --parsable ...` in `folder`, then waits until its tasks have left the queue; the
    wall time from submission to the last task's end. A task that did not complete stops the
    benchmark."""
    start = time.perf_counter()
    job = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    while subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True
    ).stdout.strip():
        time.sleep(0.2)  # SLURM offers no event to wait on
    wall = time.perf_counter() - start
    states = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", job, "-o", "State"], capture_output=True, text=True
    ).stdout.split()
    if set(states) != {"COMPLETED"}:
        raise SystemExit(f"worker array {job}: task states {states} (logs: {folder}/slurm-*)")
    return wall


def trial_seconds(url: str, study: str, points: int) -> list[float]:
    """The `seconds` each COMPLETE trial of `study` reports; the study must hold `points`."""
    import optuna

    loaded = optuna.load_study(study_name=study, storage=url)
    complete = loaded.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) != points:
        raise SystemExit(f"study {study}: {len(complete)} COMPLETE trials, expected {points}")
    return [float(t.user_attrs["seconds"]) for t in complete]


def interval(values: list[float]) -> str:
    """`mean ± half-width` of the 95% Student t interval (df = n - 1); the mean alone for n = 1."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return f"{mean:.2f} ± {half:.2f}"


def mode_commands(
    args: argparse.Namespace, study: str, storage: str
) -> dict[str, tuple[Callable[..., float], list[str]]]:
    """Each mode's runner and command for one study."""
    sweep = [*args.overrides, f"sweep.points={args.points}", f"study.name={study}"]
    sweep.append(f"study.storage={storage}")
    launcher = [
        "hydra/launcher=submitit_slurm",
        f"hydra.launcher.partition={args.partition}",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        f"hydra.launcher.array_parallelism={args.lanes}",
    ]
    array = ["sbatch", "--parsable", "-p", args.partition, f"--array=0-{args.lanes - 1}"]
    return {
        "inprocess": (run, [sys.executable, "-m", "src.train", "-m", *sweep]),
        "submitit": (run, [sys.executable, "-m", "src.train", "-m", *sweep, *launcher]),
        "worker_array": (run_array, [*array, str(WORKER_ARRAY), *sweep]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partition", default=os.environ.get("LRSWEEP_TEST_SLURM_PARTITION"))
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--lanes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage", default=os.environ.get("LRSWEEP_TEST_POSTGRES_URL"))
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="stage-1 overrides of the trial")
    args = parser.parse_args()
    if not args.partition:
        parser.error("--partition (or LRSWEEP_TEST_SLURM_PARTITION) names the SLURM partition")
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench_slurm_"))
    url = args.storage or f"sqlite:///{folder}/bench_slurm.db"
    storage, secret = typed_storage(url)
    env = {**os.environ, **secret, "PYTHONPATH": str(ROOT), "LRSWEEP_PYTHON": sys.executable}
    from lrsweep.storage_url import hide_password

    print(
        f"{args.points} points a sweep, {args.lanes} lanes, {args.repeats} repeat(s), partition "
        f"{args.partition}, storage {hide_password(url)}, folder {folder}",
        flush=True,
    )
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    trained: list[float] = []  # the in-process trials' own seconds
    for repeat in range(args.repeats):
        # The order rotates each repeat: a machine's load that drifts weighs on every mode.
        for mode in MODES[repeat % 3 :] + MODES[: repeat % 3]:
            study = f"bench-slurm-{mode}-{uuid.uuid4().hex[:8]}"
            runner, command = mode_commands(args, study, storage)[mode]
            wall = runner(command, folder, env)
            seconds = trial_seconds(url, study, args.points)
            if mode == "inprocess":
                trained.extend(seconds)
            walls[mode].append(wall)
            print(f"repeat {repeat + 1} {mode:<12} wall {wall:6.1f} s", flush=True)
    train_s = statistics.fmean(trained)
    print(f"\nin-process trial: {train_s:.3f} s (mean of {len(trained)} trials' own time)")
    print(
        f"{'mode':<12} {'lanes':>5} {'wall s':>14} {'s / trial':>14} {'lane-s / trial':>14} "
        f"{'overhead / trial':>16}"
    )
    per_trial = {}
    for mode in MODES:
        lanes = 1 if mode == "inprocess" else args.lanes
        per = [w / args.points for w in walls[mode]]
        lane = [p * lanes for p in per]
        per_trial[mode] = statistics.fmean(per)
        print(
            f"{mode:<12} {lanes:>5} {interval(walls[mode]):>14} {interval(per):>14} "
            f"{interval(lane):>14} {interval([x - train_s for x in lane]):>16}"
        )
    print(
        f"(95% Student t intervals over {args.repeats} repeats, df={args.repeats - 1}; overhead: "
        "lane-seconds a trial minus the in-process trial's own time)"
    )
    print("per_trial_s " + " ".join(f"{mode}={per_trial[mode]:.2f}" for mode in MODES))


if __name__ == "__main__":
    main()
