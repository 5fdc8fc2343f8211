"""A job's result as the study records it: a number, a mapping holding the metric, a diverged
run, or an error; `tell` writes it to the trial and never raises for the job's fault.

Both sides of a job use `tell`: the sweep, and (for jobs in other processes) the job itself
(`job_record.py`), so that a result outlives the sweep's process. A trial its own job recorded
carries `RECORDED_BY_JOB`; the sweep's `tell` of the same result then reads it back instead of
writing it twice."""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple


class JobResult(NamedTuple):
    """What a job gave back, as any adapter sees it: its return value, or the text of the error
    it raised (`error` set); `attrs`: user attributes the adapter measured (e.g. `seconds`)."""

    value: Any = None
    error: str | None = None
    attrs: dict[str, Any] | None = None
    # The job ended without a result (cancelled, preempted, out of time or memory, its process
    # killed): what the scheduler said, e.g. "job 12_0 ended without a result (CANCELLED)".
    # The runner launches such a trial again, up to `SweepSpec.retries` times.
    lost: str | None = None


# The user attribute of a trial whose job told its own result (`job_record.py`).
RECORDED_BY_JOB = "recorded_by_job"


def error_text(exc: BaseException) -> str:
    """A job's exception as its trial's `error` attribute records it."""
    return f"{type(exc).__name__}: {exc}"


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
    """Record a job's outcome (`outcome`) and return it. Never raises for a job's fault. A trial
    its own job recorded already is read back (`recorded_outcome`), not written again."""
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
        recorded = recorded_outcome(storage, trial_id)
        if recorded is not None:
            return recorded
        import logging

        logging.getLogger(__name__).warning(
            "trial %d could not be told (%s): it was finished elsewhere", number, exc
        )
        return told._replace(recorded=False)
    return told


def recorded_outcome(storage: Any, trial_id: int) -> Outcome | None:
    """The outcome a trial's own job recorded (`RECORDED_BY_JOB`), or None when the trial is not
    finished or was finished by anyone else (e.g. failed as stale by another sweep)."""
    import optuna

    trial = storage.get_trial(trial_id)
    if not trial.state.is_finished() or not trial.user_attrs.get(RECORDED_BY_JOB):
        return None
    if trial.state == optuna.trial.TrialState.COMPLETE:
        return Outcome(trial.value, None, diverged=bool(trial.user_attrs.get("diverged")))
    return Outcome(None, str(trial.user_attrs.get("error", "job failed")))
