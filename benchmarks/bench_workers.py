"""Many sweep processes on one study, as a SLURM array runs them: points, duplicates, lost points,
the database connections they hold, and the claim latency.

    python benchmarks/bench_workers.py [--storage URL] [--workers 4 16] [--points 100]
                                       [--work-s 0.05]

For each N in `--workers`, N processes run `benchmarks/workers_app/app.py -m` (a trivial Hydra app
on the lrsweep sweeper: each trial sleeps `--work-s` s, reports through lrsweep's `TrialReporter`
and returns a number) on one fresh study of `--points` LRs, started together in a temporary
folder. `--storage` is any SQLAlchemy URL (default: a SQLite file in that folder); a password in it
reaches the children through the environment, never their command line.

Printed per N: the wall time; the grid points, the COMPLETE trials, the duplicates (COMPLETE
trials beyond one per point) and the lost points (none COMPLETE); on PostgreSQL the peak number of
connections the workers held at once (`pg_stat_activity`, polled every 20 ms, counted by an
`application_name` only these workers carry) and per worker; and the claim latency, the median and
95th percentile of the gap between a worker's tell of one trial and its claim of the next (both
recorded by the database: `datetime_complete`, `datetime_start`), which holds the wait for the
study lock, the stale check, the queue top-up and the claim.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "benchmarks" / "workers_app" / "app.py"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lrsweep.storage_url import hide_password  # noqa: E402
from lrsweep.study_protocol import POINT_ATTR  # noqa: E402


class ConnectionPeak:
    """Polls `pg_stat_activity` for the connections named `app_name` in a thread; `peak` is the
    most seen at once."""

    def __init__(self, url: str, app_name: str, every: float = 0.02) -> None:
        import sqlalchemy

        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        self._query = sqlalchemy.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        )
        self._name, self._every = app_name, every
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConnectionPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._engine.dispose()

    def _run(self) -> None:
        with self._engine.connect() as connection:
            while not self._stop.wait(self._every):
                count = connection.execute(self._query, {"name": self._name}).scalar()
                connection.rollback()  # a transaction sees one snapshot of pg_stat_activity
                self.peak = max(self.peak, int(count or 0))


def claim_gaps(trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    """Seconds from a worker's tell of one trial to its claim of the next, for every worker."""
    by_worker: dict[int, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        if "pid" in t.user_attrs and t.datetime_start and t.datetime_complete:
            by_worker.setdefault(int(t.user_attrs["pid"]), []).append(t)
    gaps = []
    for runs in by_worker.values():
        runs.sort(key=lambda t: t.datetime_start)
        for before, after in zip(runs, runs[1:], strict=False):
            gaps.append((after.datetime_start - before.datetime_complete).total_seconds())
    return gaps


def run_workers(url: str, n: int, points: int, work_s: float, folder: Path) -> dict:
    """N sweeps of one fresh study, started together; what the study holds afterwards."""
    study = f"workers-{n}-{uuid.uuid4().hex[:8]}"
    app_name = f"lrsweep-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "BENCH_STORAGE": url,
        "BENCH_DIR": str(folder),
        "PGAPPNAME": app_name,  # libpq's: every connection of the workers carries it
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, str(APP), "-m", f"study={study}", f"points={points}"]
    command.append(f"work_s={work_s}")
    postgres = url.startswith("postgresql")
    peak = ConnectionPeak(url, app_name) if postgres else None
    start = time.perf_counter()
    with peak or contextlib.nullcontext():
        procs = [
            subprocess.Popen(
                command,
                cwd=folder,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for _ in range(n)
        ]
        errors = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - start
    failed = [e for p, e in zip(procs, errors, strict=True) if p.returncode != 0]
    if failed:
        raise SystemExit(f"{len(failed)} worker(s) failed; the first said:\n{failed[0]}")
    loaded = optuna.load_study(study_name=study, storage=url)
    complete = loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done = [t.user_attrs.get(POINT_ATTR) for t in complete]
    gaps = sorted(claim_gaps(complete))
    return {
        "n": n,
        "wall": wall,
        "points": points,
        "complete": len(complete),
        "duplicates": len(done) - len(set(done)),
        "lost": points - len(set(done)),
        "peak": None if peak is None else peak.peak,
        "gap_median": statistics.median(gaps) if gaps else float("nan"),
        "gap_p95": gaps[int(0.95 * (len(gaps) - 1))] if gaps else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage", default=None, help="default: a SQLite file in a temp folder")
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--work-s", type=float, default=0.05)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench_workers_") as tmp:
        url = args.storage or f"sqlite:///{tmp}/bench_workers.db"
        print(f"storage {hide_password(url)}, {args.points} points, {args.work_s} s a trial")
        print(
            f"{'workers':>7} {'wall s':>7} {'points':>6} {'complete':>8} {'dupl.':>5} "
            f"{'lost':>4} {'peak conn.':>10} {'per worker':>10} {'claim ms p50':>12} {'p95':>6}"
        )
        for n in args.workers:
            r = run_workers(url, n, args.points, args.work_s, Path(tmp))
            peak = "-" if r["peak"] is None else str(r["peak"])
            per = "-" if r["peak"] is None else f"{r['peak'] / n:.2f}"
            print(
                f"{n:>7} {r['wall']:>7.1f} {r['points']:>6} {r['complete']:>8} "
                f"{r['duplicates']:>5} {r['lost']:>4} {peak:>10} {per:>10} "
                f"{1000 * r['gap_median']:>12.1f} {1000 * r['gap_p95']:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
