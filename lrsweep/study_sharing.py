"""Whether this run may share an existing study, and the distributions its grid values are
recorded with so that it can.

One study holds every run of one experiment: a rerun, a grid grown with more seeds or more
points, a pinned LR. What makes two runs unable to share it is checked here, before the study is
written to, and refused in one line that names the difference:

- the experiment (`identity`): another one is refused; a study that records none was made by
  another tool (or by hand) and is never adopted;
- the axes: a run sweeping other parameters than the study's grid (its point keys would never
  match, and its trials would be read as the study's);
- a value Optuna cannot record beside the study's earlier trials. Optuna compares each parameter's
  distribution with the one recorded first in the study: the same kind (float, int, categorical)
  and log flag, and for a categorical the very same choices, while the range of a float or int
  distribution may differ from trial to trial. So numbers are recorded as float or int
  distributions over this run's values (never as a categorical of this run's list, which breaks
  on the next seed added), of the kind and log flag the study first recorded; other values
  (strings, booleans) keep the study's categorical choices, and a value outside them is refused.
  A study where an earlier lrsweep recorded a list of numbers (seeds, LRs) as a categorical has
  those records converted to the int or float distribution of the same values when a run adds
  values (`convert_params`).
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules.
import copy
import json
from collections.abc import Sequence
from typing import Any

from lrsweep.grid import Axis, SweepConfigError

NEW_NAME = "set study.name=<a new name> to start a new study"


def study_exists(storage: Any, study_name: str) -> bool:
    """Whether the storage holds a study of that name (before this run creates it)."""
    try:
        storage.get_study_id_from_name(study_name)
    except KeyError:
        return False
    return True


def check_identity(
    study_name: str, existed: bool, recorded: dict[str, Any] | None, identity: dict[str, Any]
) -> None:
    """Refuse a study that holds another experiment, or that existed without any recorded
    identity (made by another tool: its trials would be read as this experiment's)."""
    if recorded is None:
        if existed:
            raise SweepConfigError(
                f"study '{study_name}' exists but was not made by an lrsweep sweep (it records "
                f"no experiment identity), so it is not adopted; {NEW_NAME}"
            )
        return
    if recorded != identity:
        differ = sorted(
            k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k)
        )
        raise SweepConfigError(
            f"study '{study_name}' holds another experiment (differs in {differ}); {NEW_NAME}"
        )


def without_swept(identity: dict[str, Any], swept: Sequence[str]) -> dict[str, Any]:
    """The experiment identity of a sweep over `swept` keys (dotted, e.g. `model.width`) besides
    the LR and seed: its first job's `identity` without those keys, which vary from trial to
    trial and are recorded in each trial's params. The same sweep rerun in another order, or grown
    by a value, then matches the study it made."""
    identity = copy.deepcopy(identity)
    for key in swept:
        *parents, leaf = key.split(".")
        node: Any = identity
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return identity


def check_axes(study_name: str, recorded_grid: dict[str, list[Any]], axes: Sequence[Axis]) -> None:
    """Refuse a run whose axes are not the ones the study's grid was swept over."""
    names = [axis.name for axis in axes]
    if recorded_grid and sorted(recorded_grid) != sorted(names):
        raise SweepConfigError(
            f"study '{study_name}' was swept over {sorted(recorded_grid)}, this run sweeps "
            f"{sorted(names)}; {NEW_NAME}"
        )


def recorded_distributions(study: Any, storage: Any, study_id: int) -> dict[str, Any]:
    """Each parameter's distribution as the study first recorded it: what Optuna checks every
    later record of that parameter against. One query on Optuna's tables where
    `optuna_tables.engine` allows, else the trials."""
    from lrsweep import optuna_tables

    engine = optuna_tables.engine(storage)
    if engine is not None:
        return optuna_tables.first_distributions(engine, study_id)
    found: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        for name, dist in trial.distributions.items():
            found.setdefault(name, dist)
    return found


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _describe(dist: Any) -> str:
    """A distribution as the refusal names it."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"a choice of {list(dist.choices)}"
    kind = "integers" if isinstance(dist, IntDistribution) else "numbers"
    return f"{'log-scaled ' if dist.log else ''}{kind}"


def distribution_for(axis: Axis, recorded: Any = None) -> Any:
    """The distribution this run records `axis`'s values with: compatible with `recorded` (the
    study's first record of the parameter, None if none) in Optuna's sense, or ValueError."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    values = axis.values
    if isinstance(recorded, CategoricalDistribution):
        missing = [v for v in values if v not in recorded.choices]
        if missing:
            raise ValueError(f"{missing} not among its choices")
        return recorded  # the study's own choices: this run's values are among them
    if not all(map(_is_number, values)):
        if recorded is None:
            return CategoricalDistribution(values)
        raise ValueError(f"{[v for v in values if not _is_number(v)]} are not numbers")
    log = axis.log if recorded is None else recorded.log
    if log and min(values) <= 0:
        raise ValueError(f"{values} are not all > 0")
    low, high = min(values), max(values)
    integers = all(isinstance(v, int) for v in values)
    if isinstance(recorded, IntDistribution) or (recorded is None and integers):
        if not integers:
            raise ValueError(f"{values} are not all integers")
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def converted(recorded: Any) -> Any:
    """The int or float distribution (over its choices' range) that a categorical of numbers
    becomes, as earlier lrsweeps recorded a list of seeds or LRs; None for any other."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if not isinstance(recorded, CategoricalDistribution) or not recorded.choices:
        return None
    choices = recorded.choices
    if not all(map(_is_number, choices)):
        return None
    if all(isinstance(c, int) for c in choices):
        return IntDistribution(min(choices), max(choices))
    return FloatDistribution(float(min(choices)), float(max(choices)))


def run_distributions(
    study_name: str, axes: Sequence[Axis], recorded: dict[str, Any], can_convert: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Axis name -> the distribution `record_params` records its values with (`distribution_for`),
    and the parameters whose records must first be converted (`converted`; only where
    `can_convert`: `convert_params` rewrites them) for this run's values to join them. A value the
    study cannot take beside its earlier trials is one line naming it."""
    dists, conversions = {}, {}
    for axis in axes:
        previous = recorded.get(axis.name)
        try:
            try:
                dists[axis.name] = distribution_for(axis, previous)
            except ValueError:
                upgrade = converted(previous) if can_convert else None
                if upgrade is None:
                    raise
                dists[axis.name] = distribution_for(axis, upgrade)
                conversions[axis.name] = upgrade
        except ValueError as err:
            raise SweepConfigError(
                f"study '{study_name}' recorded {axis.name} as {_describe(previous)}: this run's "
                f"{axis.name} values {json.dumps(axis.values)} cannot join it ({err}); {NEW_NAME}"
            ) from None
    return dists, conversions
