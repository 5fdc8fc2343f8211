"""The study protocol: how sweeps share one Optuna study and run each grid point exactly once.

Each step is safe to repeat, in any number of processes or machines sharing the storage:
1. `open_storage` / `open_study`: create or load the study, check that it holds this experiment,
   record the grid;
2. under `StudyLock`: `fail_stale` (trials whose sweeper stopped beating) and `enqueue_missing`
   (each grid point not covered by a COMPLETE, RUNNING or WAITING trial; a point whose trial
   FAILED is queued again);
3. `claim`: WAITING -> RUNNING succeeds for one process only; a claim that finds an older trial of
   the same point alive or done gives way;
4. `tell`: a job's outcome, never raising for the job's fault.

Optuna's GridSampler is not used: on Optuna 5 it does not compose with enqueued trials and
ask/tell. Every trial here has fixed params, so the study's sampler never chooses a value.
Optuna is imported inside functions: Hydra imports every plugin module on every start.
"""

import contextlib
import hashlib
import math
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus

from hydra_plugins.lrsweep_sweeper.grid import Axis, SweepConfigError
from hydra_plugins.lrsweep_sweeper.heartbeat import Heartbeat

POINT_ATTR = "grid_point"  # trial user attr: the canonical JSON of the trial's grid point
SCHEMA_RETRIES = 5


class StudyLock:
    """Serialises study creation, stale-failing and enqueueing between sweeps of one study: a
    file lock beside a SQLite file, a session advisory lock on PostgreSQL (released by the
    server if the holder dies). Elsewhere, and as a safety net everywhere, the claim-then-dedupe
    rule of `claim` keeps each point to one run."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        self.storage_url, self.study_name = storage_url, study_name
        self._engine = None  # PostgreSQL advisory locks: one engine, no pooled connections

    def __call__(self) -> contextlib.AbstractContextManager:
        if self.storage_url.startswith("sqlite:///"):
            from filelock import FileLock

            path = Path(self.storage_url.removeprefix("sqlite:///")).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(f"{path}.lock")
        if self.storage_url.startswith("postgresql"):
            return self._advisory_lock()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _advisory_lock(self) -> Iterator[None]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.storage_url, poolclass=sqlalchemy.pool.NullPool
            )
        digest = hashlib.sha256(f"lrsweep:{self.study_name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with self._engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


def open_storage(storage_url: str, heartbeat_interval: int, grace_period: int) -> Any:
    """An RDBStorage with heartbeats on; retries the race of sweeps creating a fresh schema."""
    import optuna
    import sqlalchemy

    engine_kwargs = {"connect_args": {"timeout": 60}} if storage_url.startswith("sqlite") else {}
    for attempt in range(SCHEMA_RETRIES):
        try:
            return optuna.storages.RDBStorage(
                storage_url,
                engine_kwargs=engine_kwargs,
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


def open_study(
    storage: Any,
    study_name: str,
    direction: str,
    identity: dict[str, Any],
    axes: Sequence[Axis],
    metric_name: str | None,
) -> Any:
    """The study, created or loaded, checked to hold this experiment, and described."""
    import optuna

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
    recorded = study.user_attrs.get("config")
    if recorded is not None and recorded != identity:
        differ = sorted(
            k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k)
        )
        raise SweepConfigError(
            f"study '{study_name}' holds another experiment (differs in {differ}); "
            "set study.name to a new name"
        )
    if recorded is None:
        study.set_user_attr("config", identity)
    # The study describes itself: every value each axis was swept over (reruns may add some).
    grid = dict(study.user_attrs.get("grid", {}))
    for axis in axes:
        known = list(grid.get(axis.name, []))
        grid[axis.name] = known + [v for v in axis.values if v not in known]
    study.set_user_attr("grid", grid)
    if metric_name and study.metric_names is None:
        study.set_metric_names([metric_name])
    return study


def fail_stale(study: Any) -> None:
    """Fail the trials whose sweeper stopped beating for longer than the grace period."""
    import optuna

    optuna.storages.fail_stale_trials(study)


def count_done(study: Any, grid: dict[str, dict[str, Any]]) -> int:
    import optuna

    done = {
        t.user_attrs.get(POINT_ATTR)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    return len(done & grid.keys())


def enqueue_missing(study: Any, grid: dict[str, dict[str, Any]], skip: set[str]) -> None:
    import optuna

    alive = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.WAITING,
    )
    covered = {t.user_attrs.get(POINT_ATTR) for t in study.get_trials(deepcopy=False, states=alive)}
    for key, params in grid.items():
        if key not in covered and key not in skip:
            study.enqueue_trial(params, user_attrs={POINT_ATTR: key})


def claim(
    study: Any,
    storage: Any,
    study_id: int,
    grid: dict[str, dict[str, Any]],
    budget: int,
    heartbeat: Heartbeat,
) -> list[tuple[int, int, dict[str, Any]]]:
    """Up to `budget` (number, trial id, params) claimed for this process.

    WAITING -> RUNNING is atomic in the storage: exactly one process wins each trial. A won
    trial is dropped (FAIL, user attr `duplicate_of`) if an older trial of its point is alive
    or done: two processes that enqueued the same point both keep the older trial."""
    import optuna

    State = optuna.trial.TrialState
    claimed = []
    for trial in study.get_trials(deepcopy=False, states=(State.WAITING,)):
        if len(claimed) >= budget:
            break
        key = trial.user_attrs.get(POINT_ATTR)
        if key not in grid:
            continue  # another run's grid: theirs to run
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            if not storage.set_trial_state_values(trial_id, State.RUNNING):
                continue  # another process won it
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process won it and has finished it (or dropped it) since
        heartbeat.add(trial_id)
        twin = next(
            (
                other.number
                for other in study.get_trials(deepcopy=False)
                if other.number != trial.number
                and other.user_attrs.get(POINT_ATTR) == key
                and (
                    other.state == State.COMPLETE
                    or (
                        other.state in (State.RUNNING, State.WAITING)
                        and other.number < trial.number
                    )
                )
            ),
            None,
        )
        if twin is not None:
            heartbeat.discard(trial_id)
            storage.set_trial_user_attr(trial_id, "duplicate_of", twin)
            storage.set_trial_state_values(trial_id, State.FAIL)
            continue
        claimed.append((trial.number, trial_id, grid[key]))
    return claimed


def running_elsewhere(study: Any, grid: dict[str, dict[str, Any]], ours: dict[int, int]) -> int:
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return sum(1 for t in running if t.number not in ours and t.user_attrs.get(POINT_ATTR) in grid)


def distributions(axes: Sequence[Axis]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        axis.name: FloatDistribution(min(axis.values), max(axis.values), log=axis.log)
        if axis.interval
        else CategoricalDistribution(axis.values)
        for axis in axes
    }


def record_params(study: Any, trial_id: int, dists: dict[str, Any]) -> None:
    """Record a claimed trial's enqueued values with their distributions."""
    import optuna

    trial = optuna.trial.Trial(study, trial_id)
    for name, dist in dists.items():
        if isinstance(dist, optuna.distributions.FloatDistribution):
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        else:
            trial.suggest_categorical(name, dist.choices)


def tell(study: Any, storage: Any, number: int, trial_id: int, ret: Any) -> str | None:
    """Record a job's outcome; the error text if it failed. Never raises for a job's fault."""
    import optuna

    error = None
    if ret.status == JobStatus.COMPLETED:
        try:
            value = float(ret.return_value)
        except (TypeError, ValueError):
            value, error = math.nan, f"job returned {ret.return_value!r}, not a number"
        if error is None and not math.isfinite(value):
            error = f"job returned a non-finite value ({value})"
    else:
        try:
            _ = ret.return_value  # re-raises the job's exception
            error = "job failed"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    try:
        if error is None:
            study.tell(number, value)
            return None
        storage.set_trial_user_attr(trial_id, "error", error[:2000])
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
        import logging

        logging.getLogger(__name__).warning(
            "trial %d could not be told (%s): it was finished elsewhere", number, exc
        )
    return error


def fail_trials(storage: Any, trial_ids: Sequence[int]) -> None:
    """Mark our trials FAIL at once (Ctrl-C, an abort): no rerun waits for a grace period."""
    import optuna

    for trial_id in trial_ids:
        with contextlib.suppress(Exception):
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
