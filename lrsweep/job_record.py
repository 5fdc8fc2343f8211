"""A job that records its own result, so that the result outlives the sweep's process.

A job launched into another process (a joblib worker, a SLURM task) runs on when the sweep's own
process dies (a dropped SSH session, a rebooted login node, `kill -9`). Run through `recorded`,
the job itself
1. checks that its trial is still RUNNING: a trial failed meanwhile (its sweep died, and a later
   run failed it as stale and took its point) is not trained a second time (`TrialNotRunning`);
2. keeps its trial's heartbeat going while it runs, so that a later sweep on the study waits for
   it instead of failing it and training its point again;
3. tells its result (`results.tell`), marked `RECORDED_BY_JOB`: the sweep, if it still lives,
   reads it back rather than writing it twice.
The sweep keeps beating for the trial too: a job that dies without a result leaves a trial the
sweep launches again (`runner`, `SweepSpec.retries`).
"""

import logging
from collections.abc import Callable
from typing import TypeVar

from lrsweep.connections import job_storage
from lrsweep.heartbeat import Heartbeat
from lrsweep.results import RECORDED_BY_JOB, JobResult, error_text, tell

T = TypeVar("T")
log = logging.getLogger(__name__)


class TrialNotRunning(RuntimeError):
    """The job's trial was finished before the job started (e.g. failed as stale by a later
    sweep, which runs its point itself): the job does not train it again."""


def recorded(
    run: Callable[[], T],
    storage_url: str,
    trial_id: int,
    *,
    metric_name: str | None = None,
    direction: str = "maximize",
    heartbeat_interval: float = 10,
) -> T:
    """`run()`, with its trial's heartbeat kept alive and its result (or its exception) told to
    the study by this process (module docstring). Returns what `run` returns and re-raises what
    it raises."""
    import optuna

    storage = job_storage(storage_url)
    trial = storage.get_trial(trial_id)
    if trial.state != optuna.trial.TrialState.RUNNING:
        raise TrialNotRunning(
            f"trial {trial.number} is {trial.state.name}, not RUNNING: its point is run "
            "elsewhere (its sweep stopped and a later run took it); this job does nothing"
        )
    mark = {RECORDED_BY_JOB: True}

    def record(result: JobResult) -> None:
        try:
            tell(None, storage, trial.number, trial_id, result, metric_name, direction)
        except Exception as exc:  # the storage failed: the sweep, if it lives, records it
            log.warning("trial %d: its result could not be recorded here (%s)", trial.number, exc)

    with Heartbeat(storage, heartbeat_interval) as heartbeat:
        heartbeat.add(trial_id)
        try:
            value = run()
        except BaseException as exc:  # Ctrl-C too: the trial fails now, not after a grace period
            record(JobResult(error=error_text(exc), attrs=mark))
            raise
    record(JobResult(value, attrs=mark))
    return value
