"""The study protocol: how sweeps share one Optuna study and run each grid point exactly once.

Each step is safe to repeat, in any number of processes or machines sharing the storage:
1. `open_storage` / `open_study`: create or load the study, check that it holds this experiment,
   record the grid;
2. under `StudyLock`: `StaleTrials.fail` (trials whose sweeper stopped beating, or that never had
   a heartbeat) and `queue_ahead` (each grid point not covered by a COMPLETE, RUNNING or
   WAITING trial, in one transaction; a point whose trial FAILED is queued again);
3. still under the lock, `claim` (of the WAITING trials `queue_ahead` saw and queued): the
   heartbeat first, then WAITING -> RUNNING (succeeds for one process only; on SQLite only under
   the lock, as Optuna reads the state before its write begins); a claim that finds an older
   trial of the same point alive or done gives way; `interrupt_deferred` holds a Ctrl-C or
   SIGTERM back until the claimed trials are registered as in flight;
4. `tell`: a job's outcome, never raising for the job's fault.

Optuna's GridSampler is not used: on Optuna 5 it does not compose with enqueued trials and
ask/tell. Every trial here has fixed params, so the study's sampler never chooses a value.
Optuna is imported inside functions: Hydra imports every plugin module on every start.
"""

import contextlib
import hashlib
import json
import math
import os
import random
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lrsweep.connections import SERVER_POOL, pool_kwargs
from lrsweep.grid import Axis, SweepConfigError
from lrsweep.heartbeat import Heartbeat
from lrsweep.interrupts import (  # noqa: F401 (the protocol's step 3)
    interrupt_deferred,
    interrupt_noted,
)
from lrsweep.storage_url import sqlite_path

POINT_ATTR = "grid_point"  # trial user attr: the canonical JSON of the trial's grid point
SCHEMA_RETRIES = 5
# A study name also names folders (outputs/sweeps/<name>, reports): one path component, and short
# enough for any file system (255 bytes) with a suffix such as `-stage2-confirm`.
MAX_NAME_BYTES = 200


def check_study_name(name: str) -> None:
    """A study name that is safe as one folder name; else SweepConfigError. Every command that
    takes a study name applies this one check (the sweeper; the others through
    `src.study.check_name`)."""
    if not name.strip(". "):
        # `.` (or blanks) names the sweeps folder itself: every such study would share its trial
        # folders.
        raise SweepConfigError(
            f"study name {name!r} is invalid: it names a folder under outputs/, so it must hold "
            "a character other than '.' and blanks"
        )
    if "/" in name or "\\" in name or ".." in name or "\x00" in name:
        raise SweepConfigError(
            f"study name {name!r} is invalid: it names a folder under outputs/, so it may not "
            "hold '/', '\\' or '..'"
        )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise SweepConfigError(
            f"study name '{name[:40]}...' is {len(name.encode())} bytes long: at most "
            f"{MAX_NAME_BYTES} (it names folders under outputs/)"
        )


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


@contextlib.contextmanager
def rdb_transaction(storage: Any, ignore_integrity_error: bool = False) -> Iterator[Any]:
    """A session of Optuna's RDBStorage whose work is committed once, when the block ends
    (Optuna's own `_create_scoped_session`, optuna 4-5); None for a storage without one (another
    storage class, an Optuna without that helper), where the caller takes the public API. Not to
    be nested with Optuna's public calls on the same storage: they share the session."""
    try:
        from optuna.storages._rdb.storage import _create_scoped_session

        scoped_session = storage.scoped_session
    except (ImportError, AttributeError):
        yield None
        return
    with _create_scoped_session(scoped_session, ignore_integrity_error) as session:
        yield session


def open_study(
    storage: Any,
    study_name: str,
    direction: str,
    identity: dict[str, Any],
    axes: Sequence[Axis],
    metric_name: str | None,
) -> tuple[Any, dict[str, Any]]:
    """The study, created or loaded, checked to take this run (`sharing`: the experiment, the
    axes, the distributions its values are recorded with) before anything is written to it, then
    described; and the distributions (axis name -> distribution) for `record_params`."""
    import optuna

    from lrsweep import study_sharing as sharing

    existed = sharing.study_exists(storage, study_name)
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        direction=direction,
        sampler=optuna.samplers.RandomSampler(seed=0),  # never consulted: params are fixed
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise SweepConfigError(
            f"study '{study_name}' is {study.direction.name.lower()}, not {direction}"
        )
    attrs = study.user_attrs
    sharing.check_identity(study_name, existed, attrs.get("config"), identity)
    sharing.check_axes(study_name, attrs.get("grid", {}), axes)
    study_id = storage.get_study_id_from_name(study_name)
    dists, conversions = sharing.run_distributions(
        study_name,
        axes,
        sharing.recorded_distributions(study, storage, study_id),
        can_convert=getattr(storage, "engine", None) is not None,
    )
    if conversions:  # the study's records of an earlier lrsweep, made to take more values
        sharing.convert_params(storage, study_id, conversions)
    if attrs.get("config") is None:
        study.set_user_attr("config", identity)
    # The study describes itself: every value each axis was swept over (reruns may add some).
    grid = dict(attrs.get("grid", {}))
    for axis in axes:
        known = list(grid.get(axis.name, []))
        grid[axis.name] = known + [v for v in axis.values if v not in known]
    study.set_user_attr("grid", grid)
    if metric_name and study.metric_names is None:
        study.set_metric_names([metric_name])
    return study, dists


class StaleTrials:
    """Fails the RUNNING trials nobody runs any more, so that their points run again.

    - A trial whose heartbeat is older than the storage's grace period (its sweeper was killed):
      Optuna's `fail_stale_trials`.
    - A grid trial RUNNING without any heartbeat (Optuna skips those): a sweeper records the
      heartbeat before it claims, so such a trial was left by a sweeper killed inside the claim
      window of an older lrsweep, or by another tool. It is failed once it has stayed so for the
      grace period, timed on this machine's monotonic clock from when this process first saw
      it: no comparison of timestamps written by other machines (clock skew, time zones).

    Both rules bound any wait for trials "running elsewhere" by one grace period after their
    last sign of life.
    """

    def __init__(
        self, storage: Any, study_id: int, grace_period: float, every: float = 0.0
    ) -> None:
        self.storage, self.study_id, self.grace_period = storage, study_id, grace_period
        self.every = every  # at most one look per `every` seconds (a sweep's rounds are ~20 ms)
        self._last_look = -math.inf
        self._unbeating_since: dict[int, float] = {}  # trial id -> when first seen so

    def fail(self, study: Any) -> list[int]:
        """Fail what is stale now; the ids failed by the no-heartbeat rule. Within `every`
        seconds of the last look, nothing (a trial goes stale only after `grace_period`)."""
        import optuna

        now = time.monotonic()
        if now - self._last_look < self.every:
            return []
        self._last_look = now
        optuna.storages.fail_stale_trials(study)
        unbeating = set(self._running_without_heartbeat())
        self._unbeating_since = {
            i: self._unbeating_since.get(i, now) for i in unbeating
        }  # forget trials that started beating or finished
        failed = []
        for trial_id, since in list(self._unbeating_since.items()):
            if now - since < self.grace_period:
                continue
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                # The reason first: a finished trial takes no more attributes.
                self.storage.set_trial_user_attr(
                    trial_id, "error", "stale: RUNNING without a heartbeat"
                )
                if self.storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL):
                    failed.append(trial_id)
            del self._unbeating_since[trial_id]
        return failed

    def _running_without_heartbeat(self) -> list[int]:
        """Grid trials (they carry `POINT_ATTR`) RUNNING with no row in `trial_heartbeats`."""
        import sqlalchemy

        engine = getattr(self.storage, "engine", None)
        if engine is None:  # not an RDBStorage: Optuna's rule only
            return []
        query = sqlalchemy.text(
            "SELECT t.trial_id FROM trials t "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :attr "
            "LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
            "WHERE t.study_id = :study AND t.state = 'RUNNING' AND h.trial_id IS NULL"
        )
        with engine.connect() as connection:
            rows = connection.execute(query, {"attr": POINT_ATTR, "study": self.study_id})
            return [row[0] for row in rows]


class TrialRow(NamedTuple):
    """What a sweep's round needs of a trial: its number, state name and grid point (None for a
    trial no sweep queued)."""

    number: int
    state: str
    point: str | None


_FINISHED = ("COMPLETE", "FAIL", "PRUNED")


class TrialIndex:
    """The study's trials as `TrialRow`s, read incrementally: each `rows()` reads, in one query on
    an RDBStorage, only the number, state and grid point of the trials new since the last read
    and of those unfinished then (a finished trial never changes; all of them on the first read).
    Optuna's own cached read (`get_trials`) loads every attribute, parameter and value of each
    such trial: ~2 ms a round for the trial just finished. Other storages read through
    `get_trials`.

    New trials are those above the highest id read: a study's trials are inserted with its row
    locked (`enqueue_points`, Optuna's own `create_new_trial`), so their ids grow in commit order.
    The unfinished ones are named in the query; past `MAX_WATCHED` of them (a grid queued whole
    by another tool), the read starts at the oldest instead."""

    MAX_WATCHED = 100

    def __init__(self, study: Any, storage: Any, study_id: int) -> None:
        self.study, self.storage, self.study_id = study, storage, study_id
        self._rows: dict[int, TrialRow] = {}  # trial id -> row

    def rows(self) -> list[TrialRow]:
        """Every trial of the study now, in number order."""
        engine = getattr(self.storage, "engine", None)
        if engine is None:
            return [
                TrialRow(t.number, t.state.name, t.user_attrs.get(POINT_ATTR))
                for t in self.study.get_trials(deepcopy=False)
            ]
        import sqlalchemy

        unfinished = sorted(i for i, row in self._rows.items() if row.state not in _FINISHED)
        args: dict[str, Any] = {
            "attr": POINT_ATTR,
            "study": self.study_id,
            "after": max(self._rows, default=-1),
        }
        which = "t.trial_id > :after"
        if len(unfinished) > self.MAX_WATCHED:
            which, args["after"] = "t.trial_id >= :after", unfinished[0]
        elif unfinished:
            which = f"({which} OR t.trial_id IN :watched)"
            args["watched"] = unfinished
        query = sqlalchemy.text(
            "SELECT t.trial_id, t.number, t.state, a.value_json FROM trials t "
            "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id AND a.key = :attr "
            f"WHERE t.study_id = :study AND {which}"
        )
        if "watched" in args:
            query = query.bindparams(sqlalchemy.bindparam("watched", expanding=True))
        with engine.connect() as connection:
            fetched = connection.execute(query, args).all()
        for trial_id, number, state, point_json in fetched:
            state = getattr(state, "name", state)  # a TrialState on some dialects
            point = None if point_json is None else json.loads(point_json)
            self._rows[int(trial_id)] = TrialRow(int(number), str(state), point)
        return sorted(self._rows.values())


def done_points(rows: Sequence[TrialRow], grid: dict[str, dict[str, Any]]) -> set[str]:
    """The points of `grid` with a COMPLETE trial among `rows`."""
    return {r.point for r in rows if r.state == "COMPLETE"} & grid.keys()


class Round(NamedTuple):
    """What one read of the study tells a sweep's round (`queue_ahead`)."""

    queued: int  # points queued by this round
    waiting: list[tuple[int, str]]  # the grid's WAITING trials, (number, point) in number order
    done: set[str]  # the grid's points with a COMPLETE trial


def queue_ahead(
    study: Any,
    storage: Any,
    study_id: int,
    grid: dict[str, dict[str, Any]],
    skip: set[str],
    ahead: int | None = None,
    index: TrialIndex | None = None,
) -> Round:
    """Queue (WAITING) the points of `grid` not covered by a COMPLETE, RUNNING or WAITING trial
    and not in `skip`, in grid order and in one transaction. Returns the `Round`: the number
    queued, the grid's WAITING trials (those already there and those just queued) and its done
    points, from one read of the study (`index`, the sweep's `TrialIndex`; None: a whole read):
    the claim that follows and the progress line need no read of their own.

    `ahead`: keep at most this many of the grid's points WAITING (None: queue them all). A sweep
    queues just ahead of its claims: every look at the study re-reads its unfinished trials, so
    a grid queued whole up front costs O(points) a round and O(points^2) a sweep."""
    rows = (index or TrialIndex(study, storage, study_id)).rows()
    alive = [r for r in rows if r.state in ("COMPLETE", "RUNNING", "WAITING")]
    covered = {r.point for r in alive}
    missing = {k: p for k, p in grid.items() if k not in covered and k not in skip}
    waiting = [(r.number, r.point) for r in alive if r.state == "WAITING" and r.point in grid]
    if ahead is not None:
        missing = dict(list(missing.items())[: max(0, ahead - len(waiting))])
    if missing:
        waiting += enqueue_points(storage, study_id, missing)
    return Round(len(missing), sorted(waiting), done_points(alive, grid))


def unclaimed(rows: Sequence[TrialRow], grid: dict[str, dict[str, Any]], skip: set[str]) -> int:
    """Points of `grid` (less `skip`) with no COMPLETE or RUNNING trial among `rows`: work still
    to claim here, queued or about to be."""
    taken = {r.point for r in rows if r.state in ("COMPLETE", "RUNNING")}
    return sum(1 for key in grid if key not in taken and key not in skip)


def enqueue_points(
    storage: Any, study_id: int, points: dict[str, dict[str, Any]]
) -> list[tuple[int, str]]:
    """What `study.enqueue_trial(params, user_attrs={POINT_ATTR: key})` stores for each point,
    in one transaction on an RDBStorage; the (number, point) of the trials queued.

    Optuna commits each enqueued trial, locking the study row and counting its trials each time:
    10,000 points took minutes on SQLite. Here the study row is locked once, the trials are
    numbered after the existing ones (as Optuna numbers them: by creation order within the
    study), and one commit writes them all. Storages other than RDBStorage, or an Optuna
    without these models, get the trial-by-trial path."""
    import optuna

    with rdb_transaction(storage) as session:
        if session is None:
            queued = []
            for key, params in points.items():
                template = optuna.trial.create_trial(
                    state=optuna.trial.TrialState.WAITING,
                    system_attrs={"fixed_params": params},
                    user_attrs={POINT_ATTR: key},
                )
                trial_id = storage.create_new_trial(study_id, template_trial=template)
                queued.append((storage.get_trial_number_from_id(trial_id), key))
            return queued
        import sqlalchemy
        from optuna.storages._rdb import models

        models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
        count = sqlalchemy.func.count(models.TrialModel.trial_id)
        base = session.query(count).filter(models.TrialModel.study_id == study_id).scalar()
        for number, (key, params) in enumerate(points.items(), start=base):
            trial = models.TrialModel(
                study_id=study_id, number=number, state=optuna.trial.TrialState.WAITING
            )
            trial.user_attributes.append(
                models.TrialUserAttributeModel(key=POINT_ATTR, value_json=json.dumps(key))
            )
            trial.system_attributes.append(
                models.TrialSystemAttributeModel(key="fixed_params", value_json=json.dumps(params))
            )
            session.add(trial)
    return [(number, key) for number, key in enumerate(points, start=base)]


def claim(
    study: Any,
    storage: Any,
    study_id: int,
    grid: dict[str, dict[str, Any]],
    budget: int,
    heartbeat: Heartbeat,
    waiting: Sequence[tuple[int, str]] | None = None,
) -> list[tuple[int, int, dict[str, Any]]]:
    """Up to `budget` (number, trial id, params) claimed for this process, from `waiting`
    ((number, point) of WAITING trials, as `queue_ahead` returns them; None: read the study's).

    WAITING -> RUNNING is atomic in the storage: exactly one process wins each trial. A won
    trial is dropped (FAIL, user attr `duplicate_of`) if an older trial of its point is alive
    or done: two processes that enqueued the same point both keep the older trial."""
    import optuna

    State = optuna.trial.TrialState
    if waiting is None:
        rows = TrialIndex(study, storage, study_id).rows()
        waiting = [(r.number, r.point) for r in rows if r.state == "WAITING"]
    claimed = []
    for number, key in waiting:
        if len(claimed) >= budget:
            break
        if key not in grid:
            continue  # another run's grid: theirs to run
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        # The heartbeat first: a trial is never RUNNING without one, whenever this process dies.
        # (A WAITING trial's heartbeat means nothing: only RUNNING trials can go stale.)
        heartbeat.add(trial_id)
        try:
            won = storage.set_trial_state_values(trial_id, State.RUNNING)
        except optuna.exceptions.UpdateFinishedTrialError:
            won = False  # another process won it and has finished it (or dropped it) since
        if not won:
            heartbeat.discard(trial_id)
            continue  # another process won it
        twin = older_twin(study, storage, study_id, number, key)
        if twin is not None:
            heartbeat.discard(trial_id)
            storage.set_trial_user_attr(trial_id, "duplicate_of", twin)
            storage.set_trial_state_values(trial_id, State.FAIL)
            continue
        claimed.append((number, trial_id, grid[key]))
    return claimed


def older_twin(study: Any, storage: Any, study_id: int, number: int, key: str) -> int | None:
    """The number of another trial of grid point `key` that is COMPLETE, or RUNNING or WAITING
    and older than trial `number`; None if there is none. Read fresh from the database: one
    indexed query on an RDBStorage (a whole `get_trials` re-reads every unfinished trial with all
    its rows), else `get_trials`."""
    import optuna

    engine = getattr(storage, "engine", None)
    if engine is not None:
        import sqlalchemy

        query = sqlalchemy.text(
            "SELECT t.number FROM trials t "
            "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            "AND a.key = :attr AND a.value_json = :point "
            "WHERE t.study_id = :study AND t.number != :number AND (t.state = 'COMPLETE' "
            "OR (t.state IN ('RUNNING', 'WAITING') AND t.number < :number)) "
            "ORDER BY t.number LIMIT 1"
        )
        args = {"attr": POINT_ATTR, "point": json.dumps(key), "study": study_id, "number": number}
        with engine.connect() as connection:
            row = connection.execute(query, args).first()
        return None if row is None else int(row[0])
    State = optuna.trial.TrialState
    return next(
        (
            other.number
            for other in study.get_trials(deepcopy=False)
            if other.number != number
            and other.user_attrs.get(POINT_ATTR) == key
            and (
                other.state == State.COMPLETE
                or (other.state in (State.RUNNING, State.WAITING) and other.number < number)
            )
        ),
        None,
    )


def running_elsewhere(
    rows: Sequence[TrialRow], grid: dict[str, dict[str, Any]], ours: dict[int, int]
) -> int:
    """The grid's RUNNING trials among `rows` that this run does not hold (`ours`: by number)."""
    return sum(1 for r in rows if r.state == "RUNNING" and r.number not in ours and r.point in grid)


def record_params(
    storage: Any, trial_id: int, params: dict[str, Any], dists: dict[str, Any]
) -> None:
    """Record a claimed trial's grid values with their distributions, as `trial.suggest_*` would
    for an enqueued trial (without building a `Trial`, which reads the study and asks its
    sampler), in one transaction on an RDBStorage: Optuna's own per-parameter step (with its
    check against the study's earlier distributions), committed once."""
    values = {name: dist.to_internal_repr(params[name]) for name, dist in dists.items()}
    write = getattr(storage, "_set_trial_param_without_commit", None)
    if write is not None:
        with rdb_transaction(storage, ignore_integrity_error=True) as session:
            if session is not None:
                for name, dist in dists.items():
                    write(session, trial_id, name, values[name], dist)
                return
    # Another storage, or an Optuna without these helpers: the public API.
    for name, dist in dists.items():
        storage.set_trial_param(trial_id, name, values[name], dist)


class JobResult(NamedTuple):
    """What a job gave back, as any adapter sees it: its return value, or the text of the error
    it raised (`error` set); `attrs`: user attributes the adapter measured (e.g. `seconds`)."""

    value: Any = None
    error: str | None = None
    attrs: dict[str, Any] | None = None


class Outcome(NamedTuple):
    """A job's result as told: its metric, or the error that failed it; `diverged`: it returned a
    non-finite number (recorded as the worst value of the direction); `recorded`: whether the
    study took it (False: the trial had been finished elsewhere, e.g. failed as stale)."""

    value: float | None
    error: str | None
    recorded: bool = True
    diverged: bool = False


def outcome(
    result: JobResult, metric_name: str | None = None, direction: str = "maximize"
) -> Outcome:
    """A job's result judged. The value is the returned number, or the `metric_name` entry of a
    returned mapping; a NaN or infinite value is a diverged run (a training that blew up is a
    result, not a failure), recorded as the worst value (-inf maximising, +inf minimising);
    anything else that is not a number, or a raised exception, is an error text."""
    if result.error is not None:
        return Outcome(None, result.error)
    value = result.value
    if isinstance(value, Mapping):
        if metric_name is None or metric_name not in value:
            return Outcome(
                None,
                f"job returned a mapping without the metric {metric_name!r} "
                f"(keys {sorted(map(str, value))[:8]}); set hydra.sweeper.metric_name",
            )
        value = value[metric_name]
    if isinstance(value, bool):
        return Outcome(None, f"job returned {value!r}, not a number")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return Outcome(None, f"job returned {value!r}, not a number")
    if not math.isfinite(value):
        return Outcome(-math.inf if direction == "maximize" else math.inf, None, diverged=True)
    return Outcome(value, None)


def tell(
    study: Any,
    storage: Any,
    number: int,
    trial_id: int,
    result: JobResult,
    metric_name: str | None = None,
    direction: str = "maximize",
) -> Outcome:
    """Record a job's outcome (`outcome`) and return it. Never raises for a job's fault."""
    import optuna

    told = outcome(result, metric_name, direction)
    try:
        # The storage directly: `study.tell` re-reads the trial and calls the sampler, which
        # never chooses here (fixed params).
        for key, value in (result.attrs or {}).items():
            storage.set_trial_user_attr(trial_id, key, value)
        if told.error is None:
            if told.diverged:
                storage.set_trial_user_attr(trial_id, "diverged", True)
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.COMPLETE, [told.value])
        else:
            storage.set_trial_user_attr(trial_id, "error", told.error[:2000])
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
        import logging

        logging.getLogger(__name__).warning(
            "trial %d could not be told (%s): it was finished elsewhere", number, exc
        )
        return told._replace(recorded=False)
    return told


def trial_user_attrs(storage: Any, trial_id: int, keys: Sequence[str]) -> dict[str, Any]:
    """The trial's user attributes among `keys` (those it has): one indexed query on an
    RDBStorage, else the storage's `get_trial`."""
    engine = getattr(storage, "engine", None)
    if engine is None:
        attrs = storage.get_trial(trial_id).user_attrs
        return {key: attrs[key] for key in keys if key in attrs}
    import sqlalchemy

    query = sqlalchemy.text(  # `a.key`: a bare `key` is a reserved word in MySQL
        "SELECT a.key, a.value_json FROM trial_user_attributes a "
        "WHERE a.trial_id = :trial AND a.key IN :keys"
    ).bindparams(sqlalchemy.bindparam("keys", expanding=True))
    with engine.connect() as connection:
        rows = connection.execute(query, {"trial": trial_id, "keys": list(keys)})
        return {key: json.loads(value) for key, value in rows}


def fail_trials(storage: Any, trial_ids: Sequence[int]) -> None:
    """Mark our trials FAIL at once (Ctrl-C, an abort): no rerun waits for a grace period."""
    import optuna

    for trial_id in trial_ids:
        with contextlib.suppress(Exception):
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
