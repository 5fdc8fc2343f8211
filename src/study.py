"""Optuna studies: opening them, the default study name, a job's handle on its trial, trials as rows.

The study is the record of a sweep: stage 2, the report and the dashboard read it, never the job
folders. Study user attributes written by the sweeper: `grid` (axis -> values), `config` (the
experiment's identity keys). Trial user attributes written by the job: `diverged`, `epochs_run`,
`train_loss` (per epoch), `val_acc` (per epoch), `seconds`, `checkpoint`, `output_dir`; by the
sweeper: `grid_point`, and `error` for a job that raised.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the Hydra config tree

# Columns of `trials_frame`, in order.
TRIAL_COLUMNS = ["number", "state", "lr", "seed", "value", "diverged", "epochs_run", "seconds"]


def _short_name(node: Any) -> str:
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1].lower() or "custom"


def default_study_name(*, _root_: DictConfig) -> str:
    """`<data>-<model>-<optimizer>-<hash>`: the hash covers every key in `experiment_keys`, so two
    experiments that differ in anything but the LR and the data-order seed never share a study."""
    identity = {
        key: OmegaConf.to_container(_root_[key], resolve=True)
        if OmegaConf.is_config(_root_[key])
        else _root_[key]
        for key in _root_.experiment_keys
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    parts = [_short_name(_root_.get(group)) for group in ("data", "model", "optimizer")]
    return "-".join([*parts, digest[:8]])


# Registered on import: `src.train` imports this module before Hydra composes the config.
if not OmegaConf.has_resolver("lrsweep.study_name"):
    OmegaConf.register_new_resolver("lrsweep.study_name", default_study_name)


@functools.cache
def storage(url: str) -> optuna.storages.BaseStorage:
    """One storage per URL and process (engine creation and schema checks cost ~0.1 s)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # Waiting on a lock beats failing with "database is locked" under parallel jobs.
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.RDBStorage(url)


def shown_url(url: str) -> str:
    """A storage URL as printed: its password hidden."""
    from hydra_plugins.lrsweep_sweeper.storage_url import hide_password

    return hide_password(url)


def open_study(name: str, storage_url: str) -> optuna.Study:
    """Load an existing study; a missing one is a ConfigError that lists the studies there are."""
    store = storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(store))
        raise ConfigError(
            f"study.name: no study '{name}' in {shown_url(storage_url)}; studies there: "
            f"{names or 'none'}"
        ) from None


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, columns `TRIAL_COLUMNS`; `value` is NaN unless the trial is COMPLETE."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "lr": params.get("lr", math.nan),
                "seed": params.get("seed", 0),
                "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else math.nan,
                "diverged": bool(t.user_attrs.get("diverged", False)),
                "epochs_run": t.user_attrs.get("epochs_run", 0),
                "seconds": t.user_attrs.get("seconds", math.nan),
            }
        )
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


class TrialReporter:
    """A job's handle on the trial the sweeper created for it. Inert outside a sweep.

    If the trial was finished behind the job's back (its sweeper was killed and a later run failed
    the orphan), writes stop with one warning: the job must not crash for that.
    """

    def __init__(self, storage_url: str | None, study_name: str | None, trial_number: int | None):
        self._storage = None
        self._trial_id = None
        if trial_number is None or storage_url is None or study_name is None:
            return
        self._storage = storage(storage_url)
        study_id = self._storage.get_study_id_from_name(study_name)
        self._trial_id = self._storage.get_trial_id_from_study_id_trial_number(
            study_id, int(trial_number)
        )

    @property
    def active(self) -> bool:
        return self._trial_id is not None

    def _write(self, method: str, *args: Any) -> None:
        if self._trial_id is None:
            return
        try:
            getattr(self._storage, method)(self._trial_id, *args)
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %s was finished elsewhere; no more reports", self._trial_id)
            self._trial_id = None

    def report(self, step: int, value: float) -> None:
        """An intermediate value (per epoch): Optuna's learning curve for this trial."""
        self._write("set_trial_intermediate_value", int(step), float(value))

    def set_attrs(self, **attrs: Any) -> None:
        for key, value in attrs.items():
            self._write("set_trial_user_attr", key, value)


def compose_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m src.train <overrides>` would run with, for tools outside a Hydra app
    (refine, report): the same overrides name the same study."""
    from hydra import compose, initialize_config_dir

    from hydra_plugins.lrsweep_sweeper.study_protocol import check_study_name

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    try:  # the name names folders (reports): refused before anything is read or written
        check_study_name(str(cfg.study.name))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg
