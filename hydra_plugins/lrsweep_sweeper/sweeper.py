"""The `lrsweep` Hydra sweeper: a grid on an Optuna study, every grid point run exactly once;
with `search=full`, the whole search (stage 1, stage 2, the confirm step, the report).

The plugin class only adapts Hydra to the library (`lrsweep/`):
1. validate: build the grid from `params` and the command line (`grid.py`), compose the first
   job's config and run the `check` hook; bad input stops here, before the study is touched;
2. `lrsweep.runner.run_sweep` runs the grid exactly once, launching jobs through Hydra's launcher
   (`_launch`: a grid point becomes overrides; a `JobReturn` becomes a `JobResult`);
3. with `search=full`, `lrsweep.stages` runs the later stages through the same two steps and
   writes the report into the sweep folder.

The sweeper writes no key the app does not have: the trial number (`trial_key`) and the worker
slot (`slot_key`) are passed only to an app whose config holds them. A job in another process
(joblib, submitit) gets its trial in the sweeper's own `hydra.sweeper.job_trial`, records its
result there itself (`job_side.py`), and is launched again when it ends without one (`retries`).
Optuna is imported inside `sweep()`: Hydra imports every plugin module on every start.
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import gc
import os
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.lrsweep_sweeper.compose import TemplateConfigLoader
from hydra_plugins.lrsweep_sweeper.grid import build_axes, param_overrides
from hydra_plugins.lrsweep_sweeper.job_side import JOB_TRIAL_KEY, RecordingTask, job_error, lost
from hydra_plugins.lrsweep_sweeper.one_study import check_one_study
from lrsweep import console
from lrsweep import study_protocol as protocol
from lrsweep.grid import Axis, SweepConfigError, build_grid
from lrsweep.heartbeat import check_timing
from lrsweep.storage_url import check_storage_url, raw_value, refuse_literal_password
from lrsweep.study_sharing import without_swept

_ABSENT = object()  # OmegaConf.select's default for a key the job config does not have


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
        trial_key: str | None = "trial",
        slot_key: str | None = None,
        heartbeat_interval: int = 10,
        grace_period: int | None = None,
        poll_interval: float = 2.0,
        compose_once: bool = True,
        search: str = "grid",
        lr_key: str | None = None,
        seed_key: str | None = "seed",
        stage2_points: int | None = None,
        confirm_top: int = 3,
        confirm_seeds: int = 3,
        report_dir: str | None = None,
        stage2_method: str = "grid",
        retries: Any = 2,
        job_trial: int | None = None,
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
        self.search = search
        self.lr_key = lr_key
        self.seed_key = seed_key
        self.stage2_points = stage2_points
        self.confirm_top = confirm_top
        self.confirm_seeds = confirm_seeds
        self.report_dir = report_dir
        self.stage2_method = stage2_method
        self.retries = retries
        self.job_trial = job_trial  # set on jobs, by the sweeper; never by the user
        self.job_idx = 0
        self._job_idx_lock = threading.Lock()

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
        # Jobs in other processes record their own results (job_side.py).
        self._task = RecordingTask(task_function)
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=HydraContext(
                config_loader=self._job_loader
                if self.compose_once
                else hydra_context.config_loader,
                callbacks=hydra_context.callbacks,
            ),
            task_function=self._task,
            config=config,
        )
        # Out-of-process launchers (joblib, submitit) get one lane per worker, and jobs that
        # record their own results; Hydra's basic launcher and ours run jobs in this process.
        self._in_process = getattr(self.launcher, "in_process", False) or (
            type(self.launcher).__name__ == "BasicLauncher"
        )
        self._n_jobs_of_launcher = self.n_jobs is None
        self._notes: tuple[str, ...] = ()
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
        # each); the runner freezes it all and turns collection back on for the trials.
        self._collecting = gc.isenabled()
        gc.disable()
        try:
            self._sweep(arguments)
        finally:
            if self._collecting:
                gc.enable()

    def _sweep(self, arguments: list[str]) -> None:
        from lrsweep.runner import run_sweep
        from lrsweep.sweep_spec import StorageFailed, TooManyFailures

        try:
            axes, fixed, grid = self._plan(arguments)
            plan = self._search_plan(axes) if self.search == "full" else None
            self._fixed = fixed
            self._job_loader.value_keys = frozenset(
                [
                    *(a.name for a in axes),
                    *(k for k in (self.trial_key, self.slot_key) if k),
                    *([] if self._in_process else [JOB_TRIAL_KEY]),
                ]
            )
            spec = self._spec(self.study_name, axes, grid)
            result = run_sweep(spec, self._launch, collect=self._collecting)
            if plan is None:
                try:
                    self._summary(result, axes, grid)
                finally:
                    result.close()
                return
            from lrsweep.stages import run_later_stages

            report = run_later_stages(plan, spec, self._run_stage)
        except ValueError as err:  # SweepConfigError, or the `check` hook's ConfigError
            console.fail(err)
        except (TooManyFailures, StorageFailed) as err:
            if isinstance(err, StorageFailed) and os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            raise SystemExit(console.EXIT_STORAGE_FAILED) from None
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM (sweep_spec.Interrupted): 130, 143
            raise SystemExit(getattr(err, "exit_status", 130)) from None
        print(report.text)
        console.dashboard(result.shown_url)

    def _spec(self, study_name: str, axes: list[Axis], grid: dict, **attrs: Any) -> Any:
        from lrsweep.sweep_spec import SweepSpec

        return SweepSpec(
            study_name=str(study_name),
            storage_url=str(self.storage_url),
            axes=axes,
            grid=grid,
            direction=self.direction,
            metric_name=self.metric_name,
            identity=self._identity,
            study_attrs=attrs,
            n_jobs=self.n_jobs,
            lanes=1 if self._in_process else self.n_jobs,
            n_trials=self.n_trials,
            max_failure_rate=self.max_failure_rate,
            heartbeat_interval=self.heartbeat_interval,
            grace_period=self.grace_period,
            poll_interval=self.poll_interval,
            retries=self.retries,
            jobs_record=not self._in_process,
            notes=self._notes,
        )

    def _run_stage(self, spec: Any) -> Any:
        """A later stage of `search=full`: its grid through the same launcher."""
        from lrsweep.runner import run_sweep

        return run_sweep(spec, self._launch, collect=self._collecting)

    def _summary(self, result: Any, axes: list[Axis], grid: dict) -> None:
        if self.summary:  # the application's own table (lrsweep's: src.study.sweep_summary)
            from hydra.utils import get_method

            print("\n" + get_method(self.summary)(result.study, self.metric_name))
            console.dashboard(result.shown_url)
            return
        import optuna

        from lrsweep import study_protocol as protocol

        console.summary(
            result.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
            axes,
            grid,
            protocol.POINT_ATTR,
            self.metric_name or "value",
            self.direction,
            result.shown_url,
            pooled=[self.seed_key] if self.seed_key else [],
        )

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
        if self.search not in ("grid", "full"):
            raise SweepConfigError(
                f"hydra.sweeper.search={self.search!r} is invalid: grid (stage 1 alone) or full "
                "(stage 1, stage 2, the confirm step and the report)"
            )
        if self.direction not in ("maximize", "minimize"):
            raise SweepConfigError(f"direction={self.direction!r} is invalid: maximize or minimize")
        if self.job_trial is not None:
            raise SweepConfigError(
                f"hydra.sweeper.job_trial={self.job_trial!r}: the sweeper sets it on each job; "
                "leave it unset"
            )
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise SweepConfigError(
                f"hydra.sweeper.retries={self.retries!r} is invalid: how many times a job that "
                "ends without a result (cancelled, preempted, out of time) is launched again, "
                "an integer >= 0"
            )
        # An app that names neither gets a study named after it, in ./lrsweep.db (printed in the
        # sweep's first line): a study needs a file to resume from.
        self.study_name = self.study_name or OmegaConf.select(self.config, "hydra.job.name")
        if not self.storage_url:  # jobs elsewhere find it here (a file path: no password)
            self.storage_url = f"sqlite:///{Path('lrsweep.db').absolute()}"
            self._task.default_storage = self.storage_url
        protocol.check_study_name(str(self.study_name))
        check_storage_url(self.storage_url)
        raw_url = raw_value(self.config, "hydra.sweeper.storage")
        refuse_literal_password(raw_url if isinstance(raw_url, str) else self.storage_url)
        if self.n_jobs < 1 or (self.n_trials is not None and self.n_trials < 1):
            raise SweepConfigError(f"n_jobs={self.n_jobs}, n_trials={self.n_trials}: must be >= 1")
        check_timing(self.heartbeat_interval, self.grace_period)
        axes, fixed = build_axes(self.params, arguments, self.points)
        if not axes:
            raise SweepConfigError("nothing to sweep: hydra.sweeper.params is empty")
        # The LR and the seed vary fastest: a batch then holds the arms of one model (one value of
        # every other swept key), which a fused launcher trains together.
        arms = [a.name for a in axes if a.log or a.name in (self.lr_key, self.seed_key)]
        grid = build_grid(axes, fastest=arms)
        first = next(iter(grid.values()))
        # Through the job loader (unless compose_once is off): the composes of `check_one_study`
        # below are then copies of this one with a value changed, not a composition each.
        self._job_loader.value_keys = frozenset(axis.name for axis in axes)
        loader = self._job_loader if self.compose_once else self.config_loader
        job_cfg = loader.load_sweep_config(self.config, [*fixed, *param_overrides(first)])
        # Keys the sweeper sets on every job only when the app has them.
        self._has_trial_key = bool(self.trial_key) and (
            OmegaConf.select(job_cfg, self.trial_key, default=_ABSENT) is not _ABSENT
        )
        self._has_slot_key = bool(self.slot_key) and (
            OmegaConf.select(job_cfg, self.slot_key, default=_ABSENT) is not _ABSENT
        )
        self._job_cfg = job_cfg
        if self.check:
            from hydra.utils import get_method

            get_method(self.check)(job_cfg)
        varied = [axis.name for axis in axes if len(axis.values) > 1]
        self._batch_size(job_cfg, varied)
        # The keys the sweep varies are each trial's params, not the experiment's identity.
        self._identity = without_swept(self._identity_of(job_cfg), varied)
        check_one_study(  # after the app's own check: a config it refuses gets its words
            axes,
            first,
            job_cfg,
            lambda point: loader.load_sweep_config(self.config, [*fixed, *param_overrides(point)]),
            str(self.study_name),
            self.config,
        )
        return axes, fixed, grid

    def _identity_of(self, job_cfg: DictConfig) -> dict[str, Any]:
        """The experiment identity of a job's config: the app's `identity` function's, else its
        `identity_keys` with their resolved values."""
        if self.identity:
            from hydra.utils import get_method

            return dict(get_method(self.identity)(job_cfg))
        return {
            key: OmegaConf.to_container(value, resolve=True)
            if OmegaConf.is_config(value)
            else value
            for key in self.identity_keys
            for value in [OmegaConf.select(job_cfg, key)]
        }

    def _batch_size(self, job_cfg: DictConfig, varied: list[str]) -> None:
        """A launcher that trains a batch together (the fused launcher) is asked first whether
        this sweep's jobs, which differ in the `varied` keys (the axes with more than one value),
        will fuse; if not, its batch is one job: claiming 30 to run one after
        another would leave other sweeps on the study nothing to do. One line (`notes`, printed
        under the sweep's header) says why."""
        why_not_fused = getattr(self.launcher, "why_not_fused", None)
        if why_not_fused is None or not self._n_jobs_of_launcher or self.n_jobs == 1:
            return
        why = why_not_fused(job_cfg, varied)
        if why:  # said once the study is open: a refused run prints its one error line alone
            self._notes = (f"[lrsweep] fused launcher: {why}; the jobs run one at a time",)
            self.n_jobs = 1

    def _search_plan(self, axes: list[Axis]) -> Any:
        """`search=full`: which axis is the LR, which the seed, where the report goes."""
        from lrsweep.stages import SearchPlan

        job_cfg = self._job_cfg
        seed_key = self.seed_key
        if seed_key and OmegaConf.select(job_cfg, seed_key, default=_ABSENT) is _ABSENT:
            seed_key = None  # the app has no seed: the confirm step cannot use fresh seeds
        report_dir = self.report_dir or str(job_cfg.hydra.sweep.dir)
        return SearchPlan.from_axes(
            axes,
            lr_key=self.lr_key,
            seed_key=seed_key,
            points=self.stage2_points or self.points,
            confirm_top=self.confirm_top,
            confirm_seeds=self.confirm_seeds,
            report_dir=Path(report_dir),
            metric=self.metric_name,
            stage2_method=self.stage2_method,
        )

    def _launch(self, claimed: list, slot: int) -> Any:
        """Runs claimed points as Hydra jobs; each `JobReturn` as a `JobResult` (an iterator of
        them when the launcher's is: its jobs run as they are read, each told as it ends)."""
        from lrsweep.results import JobResult

        batch = []
        for i, (number, trial_id, params) in enumerate(claimed):
            overrides = [*self._fixed, *param_overrides(params)]
            if self._has_trial_key:
                overrides.append(f"{self.trial_key}={number}")
            if self._has_slot_key:  # jobs running at once hold distinct slots (one GPU each)
                overrides.append(f"{self.slot_key}={slot + i}")
            if not self._in_process:  # the job records its own result (job_side.py)
                overrides.append(f"{JOB_TRIAL_KEY}={trial_id}")
            batch.append(overrides)
        with self._job_idx_lock:  # lanes launch from threads of their own: distinct job folders
            job_idx, self.job_idx = self.job_idx, self.job_idx + len(batch)
        if self._in_process:
            returns = self.launcher.launch(batch, initial_job_idx=job_idx)
        else:
            try:
                returns = self.launcher.launch(batch, initial_job_idx=job_idx)
            except Exception as exc:  # the launcher's, for the batch: e.g. a cancelled task
                why = lost(exc)
                return [JobResult(error=why or job_error(exc), lost=why) for _ in batch]
        results = map(_job_result, returns)
        return results if isinstance(returns, Iterator) else list(results)


def _job_result(ret: Any) -> Any:
    """A Hydra `JobReturn` as the runner's `JobResult`."""
    from hydra.core.utils import JobStatus

    from lrsweep.results import JobResult, error_text

    if ret.status == JobStatus.COMPLETED:
        return JobResult(value=ret.return_value)
    # The job's exception as Hydra stored it: its `return_value` property re-raises it, after
    # writing "Error executing job ..." to stderr, a line the sweep's own report repeats.
    exc = getattr(ret, "_return_value", None)
    if not isinstance(exc, BaseException):
        try:
            _ = ret.return_value
            return JobResult(error="job failed")
        except Exception as raised:
            exc = raised
    return JobResult(error=error_text(exc))
