"""The fused launcher (`hydra/launcher=lrsweep_fused`, the built-in trial's `hydra/launcher=fused`):
the jobs of a batch trained together, in this process, by the app's batch function.

A sweep's jobs often differ only in the LR and the seed. Trained one after another, small models
spend their time on per-step Python and kernel launches; trained as one stacked model (every LR an
arm of it), the same arithmetic takes a fraction of the time. The launcher stays out of how:

1. it composes every job's config, as the in-process launcher (`launcher.py`, its base) does;
2. it hands the task configs to the app's `batch_function` (a dotted path), which trains what it
   can together and returns one entry per job, in the jobs' order:
   - a function the job then runs in place of the task function (it records the job's result,
     trained with the batch, in its trial and returns the job's value), or
   - a `CannotFuse` (`lrsweep.fusing`) saying why this job was not trained with the batch: the
     job runs the task function, as under the sequential launcher. Jobs that share one
     `CannotFuse` object get one line between them (the app gives each group of jobs it could
     not fuse one object), or
   - None: the job runs the task function, without a word;
3. each job then runs through `in_process.run_job`: its own folder, `.hydra/` record, callbacks
   and `JobReturn`, one Optuna trial each, so exactly-once, resume and every stage are unchanged.

When every job got a function, the batch is returned whole. When any job runs the task function,
the jobs run in order as the sweeper reads their results (`iter_jobs`): each trial is told as it
ends, with its progress line, and an interrupt or too many failures loses none that was told, as
with the sequential launcher (a job trained with the batch but not yet told fails with the rest
and is trained again by the rerun).

A batch function that raises `CannotFuse` makes the whole batch run one job at a time, with one
line saying why. Any other error of the batch function (a bug of the fused path, or a failure
every job would meet, such as data that does not load) makes the batch run one job at a time
too, with one line naming the error: a job then succeeds, or fails alone with its own error, as
it would under the sequential launcher.
"""

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from hydra.core.utils import JobReturn
from omegaconf import DictConfig

from hydra_plugins.lrsweep_sweeper.in_process import task_config
from hydra_plugins.lrsweep_sweeper.launcher import InProcessLauncher
from lrsweep.fusing import CannotFuse
from lrsweep.results import error_text

__all__ = ["CannotFuse", "FusedLauncher"]


class FusedLauncher(InProcessLauncher):
    """The in-process launcher, with each batch's jobs trained by the app's batch function."""

    def __init__(
        self, batch_function: str | None = None, n_jobs: int = 30, probe_function: str | None = None
    ) -> None:
        super().__init__()
        self.batch_function = batch_function
        self.n_jobs = n_jobs
        self.probe_function = probe_function

    def why_not_fused(self, job_config: DictConfig, swept: Sequence[str]) -> str | None:
        """Asked by the sweeper before it claims a batch: why this sweep's jobs (the first one's
        config; they differ in the `swept` keys, the axes with more than one value) will not train
        fused, or None. The app's
        `probe_function` answers; without one, None (each batch finds out for itself)."""
        if not self.probe_function:
            return None
        from hydra.utils import get_method

        return get_method(self.probe_function)(task_config(job_config), list(swept))

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn] | Iterator[JobReturn]:
        configs = self.job_configs(job_overrides, initial_job_idx)
        if len(configs) == 1:  # nothing to fuse with: the job runs as the sequential launcher's
            return self.iter_jobs(configs, [self.task_function])
        tasks = self._fused_tasks(configs)
        if all(task is not None for task in tasks):
            return self.run_jobs(configs, tasks)
        # Some jobs train now, one at a time: each job told as it ends.
        return self.iter_jobs(configs, [task or self.task_function for task in tasks])

    def _fused_tasks(self, configs: list[DictConfig]) -> list[Any]:
        """The function each job runs: the batch function's, or None for a job that runs the task
        function (one line says why, per reason)."""
        from hydra.utils import get_method

        assert self.task_function is not None
        if not self.batch_function:
            raise ValueError("hydra/launcher=lrsweep_fused needs hydra.launcher.batch_function")
        try:
            tasks = list(get_method(self.batch_function)([task_config(cfg) for cfg in configs]))
            if len(tasks) != len(configs):
                raise ValueError(f"{len(tasks)} entries returned for {len(configs)} jobs")
        except CannotFuse as why:
            _say(f"{why}; these {len(configs)} jobs run one at a time")
            return [None] * len(configs)
        except Exception as err:
            # The fused path's failure is no job's: each runs as it would alone.
            _say(
                f"the fused batch failed ({error_text(err)}); these {len(configs)} jobs run one "
                "at a time"
            )
            return [None] * len(configs)
        reasons = [task for task in tasks if isinstance(task, CannotFuse)]
        for why in {id(why): why for why in reasons}.values():  # once per reason, in order
            jobs = sum(task is why for task in tasks)
            _say(
                f"{why}; "
                + ("this job runs alone" if jobs == 1 else f"these {jobs} jobs run one at a time")
            )
        return [None if isinstance(task, CannotFuse) else task for task in tasks]


def _say(line: str) -> None:
    """One line of the launcher's, to stderr."""
    print(f"[lrsweep] fused launcher: {line}", file=sys.stderr, flush=True)
