"""src.study: study names and stages, child studies, the end-of-sweep table, and the paths config."""

from __future__ import annotations

import optuna
from study_helpers import add_trial

from src import study as study_module
from src.study import compose_config


def test_study_names_of_a_search():
    assert study_module.study_names("x") == {
        "stage1": "x",
        "stage2": "x-stage2",
        "confirm": "x-confirm",
    }


def test_create_child_study_tags_it(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study_module.create_child_study("a-stage2", url, parent="a", stage="stage2")
    study = optuna.load_study(study_name="a-stage2", storage=url)
    assert study.user_attrs == {"parent_study": "a", "stage": "stage2"}
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE


def test_default_study_name_hashes_the_experiment_identity():
    cfg = compose_config([])
    identity = study_module.experiment_identity(cfg)
    assert list(identity) == list(cfg.experiment_keys)
    assert identity["epochs"] == 5 and identity["model"]["_target_"] == "src.models.mlp"
    assert cfg.study.name == "digits-mlp-sgd-105e0757"  # unchanged since the first release
    assert compose_config(["lr=0.5", "seed=3"]).study.name == cfg.study.name
    assert compose_config(["epochs=6"]).study.name != cfg.study.name


def test_no_test_split_leaves_the_identity_and_study_name_as_they_were():
    """`data.test_fraction: 0` (the default) is left out of the identity: existing studies keep
    their names and still match; a test split is another experiment (less training data)."""
    cfg = compose_config([])
    assert cfg.data.test_fraction == 0.0
    assert "test_fraction" not in study_module.experiment_identity(cfg)["data"]
    assert compose_config(["data=mnist1d"]).study.name == "mnist1d-mlp-sgd-e0627878"
    held_out = compose_config(["data.test_fraction=0.2"])
    assert study_module.experiment_identity(held_out)["data"]["test_fraction"] == 0.2
    assert held_out.study.name != cfg.study.name


def test_every_output_path_derives_from_paths_output_dir():
    cfg = compose_config([])
    assert cfg.paths.output_dir == "outputs"
    assert cfg.study.storage == "sqlite:///outputs/lrsweep.db"
    assert cfg.checkpoint_dir == "outputs/init"
    assert compose_config(["data=mnist1d"]).data.cache_dir == "outputs/data"
    moved = compose_config(
        ["paths.output_dir=/scratch/me", "data=mnist1d"], return_hydra_config=True
    )
    assert moved.study.storage == "sqlite:////scratch/me/lrsweep.db"
    assert moved.checkpoint_dir == "/scratch/me/init"
    assert moved.data.cache_dir == "/scratch/me/data"
    assert moved.paths.reports_dir == "/scratch/me/reports"
    assert moved.hydra.sweep.dir == f"/scratch/me/sweeps/{moved.study.name}"
    assert moved.hydra.run.dir.startswith("/scratch/me/runs/")
    # The older, narrower overrides still win over the derived defaults.
    cfg = compose_config(["checkpoint_dir=/w", "study.storage=sqlite:////db/x.db"])
    assert (cfg.checkpoint_dir, cfg.study.storage) == ("/w", "sqlite:////db/x.db")


def test_sweep_summary_is_the_aggregate_table_and_the_best_lr(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    add_trial(study, 0.01, 0, 0.6)
    add_trial(study, 0.01, 1, 0.8)
    add_trial(study, 0.1, 0, 0.9)
    add_trial(study, 0.1, 1, diverged=True)  # counts as 0.0: mean 0.45
    add_trial(study, 1e-6, 0, 0.1, stopped_at_chance=True)
    text = study_module.sweep_summary(study, "val_acc")
    lines = text.splitlines()
    assert lines[0].split() == [
        "lr",
        "mean",
        "std",
        "n",
        "diverged",
        "stopped",
        "learned",
        "failed",
        "seconds",
    ]
    assert lines[1].split()[:7] == ["1e-06", "0.1000", "0.0000", "1", "0", "1", "0"]
    assert lines[2].split()[:7] == ["0.01", "0.7000", "0.1414", "2", "0", "0", "2"]
    assert lines[3].split()[:7] == ["0.1", "0.4500", "0.6364", "2", "1", "0", "1"]
    assert lines[-1] == "best lr=0.01: val_acc 0.7000 ± 0.1414 over 2 run(s)"
