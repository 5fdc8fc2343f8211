"""Database connections: how many a sweep process holds on a database server.

A server caps its connections (PostgreSQL's `max_connections`, 100 by default), and a SLURM array
starts many sweeps on one study. Measured with `benchmarks/bench_workers.py` (pg_stat_activity),
a sweep process held 5: two kept by the sweeper's storage engine (Optuna's `RDBStorage` opens two
at start, and its pool keeps both), two more by the job's own storage (`src.study.TrialReporter`,
in the same process under the in-process launcher), and one opened for every round by the study
lock. Now:

- a server engine keeps one connection (`SERVER_POOL`): a second one, for a moment (the heartbeat
  thread beating while the main thread holds the first), is opened and closed again;
- the study lock keeps one connection of its own for the advisory lock (`StudyLock`). Taking the
  lock on the storage's connection would leave the storage none for the round's work: it would
  open a fresh connection every round, whose first queries on a new server process are slow
  (measured: the claim latency of 4 workers doubled);
- a job run in the sweep's own process reports through the sweep's storage (`sharing`,
  `storage_in_use`) instead of opening a second engine.

A sweep process thus holds two connections, one more for a moment while its heartbeat thread
beats; a job in a process of its own (joblib, submitit) holds one more.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

# SQLAlchemy's QueuePool keeps `pool_size` connections; up to `max_overflow` more are opened when
# needed and closed when returned.
SERVER_POOL = {"pool_size": 1, "max_overflow": 10}

# The storage each sweep running in this process opened, by URL (nested sweeps: the innermost).
_in_use: dict[str, list[Any]] = {}


def pool_kwargs(drivername: str) -> dict[str, Any]:
    """The engine's pool arguments: `SERVER_POOL` for a database server; SQLite's own pools
    (a file, `:memory:`) are left as they are."""
    return {} if drivername.startswith("sqlite") else dict(SERVER_POOL)


@contextlib.contextmanager
def sharing(url: str, storage: Any) -> Iterator[None]:
    """While the block runs, `storage_in_use(url)` is `storage`: a sweep's jobs run in its own
    process use its engine and connection."""
    _in_use.setdefault(url, []).append(storage)
    try:
        yield
    finally:
        _in_use[url].remove(storage)
        if not _in_use[url]:
            del _in_use[url]


def storage_in_use(url: str) -> Any | None:
    """The storage of the sweep running in this process on `url`, if any."""
    stack = _in_use.get(url)
    return stack[-1] if stack else None
