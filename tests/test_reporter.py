"""A job's handle on its trial (`src.study.TrialReporter`), on real SQLite studies."""

from __future__ import annotations

from pathlib import Path

import optuna

from src.study import TrialReporter


def _running_trial(tmp_path: Path) -> tuple[str, optuna.Study, optuna.trial.Trial]:
    url = f"sqlite:///{tmp_path}/reporter.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    return url, study, study.ask()


def test_set_attrs_records_every_attribute_with_its_value(tmp_path: Path):
    url, study, trial = _running_trial(tmp_path)
    attrs = {
        "diverged": False,
        "epochs_run": 3,
        "train_loss": [2.3, 1.1, 0.7],
        "seconds": 0.25,
        "output_dir": None,
        "checkpoint": "abc123",
    }
    TrialReporter(url, "s", trial.number).set_attrs(**attrs)
    assert study.trials[trial.number].user_attrs == attrs


def test_set_attrs_on_a_trial_finished_elsewhere_writes_nothing_and_does_not_raise(tmp_path: Path):
    url, study, trial = _running_trial(tmp_path)
    reporter = TrialReporter(url, "s", trial.number)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # a later run failed the orphan
    reporter.set_attrs(diverged=False, seconds=1.0)
    reporter.report(0, 0.5)  # and the reporter stays quiet from then on
    finished = study.trials[trial.number]
    assert finished.user_attrs == {} and finished.intermediate_values == {}


def test_set_attrs_replaces_an_attribute_already_there_and_keeps_the_others(tmp_path: Path):
    """The one-statement upsert behaves as Optuna's `set_trial_user_attr`: a key written again
    takes the new value, keys not named stay."""
    url, study, trial = _running_trial(tmp_path)
    trial.set_user_attr("seconds", 99.0)
    trial.set_user_attr("grid_point", '{"lr": 0.1}')
    TrialReporter(url, "s", trial.number).set_attrs(seconds=0.5, diverged=True)
    assert study.trials[trial.number].user_attrs == {
        "seconds": 0.5,
        "diverged": True,
        "grid_point": '{"lr": 0.1}',
    }
