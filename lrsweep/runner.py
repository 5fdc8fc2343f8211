"""One sweep: every point of a grid run exactly once, as trials of one Optuna study.

`run_sweep(spec, launch)` is the loop every adapter shares (the Hydra sweeper, the Python API,
the later stages of a search); `launch` is the adapter's: it runs a batch of claimed points
(through Hydra's launcher, or by calling the user's function) and returns one `JobResult` each.

1. open the study under its lock (`study_protocol`); bad settings or an unusable storage are a
   SweepConfigError (the adapters' one line and exit status 2), before any trial is claimed;
2. each round: fail stale trials, queue missing points, claim a batch, launch it, tell the
   results (`results.tell`);
3. when nothing is left to claim but points are RUNNING elsewhere, wait for them: a killed
   sweep's trials go stale after `grace_period` and come back through step 2.

A job that ends without a result (`JobResult.lost`: cancelled, preempted, its process killed) is
launched again, its trial still held, up to `retries` times, one line each; then its trial fails.

Out-of-process launchers get one lane per worker: each lane claims, launches and tells one trial
at a time, so no worker waits for the slowest trial of a batch. An in-process launcher runs one
lane that launches batches of `n_jobs`. A launch that returns an iterator runs its jobs as its
results are read (a batch run one job at a time): each job is told as it ends, as with batches of
one, so an interrupt or too many failures loses none that finished.
"""

import contextlib
import gc
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

from lrsweep import console
from lrsweep import study_protocol as protocol
from lrsweep.connections import sharing
from lrsweep.grid import SweepConfigError, point_key
from lrsweep.heartbeat import Heartbeat
from lrsweep.interrupts import interrupt_deferred, interrupt_noted
from lrsweep.results import JobResult, recorded_outcome, tell
from lrsweep.storage import StudyLock, open_storage
from lrsweep.storage_url import hide_password, is_storage_error, storage_problem, storage_reason
from lrsweep.sweep_spec import (
    Claimed,
    Interrupted,
    Launch,
    StorageFailed,
    SweepResult,
    SweepSpec,
    TooManyFailures,
)


def open_sweep_study(spec: SweepSpec) -> tuple[Any, dict[str, Any], Any, StudyLock]:
    """(study, distributions, storage, lock): the study created or loaded under its lock, checked
    to take this run (`study_sharing`), and the distributions its grid values are recorded with.
    Bad settings or an unusable storage: SweepConfigError, with one line to show."""
    import optuna
    import sqlalchemy

    try:
        lock = StudyLock(spec.storage_url, spec.study_name)
        with lock():
            storage = open_storage(spec.storage_url, spec.heartbeat_interval, spec.grace_period)
            study, dists = protocol.open_study(
                storage,
                spec.study_name,
                spec.direction,
                spec.identity,
                spec.axes,
                spec.metric_name,
            )
            for key, value in spec.study_attrs.items():
                if study.user_attrs.get(key) != value:
                    study.set_user_attr(key, value)
    except (
        sqlalchemy.exc.SQLAlchemyError,
        optuna.exceptions.StorageInternalError,
        OSError,
    ) as err:  # unreachable server, not a database, a read-only folder, ...
        raise SweepConfigError(storage_problem(spec.storage_url, err)) from None
    return study, dists, storage, lock


def run_sweep(spec: SweepSpec, launch: Launch, collect: bool | None = None) -> SweepResult:
    """Runs what is missing of `spec.grid` (module docstring). Raises SweepConfigError for bad
    settings or an unusable storage (before any trial is claimed), TooManyFailures,
    StorageFailed, and Interrupted (a KeyboardInterrupt) on Ctrl-C or SIGTERM once the trials in
    flight are failed (one line printed). `collect`: whether the garbage collector runs during
    the trials (None: as it is now; an adapter that turned it off while it validated passes what
    it found)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Heartbeats and stale-trial failing are "experimental" in Optuna: we rely on them knowingly.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study, dists, storage, lock = open_sweep_study(spec)
    # Jobs run in this process report through this sweep's storage: one engine, one connection.
    with interrupt_noted() as interrupted, sharing(spec.storage_url, storage):
        try:
            launched = _Run(spec, launch, study, dists, storage, lock, interrupted).run(
                gc.isenabled() if collect is None else collect
            )
        except BaseException as err:
            # A Ctrl-C can surface as another error when it lands inside a library that
            # wraps what it catches (OmegaConf does, composing a job's config).
            if not (isinstance(err, KeyboardInterrupt) or interrupted.is_set()):
                if is_storage_error(err):
                    reason = storage_reason(spec.storage_url, err)
                    shown = hide_password(spec.storage_url)
                    raise StorageFailed(
                        console.storage_failed(shown, reason, spec.grace_period)
                    ) from err
                raise
            by = f" by {interrupted.name}" if interrupted.signum == signal.SIGTERM else ""
            left = (
                "trials in flight run on in their own processes and record their results (a "
                "rerun waits for them; stop them with your scheduler, e.g. scancel)"
                if spec.jobs_record
                else "trials in flight are marked FAIL"
            )
            print(
                f"\n[lrsweep] interrupted{by}: {left}; run the same command again to resume",
                file=sys.stderr,
            )
            raise Interrupted(interrupted.exit_status) from None
        finally:
            # The sweep's own connections, closed now rather than whenever the garbage
            # collector (frozen at exit in trial processes) gets to them.
            storage.engine.dispose()
            lock.close()
    if launched == 0:
        print(f"[lrsweep] nothing to run: all {len(spec.grid)} grid points are done", flush=True)
    return SweepResult(study, hide_password(spec.storage_url), launched, storage)


class _Run:
    """The lanes of one sweep and what they share; `mutex` guards the counters and `in_flight`."""

    def __init__(
        self,
        spec: SweepSpec,
        launch: Launch,
        study: Any,
        dists: dict[str, Any],
        storage: Any,
        lock: Any,
        interrupted: threading.Event | None = None,
    ) -> None:
        self.spec, self.launch = spec, launch
        # Set by the sweep's signal handler: looked at after each result, so a Ctrl-C whose
        # KeyboardInterrupt was swallowed on its way (raised inside a finalizer, or caught by a
        # library) still stops the sweep.
        self.interrupted = interrupted
        self.study, self.storage, self.lock = study, storage, lock
        self.study_id = storage.get_study_id_from_name(spec.study_name)
        self.grid = spec.grid
        self.dists = dists
        self.index = protocol.TrialIndex(study, storage, self.study_id)
        self.done: set[str] = protocol.done_points(self.index.rows(), self.grid)
        # Looked at once per poll: a point waits at most one poll more than its grace period.
        self.stale = protocol.StaleTrials(
            storage,
            self.study_id,
            spec.grace_period,
            every=min(spec.poll_interval, spec.grace_period),
        )
        self.heartbeat: Any = None
        self.launched = 0
        self.failures = 0
        self.failed_here: set[str] = set()  # not re-queued: an error would loop
        self.in_flight: dict[int, int] = {}  # trial number -> trial id
        self.waiting_note = False
        self.started = time.perf_counter()
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.mutex = threading.Lock()
        self.round_mutex = threading.Lock()  # one lane queues and claims at a time
        console.header(
            spec.study_name, hide_password(spec.storage_url), len(self.grid), len(self.done)
        )
        for note in spec.notes:
            print(note, file=sys.stderr, flush=True)

    def run(self, collecting: bool) -> int:
        """The lanes, to the end; the number of trials launched. `collecting`: the garbage
        collector runs during the trials (without it, each trial's cyclic garbage stays)."""
        spec = self.spec
        lanes = max(1, spec.lanes)
        batch = spec.n_jobs if lanes == 1 else 1
        # What the sweep holds for its whole length (imports, configs, the study) is left out of
        # the garbage collector's full passes: with torch loaded each pass walked ~360k objects,
        # ~0.2 s, about every 40 in-process trials. Everything is unfrozen at the end, what froze
        # before the sweep included: the process goes on, and what the sweep leaves behind must
        # be collectable.
        with contextlib.ExitStack() as stack:
            gc.freeze()
            stack.callback(gc.unfreeze)
            if collecting:
                gc.enable()
            self.heartbeat = stack.enter_context(Heartbeat(self.storage, spec.heartbeat_interval))
            try:
                if lanes == 1:
                    self._lane(0, batch)
                else:
                    threads = [
                        threading.Thread(target=self._lane_thread, args=(slot, batch), daemon=True)
                        for slot in range(lanes)
                    ]
                    for thread in threads:
                        thread.start()
                    for thread in threads:
                        while thread.is_alive():  # join with a timeout: Ctrl-C stays deliverable
                            thread.join(0.2)
                    if self.error is not None:
                        raise self.error
            except BaseException:
                # Ctrl-C or an abort: our claimed trials must not sit RUNNING until the grace
                # period, unless their jobs, which run on elsewhere, record them.
                self.stop.set()
                if not spec.jobs_record:
                    # A second Ctrl-C (a fused batch's 30 trials take a moment) waits until
                    # they are all failed, then arrives.
                    with interrupt_deferred(), self.mutex:
                        protocol.fail_trials(self.storage, list(self.in_flight.values()))
                raise
        return self.launched

    def _lane_thread(self, slot: int, batch: int) -> None:
        try:
            self._lane(slot, batch)
        except BaseException as err:  # handed to the main thread, which fails what is in flight
            with self.mutex:
                self.error = self.error or err
            self.stop.set()

    def _lane(self, slot: int, batch: int) -> None:
        """Claim up to `batch` trials, launch them (worker slots `slot`, `slot + 1`, ...), tell
        their results; again, until the grid holds nothing more for this run."""
        spec = self.spec
        while not self.stop.is_set():
            with self.mutex:
                budget = batch
                if spec.n_trials is not None:
                    budget = min(budget, spec.n_trials - self.launched - len(self.in_flight))
            if budget <= 0:
                return
            claimed, unclaimed, elsewhere = self._round(budget)
            if not claimed:
                if unclaimed:
                    continue  # another sweep took the queued point: queue the next
                if not elsewhere:
                    return
                with self.mutex:
                    note, self.waiting_note = not self.waiting_note, True
                if note:
                    print(
                        f"[lrsweep] waiting for {elsewhere} trial(s) running elsewhere "
                        f"(one that stops beating is failed after {spec.grace_period} s "
                        "and its point run here)",
                        flush=True,
                    )
                self.stop.wait(spec.poll_interval)
                continue
            for _, trial_id, params in claimed:
                protocol.record_params(self.storage, trial_id, params, self.dists)
            results = self._launch(claimed, slot)
            ended = not isinstance(results, Iterator)  # else each job runs as it is read
            for i, ((number, trial_id, params), result) in enumerate(
                zip(claimed, results, strict=True)
            ):
                # An ended batch's jobs not yet told are not left to run.
                untold = len(claimed) - i - 1 if ended else 0
                self._tell(number, trial_id, params, result, ended_untold=untold)
                if not ended or untold == 0:  # a streamed batch stops at once, as batches of one
                    self._check_interrupted()
                    self._check_failures()

    def _check_interrupted(self) -> None:
        """KeyboardInterrupt when an interrupting signal was noted since the sweep began."""
        if self.interrupted is not None and self.interrupted.is_set():
            raise KeyboardInterrupt

    def _check_failures(self) -> None:
        """TooManyFailures when more than `max_failure_rate` of the launched trials failed."""
        with self.mutex:
            failures, launched = self.failures, self.launched
        if failures and failures / launched > self.spec.max_failure_rate:
            self.stop.set()
            raise TooManyFailures(
                f"{failures} of {launched} trials failed "
                f"(max_failure_rate={self.spec.max_failure_rate}); errors are in the trials' "
                "user attr 'error'. A rerun resumes and retries them."
            )

    def _launch(self, claimed: list[Claimed], slot: int) -> Iterable[JobResult]:
        """The adapter's launch, and again for the jobs that ended without a result, up to
        `retries` times each; a job whose trial holds the result it recorded itself before it
        was lost (`results.recorded_outcome`) is not run again. A launch's iterator (jobs run in
        this process, one at a time, never lost) is returned as it is."""
        launched = self.launch(claimed, slot)
        if isinstance(launched, Iterator):
            return launched
        results = list(launched)
        retries = self.spec.retries
        for attempt in range(1, retries + 2):
            again = [
                i
                for i, result in enumerate(results)
                if result.lost and recorded_outcome(self.storage, claimed[i][1]) is None
            ]
            if not again:
                break
            if attempt > retries:  # the trial fails, its error (one line) says why
                for i in again:
                    results[i] = results[i]._replace(
                        error=f"{results[i].lost}; no result after {attempt} "
                        f"launch{'es' if attempt > 1 else ''} (retries={retries})"
                    )
                break
            for i in again:
                number, _, params = claimed[i]
                console.job_lost(number, params, results[i].lost, attempt, retries)
            if self.stop.is_set():
                break
            for i, result in zip(
                again, self.launch([claimed[i] for i in again], slot), strict=True
            ):
                results[i] = result
        return results

    def _round(self, budget: int) -> tuple[list[Claimed], int, int]:
        """Under the study lock: fail stale trials, queue ahead, claim up to `budget` trials.
        (claimed, points still unclaimed, trials running elsewhere); the last two only when
        nothing was claimed."""
        # One lane's round at a time: a trial a lane claims is in `in_flight` before another
        # lane looks at the study, so no lane takes a sibling's trial for one running
        # elsewhere (and waits `poll_interval` for it).
        with self.round_mutex:
            with self.lock():
                self.stale.fail(self.study)
                queued = protocol.queue_ahead(
                    self.study, self.storage, self.study_id, self.grid, self.failed_here,
                    ahead=max(budget, self.spec.n_jobs), index=self.index,
                )  # fmt: skip
                with self.mutex:
                    self.done |= queued.done
                # The claim under the lock too: on SQLite, Optuna's WAITING -> RUNNING reads
                # the state before its write transaction begins, so two sweeps could both
                # win one trial between the lock's rounds. A Ctrl-C waits until the claimed
                # trials are known to be ours (in flight).
                with interrupt_deferred():
                    claimed = protocol.claim(
                        self.study, self.storage, self.study_id, self.grid, budget,
                        self.heartbeat, queued.waiting,
                    )  # fmt: skip
                    with self.mutex:
                        for number, trial_id, _ in claimed:
                            self.in_flight[number] = trial_id
            if claimed:
                return claimed, 0, 0
            with self.mutex:
                skip, ours = set(self.failed_here), dict(self.in_flight)
            rows = self.index.rows()
            unclaimed = protocol.unclaimed(rows, self.grid, skip)
            elsewhere = 0 if unclaimed else protocol.running_elsewhere(rows, self.grid, ours)
            return [], unclaimed, elsewhere

    def _tell(
        self,
        number: int,
        trial_id: int,
        params: dict[str, Any],
        result: JobResult,
        ended_untold: int = 0,
    ) -> None:
        spec = self.spec
        told = tell(
            self.study, self.storage, number, trial_id, result, spec.metric_name, spec.direction
        )
        self.heartbeat.discard(trial_id)
        with self.mutex:
            self.in_flight.pop(number, None)
            self.launched += 1
            launched = self.launched
            if told.error is None:
                if told.recorded:
                    self.done.add(point_key(params))
            else:
                self.failures += 1
                self.failed_here.add(point_key(params))
            done = len(self.done)
        if told.error is not None:
            console.trial_failed(number, told.error)
        # `done` is this run's count: the points done at its last look at the study, and its own
        # since (another sweep's newer ones show from its next round on). No read of the study.
        remaining = len(self.grid) - done - ended_untold
        if spec.n_trials is not None:
            remaining = min(remaining, spec.n_trials - launched)
        console.progress(
            told.value,
            protocol.trial_user_attrs(self.storage, trial_id, console.PROGRESS_ATTRS),
            params,
            done,
            len(self.grid),
            remaining,
            launched + ended_untold,
            time.perf_counter() - self.started,
            spec.metric_name or "value",
        )
