"""Bad input the user can give the app and its commands: each is one line `error: ...`, exit status
2, before any training and before the study is touched. Checked in-process where only a message
is at stake; `run_multirun` gives the exit status `python -m src.train -m` would have."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY, run_module, two_stage_main
from torch import nn

from src.checks import check_importable, check_model, check_writable
from src.data import Splits, as_splits
from src.errors import ConfigError
from src.inprocess import run_hydra_main
from src.key_typos import check_override_keys
from src.study import compose_config
from src.train import check_config, load_data, run_multirun


def raising_data() -> dict:
    """A data builder that fails the way a user's own does."""
    raise RuntimeError("the bucket is unreachable")


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The only line on stderr, which must start with `error: `."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def sweep_args(tmp_path: Path, *overrides: str) -> list[str]:
    return [*TINY, f"paths.output_dir={tmp_path}", "sweep.points=2", *overrides]


# --- item 6: a data builder that fails, under -m ---------------------------------------------


def test_a_raising_data_target_under_multirun_is_one_line_and_status_2(tmp_path, capsys):
    target = f"+data._target_={__name__}.raising_data"
    assert run_multirun(sweep_args(tmp_path, "~data", target)) == 2
    line = one_error_line(capsys)
    assert "the bucket is unreachable" in line and "raising_data" in line
    assert not (tmp_path / "lrsweep.db").exists()


def test_mnist_without_its_files_under_multirun_is_one_line_and_status_2(tmp_path, capsys):
    assert run_multirun(sweep_args(tmp_path, "data=mnist", f"data.root={tmp_path}/none")) == 2
    assert "MNIST files not found" in one_error_line(capsys)
    assert not (tmp_path / "lrsweep.db").exists()


def test_a_broken_import_in_the_users_module_shows_the_real_error(tmp_path, monkeypatch):
    (tmp_path / "my_broken_data.py").write_text(
        "import no_such_package_xyz\n\ndef make():\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config([*TINY, "data._target_=my_broken_data.make"])
    with pytest.raises(ConfigError, match="No module named 'no_such_package_xyz'") as err:
        check_config(cfg)
    assert "pick one of" not in str(err.value)
    assert isinstance(err.value.__cause__, ModuleNotFoundError)  # HYDRA_FULL_ERROR=1 shows it


def test_a_target_that_does_not_exist_still_lists_the_configs():
    for target in ("src.data.no_such_builder", "no_such_module.make"):
        with pytest.raises(ConfigError, match="pick one of conf/data"):
            check_importable("data", target)


def test_forgetting_tilde_data_gets_the_hint():
    cfg = compose_config([*TINY, "data._target_=tests.byo_example.make_data"])
    with pytest.raises(ConfigError, match="unexpected keyword argument") as err:
        load_data(cfg)
    assert "'~data' +data._target_=tests.byo_example.make_data" in str(err.value)


# --- item 7: data and models that cannot train ------------------------------------------------


def pair(n: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 5), torch.arange(n) % classes


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"train": pair(0), "val": pair(4)}, "split 'train' is empty"),
        ({"train": pair(8), "val": pair(0)}, "split 'val' is empty"),
        ({"train": (torch.randn(4, 5), torch.tensor([0, 1, -1, 2])), "val": pair(4)}, r"\[-1, 2\]"),
        ({"train": pair(8), "val": pair(4), "num_classes": 2}, "class ids 0..1"),
        (
            {
                "train": (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), torch.tensor([0, 1])),
                "val": (torch.zeros(2, 2), torch.tensor([0, 1])),
            },
            "NaN or infinite inputs in 1 of 2 examples",
        ),
    ],
    ids=["empty-train", "empty-val", "negative-label", "label-over-classes", "nan-input"],
)
def test_data_that_cannot_train_is_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        as_splits(data)


def test_a_splits_object_is_checked_too():
    with pytest.raises(ConfigError, match="inf"):
        as_splits(
            Splits((torch.full((2, 5), float("inf")), torch.tensor([0, 1])), pair(2), 3, (5,))
        )


def tiny_splits(classes: int = 3) -> Splits:
    return as_splits({"train": pair(6, classes), "val": pair(6, classes), "num_classes": classes})


def test_nan_initial_weights_are_refused():
    model = nn.Linear(5, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite"):
        check_model(model, tiny_splits(), "abc")


@pytest.mark.parametrize("outputs", [4, 2])
def test_a_model_with_more_or_fewer_logits_than_classes_is_refused(outputs):
    with pytest.raises(ConfigError, match=rf"shape \({outputs},\).* 3 classes"):
        check_model(nn.Linear(5, outputs), tiny_splits(), "abc")


def test_a_fitting_model_passes_and_keeps_its_mode():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    check_model(model, tiny_splits(), "abc")
    assert model.training


# --- newcomer: epochs=1 ---------------------------------------------------------------------


def test_epochs_1_says_add_warmup_epochs_0():
    with pytest.raises(ConfigError, match="add warmup_epochs=0"):
        check_config(compose_config(["epochs=1"]))


# --- item 3: an output folder that cannot be written ------------------------------------------


def test_an_unwritable_output_dir_under_multirun_is_refused_before_the_study(tmp_path, capsys):
    db = tmp_path / "study.db"
    args = sweep_args(tmp_path, "paths.output_dir=/proc/lrsweep-x", f"study.storage=sqlite:///{db}")
    assert run_multirun(args) == 2
    assert "is not writable" in one_error_line(capsys)
    assert not db.exists()


def test_an_unwritable_output_dir_for_a_single_run_is_one_line_and_status_2(capsys):
    from src.train import main

    assert run_hydra_main(main, ["paths.output_dir=/proc/lrsweep-x"], argv0="src/train.py") == 2
    assert "hydra.run.dir='/proc/lrsweep-x/runs/" in one_error_line(capsys)


def test_check_writable_accepts_a_new_folder_under_a_writable_one_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b", "paths.output_dir")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        check_writable(tmp_path / "file" / "sub", "paths.output_dir")


def test_the_range_test_refuses_an_unwritable_reports_dir(tmp_path):
    from src.range_test import compose_range_config, run

    cfg = compose_range_config([*TINY, "paths.reports_dir=/proc/lrsweep-x"])
    with pytest.raises(ConfigError, match="paths.reports_dir='/proc/lrsweep-x/"):
        run(cfg)


def test_the_report_refuses_an_unwritable_out_folder(tmp_path, capsys):
    from src.report import main as report_main

    assert report_main([*TINY, "--out", "/proc/lrsweep-x", f"paths.output_dir={tmp_path}"]) == 2
    assert "--out='/proc/lrsweep-x' is not writable" in one_error_line(capsys)


# --- item 8: sweep settings ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sweep.points=2.5", "points=2.5 is invalid"),
        ("sweep.points=abc", "points='abc' is invalid"),
        ("sweep.high=inf", "must be a finite positive number"),
        ("sweep.low=nan", "must be a finite positive number"),
        ("study.storage=sqlite:///:memory:", "in-memory database"),
    ],
    ids=["float-points", "text-points", "inf-high", "nan-low", "memory-storage"],
)
def test_bad_sweep_settings_are_one_line_and_status_2(override, message, tmp_path, capsys):
    assert run_multirun([*sweep_args(tmp_path), override]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "lrsweep.db").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.width=32,64"], "the sweep varies model.width, and its jobs' study name follows"),
        (["init_seed=${seed}", "sweep.seeds=[0,1]"], "the sweep varies seed, and its jobs' study"),
    ],
    ids=["width", "init-seed-follows-seed"],
)
def test_a_sweep_whose_jobs_study_name_follows_a_swept_key_is_refused_before_the_study(
    overrides, message, tmp_path, capsys
):
    """The default study name hashes the experiment's identity: a swept key in it would send each
    job's trial to a study that does not exist. One line names the key and the ways out."""
    assert run_multirun([*sweep_args(tmp_path), *overrides]) == 2
    line = one_error_line(capsys)
    assert message in line and "study.name=" in line
    assert not (tmp_path / "lrsweep.db").exists()


def test_a_one_value_axis_that_renames_the_study_is_told_the_override_that_runs_it(
    tmp_path, capsys
):
    """One seed per run, as the refusal of two advises: every job of `sweep.seeds=[1]` names the
    study of init_seed 1, the sweep's own config (seed 0) another. The line names the plain
    override that sets the seed for both, and with it the sweep runs."""
    own_weights = "init_seed=${seed}"
    assert run_multirun(sweep_args(tmp_path, own_weights, "sweep.seeds=[1]")) == 2
    line = one_error_line(capsys)
    assert "study.name=...), or set seed=1 on the command line" in line
    assert not (tmp_path / "lrsweep.db").exists()
    assert run_multirun(sweep_args(tmp_path, own_weights, "seed=1")) == 0


def test_search_full_on_the_builtin_trial_is_refused_before_the_study(tmp_path, capsys):
    """Its jobs record into `study.name`'s study, never into stage 2's or the confirm step's that
    the sweeper opens: one line names the script that runs the whole search."""
    assert run_multirun(sweep_args(tmp_path, "hydra.sweeper.search=full")) == 2
    assert "run the whole search with scripts/two_stage_sweep.py" in one_error_line(capsys)
    assert not (tmp_path / "lrsweep.db").exists()


def test_the_same_sweep_with_one_study_named_runs_every_point(tmp_path):
    overrides = ["model.width=32,64", "study.name=widths"]
    assert run_multirun([*sweep_args(tmp_path), *overrides]) == 0
    study = optuna.load_study(study_name="widths", storage=f"sqlite:///{tmp_path}/lrsweep.db")
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.params["model.width"], t.params["lr"]) for t in done) == sorted(
        (w, lr) for w in (32, 64) for lr in {t.params["lr"] for t in done}
    )
    assert len(done) == 4


# --- item 14: a transfer whose target LR src.train would refuse -------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["base.lr=1e300"], "base.lr=1e+300 is invalid"),
        (["base.lr=3e38", "target.batch_size=512"], "not one src.train accepts"),
    ],
    ids=["base-lr", "target-lr"],
)
def test_transfer_refuses_an_lr_src_train_would_refuse(overrides, message, capsys):
    from src.transfer import main as transfer_main

    assert transfer_main(["base.batch_size=32", *overrides]) == 2
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line] == [
        f"error: {captured.err.strip()[7:]}"
    ]
    assert message in captured.err and "target_lr=" not in captured.out


# --- item 13: the two-stage script validates first, and passes range_test.* to the range test --


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--auto-bounds", "sweep.points=1"], "at least 2 points"),
        (["--auto-bounds", "range_test.num_batches=5"], "range_test.num_batches=5 is invalid"),
        (["range_test.num_batches=20"], "range_test.* overrides need --auto-bounds"),
        (["study.storage=sqlite:///:memory:"], "in-memory database"),
    ],
    ids=["points-1", "bad-range-option", "range-option-alone", "memory-storage"],
)
def test_two_stage_refuses_bad_input_before_any_step(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert two_stage_main()([*TINY, f"paths.output_dir={out}", *args]) == 2
    assert message in one_error_line(capsys)
    assert "====" not in capsys.readouterr().out and not out.exists()


def test_two_stage_passes_range_test_options_to_the_range_test_only(tmp_path, capsys):
    args = ["--auto-bounds", "--points", "2", "--confirm-top", "1", "--confirm-seeds", "1"]
    overrides = [*TINY, f"paths.output_dir={tmp_path}", "sweep.points=2"]
    assert two_stage_main()([*args, *overrides, "range_test.num_batches=20"]) == 0
    out = capsys.readouterr().out
    assert "range_test.num_batches=20" in out.split("==== stage 1")[0]  # the range test's header
    assert "range test: 20 batches" in out  # its default is 100
    assert "range_test.num_batches" not in out.split("==== stage 1")[1]  # not the sweeps'


# --- newcomer: a mistyped key, --help -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "config_name", "suggestion"),
    [
        (["lrr=0.05"], "train", "did you mean lr=0.05?"),
        (["model=cnn", "model.channles=8"], "train", "did you mean model.channels=8?"),
        (["range_test.num_batchs=50"], "range_test", "did you mean range_test.num_batches=50?"),
    ],
    ids=["top-level", "group-option-key", "range-test-key"],
)
def test_a_mistyped_key_names_the_close_one(overrides, config_name, suggestion):
    with pytest.raises(ConfigError, match="no key") as err:
        check_override_keys(overrides, config_name)
    assert suggestion in str(err.value) and "+" + overrides[-1] in str(err.value)


def test_known_keys_pass_without_a_composition(monkeypatch):
    def composed(*args):
        raise AssertionError("composed a config for keys the YAML files hold")

    monkeypatch.setattr("src.key_typos._compose", composed)
    args = [*TINY, "-m", "data=mnist", "data.root=x", "sweep.points=3", "lr=0.1,0.2", "+foo=1"]
    check_override_keys([*args, "hydra.sweeper.n_jobs=2", "paths.output_dir=o", "model.depth=2"])


def test_the_tools_composing_a_config_name_the_close_key_too():
    with pytest.raises(ConfigError, match="did you mean epochs=3"):
        compose_config(["epoch=3"])


def test_python_m_src_train_with_a_mistyped_key_is_one_line_and_status_2(tmp_path):
    proc = run_module("src.train", "lrr=0.05", cwd=tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Could not override 'lrr': the config has no key 'lrr'; did you mean lr=0.05? "
        "(to add a new key on purpose: +lrr=0.05)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_help_describes_the_stages_and_the_main_keys(capsys):
    from src.train import main

    assert run_hydra_main(main, ["--help"], argv0="src/train.py") == 0
    out = capsys.readouterr().out
    for text in ("python -m src.train -m", "python scripts/two_stage_sweep.py", "sweep.points"):
        assert text in out
    assert "model: cnn, cnn_mup, mlp" in out  # the config groups, from Hydra
