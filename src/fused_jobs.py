"""The built-in trial's side of the fused launcher (`hydra/launcher=fused`,
`hydra_plugins/lrsweep_sweeper/fused_launcher.py`): its batch function, which trains a batch's
jobs as fused arms (`src.fused.run_arms`) and hands each job the function that records its arm,
and its probe, which tells the sweeper before its first claim whether the sweep's jobs will fuse.

A batch's jobs train in groups: the jobs whose resolved configs are the same but for `ARM_KEYS`
(a sweep over `model.width` x lr x seed: one group per width). Each group of two or more jobs
trains as one fused model; a group of one, or one that does not fuse (`NotFusable`), is handed
back to the launcher with the reason, and its jobs run one at a time.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lrsweep.fusing import CannotFuse
from src.errors import ConfigError
from src.fused import Arm, NotFusable, prepare, run_arms
from src.identity import flatten
from src.train import check_config
from src.trial_record import TrialResult

# Keys a fused batch's jobs may differ in: each arm's LR and data order, the trial it reports to,
# and its worker slot (the batch runs on the first job's device).
ARM_KEYS = ("lr", "seed", "trial", "worker_slot")

Task = Callable[[DictConfig], float]


def _shared(cfg: DictConfig) -> dict[str, Any]:
    """What a job shares with the other arms of its fused model: its config, resolved (a key that
    interpolates an arm key, e.g. `init_seed=${seed}`, follows it), but for `ARM_KEYS`."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    return flatten({k: v for k, v in resolved.items() if k not in ARM_KEYS})


@dataclass(frozen=True)
class Group:
    """Jobs of a batch that can be arms of one model: `jobs` (their indices in the batch) share
    everything but `ARM_KEYS`; `label` names what sets them apart from the batch's other groups
    (`model.width=64`), empty when the batch is one group."""

    jobs: list[int]
    label: str


def group_jobs(cfgs: Sequence[DictConfig]) -> tuple[list[Group], dict[int, CannotFuse]]:
    """The batch's jobs in groups, in order of their first job, and the jobs that join none: those
    whose config is refused (seed=1.5), each with the reason. Such a job runs alone, and fails
    alone, as it does sequentially."""
    refused: dict[int, CannotFuse] = {}
    shared: dict[int, dict[str, Any]] = {}
    for i, cfg in enumerate(cfgs):
        try:
            check_config(cfg)
            shared[i] = _shared(cfg)
        except (ConfigError, OmegaConfBaseException) as err:
            refused[i] = CannotFuse(f"a job's config is refused ({err})")
    by_key: dict[str, list[int]] = {}
    for i, flat in shared.items():
        by_key.setdefault(repr(sorted(flat.items(), key=lambda item: item[0])), []).append(i)
    keys = sorted({k for flat in shared.values() for k in flat})
    differ = [k for k in keys if len({repr(flat.get(k)) for flat in shared.values()}) > 1]

    def label(job: int) -> str:
        return ", ".join(f"{k}={shared[job].get(k)}" for k in differ)

    return [Group(jobs, label(jobs[0])) for jobs in by_key.values()], refused


def train_groups(cfgs: Sequence[DictConfig]) -> list[tuple[TrialResult, float] | CannotFuse]:
    """Per job of the batch: its arm's result and the Unix time its group's training began, or
    why it runs alone (a `CannotFuse`, one per group: the launcher says each reason once). Every
    group of two or more jobs trains as fused models (`run_arms`, which splits a group into as
    many fused batches as memory requires); no study is touched."""
    groups, refused = group_jobs(cfgs)
    out: dict[int, tuple[TrialResult, float] | CannotFuse] = dict(refused)
    for group in groups:
        where = f"{group.label}: " if group.label else ""
        if len(group.jobs) == 1:
            out[group.jobs[0]] = CannotFuse(f"{where}no other job of the batch shares its config")
            continue
        started = time.time()
        first = cfgs[group.jobs[0]]
        arms = [Arm(float(cfgs[i].lr), int(cfgs[i].seed)) for i in group.jobs]
        try:
            results = run_arms(first, arms, only_if_pays=True)
        except NotFusable as err:
            why = CannotFuse(f"{where}{err}")
            for i in group.jobs:
                out[i] = why
            continue
        for i, result in zip(group.jobs, results, strict=True):
            out[i] = (result, started)
    return [out[i] for i in range(len(cfgs))]


def train_batch(cfgs: Sequence[DictConfig]) -> list[Task | CannotFuse]:
    """The batch function of `hydra/launcher=fused` (`hydra_plugins/lrsweep_sweeper/
    fused_launcher.py`): the jobs' trials trained in fused groups (`train_groups`); for each job,
    the function its job then runs in place of `src.train.main`, which records the arm's result
    in its trial and returns its metric, or, for a job of a group that does not fuse, the
    `CannotFuse` saying why (the launcher runs that job with `src.train.main`)."""
    from src.study import TrialReporter
    from src.train import freeze_long_lived, record_trial

    def finish(result: TrialResult, started: float) -> Task:
        def record(cfg: DictConfig) -> float:
            reporter = TrialReporter(cfg.study.storage, cfg.study.name, cfg.trial)
            for epoch, acc in enumerate(result.val_acc_curve):
                reporter.report(epoch, acc)
            record_trial(reporter, result, started)  # seconds: its share of its fused model's time
            reporter.set_attrs(fused_arms=result.fused_arms)
            freeze_long_lived()
            return float(getattr(result, cfg.metric))

        return record

    return [one if isinstance(one, CannotFuse) else finish(*one) for one in train_groups(cfgs)]


def _followers(cfg: DictConfig, key: str) -> list[str] | None:
    """The keys besides `ARM_KEYS` whose resolved value changes with the arm key `key` (e.g.
    `init_seed` under `init_seed=${seed}`): jobs that differ in `key` then never share a group.
    None when `key` is not a number this can change."""
    value = OmegaConf.select(cfg, key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    other = copy.deepcopy(cfg)
    with open_dict(other):
        OmegaConf.update(other, key, value + 1, merge=False)
    before, after = _shared(cfg), _shared(other)
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _no_two_share(cfg: DictConfig, swept: Sequence[str]) -> str | None:
    """Why no two of the sweep's jobs (which differ in the `swept` keys) will share a group, or
    None when some will."""
    arm_axes = [k for k in swept if k in ARM_KEYS]
    if swept and not arm_axes:
        others = sorted(set(swept))
        return f"the sweep varies {others}, not lr or seed: no two jobs share a config"
    followers = {k: _followers(cfg, k) for k in arm_axes}
    if arm_axes and all(followers.values()):  # each arm axis drags another key along
        changes = "; ".join(f"{k} also changes {v}" for k, v in followers.items())
        return f"{changes}: no two jobs share a config"
    return None


def probe(cfg: DictConfig, swept: Sequence[str]) -> str | None:
    """The fused launcher's question before a sweep claims its first batch (`probe_function`):
    None when the sweep's jobs, which differ in the `swept` keys (those with more than one value),
    will train fused, in groups, on this device, else why not (then the sweeper claims one job at
    a time, so that other sweeps on the study share the work). Jobs that differ in other keys
    than `ARM_KEYS` train in groups, and the first job's config answers for all: a group whose
    model does not fuse finds out at its batch. Writes nothing, trains nothing; a bad config is
    left to the sweeper's own checks."""
    try:
        why = _no_two_share(cfg, swept)
        if why is not None:
            return why
        prepare(cfg, only_if_pays=True, create=False)
    except NotFusable as why:
        return str(why)
    except Exception:  # a bad config: the sweeper's own check reports it, in its words
        return None
    return None
