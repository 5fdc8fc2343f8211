"""What a user must be able to trust of a sweep (issue 16): a grid grown on a finished study runs
only what is missing, a study another experiment or tool made is refused, study names stay inside
outputs/, heartbeat timing that would make live sweeps fail each other is refused, and SIGTERM
leaves no trial RUNNING.

Real sweeps through the real plugin on real SQLite studies, in this process where only an exit
status and a message are checked (`src.train.run_multirun`, `src.inprocess.run_hydra_main`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY

from src import range_test
from src.inprocess import run_hydra_main
from src.train import run_multirun


def at(folder: Path) -> list[str]:
    """TINY, everything written under `folder/outputs`: an absolute storage URL, so that the
    storages this process caches by URL (`src.study.storage`) are never another test's."""
    return [*TINY, f"paths.output_dir={folder / 'outputs'}"]


def one_error_line(capsys: pytest.CaptureFixture, *needles: str) -> str:
    """The captured stderr: exactly one line `error: ...` holding every needle, no traceback."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- fault 4: one study-name check, on every command ----


@pytest.mark.parametrize("name", ["../../rt", ".", " "])
def test_range_test_refuses_an_unsafe_study_name_and_writes_nothing(
    tmp_path, monkeypatch, capsys, name
):
    workdir = tmp_path / "deep" / "work"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    status = run_hydra_main(
        range_test.main, [*TINY, f"study.name={name}"], argv0=range_test.__file__
    )
    assert status == 2
    one_error_line(capsys, "study name")
    assert list(tmp_path.rglob("*")) == [tmp_path / "deep", workdir]  # nothing written anywhere


def test_a_sweep_refuses_the_study_name_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_multirun([*TINY, "study.name=.", "sweep.points=2"]) == 2
    one_error_line(capsys, "study name '.'")
    assert list(tmp_path.iterdir()) == []


# ---- fault 9: a grace period live sweeps cannot mistake for death ----


@pytest.mark.parametrize("grace", [1, 10, 19])
def test_a_grace_period_under_twice_the_heartbeat_interval_is_refused(
    tmp_path, monkeypatch, capsys, grace
):
    monkeypatch.chdir(tmp_path)
    status = run_multirun(
        [*TINY, "study.name=g", "sweep.points=2", f"hydra.sweeper.grace_period={grace}"]
    )
    assert status == 2
    one_error_line(capsys, f"grace_period={grace}", "2x", "heartbeat_interval")
    assert not (tmp_path / "outputs" / "lrsweep.db").exists()


def test_a_grace_period_of_twice_the_heartbeat_interval_is_accepted(tmp_path):
    overrides = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]
    assert run_multirun([*at(tmp_path), "study.name=g", "sweep.points=2", *overrides]) == 0
    assert (tmp_path / "outputs" / "lrsweep.db").exists()
