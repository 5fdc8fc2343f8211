"""The built-in trial's side of the fused launcher (`hydra/launcher=fused`,
`hydra_plugins/lrsweep_sweeper/fused_launcher.py`): its batch function, which trains a batch's
jobs as fused arms (`src.fused.run_arms`) and hands each job the function that records its arm,
and its probe, which tells the sweeper before its first claim whether the sweep's jobs will fuse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.errors import ConfigError
from src.fused import Arm, NotFusable, prepare, run_arms
from src.train import check_config
from src.trial_record import TrialResult

# Keys a fused batch's jobs may differ in: each arm's LR and data order, the trial it reports to,
# and its worker slot (the batch runs on the first job's device).
ARM_KEYS = ("lr", "seed", "trial", "worker_slot")


def _check_jobs(cfgs: Sequence[DictConfig]) -> None:
    """NotFusable unless every job's config is valid and, resolved, the same but for `ARM_KEYS`
    (a key that interpolates an arm key, e.g. `init_seed=${seed}`, differs from arm to arm). A job
    whose config is refused (seed=1.5) runs alone, and fails alone, as it does sequentially."""
    try:
        for cfg in cfgs:
            check_config(cfg)
        resolved = [OmegaConf.to_container(cfg, resolve=True) for cfg in cfgs]
    except (ConfigError, OmegaConfBaseException) as err:
        raise NotFusable(f"a job's config is refused ({err})") from None
    shared = [{k: v for k, v in one.items() if k not in ARM_KEYS} for one in resolved]
    keys = {k for one in shared for k in one}
    differ = sorted(k for k in keys if any(one.get(k) != shared[0].get(k) for one in shared))
    if differ:
        raise NotFusable(f"the jobs differ in {differ}, not only in {list(ARM_KEYS)}")


def train_batch(cfgs: Sequence[DictConfig]) -> list[Callable[[DictConfig], float]]:
    """The batch function of `hydra/launcher=fused` (`hydra_plugins/lrsweep_sweeper/
    fused_launcher.py`): the jobs' trials trained as one fused model; for each job, the function
    its job then runs in place of `src.train.main`, which records the arm's result in its trial
    and returns its metric. Raises NotFusable (a CannotFuse) when the jobs differ in more than
    `ARM_KEYS` or the trial cannot be fused."""
    from src.study import TrialReporter
    from src.train import freeze_long_lived, record_trial

    _check_jobs(cfgs)
    started = time.time()
    arms = [Arm(float(cfg.lr), int(cfg.seed)) for cfg in cfgs]
    results = run_arms(cfgs[0], arms, only_if_pays=True)

    def finish(result: TrialResult) -> Callable[[DictConfig], float]:
        def record(cfg: DictConfig) -> float:
            reporter = TrialReporter(cfg.study.storage, cfg.study.name, cfg.trial)
            for epoch, acc in enumerate(result.val_acc_curve):
                reporter.report(epoch, acc)
            record_trial(reporter, result, started)  # seconds: its share of its batch's time
            reporter.set_attrs(fused_arms=result.fused_arms)
            freeze_long_lived()
            return float(getattr(result, cfg.metric))

        return record

    return [finish(result) for result in results]


def probe(cfg: DictConfig, swept: Sequence[str]) -> str | None:
    """The fused launcher's question before a sweep claims its first batch (`probe_function`):
    None when the sweep's jobs, which differ in the `swept` keys, will train fused on this
    device, else why not (then the sweeper claims one job at a time, so that other sweeps on the
    study share the work). Writes nothing; a bad config is left to the sweeper's own checks."""
    others = sorted(set(swept) - set(ARM_KEYS))
    if others:
        return f"the sweep varies {others} besides lr and seed"
    try:
        prepare(cfg, only_if_pays=True, create=False)
    except NotFusable as why:
        return str(why)
    except Exception:  # a bad config: the sweeper's own check reports it, in its words
        return None
    return None
