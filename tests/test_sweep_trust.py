"""What a user must be able to trust of a sweep (issue 16): a grid grown on a finished study runs
only what is missing, a study another experiment or tool made is refused, study names stay inside
outputs/, heartbeat timing that would make live sweeps fail each other is refused, and SIGTERM
leaves no trial RUNNING.

Real sweeps through the real plugin on real SQLite studies, in this process where only an exit
status and a message are checked (`src.train.run_multirun`, `src.inprocess.run_hydra_main`)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy
from conftest import ROOT, SEQUENTIAL, TINY, run_module, start_module
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from lrsweep import optuna_tables
from lrsweep import study_sharing as sharing
from lrsweep.grid import Axis
from lrsweep.interrupts import interrupt_deferred, interrupt_noted
from lrsweep.study_protocol import POINT_ATTR, record_params
from src import range_test, refine, report, transfer
from src.inprocess import run_hydra_main
from src.train import run_multirun

State = optuna.trial.TrialState
SCRIPT = ROOT / "scripts" / "two_stage_sweep.py"


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


@pytest.mark.parametrize("module", [refine, report, transfer])
def test_every_command_taking_a_study_name_refuses_an_unsafe_one(
    tmp_path, monkeypatch, capsys, module
):
    monkeypatch.chdir(tmp_path)
    key = "base.study" if module is transfer else "study.name"
    assert module.main([f"{key}=../../x"]) == 2
    one_error_line(capsys, "study name '../../x'")
    assert list(tmp_path.iterdir()) == []


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


# ---- fault 1: a finished study takes a grown grid; a study it cannot share is refused ----


def study_of(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/outputs/lrsweep.db")


def trial_rows(study: optuna.Study) -> list[tuple[int, str, dict, float | None]]:
    """(number, state, params, value) of every trial: to assert that nothing ran again."""
    return [(t.number, t.state.name, t.params, t.value) for t in study.trials]


def each_point_once(study: optuna.Study) -> bool:
    """Every trial COMPLETE, and no grid point run twice."""
    points = [t.user_attrs[POINT_ATTR] for t in study.trials]
    return len(points) == len(set(points)) and all(t.state == State.COMPLETE for t in study.trials)


@pytest.mark.parametrize(
    "first, then, new",
    [
        (["sweep.points=3"], ["sweep.points=3", "sweep.seeds=[0,1,2]"], 6),  # more seeds
        (["sweep.points=3"], ["sweep.points=3", "sweep.seeds=[5]"], 3),  # other seeds
        (["sweep.points=3"], ["sweep.points=5"], 2),  # more points: 3 of 5 LRs are done
        (["lr=0.05,0.1"], ["sweep.points=3"], 3),  # an LR list, then the log grid
        (["sweep.points=3"], ["lr=0.05,0.1", "seed=0,1"], 4),  # the log grid, then a list
    ],
)
def test_a_grown_grid_runs_only_its_missing_points(tmp_path, first, then, new):
    args = [*at(tmp_path), "study.name=grown"]
    assert run_multirun([*args, *first]) == 0
    before = trial_rows(study_of(tmp_path, "grown"))
    assert run_multirun([*args, *then]) == 0
    study = study_of(tmp_path, "grown")
    assert trial_rows(study)[: len(before)] == before  # the finished trials are untouched
    assert len(study.trials) == len(before) + new and each_point_once(study)


def test_a_study_swept_over_other_axes_is_refused_before_a_trial_is_claimed(tmp_path, capsys):
    args = [*at(tmp_path), "study.name=axes", "sweep.points=2"]
    assert run_multirun(args) == 0
    before = trial_rows(study_of(tmp_path, "axes"))
    capsys.readouterr()
    assert run_multirun([*args, "model.width=32,16"]) == 2
    one_error_line(capsys, "study 'axes'", "['lr', 'model.width', 'seed']", "study.name=")
    assert trial_rows(study_of(tmp_path, "axes")) == before


def test_a_sweep_over_another_key_reruns_in_another_order_and_grows(tmp_path):
    """The swept width is each trial's param, not the study's identity: the same sweep in another
    order is the same study (nothing runs again), and a new width in front adds only its points."""
    args = [*at(tmp_path), "study.name=widths", "sweep.points=2"]
    assert run_multirun([*args, "model.width=32,16"]) == 0
    before = trial_rows(study_of(tmp_path, "widths"))
    assert run_multirun([*args, "model.width=16,32"]) == 0
    assert trial_rows(study_of(tmp_path, "widths")) == before
    assert run_multirun([*args, "model.width=8,16,32"]) == 0
    study = study_of(tmp_path, "widths")
    assert trial_rows(study)[: len(before)] == before
    assert len(study.trials) == len(before) + 2 and each_point_once(study)


def test_a_study_made_by_another_tool_is_not_adopted(tmp_path, capsys):
    (tmp_path / "outputs").mkdir()
    url = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    optuna.create_study(study_name="foreign", storage=url, direction="maximize")
    assert run_multirun([*at(tmp_path), "study.name=foreign", "sweep.points=2"]) == 2
    one_error_line(capsys, "study 'foreign'", "not made by an lrsweep sweep", "study.name=")
    study = study_of(tmp_path, "foreign")
    assert study.trials == [] and study.user_attrs == {}


def test_a_value_outside_a_recorded_choice_is_refused_in_one_line(tmp_path, capsys):
    """Optuna keeps one list of choices per categorical parameter in a study: a run that adds a
    choice is refused, naming the parameter, before any trial."""
    args = [*at(tmp_path), "study.name=tags", "sweep.points=2"]
    assert run_multirun([*args, "+tag=a,b"]) == 0
    before = trial_rows(study_of(tmp_path, "tags"))
    capsys.readouterr()
    assert run_multirun([*args, "+tag=a,b,c"]) == 2
    one_error_line(capsys, "recorded +tag as a choice of ['a', 'b']", '"c"', "study.name=")
    assert trial_rows(study_of(tmp_path, "tags")) == before


def test_seeds_an_earlier_lrsweep_recorded_as_a_choice_take_more_seeds(tmp_path):
    """Earlier lrsweeps recorded a seed list as a categorical of it, which Optuna extends with no
    other seed: those records become integers of the same values, and the new seeds run."""
    args = [*at(tmp_path), "study.name=old", "sweep.points=2", "sweep.seeds=[3,0]"]
    assert run_multirun(args) == 0
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/outputs/lrsweep.db")
    with engine.begin() as connection:  # as the earlier lrsweep recorded them: choice indices
        connection.execute(
            sqlalchemy.text("UPDATE trial_params SET distribution_json = :d, param_value = CASE "
                            "WHEN param_value = 3 THEN 0 ELSE 1 END WHERE param_name = 'seed'"),
            {"d": distribution_to_json(CategoricalDistribution([3, 0]))},
        )  # fmt: skip
    engine.dispose()
    before = trial_rows(study_of(tmp_path, "old"))
    assert sorted(p["seed"] for _, _, p, _ in before) == [0, 0, 3, 3]
    assert run_multirun([*args[:-1], "sweep.seeds=[0,1,2,3]"]) == 0
    study = study_of(tmp_path, "old")
    assert trial_rows(study)[:4] == before  # the same values, now as integers
    assert {t.distributions["seed"] for t in study.trials[:4]} == {IntDistribution(0, 3)}
    assert len(study.trials) == 8 and each_point_once(study)


def test_the_two_stage_search_takes_more_seeds_and_runs_only_theirs(tmp_path, monkeypatch):
    """The README's workflow: the whole search, then the same with `sweep.seeds=[0,1,2]`."""
    spec = importlib.util.spec_from_file_location("two_stage_sweep", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    args = ["--confirm-top", "1", "--confirm-seeds", "1", *at(tmp_path), "sweep.points=4"]
    assert script.main([*args, "study.name=s"]) == 0
    before = {n: trial_rows(study_of(tmp_path, n)) for n in ("s", "s-stage2")}
    assert script.main([*args, "study.name=s", "sweep.seeds=[0,1,2]"]) == 0

    stage1 = study_of(tmp_path, "s")
    assert trial_rows(stage1)[: len(before["s"])] == before["s"]
    assert {t.params["seed"] for t in stage1.trials[len(before["s"]) :]} == {1, 2}
    assert len(stage1.trials) == 12 and each_point_once(stage1)
    stage2 = study_of(tmp_path, "s-stage2")
    assert trial_rows(stage2)[: len(before["s-stage2"])] == before["s-stage2"]
    assert each_point_once(stage2)
    trials = pd.read_csv(tmp_path / "outputs" / "reports" / "s" / "trials.csv")
    seeds = trials[trials["stage"] == "stage1"].groupby("lr")["seed"].nunique()
    assert len(seeds) == 4 and (seeds == 3).all()  # the report's stage-1 means: 3 seeds each


# ---- fault 11: SIGTERM stops a sweep as Ctrl-C does ----

# About 1 s per trial, one trial at a time: time to stop the sweep mid-trial (fused, the default
# launcher trains a batch's trials in a fraction of that: tests/test_fused_launcher.py stops one).
SLOW = ["epochs=40", "batch_size=8", SEQUENTIAL]


def test_sigterm_raises_keyboard_interrupt_and_notes_the_signal():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), interrupt_noted() as noted:
        signal.raise_signal(signal.SIGTERM)
    assert noted.is_set() and noted.signum == signal.SIGTERM and noted.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_sigterm_during_a_claim_arrives_when_the_claim_is_done():
    arrived = []
    with pytest.raises(KeyboardInterrupt), interrupt_noted() as noted, interrupt_deferred():
        signal.raise_signal(signal.SIGTERM)
        arrived.append("claim registered")  # the signal is held back: this line runs
    assert arrived == ["claim registered"] and noted.signum == signal.SIGTERM


def interrupted_sweep(tmp_path, name: str, launch, n_jobs: int) -> list:
    """A sweep of 4 LRs through `launch` that a Ctrl-C stops (Interrupted); its study's trials.
    SIGINT gets Python's own handler, whatever this process inherited (a CI shell may ignore it)."""
    from lrsweep.grid import build_grid, log_axis
    from lrsweep.runner import run_sweep
    from lrsweep.sweep_spec import Interrupted, SweepSpec

    axes = [log_axis("lr", 1e-3, 1.0, 4)]
    url = f"sqlite:///{tmp_path}/{name}.db"
    spec = SweepSpec(name, url, axes, build_grid(axes), n_jobs=n_jobs)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(Interrupted):
            run_sweep(spec, launch)
    finally:
        signal.signal(signal.SIGINT, previous)
    return optuna.load_study(study_name=name, storage=url).trials


def test_a_second_ctrl_c_while_the_trials_in_flight_are_failed_leaves_none_running(
    tmp_path, monkeypatch
):
    """Ctrl-C while a batch of 4 trials runs, then Ctrl-C again as the sweep fails the first of
    them (a user pressing twice): every trial of the batch is still failed, none left RUNNING for
    a rerun to wait for."""
    from lrsweep import study_protocol

    fail_trials = study_protocol.fail_trials

    def fail_and_press_again(storage, trial_ids):
        fail_trials(storage, trial_ids[:1])
        os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, in the middle
        fail_trials(storage, trial_ids[1:])

    def launch(claimed, slot):
        os.kill(os.getpid(), signal.SIGINT)  # the first, while the batch runs
        return [None] * len(claimed)

    monkeypatch.setattr(study_protocol, "fail_trials", fail_and_press_again)
    trials = interrupted_sweep(tmp_path, "twice", launch, n_jobs=4)
    assert [t.state for t in trials] == [State.FAIL] * 4


def test_a_ctrl_c_that_a_job_swallowed_still_stops_the_sweep(tmp_path):
    """A Ctrl-C whose KeyboardInterrupt never reaches the sweep (a library caught it, or it was
    raised inside a finalizer and printed as ignored) still stops it after that job: the signal
    was noted. The points after it are never claimed."""
    from lrsweep.results import JobResult

    def launch(claimed, slot):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes, here
                time.sleep(0.001)
        except KeyboardInterrupt:
            pass  # swallowed, as some libraries do
        return [JobResult(value=0.5) for _ in claimed]

    trials = interrupted_sweep(tmp_path, "swallowed", launch, n_jobs=1)
    assert [t.state for t in trials] == [State.COMPLETE]  # told, then stopped


def test_an_in_process_sweep_gives_back_the_callers_sigterm_handler(tmp_path):
    def mine(signum, frame):
        raise AssertionError("not to be called")

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        assert run_multirun([*at(tmp_path), "study.name=h", "sweep.points=2"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_for_running_trial(proc: subprocess.Popen, folder: Path, name: str) -> None:
    """Returns once the study `name` holds a RUNNING trial (read after the sweep's header line:
    the study exists then)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"[lrsweep] study '{name}'"):
            break
    deadline = time.monotonic() + 60
    while not study_of(folder, name).get_trials(states=(State.RUNNING,)):
        assert time.monotonic() < deadline, "no trial started:\n" + "".join(seen)
        time.sleep(0.05)  # polling the study's state, the event waited for


def test_sigterm_fails_the_trial_in_flight_exits_143_and_the_rerun_does_not_wait(tmp_path):
    # A grace period far above the test's timeout: a rerun that waited for it would fail.
    args = [*TINY, "study.name=term", "sweep.points=2", *SLOW, "hydra.sweeper.grace_period=600"]
    proc = start_module("src.train", "-m", *args, SEQUENTIAL, cwd=tmp_path)
    wait_for_running_trial(proc, tmp_path, "term")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1].startswith("[lrsweep] interrupted by SIGTERM")
    study = study_of(tmp_path, "term")
    assert not study.get_trials(states=(State.RUNNING,))
    assert len(study.get_trials(states=(State.FAIL,))) == 1

    rerun = run_module("src.train", "-m", *args, cwd=tmp_path, timeout=120)
    assert "waiting for" not in rerun.stdout
    assert len(study_of(tmp_path, "term").get_trials(states=(State.COMPLETE,))) == 2


def test_two_stage_script_sigterm_stops_the_search_with_143(tmp_path):
    args = [*TINY, "study.name=term2", "sweep.points=3", *SLOW]
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_running_trial(proc, tmp_path, "term2")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stdout + stderr
    assert "==== refine" not in stdout  # the search stopped at the interrupted step
    assert not study_of(tmp_path, "term2").get_trials(states=(State.RUNNING,))


@pytest.fixture(params=["sqlite", "in-memory", "postgres"])
def a_storage(request, tmp_path):
    """(storage, a fresh study name) on SQLite, Optuna's in-memory storage (the fallback paths)
    and, when LRSWEEP_TEST_POSTGRES_URL names a server, PostgreSQL."""
    name = f"s-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        yield optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"), name
    elif request.param == "in-memory":
        yield optuna.storages.InMemoryStorage(), name
    else:
        url = os.environ.get("LRSWEEP_TEST_POSTGRES_URL")
        if not url:
            pytest.skip("no PostgreSQL server: set LRSWEEP_TEST_POSTGRES_URL")
        storage = optuna.storages.RDBStorage(url)
        yield storage, name
        optuna.delete_study(study_name=name, storage=storage)
        storage.engine.dispose()


def test_a_grown_grid_is_recorded_beside_the_studys_first_distributions(a_storage):
    storage, name = a_storage
    study = optuna.create_study(storage=storage, study_name=name)
    study_id = storage.get_study_id_from_name(name)
    first = [
        Axis("lr", [1e-3, 1e-1], log=True, interval=True),
        Axis("seed", [0]),
        Axis("opt", ["a"]),
    ]
    grown = [Axis("lr", [0.05, 0.1]), Axis("seed", [0, 1, 2]), Axis("opt", ["a"])]
    for axes in (first, grown):
        dists, conversions = sharing.run_distributions(
            name, axes, sharing.recorded_distributions(study, storage, study_id)
        )
        assert conversions == {}
        for values in itertools.product(*(axis.values for axis in axes)):
            params = {axis.name: v for axis, v in zip(axes, values, strict=True)}
            trial_id = storage.create_new_trial(study_id)
            record_params(storage, trial_id, params, dists)  # Optuna's own check: no raise
    recorded = sharing.recorded_distributions(study, storage, study_id)
    assert recorded == {
        "lr": FloatDistribution(1e-3, 1e-1, log=True),
        "seed": IntDistribution(0, 0),
        "opt": CategoricalDistribution(["a"]),
    }
    assert [t.params["seed"] for t in study.trials] == [0, 0, 0, 1, 2, 0, 1, 2]
    # ValueError: Hydra re-executes plugin modules on each run, making new SweepConfigError classes
    with pytest.raises(ValueError, match="recorded opt as a choice of"):
        sharing.run_distributions(name, [Axis("opt", ["a", "b"])], recorded)


def test_a_categorical_of_numbers_is_converted_to_the_same_integers(a_storage):
    storage, name = a_storage
    if getattr(storage, "engine", None) is None:
        pytest.skip("only an RDBStorage's records are converted")
    study = optuna.create_study(storage=storage, study_name=name)
    study_id = storage.get_study_id_from_name(name)
    old = CategoricalDistribution([2, 0])
    for seed in (2, 0):
        trial_id = storage.create_new_trial(study_id)
        storage.set_trial_param(trial_id, "seed", old.to_internal_repr(seed), old)
    recorded = sharing.recorded_distributions(study, storage, study_id)
    dists, conversions = sharing.run_distributions(
        name, [Axis("seed", [0, 1, 2])], recorded, can_convert=True
    )
    assert conversions == {"seed": IntDistribution(0, 2)} and dists == conversions
    optuna_tables.convert_params(storage.engine, study_id, conversions)
    record_params(storage, storage.create_new_trial(study_id), {"seed": 1}, dists)
    assert [t.params["seed"] for t in study.trials] == [2, 0, 1]
    assert {t.distributions["seed"] for t in study.trials} == {IntDistribution(0, 2)}
