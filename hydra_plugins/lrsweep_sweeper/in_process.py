"""Run one Hydra job in this process: Hydra's `run_job`, at a fraction of its bookkeeping.

Hydra's basic launcher spends about 30 ms a job on 2 cores outside the job itself: it sets the
job's Hydra config twice (each a deep copy of the `hydra` node), deep-copies the whole config and
the Hydra config once more, and writes the three `.hydra/` files through PyYAML's pure-Python
emitter. A grid sweep of small trials pays that on every point. `run_job` below keeps the job's
protocol and record exactly -- the same output folder, working directory rule (`hydra.job.chdir`),
job logging, `.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml` byte for byte,
`HydraConfig` inside the job, `hydra.job.env_set`, the callbacks, the `JobReturn` -- and does the
work once:

- the Hydra config is set once, and without a copy: `HydraConfig` holds the job's own `hydra`
  node, parented to the job's config as Hydra parents its copy (Hydra copies the node and sets
  the whole config again for `hydra.runtime.output_dir`, the one key it then writes); the
  launcher composes a fresh config for every job, so nothing else holds that node;
- the task's config is a deep copy of the job's config that leaves the large `hydra` node out
  (Hydra copies it too, then deletes it); callbacks are handed the job's whole config, as in
  Hydra;
- `JobReturn.hydra_cfg` is the Hydra config the job saw (Hydra deep-copies it; the next job's
  `HydraConfig` replaces it rather than changing it);
- the YAML files are written by libyaml's emitter with OmegaConf's own representers when PyYAML
  has libyaml (the same text: tests/test_launcher.py compares the files), else by
  `OmegaConf.to_yaml`.

Everything else is Hydra's own code (`configure_log`, `env_override`, `_flush_loggers`, the
callbacks). hydra-core is pinned to 1.3, whose `run_job` this follows; one difference: an app
with `version_base` below 1.2 and no `hydra.job.chdir` gets Hydra's old default (the job's
folder) without Hydra's deprecation warning.
"""

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from hydra import version
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    _flush_loggers,
    configure_log,
    env_override,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf._utils import get_omega_conf_dumper


def _fast_dumper() -> type | None:
    """OmegaConf's YAML dumper on libyaml's emitter (about 4x faster), or None without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None
    omega = get_omega_conf_dumper()

    class OmegaConfCDumper(yaml.CDumper):  # the C emitter, OmegaConf's representers
        pass

    for name, table in vars(omega).items():
        if name in ("yaml_representers", "yaml_multi_representers"):
            setattr(OmegaConfCDumper, name, dict(table))
    return OmegaConfCDumper


_DUMPER = _fast_dumper()


def to_yaml(cfg: Any) -> str:
    """`OmegaConf.to_yaml(cfg)`: the same text, emitted by libyaml where PyYAML has it."""
    if _DUMPER is None:
        return OmegaConf.to_yaml(cfg)
    container = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    return yaml.dump(
        container, default_flow_style=False, allow_unicode=True, sort_keys=False, Dumper=_DUMPER
    )


def _save(cfg: Any, filename: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(to_yaml(cfg), encoding="utf-8")


def _hydra_config(config: DictConfig) -> DictConfig:
    """What `HydraConfig.set_config(config)` makes -- `{"hydra": <config.hydra>}`, the `hydra`
    node read-only and parented to `config`, so that its interpolations (into itself, e.g.
    `${hydra.runtime.output_dir}`, and into the task's keys) resolve -- with the job's own node
    rather than a deep copy of it: nothing else holds this job's config."""
    OmegaConf.set_readonly(config.hydra, True)
    hydra_cfg = OmegaConf.create(flags={"no_deepcopy_set_nodes": True})
    hydra_cfg.hydra = config.hydra
    hydra_cfg.hydra._set_parent(config)  # as Hydra's set_config does
    return hydra_cfg


def task_config(config: DictConfig) -> DictConfig:
    """The task's config as Hydra's `run_job` makes it -- a deep copy of `config` (its type, flags,
    typed nodes and resolver cache, so `${now:...}` keeps the run's time), `hydra` then deleted --
    without copying the large `hydra` node: a placeholder stands in for it in the copy."""
    placeholder = OmegaConf.create()
    task_cfg = copy.deepcopy(config, memo={id(config.hydra): placeholder})
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return task_cfg


def run_job(
    hydra_context: HydraContext,
    task_function: TaskFunction,
    config: DictConfig,
    job_dir_key: str,
    job_subdir_key: str | None,
) -> JobReturn:
    """Runs `task_function` on `config` (a job's own config, with its `hydra` node, made for this
    job) as Hydra's `hydra.core.utils.run_job` does; returns its `JobReturn` (a raised exception is
    its `return_value`, status FAILED). `config`'s `hydra` node becomes the job's `HydraConfig`
    itself (made read-only), and the task gets a copy of the rest."""
    callbacks = hydra_context.callbacks
    old_cwd = os.getcwd()
    orig_hydra_cfg = HydraConfig.instance().cfg
    hydra_cfg = _hydra_config(config)
    HydraConfig.instance().cfg = hydra_cfg  # makes `${hydra:...}` resolvable in the keys below
    hydra = config.hydra
    output_dir = str(OmegaConf.select(config, job_dir_key))
    if job_subdir_key is not None:  # evaluated here: it names the job (e.g. `trial_${trial}`)
        output_dir = os.path.join(output_dir, str(OmegaConf.select(config, job_subdir_key)))
    output_dir = os.path.abspath(output_dir)
    with read_write(hydra.runtime), open_dict(hydra.runtime):
        hydra.runtime.output_dir = output_dir
    chdir = False
    try:
        ret = JobReturn()
        task_overrides = hydra.overrides.task
        task_cfg = task_config(config)
        ret.cfg = task_cfg
        ret.hydra_cfg = hydra_cfg
        overrides = OmegaConf.to_container(task_overrides)
        assert isinstance(overrides, list)
        ret.overrides = overrides
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        chdir = hydra.job.chdir
        if chdir is None:  # Hydra's default: the job's folder only before version_base 1.2
            chdir = not version.base_at_least("1.2")
        if chdir:
            os.chdir(output_dir)
            ret.working_dir = output_dir
        else:
            ret.working_dir = os.getcwd()
        configure_log(hydra.job_logging, hydra.verbose)
        if hydra.output_subdir is not None:
            record = Path(output_dir) / str(hydra.output_subdir)
            _save(task_cfg, "config.yaml", record)
            _save(hydra_cfg, "hydra.yaml", record)
            _save(task_overrides, "overrides.yaml", record)
        with env_override(hydra.job.env_set):
            callbacks.on_job_start(config=config, task_function=task_function)
            try:
                ret.return_value = task_function(task_cfg)
                ret.status = JobStatus.COMPLETED
            except Exception as err:
                ret.return_value = err
                ret.status = JobStatus.FAILED
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        callbacks.on_job_end(config=config, job_return=ret)
        return ret
    finally:
        HydraConfig.instance().cfg = orig_hydra_cfg
        if chdir:
            os.chdir(old_cwd)
