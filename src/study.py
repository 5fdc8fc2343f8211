"""Optuna studies: names and stages, opening and creating them, a job's handle on its trial, trials
as rows.

The study is the record of a sweep: stage 2, the confirm step, the report and the dashboard read
it, never the job folders. One search is a family of studies named after stage 1's (`study_names`):
`<name>` (stage 1), `<name>-stage2`, `<name>-confirm`; a later stage's study carries the user attrs
`parent_study` and `stage`. Study user attributes written by the sweeper: `grid` (axis -> values),
`config` (the experiment's identity, `experiment_identity`). Trial user attributes written by the
job: `diverged`, `stopped_at_chance`, `epochs_run`, `train_loss` (per epoch), `val_acc` (per epoch),
`seconds`, `started`, `finished` (Unix times), `pid`, `checkpoint`, `output_dir`; by the sweeper:
the grid point (`POINT_ATTR` in the sweeper plugin), and `error` for a job that raised.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

# pandas (0.2 s to import) and src.stats are imported where tables are made: every trial process
# imports this module for its `TrialReporter`.
if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the Hydra config tree

# Columns of `trials_frame`, in order.
TRIAL_COLUMNS = ["number", "state", "lr", "seed", "value", "diverged", "epochs_run", "seconds"]

STAGES = ("stage1", "stage2", "confirm")
STAGE2_SUFFIX = "-stage2"
CONFIRM_SUFFIX = "-confirm"
SUFFIXES = {"stage1": "", "stage2": STAGE2_SUFFIX, "confirm": CONFIRM_SUFFIX}


def study_names(name: str) -> dict[str, str]:
    """stage -> study name, for the search whose stage-1 study is `name`."""
    return {stage: name + SUFFIXES[stage] for stage in STAGES}


def _short_name(node: Any) -> str:
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1].lower() or "custom"


def experiment_identity(cfg: DictConfig) -> dict[str, Any]:
    """The config's `experiment_keys` with their resolved values: what makes two trials comparable.
    Two experiments that differ in anything but the LR and the data-order seed differ here."""
    return {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key in cfg.experiment_keys
        for value in [OmegaConf.select(cfg, key)]
    }


def default_study_name(*, _root_: DictConfig) -> str:
    """`<data>-<model>-<optimizer>-<hash>`: the hash covers the whole `experiment_identity`, so two
    experiments never share a study."""
    identity = experiment_identity(_root_)
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    parts = [_short_name(_root_.get(group)) for group in ("data", "model", "optimizer")]
    return "-".join([*parts, digest[:8]])


# Registered on import: `src.train` imports this module before Hydra composes the config.
if not OmegaConf.has_resolver("lrsweep.study_name"):
    OmegaConf.register_new_resolver("lrsweep.study_name", default_study_name)


def storage(url: str) -> optuna.storages.BaseStorage:
    """One storage per URL and process (engine creation and schema checks cost ~0.1 s), opened
    as the sweeper opens it (a SQLite file in WAL mode: `study_protocol.open_storage`). A
    relative SQLite path (the default `sqlite:///outputs/lrsweep.db`) is another file in another
    working directory (sweeps run one after another in one process, `run_multirun`): its storage
    is kept per directory."""
    from hydra_plugins.lrsweep_sweeper.storage_url import sqlite_path

    path = sqlite_path(url)
    return _storage(url, os.getcwd() if path is not None and not path.is_absolute() else None)


@functools.cache
def _storage(url: str, cwd: str | None) -> optuna.storages.BaseStorage:
    """`storage(url)`, opened once per URL (and working directory `cwd`, when the URL's SQLite
    path is relative to it)."""
    from hydra_plugins.lrsweep_sweeper.storage_url import sqlite_path
    from hydra_plugins.lrsweep_sweeper.study_protocol import open_storage

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    opened = open_storage(url)
    # Closed at exit (trial processes freeze the garbage collector then): the last connection to
    # a SQLite file in WAL mode folds the log into the file and removes it.
    atexit.register(opened.engine.dispose)
    return opened


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


def create_child_study(
    name: str, storage_url: str, parent: str, stage: str, meta: dict[str, Any] | None = None
) -> optuna.Study:
    """The study a later stage sweeps into, tagged with its parent and stage; reused if it exists."""
    study = optuna.create_study(
        study_name=name, storage=storage(storage_url), direction="maximize", load_if_exists=True
    )
    study.set_user_attr("parent_study", parent)
    study.set_user_attr("stage", stage)
    for key, value in (meta or {}).items():
        study.set_user_attr(key, value)
    return study


def check_direction(study: optuna.Study) -> None:
    """Refine, confirm and report read a maximized metric; anything else is a ConfigError."""
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ConfigError(
            f"study '{study.study_name}' is {study.direction.name.lower()}d; refine and report "
            "assume a maximized metric (metric=val_acc)"
        )


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, columns `TRIAL_COLUMNS`; `value` is NaN unless the trial is COMPLETE."""
    import pandas as pd

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


def load_frames(name: str, storage_url: str) -> dict[str, pd.DataFrame]:
    """stage -> `trials_frame` of each stage's study that exists (stage 1's must)."""
    existing = set(optuna.study.get_all_study_names(storage(storage_url)))
    frames = {}
    for stage, study_name in study_names(name).items():
        if stage != "stage1" and study_name not in existing:
            continue
        study = open_study(study_name, storage_url)
        check_direction(study)
        frames[stage] = trials_frame(study)
    return frames


def sweep_summary(study: optuna.Study, metric_name: str | None = None) -> str:
    """The per-LR table of a study and its best LR, as the sweeper prints it at the end of a sweep
    (the same `aggregate` as every other table and choice)."""
    from src.stats import aggregate, best_line, format_table

    agg = aggregate(trials_frame(study))
    return f"{format_table(agg)}\n\n{best_line(agg, metric_name or 'value')}"


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
        """All of `attrs` as user attributes, in one transaction where the storage allows it."""
        if self._trial_id is None:
            return
        try:
            if _write_user_attrs_at_once(self._storage, self._trial_id, attrs):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %s was finished elsewhere; no more reports", self._trial_id)
            self._trial_id = None
            return
        for key, value in attrs.items():
            self._write("set_trial_user_attr", key, value)


def _write_user_attrs_at_once(store: Any, trial_id: int, attrs: dict[str, Any]) -> bool:
    """One commit for all of a trial's user attributes on an RDBStorage (Optuna's public API
    commits once per attribute: 12 commits, and each checks the trial again). On SQLite (3.24+)
    and PostgreSQL: the trial is checked once and the attributes are upserted in one statement,
    as Optuna's `set_trial_user_attr` upserts one (1.5 ms against 6.4 ms for a trial's 12 here);
    on other databases, Optuna's own per-attribute helper inside the one transaction. Both use
    Optuna's RDB models (optuna 4-5); False, having written nothing, when they are not there, so
    the caller falls back to the public API. Raises UpdateFinishedTrialError like the public call
    (nothing is written then)."""
    from hydra_plugins.lrsweep_sweeper.study_protocol import rdb_transaction

    write = getattr(store, "_set_trial_attr_without_commit", None)
    engine = getattr(store, "engine", None)
    if write is None or engine is None:
        return False
    if not attrs:
        return True
    insert = _upsert_insert(engine.name)
    with rdb_transaction(store, ignore_integrity_error=True) as session:
        if session is None:
            return False
        from optuna.storages._rdb import models

        if insert is None:
            for key, value in attrs.items():
                write(session, models.TrialUserAttributeModel, trial_id, key, value)
            return True
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        store.check_trial_is_updatable(trial_id, trial.state)
        table = models.TrialUserAttributeModel
        rows = [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]
        statement = insert(table).values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[table.trial_id, table.key],
                set_={"value_json": statement.excluded.value_json},
            )
        )
    return True


def _upsert_insert(dialect: str) -> Any:
    """The `insert` construct with `on_conflict_do_update` for this database, or None."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert
    if dialect == "sqlite":
        import sqlite3

        if sqlite3.sqlite_version_info >= (3, 24, 0):
            from sqlalchemy.dialects.sqlite import insert

            return insert
    return None


def report_dir(cfg: DictConfig, study_name: str) -> Path:
    """The folder of a study's report files (trials.csv, curve.png, best.yaml, transfer.yaml, ...):
    `<paths.reports_dir>/<study name>`."""
    return Path(str(cfg.paths.reports_dir)) / study_name


def compose_config(
    overrides: list[str] | tuple[str, ...] = (),
    return_hydra_config: bool = False,
    config_name: str = "train",
) -> DictConfig:
    """The config `python -m src.<config_name> <overrides>` would run with, for tools outside a
    Hydra app (refine, report, transfer): the same overrides name the same study.
    `return_hydra_config`: with the `hydra` node (its run and sweep folders)."""
    from hydra import compose, initialize_config_dir

    from hydra_plugins.lrsweep_sweeper.study_protocol import check_study_name

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name=config_name,
            overrides=list(overrides),
            return_hydra_config=return_hydra_config,
        )
    try:  # the name names folders (reports): refused before anything is read or written
        check_study_name(str(cfg.study.name))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg
