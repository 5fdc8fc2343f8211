"""Every job of a sweep reports to the sweep's study.

The sweeper opens one study (`hydra.sweeper.study_name`, resolved in the sweep's config) and each
job records its trial there under the name its own config resolves. When that name follows a
swept key (the built-in trial's default `study.name` hashes the experiment's identity, so
`model.width=32,64`, or `init_seed=${seed}` under several seeds, gives each job another name),
the jobs would look for a study that does not exist and every trial would fail. `check_one_study`
composes one job per swept value (the LR axis: one other value, for a name that interpolates it)
and refuses such a sweep before the study is touched, naming the key and the two ways out: one
study named for the whole sweep, or one sweep per value.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.lrsweep_sweeper.grid import format_value
from lrsweep.grid import Axis, SweepConfigError


def _study_of(job: DictConfig, default: str) -> str:
    """The study a job names, or `default` (the sweep's) where it names none: an app that leaves
    `study_name` null sweeps into the sweeper's default, the study named after the app."""
    name = OmegaConf.select(job, "hydra.sweeper.study_name", default=None)
    return default if name is None else str(name)


def check_one_study(
    axes: Sequence[Axis],
    first: Mapping[str, Any],
    first_job: DictConfig,
    compose: Callable[[dict[str, Any]], DictConfig],
    study_name: str,
    sweep_config: DictConfig,
) -> None:
    """SweepConfigError unless every job resolves `hydra.sweeper.study_name` to the sweep's
    `study_name` (resolved in `sweep_config`, the sweep's own config): the first job
    (`first_job`, of the point `first`), and a job composed (`compose(point)`) from `first` with
    one axis at each other value (a log axis, the LR: its last value only, against a name that
    interpolates it)."""
    first_name = _study_of(first_job, study_name)
    for axis in axes:
        values = [v for v in axis.values if v != first[axis.name]]
        for value in values[-1:] if axis.log else values:
            name = _study_of(compose({**first, axis.name: value}), study_name)
            if name == first_name:
                continue
            raise SweepConfigError(
                f"the sweep varies {axis.name}, and its jobs' study name follows it "
                f"({axis.name}={first[axis.name]}: {first_name}, "
                f"{axis.name}={value}: {name}): give the whole sweep one study "
                f"(study.name=...), or sweep one {axis.name} per run"
            )
    if first_name != study_name:
        swept = ", ".join(f"{k}={v}" for k, v in first.items())
        raise SweepConfigError(
            f"the sweep's jobs ({swept}) report to the study {first_name}, not the sweep's "
            f"{study_name}: a swept key changes the study's name; give the sweep one study "
            f"(study.name=...), or {_way_out(axes, first, sweep_config)}"
        )


def _way_out(axes: Sequence[Axis], first: Mapping[str, Any], sweep_config: DictConfig) -> str:
    """The other way out of a sweep whose every job names one study, but not the sweep's: its
    one-value axes that the sweep's own config holds at another value (`sweep.seeds=[1]` under
    `init_seed=${seed}`, the sweep's `seed` 0) set as plain overrides, which set both."""
    pinned = [
        f"{axis.name}={format_value(first[axis.name])}"
        for axis in axes
        if len(axis.values) == 1
        and OmegaConf.select(sweep_config, axis.name, throw_on_resolution_failure=False)
        != first[axis.name]
    ]
    if not pinned:
        return "sweep that key one value per run"
    return (
        f"set {' '.join(pinned)} on the command line, for the sweep's own config as well as its "
        "jobs"
    )
