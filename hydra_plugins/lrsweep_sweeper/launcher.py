"""The `lrsweep` Hydra launcher (`hydra/launcher=lrsweep`, lrsweep's default): Hydra's basic
launcher -- a batch's jobs one after the other, in this process -- with each job run by
`in_process.run_job`, the same job and record at a fraction of Hydra's per-job bookkeeping.
`hydra/launcher=basic` gives Hydra's own; joblib and submitit launchers work as ever."""

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from hydra_plugins.lrsweep_sweeper.in_process import run_job

log = logging.getLogger(__name__)


class InProcessLauncher(Launcher):
    in_process = True  # the sweeper runs one lane of batches, not one lane per worker

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        assert self.task_function is not None
        configs = self.job_configs(job_overrides, initial_job_idx)
        return self.run_jobs(configs, [self.task_function] * len(configs))

    def job_configs(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[DictConfig]:
        """Each job's config, composed (through the sweeper's loader: once per shape of job)."""
        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        hydra = self.config.hydra
        configure_log(hydra.hydra_logging, hydra.verbose)
        Path(str(hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_cfg = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            with open_dict(job_cfg):
                job_cfg.hydra.job.id = idx
                job_cfg.hydra.job.num = idx
            configs.append(job_cfg)
        return configs

    def run_jobs(self, configs: list[DictConfig], tasks: Sequence[TaskFunction]) -> list[JobReturn]:
        """Each job run in this process (`in_process.run_job`), job i by `tasks[i]`."""
        return list(self.iter_jobs(configs, tasks))

    def iter_jobs(
        self, configs: list[DictConfig], tasks: Sequence[TaskFunction]
    ) -> Iterator[JobReturn]:
        """`run_jobs`, each job run as its `JobReturn` is read: the sweeper tells each job's
        trial as it ends (`lrsweep.runner`)."""
        assert self.config is not None and self.hydra_context is not None
        hydra = self.config.hydra
        for job_cfg, task in zip(configs, tasks, strict=True):
            ret = run_job(
                self.hydra_context,
                task,
                job_cfg,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            configure_log(hydra.hydra_logging, hydra.verbose)
            yield ret
