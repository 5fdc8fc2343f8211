"""The plugins' configs: the sweeper (`hydra/sweeper=lrsweep`) and the launcher
(`hydra/launcher=lrsweep`). The sweeper's keys follow hydra-optuna-sweeper's where they
mean the same thing (sampler, direction, storage, study_name, n_trials, n_jobs, params,
max_failure_rate), so its users feel at home."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class LrSweepConf:
    _target_: str = "hydra_plugins.lrsweep_sweeper.sweeper.LrSweeper"
    # The sweeper gets `sampler` as written: Hydra would instantiate a `{_target_: ...}` node
    # first (a GridSampler without its search space fails there; another sampler would be
    # named by its object's repr in the refusal).
    _recursive_: bool = False
    # Search space, in Hydra's override grammar: choice(...), range(...), interval(a, b),
    # tag(log, interval(a, b)) (`points` values, numpy.logspace), or a plain list (a choice).
    # Axes from the command line (`seed=0,1,2`) join them. The grid is their product.
    params: dict[str, Any] = field(default_factory=dict)
    # Values per interval axis: an integer >= 2. Typed Any so that a wrong value (2.5, abc) is
    # the sweeper's one-line error, not OmegaConf's traceback while Hydra builds the sweeper.
    points: Any = 10
    # Only the grid: lrsweep enumerates it itself (exactly once, resumable). null or
    # {_target_: optuna.samplers.GridSampler} are accepted; adaptive samplers are not.
    sampler: Any = None
    direction: str = "maximize"
    # Any SQLAlchemy URL; sqlite:///path for a local file. null: sqlite:///<cwd>/lrsweep.db
    storage: str | None = None
    study_name: str | None = None  # null: the app's name (hydra.job.name)
    metric_name: str | None = None  # shown by optuna-dashboard
    n_trials: int | None = None  # most trials this run launches; null = the rest of the grid
    # Trials per launched batch. null: the launcher's own n_jobs (joblib: -1 = every core) or
    # array_parallelism (submitit), else 1.
    n_jobs: int | None = None
    # Abort when more than this fraction of launched jobs raised. Diverged trials return a value:
    # they are not failures.
    max_failure_rate: float = 0.0
    # Dotted path of a function called with the first job's composed config before the study is
    # touched; raise ValueError for bad input.
    check: str | None = None
    # Job config keys recorded in the study (user attr `config`): reusing a study for an
    # experiment that differs in any of them is refused.
    identity_keys: list[str] = field(default_factory=list)
    # Or the dotted path of a function called with the first job's composed config that returns
    # that identity (a dict); it replaces `identity_keys` when set.
    identity: str | None = None
    # Dotted path of a function called with (study, metric_name) at the end of a sweep; the text
    # it returns is printed instead of the built-in per-value table.
    summary: str | None = None
    # Job config key that receives the trial number, when the app's config has it (lrsweep's own
    # trial reports per-epoch values to its trial); null: never passed.
    trial_key: str | None = "trial"
    # Job config key that receives the job's worker slot (0 .. n_jobs - 1: its lane, which runs
    # one job at a time, so jobs running at once have distinct slots): e.g. to pick one GPU per
    # concurrent worker. null: not passed.
    slot_key: str | None = None
    # Crash recovery: a trial whose sweeper stopped beating for `grace_period` s is failed and
    # its point re-queued by the next run.
    heartbeat_interval: int = 10
    grace_period: int | None = None  # default: 3 x heartbeat_interval
    poll_interval: float = 2.0  # s between looks at trials running elsewhere
    # Compose each job's config once per shape of job and set its values on a copy (compose.py),
    # instead of Hydra's full composition per job; false: Hydra's composition for every job.
    compose_once: bool = True
    # grid: the grid above (stage 1) alone. full: then stage 2 on a narrowed LR range, the confirm
    # step on fresh seeds, and the report (trials.csv, curve.png, best.yaml) in `report_dir`.
    search: str = "grid"
    # The LR axis of `params` (any key: `lr`, `model.optimizer.lr`, ...); null: the one
    # `tag(log, interval(a, b))` axis.
    lr_key: str | None = None
    # The app's seed key: the confirm step's fresh seeds go there (no such key in the app: no
    # confirm step). A seed axis in `params` is stage 1's seeds.
    seed_key: str | None = "seed"
    stage2_points: int | None = None  # null: `points`
    confirm_top: int = 3  # LRs re-run by the confirm step (plus the interpolated optimum and
    confirm_seeds: int = 3  # stage 1's best), on this many fresh seeds
    report_dir: str | None = None  # null: the sweep folder (hydra.sweep.dir)
    # How stage 2 picks its LRs in the narrowed range: grid (log-uniform through stage 1's best),
    # tpe or gp (Optuna's sampler seeded with stage 1's trials); docs/choice.md.
    stage2_method: str = "grid"
    # A job that ends without a result (cancelled, preempted, out of time or memory, its process
    # killed) is launched again up to this many times; then its trial is FAIL with the
    # scheduler's state in its `error`. Typed Any: a wrong value is the sweeper's one line.
    retries: Any = 2
    # Set by the sweeper on each job in another process (joblib, submitit): the Optuna trial id
    # the job records its own result in. Not a setting.
    job_trial: int | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="lrsweep", node=LrSweepConf, provider="lrsweep"
)


@dataclass
class InProcessLauncherConf:
    """`hydra/launcher=lrsweep`: jobs one after the other in this process (launcher.py)."""

    _target_: str = "hydra_plugins.lrsweep_sweeper.launcher.InProcessLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="lrsweep", node=InProcessLauncherConf, provider="lrsweep"
)


@dataclass
class FusedLauncherConf:
    """`hydra/launcher=lrsweep_fused`: each batch's jobs trained together by the app's
    `batch_function` (fused_launcher.py); the built-in trial's `hydra/launcher=fused` names its
    own."""

    _target_: str = "hydra_plugins.lrsweep_sweeper.fused_launcher.FusedLauncher"
    # Dotted path of f(task_configs) -> per job, its function or a CannotFuse (fused_launcher.py).
    batch_function: str | None = None
    n_jobs: int = 30  # jobs trained together: the sweeper's batch
    # Dotted path of f(task_config, swept_keys) -> None, or why the sweep's jobs will not fuse:
    # then the sweeper claims one job at a time, and other sweeps on the study share the work.
    probe_function: str | None = None


ConfigStore.instance().store(
    group="hydra/launcher", name="lrsweep_fused", node=FusedLauncherConf, provider="lrsweep"
)
