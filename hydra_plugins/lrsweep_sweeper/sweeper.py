"""The `lrsweep` Hydra sweeper: a grid on an Optuna study, every grid point run exactly once.

The plugin class only sequences the steps; each concern lives in a module of its own:
`grid` (axes and points), `study_protocol` (lock, open, enqueue, claim, tell, stale),
`heartbeat` (the thread that keeps claimed trials alive), `console` (what a sweep prints).

1. validate: build the grid, compose the first job's config and run the `check` hook; bad input
   stops here, before the study is touched;
2. open the study; each round: fail stale trials, enqueue missing points, claim a batch, launch
   it, tell the results;
3. when nothing is left to claim but points are RUNNING elsewhere, wait for them: a killed
   sweeper's trials go stale after `grace_period` and come back through step 2.

Optuna is imported inside `sweep()`: Hydra imports every plugin module on every start.
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import contextlib
import gc
import os
import re
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.lrsweep_sweeper import console
from hydra_plugins.lrsweep_sweeper import study_protocol as protocol
from hydra_plugins.lrsweep_sweeper.compose import TemplateConfigLoader
from hydra_plugins.lrsweep_sweeper.grid import (
    Axis,
    SweepConfigError,
    build_axes,
    build_grid,
    param_overrides,
    point_key,
)
from hydra_plugins.lrsweep_sweeper.heartbeat import Heartbeat, check_timing
from hydra_plugins.lrsweep_sweeper.storage_url import (
    check_storage_url,
    hide_password,
    refuse_literal_password,
    storage_problem,
)


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
        identity: str | None = None,
        summary: str | None = None,
        trial_key: str = "trial",
        slot_key: str | None = None,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        poll_interval: float = 2.0,
        compose_once: bool = True,
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
        self.identity = identity
        self.summary = summary
        self.trial_key = trial_key
        self.slot_key = slot_key
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 3 * heartbeat_interval
        self.poll_interval = poll_interval
        self.compose_once = compose_once
        self.job_idx = 0
        self._collecting = True  # whether the garbage collector was on when the sweep began

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context = hydra_context
        self.config = config
        self.config_loader = hydra_context.config_loader
        # The launcher composes each job's config through this loader: once per shape of job, not
        # once per job (compose.py); `sweep()` names the value keys once the axes are known.
        self._job_loader = TemplateConfigLoader(
            hydra_context.config_loader, (), token=uuid.uuid4().hex
        )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(
                config_loader=self._job_loader
                if self.compose_once
                else hydra_context.config_loader,
                callbacks=hydra_context.callbacks,
            ),
            task_function=task_function,
            config=config,
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
        # Validation builds what the trials then use (torch._dynamo, the data, the study): no
        # garbage collection while it does (its full passes walked every object torch holds, ~0.1 s
        # each); `_run` freezes it all and turns collection back on for the trials.
        self._collecting = gc.isenabled()
        gc.disable()
        try:
            self._sweep(arguments)
        finally:
            if self._collecting:
                gc.enable()

    def _sweep(self, arguments: list[str]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Heartbeats and stale-trial failing are "experimental" in Optuna: we rely on them knowingly.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        import sqlalchemy

        try:
            axes, fixed, grid = self._plan(arguments)
            self._job_loader.value_keys = frozenset(
                [
                    *(a.name for a in axes),
                    self.trial_key,
                    *([self.slot_key] if self.slot_key else []),
                ]
            )
            lock = protocol.StudyLock(self.storage_url, self.study_name)
            with lock():
                storage = protocol.open_storage(
                    self.storage_url, self.heartbeat_interval, self.grace_period
                )
                study, dists = protocol.open_study(
                    storage,
                    self.study_name,
                    self.direction,
                    self._identity,
                    axes,
                    self.metric_name,
                )
        except ValueError as err:  # SweepConfigError, or the `check` hook's ConfigError
            console.fail(err)
        except (
            sqlalchemy.exc.SQLAlchemyError,
            optuna.exceptions.StorageInternalError,
            OSError,
        ) as err:  # unreachable server, not a database, a read-only folder, ...
            console.fail(SweepConfigError(storage_problem(self.storage_url, err)))
        with protocol.interrupt_noted() as interrupted:
            try:
                self._run(study, storage, lock, axes, fixed, grid, dists)
            except BaseException as err:
                # A Ctrl-C can surface as another error when it lands inside a library that
                # wraps what it catches (OmegaConf does, composing a job's config).
                if not (isinstance(err, KeyboardInterrupt) or interrupted.is_set()):
                    raise
                by = f" by {interrupted.name}" if interrupted.signum == signal.SIGTERM else ""
                print(
                    f"\n[lrsweep] interrupted{by}: trials in flight are marked FAIL; "
                    "run the same command again to resume",
                    file=sys.stderr,
                )
                raise SystemExit(interrupted.exit_status) from None
            finally:
                # The sweep's own connections, closed now rather than whenever the garbage
                # collector (frozen at exit in trial processes) gets to them.
                storage.engine.dispose()

    def _raw(self, key: str) -> Any:
        """A config value as written (interpolations unresolved), following `${other.key}`."""
        raw = OmegaConf.to_container(self.config, resolve=False)
        seen = set()
        while key not in seen:
            seen.add(key)
            value: Any = raw
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            match = re.fullmatch(r"\$\{([\w.]+)\}", value) if isinstance(value, str) else None
            if match is None:
                return value
            key = match.group(1)
        return None

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
        protocol.check_study_name(str(self.study_name))
        check_storage_url(self.storage_url)
        raw_url = self._raw("hydra.sweeper.storage")
        refuse_literal_password(raw_url if isinstance(raw_url, str) else self.storage_url)
        if self.n_jobs < 1 or (self.n_trials is not None and self.n_trials < 1):
            raise SweepConfigError(f"n_jobs={self.n_jobs}, n_trials={self.n_trials}: must be >= 1")
        check_timing(self.heartbeat_interval, self.grace_period)
        axes, fixed = build_axes(self.params, arguments, self.points)
        if not axes:
            raise SweepConfigError("nothing to sweep: hydra.sweeper.params is empty")
        grid = build_grid(axes)
        first = next(iter(grid.values()))
        job_cfg = self.config_loader.load_sweep_config(
            self.config, [*fixed, *param_overrides(first)]
        )
        if self.check:
            from hydra.utils import get_method

            get_method(self.check)(job_cfg)
        if self.identity:
            from hydra.utils import get_method

            self._identity = dict(get_method(self.identity)(job_cfg))
        else:
            self._identity = {
                key: OmegaConf.to_container(value, resolve=True)
                if OmegaConf.is_config(value)
                else value
                for key in self.identity_keys
                for value in [OmegaConf.select(job_cfg, key)]
            }
        return axes, fixed, grid

    # ---- steps 2-3 ----
    def _run(
        self,
        study: Any,
        storage: Any,
        lock: protocol.StudyLock,
        axes: list[Axis],
        fixed: list[str],
        grid: dict[str, dict[str, Any]],
        dists: dict[str, Any],
    ) -> None:
        study_id = storage.get_study_id_from_name(self.study_name)
        shown_url = hide_password(self.storage_url)
        index = protocol.TrialIndex(study, storage, study_id)
        done = protocol.done_points(index.rows(), grid)
        console.header(self.study_name, shown_url, len(grid), len(done))
        run = _RunState(
            study=study,
            storage=storage,
            study_id=study_id,
            lock=lock,
            grid=grid,
            fixed=fixed,
            dists=dists,
            index=index,
            done=done,
            # Looked at once per poll: a point waits at most one poll more than its grace period.
            stale=protocol.StaleTrials(
                storage,
                study_id,
                self.grace_period,
                every=min(self.poll_interval, self.grace_period),
            ),
        )
        # Out-of-process launchers (joblib, submitit) get one lane per worker: each lane claims,
        # launches and tells one trial at a time, so no worker waits for the slowest trial of a
        # batch. Hydra's basic launcher runs jobs in this process, one after the other: one lane
        # that launches batches of n_jobs.
        in_process = getattr(self.launcher, "in_process", False) or (
            type(self.launcher).__name__ == "BasicLauncher"
        )
        lanes = 1 if in_process or self.n_jobs == 1 else self.n_jobs
        batch = self.n_jobs if lanes == 1 else 1
        # What the sweep holds for its whole length (imports, configs, the study) is left out of
        # the garbage collector's full passes: with torch loaded each pass walked ~360k objects,
        # ~0.2 s, about every 40 in-process trials. Everything is unfrozen at the end, what froze
        # before the sweep included (a program that froze its imports): the process goes on, and
        # what the sweep leaves behind must be collectable.
        with contextlib.ExitStack() as stack:
            # Validation's cyclic garbage is frozen with the rest, until the end of the sweep:
            # collecting it first would walk all of it (~0.15 s after torch._dynamo's import).
            # A `check` hook should leave no large cycle behind (lrsweep's does not).
            gc.freeze()
            stack.callback(gc.unfreeze)
            if self._collecting:
                gc.enable()
            heartbeat = stack.enter_context(Heartbeat(storage, self.heartbeat_interval))
            run.heartbeat = heartbeat
            try:
                if lanes == 1:
                    self._lane(run, 0, batch)
                else:
                    threads = [
                        threading.Thread(
                            target=self._lane_thread, args=(run, slot, batch), daemon=True
                        )
                        for slot in range(lanes)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        while thread.is_alive():  # join with a timeout: Ctrl-C stays deliverable
                            thread.join(0.2)
                    if run.error is not None:
                        raise run.error
            except BaseException:
                # Ctrl-C or an abort: our claimed trials must not sit RUNNING until the grace period.
                run.stop.set()
                with run.mutex:
                    protocol.fail_trials(storage, list(run.in_flight.values()))
                raise
        if run.launched == 0:
            print(f"[lrsweep] nothing to run: all {len(grid)} grid points are done", flush=True)
        if self.summary:  # the application's own table (lrsweep's: src.study.sweep_summary)
            from hydra.utils import get_method

            print("\n" + get_method(self.summary)(study, self.metric_name))
            console.dashboard(shown_url)
            return
        import optuna

        console.summary(
            study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
            axes,
            grid,
            protocol.POINT_ATTR,
            self.metric_name or "value",
            self.direction,
            shown_url,
        )

    def _lane_thread(self, run: "_RunState", slot: int, batch: int) -> None:
        try:
            self._lane(run, slot, batch)
        except BaseException as err:  # handed to the main thread, which fails what is in flight
            with run.mutex:
                run.error = run.error or err
            run.stop.set()

    def _lane(self, run: "_RunState", slot: int, batch: int) -> None:
        """Claim up to `batch` trials, launch them (worker slots `slot`, `slot + 1`, ...), tell
        their results; again, until the grid holds nothing more for this run."""
        while not run.stop.is_set():
            with run.mutex:
                budget = batch
                if self.n_trials is not None:
                    budget = min(budget, self.n_trials - run.launched - len(run.in_flight))
            if budget <= 0:
                return
            # One lane's round at a time: a trial a lane claims is in `in_flight` before another
            # lane looks at the study, so no lane takes a sibling's trial for one running
            # elsewhere (and waits `poll_interval` for it).
            with run.round_mutex:
                with run.lock():
                    run.stale.fail(run.study)
                    queued = protocol.queue_ahead(
                        run.study, run.storage, run.study_id, run.grid, run.failed_here,
                        ahead=max(budget, self.n_jobs), index=run.index,
                    )  # fmt: skip
                    with run.mutex:
                        run.done |= queued.done
                    # The claim under the lock too: on SQLite, Optuna's WAITING -> RUNNING reads
                    # the state before its write transaction begins, so two sweeps could both
                    # win one trial between the lock's rounds. A Ctrl-C waits until the claimed
                    # trials are known to be ours (in flight).
                    with protocol.interrupt_deferred():
                        claimed = protocol.claim(
                            run.study, run.storage, run.study_id, run.grid, budget,
                            run.heartbeat, queued.waiting,
                        )  # fmt: skip
                        with run.mutex:
                            for number, trial_id, _ in claimed:
                                run.in_flight[number] = trial_id
                if not claimed:
                    with run.mutex:
                        skip, ours = set(run.failed_here), dict(run.in_flight)
                    rows = run.index.rows()
                    unclaimed = protocol.unclaimed(rows, run.grid, skip)
                    elsewhere = 0 if unclaimed else protocol.running_elsewhere(
                        rows, run.grid, ours
                    )  # fmt: skip
            if not claimed:
                if unclaimed:
                    continue  # another sweep took the queued point: queue the next
                if not elsewhere:
                    return
                with run.mutex:
                    note, run.waiting_note = not run.waiting_note, True
                if note:
                    print(
                        f"[lrsweep] waiting for {elsewhere} trial(s) running elsewhere "
                        f"(one that stops beating is failed after {self.grace_period} s "
                        "and its point run here)",
                        flush=True,
                    )
                run.stop.wait(self.poll_interval)
                continue
            results = self._launch(run, claimed, slot)
            for (number, trial_id, params), ret in zip(claimed, results, strict=True):
                told = protocol.tell(run.study, run.storage, number, trial_id, ret)
                run.heartbeat.discard(trial_id)
                with run.mutex:
                    run.in_flight.pop(number, None)
                    run.launched += 1
                    launched = run.launched
                    if told.error is None:
                        if told.recorded:
                            run.done.add(point_key(params))
                    else:
                        run.failures += 1
                        run.failed_here.add(point_key(params))
                    done = len(run.done)
                if told.error is not None:
                    console.trial_failed(number, told.error)
                self._progress(run, trial_id, params, told, done, launched)
            with run.mutex:
                failures, launched = run.failures, run.launched
            if failures and failures / launched > self.max_failure_rate:
                run.stop.set()
                print(
                    f"error: {failures} of {launched} trials failed "
                    f"(max_failure_rate={self.max_failure_rate}); errors are in the trials' "
                    "user attr 'error'. A rerun resumes and retries them.",
                    file=sys.stderr,
                )
                raise SystemExit(1)

    def _launch(
        self, run: "_RunState", claimed: list[tuple[int, int, dict[str, Any]]], slot: int
    ) -> Sequence[Any]:
        batch = []
        for i, (number, trial_id, params) in enumerate(claimed):
            protocol.record_params(run.storage, trial_id, params, run.dists)
            overrides = [*run.fixed, *param_overrides(params), f"{self.trial_key}={number}"]
            if self.slot_key:  # jobs running at once hold distinct slots (one GPU each)
                overrides.append(f"{self.slot_key}={slot + i}")
            batch.append(overrides)
        with run.mutex:
            job_idx, self.job_idx = self.job_idx, self.job_idx + len(batch)
        return self.launcher.launch(batch, initial_job_idx=job_idx)

    def _progress(
        self,
        run: "_RunState",
        trial_id: int,
        params: dict[str, Any],
        told: protocol.Outcome,
        done: int,
        launched: int,
    ) -> None:
        # `done` is this run's count: the points done at its last look at the study, and its own
        # since (another sweep's newer ones show from its next round on). No read of the study.
        remaining = len(run.grid) - done
        if self.n_trials is not None:
            remaining = min(remaining, self.n_trials - launched)
        console.progress(
            told.value,
            protocol.trial_user_attrs(run.storage, trial_id, console.PROGRESS_ATTRS),
            params,
            done,
            len(run.grid),
            remaining,
            launched,
            time.perf_counter() - run.started,
            self.metric_name or "value",
        )


@dataclass
class _RunState:
    """What the lanes of one run share; `mutex` guards the counters and `in_flight`."""

    study: Any
    storage: Any
    study_id: int
    lock: protocol.StudyLock
    grid: dict[str, dict[str, Any]]
    fixed: list[str]
    dists: dict[str, Any]
    stale: protocol.StaleTrials
    index: protocol.TrialIndex  # the rounds' incremental read of the study
    done: set[str]  # grid points known to be COMPLETE
    heartbeat: Any = None
    launched: int = 0
    failures: int = 0
    failed_here: set[str] = field(default_factory=set)  # not re-queued: an error would loop
    in_flight: dict[int, int] = field(default_factory=dict)  # trial number -> trial id
    waiting_note: bool = False
    started: float = field(default_factory=time.perf_counter)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    mutex: threading.Lock = field(default_factory=threading.Lock)
    round_mutex: threading.Lock = field(default_factory=threading.Lock)  # one lane queues at once
