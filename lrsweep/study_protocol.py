"""The study protocol: how sweeps share one Optuna study and run each grid point exactly once.

Each step is safe to repeat, in any number of processes or machines sharing the storage:
1. `lrsweep.storage.open_storage`, then `open_study`: create or load the study, check that it
   takes this run (`study_sharing`), record the grid;
2. under `lrsweep.storage.StudyLock`: `StaleTrials.fail` (trials whose sweeper stopped beating, or that never had
   a heartbeat) and `queue_ahead` (each grid point not covered by a COMPLETE, RUNNING or
   WAITING trial, in one transaction; a point whose trial FAILED is queued again);
3. still under the lock, `claim` (of the WAITING trials `queue_ahead` saw and queued): the
   heartbeat first, then WAITING -> RUNNING (succeeds for one process only; on SQLite only under
   the lock, as Optuna reads the state before its write begins); a claim that finds an older
   trial of the same point alive or done gives way; `lrsweep.interrupts.interrupt_deferred`
   holds a Ctrl-C or SIGTERM back until the claimed trials are registered as in flight;
4. `lrsweep.results.tell`: a job's outcome, never raising for the job's fault.

Where a step reads or writes many rows, it does so in one query or transaction on Optuna's own
tables (`lrsweep.optuna_tables`, where that module vouches for the schema), else through Optuna's
public API.

Optuna's GridSampler is not used: on Optuna 5 it does not compose with enqueued trials and
ask/tell. Every trial here has fixed params, so the study's sampler never chooses a value.
Optuna is imported inside functions: Hydra imports every plugin module on every start.
"""

import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from lrsweep import optuna_tables
from lrsweep.grid import Axis, SweepConfigError
from lrsweep.heartbeat import Heartbeat

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
    # The axes first: a run that sweeps another key also has another identity (`without_swept`),
    # and the axes name the difference better.
    sharing.check_axes(study_name, attrs.get("grid", {}), axes)
    sharing.check_identity(study_name, existed, attrs.get("config"), identity)
    study_id = storage.get_study_id_from_name(study_name)
    dists, conversions = sharing.run_distributions(
        study_name,
        axes,
        sharing.recorded_distributions(study, storage, study_id),
        can_convert=optuna_tables.engine(storage) is not None,
    )
    if conversions:  # the study's records of an earlier lrsweep, made to take more values
        optuna_tables.convert_params(optuna_tables.engine(storage), study_id, conversions)
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
        engine = optuna_tables.engine(self.storage)
        if engine is None:  # not an RDBStorage Optuna's tables can be read from: Optuna's rule
            return []
        return optuna_tables.running_without_heartbeat(engine, self.study_id, POINT_ATTR)


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
        engine = optuna_tables.engine(self.storage)
        if engine is None:
            return [
                TrialRow(t.number, t.state.name, t.user_attrs.get(POINT_ATTR))
                for t in self.study.get_trials(deepcopy=False)
            ]
        unfinished = sorted(i for i, row in self._rows.items() if row.state not in _FINISHED)
        from_oldest = len(unfinished) > self.MAX_WATCHED
        after = unfinished[0] if from_oldest else max(self._rows, default=-1)
        for trial_id, number, state, point in optuna_tables.trial_rows(
            engine, self.study_id, POINT_ATTR, after, unfinished, from_oldest
        ):
            self._rows[trial_id] = TrialRow(number, state, point)
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

    with optuna_tables.transaction(storage) as session:
        if session is not None:
            return optuna_tables.enqueue(session, study_id, points, POINT_ATTR)
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

    engine = optuna_tables.engine(storage)
    if engine is not None:
        return optuna_tables.older_twin(engine, study_id, number, POINT_ATTR, key)
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
    if optuna_tables.record_params(storage, trial_id, values, dists):
        return
    # Another storage, or an Optuna this was not checked against: the public API.
    for name, dist in dists.items():
        storage.set_trial_param(trial_id, name, values[name], dist)


def trial_user_attrs(storage: Any, trial_id: int, keys: Sequence[str]) -> dict[str, Any]:
    """The trial's user attributes among `keys` (those it has): one indexed query on Optuna's
    tables, else the storage's `get_trial`."""
    engine = optuna_tables.engine(storage)
    if engine is not None:
        return optuna_tables.user_attrs(engine, trial_id, keys)
    attrs = storage.get_trial(trial_id).user_attrs
    return {key: attrs[key] for key in keys if key in attrs}


def fail_trials(storage: Any, trial_ids: Sequence[int]) -> None:
    """Mark our trials FAIL at once (Ctrl-C, an abort): no rerun waits for a grace period."""
    import optuna

    for trial_id in trial_ids:
        with contextlib.suppress(Exception):
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
