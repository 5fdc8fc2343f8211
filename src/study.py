"""Optuna studies: names and stages, opening and creating them, a job's handle on its trial, trials
as rows.

The study is the record of a sweep: stage 2, the confirm step, the report and the dashboard read
it, never the job folders. One search is a family of studies named after stage 1's (`study_names`):
`<name>` (stage 1), `<name>-stage2`, `<name>-confirm`; a later stage's study carries the user attrs
`parent_study` and `stage`. Study user attributes written by the sweeper: `grid` (axis -> values),
`config` (the experiment's identity, `experiment_identity`). Trial user attributes written by the
job: `diverged`, `stopped_at_chance`, `epochs_run`, `train_loss` (per epoch), `val_acc` (per epoch),
`val_examples` (the validation set's size: a score's resolution is 1 / val_examples), `test_acc`
(on the data's test split, None without one: never the objective), `seconds`,
`started`, `finished` (Unix times), `pid`, `checkpoint`, `output_dir`; by the sweeper: the grid
point (`POINT_ATTR` in the sweeper plugin), and `error` for a job that raised.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf

from lrsweep import optuna_tables
from lrsweep.frames import TRIAL_COLUMNS  # noqa: F401  (the columns of `trials_frame`)
from lrsweep.stages import study_names
from src.errors import ConfigError

# pandas (0.2 s to import) and lrsweep.stats are imported where tables are made: every trial process
# imports this module for its `TrialReporter`.
if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"  # the Hydra config tree


def _short_name(node: Any) -> str:
    target = node.get("_target_", "") if isinstance(node, DictConfig) else ""
    return str(target).rsplit(".", 1)[-1].lower() or "custom"


# Config values that leave the experiment as it was without the key: left out of the identity, so
# adding the option kept every existing study's name and identity (`data.test_fraction` 0: no
# test split, the same training and validation data).
NEUTRAL = {("data", "test_fraction"): 0.0}


def experiment_identity(cfg: DictConfig) -> dict[str, Any]:
    """The config's `experiment_keys` with their resolved values: what makes two trials comparable.
    Two experiments that differ in anything but the LR and the data-order seed differ here."""
    identity = {
        key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        for key in cfg.experiment_keys
        for value in [OmegaConf.select(cfg, key)]
    }
    for (key, sub), neutral in NEUTRAL.items():
        node = identity.get(key)
        if isinstance(node, dict) and sub in node and node[sub] == neutral:
            del node[sub]
    return identity


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
    """The storage of the sweep running this job in this process (the in-process launcher: one
    engine and connection for both, `connections.py`), else this process's own."""
    from lrsweep.connections import job_storage

    return job_storage(url)


def shown_url(url: str) -> str:
    """A storage URL as printed: its password hidden."""
    from lrsweep.storage_url import hide_password

    return hide_password(url)


def existing_storage(url: str) -> optuna.storages.BaseStorage:
    """`storage(url)` for a command that only reads (refine, report, transfer's `base.study`): a
    URL that does not parse, a SQLite file that is missing, empty or not a database, and a
    database that cannot be opened (a server that does not answer) are each one ConfigError, and
    nothing is created: no folder, no database file."""
    import sqlalchemy

    from lrsweep.connections import relative_to
    from lrsweep.storage_url import storage_problem

    _check_existing(url, relative_to(url))
    try:
        return storage(url)
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as err:
        raise ConfigError(storage_problem(url, err)) from None


@functools.cache
def _check_existing(url: str, cwd: str | None) -> None:
    """`existing_storage`'s checks of the URL and the SQLite file, once per URL (and working
    directory `cwd`, for a relative SQLite path) and process that passed them (a SQLite file's
    check reads all of it); a ConfigError when they fail."""
    from lrsweep.storage_url import check_storage_url, sqlite_path

    try:
        check_storage_url(url)
    except ValueError as err:  # the plugin's SweepConfigError
        raise ConfigError(str(err)) from None
    path = sqlite_path(url)
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        raise ConfigError(
            f"storage {shown_url(url)!r}: no study database at {path}; sweep first "
            "(python -m src.train -m), or name the database with study.storage or paths.output_dir"
        )


def open_study(name: str, storage_url: str, identity: dict[str, Any] | None = None) -> optuna.Study:
    """Load an existing study (from `existing_storage`); a missing one is a ConfigError that lists
    the studies there are and, given the `experiment_identity` looked for, how the nearest of
    them differs from it."""
    store = existing_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=store)
    except KeyError:
        summaries = optuna.get_all_study_summaries(store)
        names = sorted(s.study_name for s in summaries)
        near = ""
        if identity is not None:
            from src.identity import describe, nearest

            recorded = {
                s.study_name: s.user_attrs["config"]
                for s in summaries
                if isinstance(s.user_attrs.get("config"), dict)
            }
            found = nearest(identity, recorded)
            if found is not None and found[1]:
                near = f"; the nearest, '{found[0]}', differs in {describe(found[1])}"
        raise ConfigError(
            f"study.name: no study '{name}' in {shown_url(storage_url)}{near}; studies there: "
            f"{names or 'none'}"
        ) from None


def create_child_study(
    name: str,
    storage_url: str,
    parent: str,
    stage: str,
    meta: dict[str, Any] | None = None,
    direction: str = "maximize",
    identity: dict[str, Any] | None = None,
) -> optuna.Study:
    """The study a later stage sweeps into, tagged with its parent and stage; reused if it exists.
    `identity` (`experiment_identity`, the parent's) is recorded when this creates the study: the
    sweeper adopts no study without one, and checks a reused one against its own."""
    store = storage(storage_url)
    try:
        store.get_study_id_from_name(name)
        created = False
    except KeyError:
        created = True
    study = optuna.create_study(
        study_name=name, storage=store, direction=direction, load_if_exists=True
    )
    if created and identity is not None:
        study.set_user_attr("config", identity)
    study.set_user_attr("parent_study", parent)
    study.set_user_attr("stage", stage)
    for key, value in (meta or {}).items():
        study.set_user_attr(key, value)
    return study


def direction_of(study: optuna.Study) -> str:
    """The study's direction, "maximize" or "minimize": what every stage, choice and table after
    it follows."""
    return study.direction.name.lower()


def metric_direction(metric: str) -> str:
    """The direction of a built-in metric: `val_acc` is maximised, `val_loss` minimised."""
    return "minimize" if metric == "val_loss" else "maximize"


# conf/train.yaml's `hydra.sweeper.direction: ${lrsweep.direction:${metric}}`.
if not OmegaConf.has_resolver("lrsweep.direction"):
    OmegaConf.register_new_resolver("lrsweep.direction", metric_direction)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (`lrsweep.frames.trials_frame`), the LR and the seed being lrsweep's
    `lr` and `seed`."""
    from lrsweep.frames import trials_frame as frame

    return frame(study, "lr", "seed")


def load_frames(
    name: str, storage_url: str, identity: dict[str, Any] | None = None
) -> dict[str, pd.DataFrame]:
    """stage -> `trials_frame` of each stage's study that exists (stage 1's must; when it is
    missing, the error compares `identity` with the studies there: `open_study`)."""
    existing = set(optuna.study.get_all_study_names(existing_storage(storage_url)))
    frames = {}
    for stage, study_name in study_names(name).items():
        if stage != "stage1" and study_name not in existing:
            continue
        study = open_study(study_name, storage_url, identity if stage == "stage1" else None)
        frames[stage] = trials_frame(study)
    return frames


def sweep_summary(study: optuna.Study, metric_name: str | None = None) -> str:
    """The per-LR table of a study and its best LR, as the sweeper prints it at the end of a sweep
    (the same `aggregate` as every other table and choice). A study swept over other keys too
    (`model.width=32,64 study.name=...`) gets one table per combination of their values, headed
    by it: the runs of one LR at two widths are not two seeds of one experiment."""
    from lrsweep.stats import aggregate, best_line, format_table

    frame = trials_frame(study)
    groups: dict[tuple, list[int]] = {}
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        other = tuple(sorted((k, v) for k, v in params.items() if k not in ("lr", "seed")))
        groups.setdefault(other, []).append(t.number)
    parts = []
    for other, numbers in groups.items():  # in the order of their first trial
        agg = aggregate(frame[frame["number"].isin(numbers)])
        table = (
            f"{format_table(agg)}\n\n{best_line(agg, metric_name or 'value', direction_of(study))}"
        )
        head = " ".join(f"{k}={v}" for k, v in other)
        parts.append(f"{head}\n{table}" if head else table)
    return "\n\n".join(parts)


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
            if optuna_tables.write_user_attrs(self._storage, self._trial_id, attrs):
                return
        except optuna.exceptions.UpdateFinishedTrialError:
            log.warning("trial %s was finished elsewhere; no more reports", self._trial_id)
            self._trial_id = None
            return
        for key, value in attrs.items():
            self._write("set_trial_user_attr", key, value)


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
    from hydra.errors import ConfigCompositionException

    from src.key_typos import typo_error
    from src.storage_guard import refuse_literal_password

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name=config_name,
                overrides=list(overrides),
                return_hydra_config=return_hydra_config,
            )
    except ConfigCompositionException as err:  # a mistyped key: the line names the close one
        typo = typo_error(err, overrides, config_name)
        if typo is None:
            raise
        raise typo from err
    check_name(str(cfg.study.name))  # it names folders: refused before anything is touched
    # The sweeps these tools start would refuse it too, but only after printing their command.
    refuse_literal_password(cfg)
    return cfg


def check_name(name: str) -> None:
    """The study-name check of every command (the sweeper's `check_study_name`: one folder name
    under outputs/), raising ConfigError."""
    from lrsweep.study_protocol import check_study_name

    try:
        check_study_name(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
