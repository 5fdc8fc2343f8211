"""The sweeper's grid axes other than the LR (choice, range, lists, plain values) and the samplers
it accepts: the grammar alone, then real sweeps through the real plugin, in this process."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import TINY

from hydra_plugins.lrsweep_sweeper.grid import build_axes
from lrsweep.grid import build_grid, point_key

State = optuna.trial.TrialState


def test_choice_range_list_and_plain_values_make_axes_and_their_product():
    params = {"seed": [0, 1], "lr": "tag(log, interval(1e-3, 1e-1))"}
    arguments = ["model.width=choice(16,32)", "batch_size=range(32,97,32)", "epochs=2"]
    axes, fixed = build_axes(params, arguments, points=3)
    by_name = {axis.name: axis.values for axis in axes}
    assert by_name == {
        "seed": [0, 1],  # a list in the sweeper's params
        "lr": pytest.approx([1e-3, 1e-2, 1e-1], rel=1e-12),  # an interval: `points` values
        "model.width": [16, 32],  # choice
        "batch_size": [32, 64, 96],  # range: end excluded, as Python's
    }
    assert fixed == ["epochs=2"]  # a plain value is passed to every job, not an axis
    grid = build_grid(axes)
    assert len(grid) == 2 * 3 * 2 * 3
    assert all(point_key(params) == key for key, params in grid.items())
    # The command line replaces a configured axis; a plain value pins it to one point.
    axes, _ = build_axes(params, ["seed=5", "lr=choice(0.1,0.2)"], points=3)
    assert {axis.name: axis.values for axis in axes} == {"seed": [5], "lr": [0.1, 0.2]}


def test_an_empty_or_repeated_axis_is_refused():
    with pytest.raises(ValueError, match="seed: empty list"):
        build_axes({"seed": []}, [], points=2)
    with pytest.raises(ValueError, match="repeated values"):
        build_axes({}, ["seed=choice(1,1)"], points=2)


def test_a_sweep_over_choice_and_range_axes_runs_every_point_once(workdir, train_here):
    proc = train_here(
        "-m", *TINY, "study.name=axes", "lr=0.05", "model.width=choice(8,16)",
        "batch_size=range(32,97,64)", cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="axes", storage=f"sqlite:///{workdir}/outputs/lrsweep.db")
    points = sorted(
        (t.params["model.width"], t.params["batch_size"])
        for t in study.get_trials(states=(State.COMPLETE,))
    )
    assert points == [(8, 32), (8, 96), (16, 32), (16, 96)]
    assert len(study.trials) == 4
    assert {t.params["lr"] for t in study.trials} == {0.05}
    # Each job trained at its own point: its recorded config says so.
    for trial in study.trials:
        job = Path(trial.user_attrs["output_dir"]) / ".hydra" / "config.yaml"
        text = job.read_text()
        assert f"width: {trial.params['model.width']}" in text
        assert f"batch_size: {trial.params['batch_size']}" in text
    # The end-of-sweep summary: a table per combination of the other axes, not one per LR that
    # would pool two widths' runs as if they were seeds.
    for width in (8, 16):
        for size in (32, 96):
            assert f"batch_size={size} model.width={width}\n  lr " in proc.stdout
    assert proc.stdout.count("over 1 run(s)") == 4


@pytest.mark.parametrize("sampler", ["optuna.samplers.TPESampler", "optuna.samplers.RandomSampler"])
def test_an_adaptive_sampler_is_refused_in_one_line(workdir, train_here, sampler):
    proc = train_here(
        "-m", *TINY, "study.name=sampled", "sweep.points=2",
        f"+hydra.sweeper.sampler._target_={sampler}", cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert sampler in lines[0] and "runs a grid exactly once" in lines[0]
    assert not (workdir / "outputs").exists()  # refused before the study is touched


def test_the_grid_sampler_is_accepted(workdir, train_here):
    proc = train_here(
        "-m", *TINY, "study.name=gridsampler", "sweep.points=2",
        "+hydra.sweeper.sampler._target_=optuna.samplers.GridSampler", cwd=workdir,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(
        study_name="gridsampler", storage=f"sqlite:///{workdir}/outputs/lrsweep.db"
    )
    assert len(study.get_trials(states=(State.COMPLETE,))) == 2
