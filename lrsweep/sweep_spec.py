"""What one sweep is (`SweepSpec`), what it gives back (`SweepResult`), how it can stop
(`Interrupted`, `StorageFailed`, `TooManyFailures`), and what an adapter's `Launch` is: the
vocabulary of `lrsweep.runner`'s loop, apart from the loop itself."""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lrsweep.grid import Axis
from lrsweep.results import JobResult

# A claimed point: (trial number, trial id, its params).
Claimed = tuple[int, int, dict[str, Any]]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the sweep once its trials in flight were failed; `exit_status`
    is the conventional status of a process stopped by that signal (130, 143)."""

    def __init__(self, exit_status: int = 130) -> None:
        super().__init__(exit_status)
        self.exit_status = exit_status


class StorageFailed(RuntimeError):
    """The storage failed in the middle of the sweep (a full disk, a read-only file, a server
    gone); its message is the one line to show (`console.storage_failed`). The study is
    consistent: re-running resumes it."""


class TooManyFailures(RuntimeError):
    """More than `max_failure_rate` of the launched trials failed: the sweep stopped (a rerun
    resumes and retries them)."""


@dataclass
class SweepSpec:
    """What one sweep needs besides its launcher. `grid`: point key -> params (`build_grid`)."""

    study_name: str
    storage_url: str
    axes: list[Axis]
    grid: dict[str, dict[str, Any]]
    direction: str = "maximize"
    metric_name: str | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)  # e.g. parent_study, stage
    n_jobs: int = 1  # trials per launched batch (in-process) or lanes (out of process)
    lanes: int = 1
    n_trials: int | None = None  # most trials this run launches
    max_failure_rate: float = 0.0
    heartbeat_interval: int = 10
    grace_period: int = 30
    poll_interval: float = 2.0
    retries: int = 2  # launches more of a job that ended without a result (`JobResult.lost`)
    # The jobs run in processes of their own and record their own results (`job_record`): a
    # sweep that stops leaves its trials in flight to them, instead of failing them.
    jobs_record: bool = False
    # Lines printed under the header, once the study is open (e.g. why jobs run one at a time).
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SweepResult:
    study: Any  # the Optuna study (its storage's connections closed; reopened on use)
    shown_url: str  # the storage URL as printed (password hidden)
    launched: int  # trials this run launched
    storage: Any = None  # the study's storage

    def close(self) -> None:
        """Closes the connections a read of `study` after the sweep opened: the last connection
        to a SQLite file in WAL mode folds the log into the file and removes it."""
        engine = getattr(self.storage, "engine", None)
        if engine is not None:
            engine.dispose()


# Returns the batch's results, or an iterator that runs each job as its result is read.
Launch = Callable[[list[Claimed], int], Sequence[JobResult] | Iterator[JobResult]]
