"""A grid sweeper on an Optuna study: every grid point runs exactly once.

Protocol (each step safe to repeat, in any number of processes or machines sharing the storage):
1. validate: build the grid, compose the first job's config and run the `check` hook; bad input
   stops here, before the study is touched;
2. open the study; fail trials whose sweeper stopped beating (killed); enqueue each grid point not
   covered by a COMPLETE, RUNNING or WAITING trial (a point whose trial FAILED is queued again);
3. claim WAITING trials one by one (WAITING -> RUNNING succeeds for one process only), drop a claim
   if an older trial of the same point is alive or done, launch the batch, tell the results;
4. when nothing is left to claim but points are RUNNING elsewhere, wait for them: a killed
   sweeper's trials go stale after `grace_period` and come back through step 2.

Optuna's GridSampler is not used: on Optuna 5 it does not compose with enqueued trials and
ask/tell (a 1-point grid raises KeyError 'grid_id'; the `tell` that exhausts the grid calls
`study.stop()` outside `optimize` and raises; FAILed points count as visited). Every trial here has
fixed params, so the study's sampler never chooses a value.

Optuna is imported inside `sweep()`: Hydra imports every plugin module on every start.
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import contextlib
import hashlib
import itertools
import json
import logging
import math
import os
import random
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

POINT_ATTR = "grid_point"  # trial user attr: the canonical JSON of the trial's grid point
SCHEMA_RETRIES = 5


class SweepConfigError(ValueError):
    """Bad sweep settings: reported as one line before the study is touched."""


@dataclass(frozen=True)
class Axis:
    name: str
    values: list[Any]
    log: bool = False  # a log interval: recorded as a log-scale float distribution
    interval: bool = False


def _python(value: Any) -> Any:
    """numpy scalars are not JSON-serialisable: Optuna params must be plain Python."""
    return value.item() if hasattr(value, "item") else value


def axis_from_override(override: Override, points: int) -> Axis:
    import numpy as np

    name = override.get_key_element()
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        log_scale = "log" in sweep.tags
        if points < 2:
            raise SweepConfigError(f"{name}: points={points} is invalid: need at least 2 points")
        if log_scale and (low <= 0 or high <= 0):
            raise SweepConfigError(
                f"{name}: log interval bounds must be > 0, got [{low:g}, {high:g}]"
            )
        if low >= high:
            raise SweepConfigError(f"{name}: low must be < high, got [{low:g}, {high:g}]")
        grid = (
            np.logspace(math.log10(low), math.log10(high), points)
            if log_scale
            else np.linspace(low, high, points)
        )
        return Axis(name, [float(v) for v in grid], log=log_scale, interval=True)
    if isinstance(sweep, ChoiceSweep):
        values = list(sweep.list)
    elif isinstance(sweep, RangeSweep):
        values = list(override.sweep_iterator())
    else:  # a plain value: a one-point axis
        values = [sweep]
    if not values:
        raise SweepConfigError(f"{name}: empty choice")
    return Axis(name, [_python(v) for v in values])


def build_axes(
    params: DictConfig | dict | None, arguments: Sequence[str], points: int
) -> tuple[list[Axis], list[str]]:
    """Axes from the config's `params` and the sweep overrides on the command line; the other
    command-line overrides are passed to every job unchanged."""
    parser = OverridesParser.create()
    axes: dict[str, Axis] = {}
    for name, spec in (params or {}).items():
        if isinstance(spec, ListConfig | list | tuple):
            values = [_python(v) for v in spec]
            if not values:
                raise SweepConfigError(f"{name}: empty list of values")
            axes[name] = Axis(name, values)
        else:
            axes[name] = axis_from_override(parser.parse_override(f"{name}={spec}"), points)
    fixed = []
    for override in parser.parse_overrides(list(arguments)):
        # The command line wins: `lr=0.1` pins the `lr` axis to one point, `seed=0,1` replaces it.
        if override.is_sweep_override() or override.get_key_element() in axes:
            axes[override.get_key_element()] = axis_from_override(override, points)
        else:
            fixed.append(override.input_line)
    for axis in axes.values():
        if len(set(map(repr, axis.values))) != len(axis.values):
            raise SweepConfigError(f"{axis.name}: repeated values {axis.values}")
    return list(axes.values()), fixed


def point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


class _Heartbeat:
    """Records a heartbeat for every in-flight trial: Optuna only does this inside `optimize`."""

    def __init__(self, storage: Any, interval: float) -> None:
        self._storage, self._interval = storage, interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrsweep-heartbeat", daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self, trial_ids: Sequence[int]) -> None:
        with self._lock:
            ids = list(trial_ids)
        for trial_id in ids:
            with contextlib.suppress(Exception):  # a beat lost is retried next interval
                self._storage.record_heartbeat(trial_id)

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)
        self.beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trial_ids)
            self.beat(ids)


class LrSweeper(Sweeper):
    def __init__(
        self,
        params: DictConfig | None = None,
        points: int = 10,
        sampler: Any = None,
        direction: str = "maximize",
        storage: str | None = None,
        study_name: str | None = None,
        metric_name: str | None = None,
        n_trials: int | None = None,
        n_jobs: int | None = None,
        max_failure_rate: float = 0.0,
        check: str | None = None,
        identity_keys: Sequence[str] = (),
        trial_key: str = "trial",
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        poll_interval: float = 2.0,
    ) -> None:
        self.params = params
        self.points = points
        self.sampler = sampler
        self.direction = direction
        self.storage_url = storage
        self.study_name = study_name
        self.metric_name = metric_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.check = check
        self.identity_keys = list(identity_keys or ())
        self.trial_key = trial_key
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 3 * heartbeat_interval
        self.poll_interval = poll_interval
        self.job_idx = 0
        self._lock_engine = None  # PostgreSQL advisory locks: one engine, no pooled connections

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.config_loader = hydra_context.config_loader
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        if self.n_jobs is None:  # as many trials per batch as the launcher runs at once
            launcher_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs")  # joblib
            if launcher_jobs is None:  # submitit: one job array per batch
                launcher_jobs = OmegaConf.select(config, "hydra.launcher.array_parallelism")
            if isinstance(launcher_jobs, int) and launcher_jobs < 0:
                launcher_jobs = max(1, (os.cpu_count() or 1) + 1 + launcher_jobs)  # joblib's rule
            self.n_jobs = (
                launcher_jobs if isinstance(launcher_jobs, int) and launcher_jobs > 0 else 1
            )

    # ---- entry ----
    def sweep(self, arguments: list[str]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Heartbeats and stale-trial failing are "experimental" in Optuna: we rely on them knowingly.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        try:
            axes, fixed, grid = self._plan(arguments)
            with self._storage_lock():
                study, storage = self._open_study(axes)
        except ValueError as err:  # SweepConfigError, or the `check` hook's ConfigError
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        try:
            self._run(study, storage, axes, fixed, grid)
        except KeyboardInterrupt:
            print(
                "\n[lrsweep] interrupted: trials in flight are marked FAIL; "
                "run the same command again to resume",
                file=sys.stderr,
            )
            raise SystemExit(130) from None

    # ---- step 1: validate, before the study is touched ----
    def _plan(
        self, arguments: list[str]
    ) -> tuple[list[Axis], list[str], dict[str, dict[str, Any]]]:
        if self.sampler is not None:
            target = (
                self.sampler.get("_target_", "")
                if isinstance(self.sampler, DictConfig)
                else self.sampler
            )
            if str(target) not in ("grid", "optuna.samplers.GridSampler"):
                raise SweepConfigError(
                    f"sampler={target!r}: lrsweep runs a grid exactly once; use null or "
                    "optuna.samplers.GridSampler"
                )
        if self.direction not in ("maximize", "minimize"):
            raise SweepConfigError(f"direction={self.direction!r} is invalid: maximize or minimize")
        if not self.storage_url or not self.study_name:
            raise SweepConfigError(
                "storage and study_name must be set (hydra.sweeper.storage, study_name)"
            )
        if self.n_jobs < 1 or (self.n_trials is not None and self.n_trials < 1):
            raise SweepConfigError(f"n_jobs={self.n_jobs}, n_trials={self.n_trials}: must be >= 1")
        axes, fixed = build_axes(self.params, arguments, self.points)
        if not axes:
            raise SweepConfigError("nothing to sweep: hydra.sweeper.params is empty")
        grid = {}
        for values in itertools.product(*(axis.values for axis in axes)):
            params = {axis.name: value for axis, value in zip(axes, values, strict=True)}
            grid[point_key(params)] = params
        first = next(iter(grid.values()))
        job_cfg = self.config_loader.load_sweep_config(
            self.config, [*fixed, *self._param_overrides(first)]
        )
        if self.check:
            from hydra.utils import get_method

            get_method(self.check)(job_cfg)
        self._identity = {
            key: OmegaConf.to_container(value, resolve=True)
            if OmegaConf.is_config(value)
            else value
            for key in self.identity_keys
            for value in [OmegaConf.select(job_cfg, key)]
        }
        return axes, fixed, grid

    @staticmethod
    def _param_overrides(params: dict[str, Any]) -> list[str]:
        return [f"{name}={format_value(value)}" for name, value in params.items()]

    # ---- steps 2-4 ----
    def _storage_lock(self) -> contextlib.AbstractContextManager:
        """Serialises study creation, stale-failing and enqueueing between sweeps of one study: a
        file lock beside a SQLite file, a session advisory lock on PostgreSQL (released by the
        server if the holder dies). Elsewhere, and as a safety net everywhere, the
        claim-then-dedupe rule of `_claim` keeps each point to one run."""
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

        if self._lock_engine is None:
            self._lock_engine = sqlalchemy.create_engine(
                self.storage_url, poolclass=sqlalchemy.pool.NullPool
            )
        digest = hashlib.sha256(f"lrsweep:{self.study_name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with self._lock_engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})

    def _open_study(self, axes: list[Axis]) -> tuple[Any, Any]:
        """The study and its storage (heartbeats on), created or loaded, checked and described."""
        import optuna
        import sqlalchemy

        engine_kwargs = (
            {"connect_args": {"timeout": 60}} if self.storage_url.startswith("sqlite") else {}
        )
        storage = None
        for attempt in range(SCHEMA_RETRIES):
            try:
                storage = optuna.storages.RDBStorage(
                    self.storage_url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=self.heartbeat_interval,
                    grace_period=self.grace_period,
                )
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Sweeps started together on a fresh server database race to create its tables
                # ("duplicate key ... pg_type_typname_nsp_index"): the loser waits and reloads.
                if attempt == SCHEMA_RETRIES - 1:
                    raise
                time.sleep(0.5 + random.random())
        study = optuna.create_study(
            storage=storage,
            study_name=self.study_name,
            direction=self.direction,
            sampler=optuna.samplers.RandomSampler(seed=0),  # never consulted: params are fixed
            load_if_exists=True,
        )
        if study.direction.name.lower() != self.direction:
            raise SweepConfigError(
                f"study '{self.study_name}' is {study.direction.name.lower()}, not {self.direction}"
            )
        recorded = study.user_attrs.get("config")
        if recorded is not None and recorded != self._identity:
            differ = sorted(
                k
                for k in set(recorded) | set(self._identity)
                if recorded.get(k) != self._identity.get(k)
            )
            raise SweepConfigError(
                f"study '{self.study_name}' holds another experiment (differs in {differ}); "
                "set study.name to a new name"
            )
        if recorded is None:
            study.set_user_attr("config", self._identity)
        # The study describes itself: every value each axis was swept over (reruns may add some).
        grid = dict(study.user_attrs.get("grid", {}))
        for axis in axes:
            known = list(grid.get(axis.name, []))
            grid[axis.name] = known + [v for v in axis.values if v not in known]
        study.set_user_attr("grid", grid)
        if self.metric_name and study.metric_names is None:
            study.set_metric_names([self.metric_name])
        return study, storage

    def _run(
        self,
        study: Any,
        storage: Any,
        axes: list[Axis],
        fixed: list[str],
        grid: dict[str, dict[str, Any]],
    ) -> None:
        import optuna

        study_id = storage.get_study_id_from_name(self.study_name)
        distributions = self._distributions(axes)
        done_before = self._count_done(study, grid)
        print(
            f"[lrsweep] study '{self.study_name}' ({self.storage_url}): {len(grid)} grid points, "
            f"{done_before} done before this run",
            flush=True,
        )
        failed_here: set[str] = set()  # not re-queued in this run: a deterministic error would loop
        launched = failures = 0
        started = time.perf_counter()
        waiting_note = False
        in_flight: dict[int, int] = {}  # trial number -> trial id
        with _Heartbeat(storage, self.heartbeat_interval) as heartbeat:
            try:
                while True:
                    with self._storage_lock():
                        optuna.storages.fail_stale_trials(study)
                        self._enqueue_missing(study, grid, failed_here)
                    budget = self.n_jobs
                    if self.n_trials is not None:
                        budget = min(budget, self.n_trials - launched)
                        if budget <= 0:
                            break
                    claimed = self._claim(study, storage, study_id, grid, budget, heartbeat)
                    if not claimed:
                        elsewhere = self._running_elsewhere(study, grid, in_flight)
                        if not elsewhere:
                            break
                        if not waiting_note:
                            print(
                                f"[lrsweep] waiting for {elsewhere} trial(s) running elsewhere",
                                flush=True,
                            )
                            waiting_note = True
                        time.sleep(self.poll_interval)
                        continue
                    for number, trial_id, _ in claimed:
                        in_flight[number] = trial_id
                    results = self._launch(study, claimed, distributions, fixed)
                    for (number, trial_id, params), ret in zip(claimed, results, strict=True):
                        failed = self._tell(study, storage, number, trial_id, ret)
                        heartbeat.discard(trial_id)
                        in_flight.pop(number, None)
                        launched += 1
                        if failed:
                            failures += 1
                            failed_here.add(point_key(params))
                        self._progress(
                            study, storage, trial_id, params, grid, launched, started, failed
                        )
                    if failures and failures / launched > self.max_failure_rate:
                        print(
                            f"error: {failures} of {launched} trials failed "
                            f"(max_failure_rate={self.max_failure_rate}); errors are in the trials' "
                            "user attr 'error'. A rerun resumes and retries them.",
                            file=sys.stderr,
                        )
                        raise SystemExit(1)
            except BaseException:
                # Ctrl-C or an abort: our claimed trials must not sit RUNNING until the grace period.
                for trial_id in in_flight.values():
                    with contextlib.suppress(Exception):
                        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
                raise
        if launched == 0:
            print(f"[lrsweep] nothing to run: all {len(grid)} grid points are done", flush=True)
        self._summary(study, axes, grid)

    @staticmethod
    def _count_done(study: Any, grid: dict[str, dict[str, Any]]) -> int:
        import optuna

        done = {
            t.user_attrs.get(POINT_ATTR)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        }
        return len(done & grid.keys())

    @staticmethod
    def _enqueue_missing(study: Any, grid: dict[str, dict[str, Any]], skip: set[str]) -> None:
        import optuna

        alive = (
            optuna.trial.TrialState.COMPLETE,
            optuna.trial.TrialState.RUNNING,
            optuna.trial.TrialState.WAITING,
        )
        covered = {
            t.user_attrs.get(POINT_ATTR) for t in study.get_trials(deepcopy=False, states=alive)
        }
        for key, params in grid.items():
            if key not in covered and key not in skip:
                study.enqueue_trial(params, user_attrs={POINT_ATTR: key})

    @staticmethod
    def _claim(
        study: Any,
        storage: Any,
        study_id: int,
        grid: dict[str, dict[str, Any]],
        budget: int,
        heartbeat: _Heartbeat,
    ) -> list[tuple[int, int, dict[str, Any]]]:
        """WAITING -> RUNNING is atomic in the storage: exactly one process wins each trial. A won
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

    @staticmethod
    def _running_elsewhere(
        study: Any, grid: dict[str, dict[str, Any]], ours: dict[int, int]
    ) -> int:
        import optuna

        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return sum(
            1 for t in running if t.number not in ours and t.user_attrs.get(POINT_ATTR) in grid
        )

    @staticmethod
    def _distributions(axes: list[Axis]) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        return {
            axis.name: FloatDistribution(min(axis.values), max(axis.values), log=axis.log)
            if axis.interval
            else CategoricalDistribution(axis.values)
            for axis in axes
        }

    def _launch(
        self,
        study: Any,
        claimed: list[tuple[int, int, dict[str, Any]]],
        distributions: dict[str, Any],
        fixed: list[str],
    ) -> Sequence[Any]:
        import optuna

        batch = []
        for number, trial_id, params in claimed:
            trial = optuna.trial.Trial(study, trial_id)
            for name, dist in distributions.items():
                # Returns the enqueued value and records it with its distribution.
                if isinstance(dist, optuna.distributions.FloatDistribution):
                    trial.suggest_float(name, dist.low, dist.high, log=dist.log)
                else:
                    trial.suggest_categorical(name, dist.choices)
            batch.append([*fixed, *self._param_overrides(params), f"{self.trial_key}={number}"])
        returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        return returns

    @staticmethod
    def _tell(study: Any, storage: Any, number: int, trial_id: int, ret: Any) -> bool:
        """Record a job's outcome; True if it failed. Never raises for a job's fault."""
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
                return False
            storage.set_trial_user_attr(trial_id, "error", error[:2000])
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError, RuntimeError) as exc:
            log.warning("trial %d could not be told (%s): it was finished elsewhere", number, exc)
        print(f"[lrsweep] trial {number} FAILED: {error}", file=sys.stderr, flush=True)
        return True

    def _progress(
        self,
        study: Any,
        storage: Any,
        trial_id: int,
        params: dict[str, Any],
        grid: dict[str, dict[str, Any]],
        launched: int,
        started: float,
        failed: bool,
    ) -> None:
        trial = storage.get_trial(trial_id)
        done = self._count_done(study, grid)
        elapsed = time.perf_counter() - started
        remaining = len(grid) - done
        if self.n_trials is not None:
            remaining = min(remaining, self.n_trials - launched)
        eta = elapsed / launched * remaining / 1.0
        shown = " ".join(
            f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
        )
        metric = self.metric_name or "value"
        if failed:
            outcome = "FAILED"
        else:
            outcome = f"{metric}={trial.value:.4f}" + (
                " DIVERGED" if trial.user_attrs.get("diverged") else ""
            )
        seconds = trial.user_attrs.get("seconds")
        took = f" {seconds:.1f}s" if isinstance(seconds, int | float) else ""
        print(f"[{done}/{len(grid)}] {shown} {outcome}{took} ETA {eta:.0f}s", flush=True)

    def _summary(self, study: Any, axes: list[Axis], grid: dict[str, dict[str, Any]]) -> None:
        """Per value of the first axis (the LR): mean and std of the metric over the other axes
        (diverged trials included, with the value they returned)."""
        import optuna

        first = axes[0].name
        rows: dict[Any, dict[str, list]] = {
            v: {"values": [], "diverged": [], "seconds": []} for v in axes[0].values
        }
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.user_attrs.get(POINT_ATTR) not in grid:
                continue
            row = rows[grid[t.user_attrs[POINT_ATTR]][first]]
            # A diverged trial counts with the value it returned: diverging must cost the LR.
            row["values"].append(t.value)
            if t.user_attrs.get("diverged"):
                row["diverged"].append(1)
            if isinstance(t.user_attrs.get("seconds"), int | float):
                row["seconds"].append(t.user_attrs["seconds"])
        metric = self.metric_name or "value"
        print(
            f"\n{first:>10}  {'mean ' + metric:>14}  {'std':>7}  {'n':>3}  {'diverged':>8}  {'seconds':>7}"
        )
        best, sign = None, 1 if self.direction == "maximize" else -1
        for value, row in rows.items():
            n = len(row["values"])
            mean = statistics.fmean(row["values"]) if n else math.nan
            std = statistics.stdev(row["values"]) if n > 1 else 0.0
            secs = statistics.fmean(row["seconds"]) if row["seconds"] else math.nan
            shown = f"{value:.3e}" if isinstance(value, float) else str(value)
            print(
                f"{shown:>10}  {mean:>14.4f}  {std:>7.4f}  {n:>3}  {len(row['diverged']):>8}  {secs:>7.2f}"
            )
            if n and (best is None or sign * mean > sign * best[1]):
                best = (value, mean, std, n)
        if best is None:
            print("\nno finished trial: no best value")
        else:
            value, mean, std, n = best
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            print(f"\nbest {first}={shown}: {metric} {mean:.4f} ± {std:.4f} over {n} run(s)")
        print(f"dashboard: optuna-dashboard {self.storage_url}\n", flush=True)
