"""A job's result as the study records it: a number, a mapping holding the metric, a diverged
run, or an error; `tell` writes it to the trial and never raises for the job's fault."""

import math
from collections.abc import Mapping
from typing import Any, NamedTuple


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
