"""Opening a study's storage: the database and how sweeps share it.

`open_storage` creates the storage as every sweep and job opens it (a SQLite file in
write-ahead-log mode where the file system allows it; a server engine keeping one connection),
and `StudyLock` serialises the sweeps of one study (a file lock beside a SQLite file, an advisory
lock on PostgreSQL).
"""

import contextlib
import hashlib
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lrsweep.connections import SERVER_POOL, pool_kwargs
from lrsweep.storage_url import sqlite_path

SCHEMA_RETRIES = 5


class StudyLock:
    """Serialises study creation, stale-failing, enqueueing and claiming between sweeps of one
    study: a file lock beside a SQLite file, a session advisory lock on PostgreSQL (released by
    the server if the holder dies). Elsewhere, and as a safety net everywhere, the claim-then-dedupe
    rule of `claim` keeps each point to one run."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.storage_url, self.study_name = storage_url, study_name
        # PostgreSQL advisory locks: an engine of the lock's own that keeps its one connection
        # (connections.py: the storage's cannot take both roles without opening a fresh one for
        # every round); `close` releases it.
        self._engine: Any = None

    def __call__(self) -> contextlib.AbstractContextManager:
        path = sqlite_path(self.storage_url)
        if path is not None:
            from filelock import FileLock

            path.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(f"{path}.lock")
        if self.storage_url.startswith("postgresql"):
            return self._advisory_lock()
        return contextlib.nullcontext()

    def close(self) -> None:
        """Closes the lock's database connection, if it has one (a later use opens another)."""
        if self._engine is not None:
            self._engine.dispose()

    @contextlib.contextmanager
    def _advisory_lock(self) -> Iterator[None]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(self.storage_url, **SERVER_POOL)
        digest = hashlib.sha256(f"lrsweep:{self.study_name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with self._engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                try:
                    connection.execute(
                        sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key}
                    )
                except BaseException:
                    # A pooled connection must not go back still holding the lock: closed, the
                    # server releases it.
                    connection.invalidate()
                    raise


class _SQLiteConnection(sqlite3.Connection):
    """A SQLite connection in write-ahead-log mode with `synchronous=NORMAL`.

    SQLite's default (a rollback journal, `synchronous=FULL`) syncs the disk several times per
    commit: 0.8 ms a commit here, and a trial takes about 15 (claim, heartbeat, params, values,
    attributes, tell). In WAL mode with NORMAL a commit is 0.01 ms and stays atomic and durable
    across a crash of any process; only a power loss or an OS crash may undo the last commits,
    whose trials then simply run again. WAL also lets readers (the dashboard, other sweeps) read
    while a sweep writes. It needs every process on one machine (SQLite's WAL does not work on a
    network file system, where `engine_kwargs` does not use it): a study shared by machines
    belongs on PostgreSQL.

    `journal_mode=WAL` is stored in the file, so the first connection switches it. A file that
    cannot be switched (read-only, not a database) is left as it is, for the first real
    statement to report."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        with contextlib.suppress(sqlite3.DatabaseError):
            self.execute("PRAGMA journal_mode=WAL")
            self.execute("PRAGMA synchronous=NORMAL")


# File systems whose SQLite files stay in SQLite's default rollback-journal mode: WAL's shared
# memory index does not work across machines (SQLite's documentation), and these are shared ones.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "lustre", "gpfs", "beegfs", "ceph",
     "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "9p", "virtiofs", "vboxsf"}
)  # fmt: skip


def filesystem_type(path: str, mounts: str) -> str | None:
    """The type of the file system holding the absolute `path`, from the text of
    `/proc/self/mounts` (the longest mount point above it); None when none matches."""
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def wal_suits(path: Path) -> bool:
    """Whether a SQLite file at `path` may use WAL: not on a network file system (Linux's
    `/proc/self/mounts`; elsewhere assumed local)."""
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        return True
    where = os.path.realpath(path.parent if not path.exists() else path)
    return filesystem_type(where, mounts) not in NETWORK_FILESYSTEMS


def engine_kwargs(storage_url: str) -> dict[str, Any]:
    """The SQLAlchemy engine arguments lrsweep opens `storage_url` with: for a server, a pool that
    keeps one connection (`connections.SERVER_POOL`); for a SQLite file, a
    60 s wait on a locked database (parallel jobs), and `_SQLiteConnection` unless the file is on
    a network file system (there SQLite's defaults, as before WAL)."""
    path = sqlite_path(storage_url)
    if path is None:  # a server (one kept connection: connections.py), or SQLite in memory
        from sqlalchemy.engine import make_url

        return pool_kwargs(make_url(storage_url).drivername)
    if not wal_suits(path):
        return {"connect_args": {"timeout": 60}}
    return {"connect_args": {"timeout": 60, "factory": _SQLiteConnection}}


def open_storage(
    storage_url: str, heartbeat_interval: int | None = None, grace_period: int | None = None
) -> Any:
    """An RDBStorage opened with `engine_kwargs`, heartbeats on when `heartbeat_interval` is set
    (the sweeper's; a job's storage needs none); retries the race of processes creating a fresh
    schema."""
    import optuna
    import sqlalchemy

    for attempt in range(SCHEMA_RETRIES):
        try:
            return optuna.storages.RDBStorage(
                storage_url,
                engine_kwargs=engine_kwargs(storage_url),
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Sweeps started together on a fresh server database race to create its tables
            # ("duplicate key ... pg_type_typname_nsp_index"): the loser waits and reloads.
            if attempt == SCHEMA_RETRIES - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")
