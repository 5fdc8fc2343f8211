"""What the sweeper adds to jobs that run in other processes (joblib workers, SLURM tasks).

- `RecordingTask`: the app's task function, run so that the job records its own result in its
  trial and keeps the trial's heartbeat alive (`lrsweep.job_record`): a sweep process that dies
  loses nothing, and a rerun waits for the jobs still running instead of training their points
  again. The sweeper names each job's trial in `hydra.sweeper.job_trial` (a key of the sweeper's
  own config, never the app's); a job without it (the in-process launcher: the sweep records
  every result itself) runs the task as it is.
- `lost`: a launcher's exception read as a job that ended without a result (cancelled, preempted,
  out of time or memory, its process killed), which the runner launches again.
"""

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

JOB_TRIAL_KEY = "hydra.sweeper.job_trial"


class RecordingTask:
    """The task function every job of the sweep runs (module docstring). Pickled with the
    launcher into each job: it holds only the app's task function and the sweep's default
    storage (a SQLite file: no password); the storage URL is read from the job's own config, so a
    password interpolated from the environment is resolved where the job runs."""

    def __init__(self, task_function: Any) -> None:
        self.task_function = task_function
        self.default_storage: str | None = None  # set by the sweeper once it is known

    def __call__(self, cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        trial_id = OmegaConf.select(hydra_cfg, "sweeper.job_trial")
        if trial_id is None:
            return self.task_function(cfg)
        from lrsweep.job_record import recorded

        sweeper = hydra_cfg.sweeper
        return recorded(
            lambda: self.task_function(cfg),
            _absolute(sweeper.storage or self.default_storage, hydra_cfg.runtime.cwd),
            int(trial_id),
            metric_name=sweeper.metric_name,
            direction=sweeper.direction,
            heartbeat_interval=sweeper.heartbeat_interval,
        )


def _absolute(url: str, cwd: str) -> str:
    """A relative SQLite URL made absolute against the sweep's working directory (the job may run
    in its own output folder, `hydra.job.chdir`)."""
    from lrsweep.storage_url import sqlite_path

    path = sqlite_path(url)
    if path is None or path.is_absolute():
        return url
    return f"sqlite:///{Path(cwd) / path}"


# SLURM states that name a setting to raise.
_HINTS = {
    "TIMEOUT": "the job ran out of time: raise hydra.launcher.timeout_min",
    "OUT_OF_MEMORY": "the job ran out of memory: raise hydra.launcher.mem_gb",
}


def lost(exc: Exception) -> str | None:
    """What `exc`, raised by a launcher for a batch of jobs, says of a job that ended without a
    result; None when it says something else (the job's own error)."""
    kind = f"{type(exc).__module__}.{type(exc).__name__}"
    text = str(exc)
    if kind.startswith("submitit") and type(exc).__name__ == "UncompletedJobError":
        # "Job 12_0 (task: 0) with path ... has not produced any output (state: CANCELLED by 0)"
        job = re.search(r"Job (\S+)", text)
        state = re.search(r"\(state: ([^)]*)\)", text)
        job_id = job.group(1) if job else "?"
        state_text = state.group(1).strip() if state else "unknown state"
        hint = _HINTS.get(state_text.split()[0] if state_text else "")
        return f"job {job_id} ended without a result ({state_text})" + (f"; {hint}" if hint else "")
    if type(exc).__name__ == "TerminatedWorkerError":  # joblib's loky: a worker process killed
        codes = re.search(r"exit codes of the workers are (\{[^}]*\})", text)
        detail = f"exit codes {codes.group(1)}" if codes else "killed"
        return f"a joblib worker process died ({detail}: the OOM killer, or a signal)"
    return None


def job_error(exc: Exception) -> str:
    """A launcher's exception that is not a lost job, in one line: the last line of the job's
    traceback where there is one (submitit's FailedJobError), else the message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    trace = [line for line in lines if not line.startswith(("---", "You can check", "or at"))]
    last = next(
        (line for line in reversed(trace) if re.match(r"^[\w.]+(Error|Exception)", line)), None
    )
    return last or f"{type(exc).__name__}: {lines[0] if lines else ''}"
