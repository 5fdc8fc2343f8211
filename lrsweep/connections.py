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

import atexit
import contextlib
import functools
import os
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


def job_storage(url: str) -> Any:
    """The storage a job uses to report on its trial: the sweep's own when the job runs in the
    sweep's process (the in-process launcher: one engine and connection for both), else this
    process's own (`_own_storage`)."""
    shared = storage_in_use(url)
    return shared if shared is not None else _own_storage(url)


def _own_storage(url: str) -> Any:
    """One storage per URL and process (engine creation and schema checks cost ~0.1 s), opened
    as the sweeper opens it (a SQLite file in WAL mode: `lrsweep.storage.open_storage`). A
    relative SQLite path is another file in another working directory (sweeps run one after
    another in one process): its storage is kept per directory."""
    return _storage(url, relative_to(url))


def relative_to(url: str) -> str | None:
    """The working directory a relative SQLite URL's file lies in (the same URL names another
    file in another folder); None for any other URL. What a per-URL cache must also key on."""
    from lrsweep.storage_url import sqlite_path

    try:
        path = sqlite_path(url)
    except Exception:  # a URL that does not parse: opening it says so
        return None
    return os.getcwd() if path is not None and not path.is_absolute() else None


@functools.cache
def _storage(url: str, cwd: str | None) -> Any:
    """`_own_storage(url)`, opened once per URL (and working directory `cwd`, when the URL's SQLite
    path is relative to it)."""
    from lrsweep.storage import open_storage
    from lrsweep.storage_url import sqlite_path

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    opened = open_storage(url)
    # Closed at exit (trial processes freeze the garbage collector then): the last connection to
    # a SQLite file in WAL mode folds the log into the file and removes it.
    atexit.register(opened.engine.dispose)
    return opened
