"""Stage 1: real Hydra multiruns through the real `lrsweep` sweeper plugin, real SQLite studies."""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import SEQUENTIAL, TINY, run_module, start_module

from lrsweep import results, study_protocol
from lrsweep import storage as storage_module
from lrsweep.grid import point_key
from lrsweep.heartbeat import Heartbeat
from lrsweep.results import JobResult
from lrsweep.study_protocol import POINT_ATTR, TrialRow

State = optuna.trial.TrialState


_opened: list[optuna.storages.RDBStorage] = []


def load(workdir: Path, name: str) -> optuna.Study:
    """The study `name` of the sweep run in `workdir`, through a storage whose pooled
    connections are closed after the test (an open connection keeps SQLite's `-wal` file)."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{workdir}/outputs/lrsweep.db")
    _opened.append(storage)
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(autouse=True)
def _close_loaded_studies():
    yield
    while _opened:
        _opened.pop().engine.dispose()


def complete_points(study: optuna.Study) -> collections.Counter:
    return collections.Counter(
        (t.params["lr"], t.params["seed"]) for t in study.get_trials(states=(State.COMPLETE,))
    )


def sweep_args(name: str, *extra: str) -> list[str]:
    return ["-m", *TINY, f"study.name={name}", *extra]


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """One stage-1 sweep, 4 LRs x 2 seeds, shared by the tests that only read it."""
    workdir = tmp_path_factory.mktemp("sweep")
    proc = run_module(
        "src.train", *sweep_args("grid", "sweep.points=4", "sweep.seeds=[0,1]"), cwd=workdir
    )
    return workdir, proc


def test_grid_is_logspace_times_seeds_and_recorded(swept):
    workdir, proc = swept
    study = load(workdir, "grid")
    trials = study.get_trials(states=(State.COMPLETE,))
    assert len(trials) == 8 and len(study.trials) == 8
    expected = np.logspace(math.log10(1e-5), math.log10(1.0), 4)
    lrs = sorted({t.params["lr"] for t in trials})
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=0)
    assert complete_points(study) == {(lr, s): 1 for lr in lrs for s in (0, 1)}
    # The study describes itself; the trial number is not a search parameter.
    np.testing.assert_allclose(study.user_attrs["grid"]["lr"], expected, rtol=1e-12, atol=0)
    assert study.user_attrs["grid"]["seed"] == [0, 1]
    assert study.user_attrs["config"]["epochs"] == 2
    assert set(study.best_params) == {"lr", "seed"}
    for t in trials:
        assert set(t.intermediate_values) == {0, 1}  # per-epoch validation accuracy
        assert t.intermediate_values[1] == t.value
        assert t.user_attrs["diverged"] is False
        assert t.user_attrs["epochs_run"] == 2
        assert t.user_attrs["val_examples"] == 360  # digits: 20% of 1797, a score's resolution
        assert len(t.user_attrs["train_loss"]) == 2
        assert t.user_attrs["seconds"] > 0
        assert t.user_attrs["started"] < t.user_attrs["finished"]
        assert len(t.user_attrs["checkpoint"]) == 16
        assert Path(t.user_attrs["output_dir"]).name == f"trial_{t.number}"
    assert len({t.user_attrs["checkpoint"] for t in trials}) == 1  # one shared initial checkpoint
    assert len({t.user_attrs["pid"] for t in trials}) == 1  # the basic launcher: in-process
    # Progress, one line per trial, then the table, the best LR and the dashboard command.
    assert proc.stdout.count("] lr=") == 8
    assert "[8/8]" in proc.stdout and "ETA" in proc.stdout
    assert "best lr=" in proc.stdout
    assert "optuna-dashboard sqlite:///outputs/lrsweep.db" in proc.stdout


def test_rerun_adds_nothing(swept):
    workdir, _ = swept
    proc = run_module(
        "src.train", *sweep_args("grid", "sweep.points=4", "sweep.seeds=[0,1]"), cwd=workdir
    )
    assert "nothing to run" in proc.stdout
    assert len(load(workdir, "grid").trials) == 8


def test_optuna_dashboard_serves_the_study(swept):
    workdir, _ = swept
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("optuna-dashboard")),
            f"sqlite:///{workdir}/outputs/lrsweep.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        studies = None
        for _ in range(100):  # up to ~20 s for the server to come up
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                time.sleep(0.2)
        assert studies is not None, "optuna-dashboard did not answer"
        (summary,) = [s for s in studies if s["study_name"] == "grid"]
        url = f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}"
        with urllib.request.urlopen(url, timeout=5) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 8
        assert all(t["state"] == "Complete" for t in detail["trials"])
    finally:
        # SIGINT, not SIGTERM: the server exits through KeyboardInterrupt and closes its
        # database connections, leaving no `-wal` file beside the study. A server still busy
        # after 10 s (a loaded machine) is killed: no test reads this study's files after it.
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_diverging_lr_is_recorded_and_the_sweep_goes_on(workdir):
    run_module(
        "src.train",
        *sweep_args("div", "sweep.low=1e-2", "sweep.high=1e6", "sweep.points=3"),
        cwd=workdir,
    )
    trials = {t.params["lr"]: t for t in load(workdir, "div").trials}
    assert all(t.state == State.COMPLETE for t in trials.values())
    huge = trials[max(trials)]
    assert huge.user_attrs["diverged"] is True
    assert huge.value == 0.0 and math.isfinite(huge.value)
    assert huge.user_attrs["epochs_run"] <= 2
    assert trials[min(trials)].user_attrs["diverged"] is False


def test_failed_job_is_recorded_and_within_max_failure_rate_the_sweep_goes_on(workdir, train_here):
    # FailingSGD passes the pre-sweep checks but raises inside every job. In this process.
    args = sweep_args("fail", "sweep.points=2", "optimizer._target_=tests.byo_example.FailingSGD")
    proc = train_here(*args, "hydra.sweeper.max_failure_rate=1.0", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    trials = load(workdir, "fail").trials
    assert [t.state for t in trials] == [State.FAIL, State.FAIL]
    assert all("on purpose" in t.user_attrs["error"] for t in trials)
    assert proc.stderr.count("FAILED") == 2
    # With the default max_failure_rate=0 the first failure aborts, with a message, exit != 0.
    proc = train_here(*args, cwd=workdir)
    assert proc.returncode != 0 and "max_failure_rate" in proc.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.low=0", "must be a finite positive number"),
        ("sweep.low=-1", "must be a finite positive number"),
        ("sweep.low=1 sweep.high=0.1", "low must be < high"),
        ("sweep.points=1", "at least 2 points"),
        ("warmup_epochs=2", "warmup_epochs"),
        ("model=mlp_mup optimizer=adam", "muP needs a muP model"),
    ],
)
def test_bad_sweep_input_is_one_line_and_touches_no_study(workdir, override, message, train_here):
    proc = train_here(*sweep_args("bad", *override.split()), cwd=workdir)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (workdir / "outputs" / "lrsweep.db").exists()


def test_study_of_another_experiment_is_refused(swept, train_here):
    workdir, _ = swept
    proc = train_here(*sweep_args("grid", "sweep.points=4", "epochs=3"), cwd=workdir)
    assert proc.returncode == 2 and "holds another experiment" in proc.stderr
    assert len(load(workdir, "grid").trials) == 8


def test_n_trials_caps_a_run_and_the_next_run_finishes_the_grid(workdir):
    args = sweep_args("capped", "sweep.points=3")
    run_module("src.train", *args, "hydra.sweeper.n_trials=2", cwd=workdir)
    assert len(load(workdir, "capped").get_trials(states=(State.COMPLETE,))) == 2
    run_module("src.train", *args, cwd=workdir)
    study = load(workdir, "capped")
    assert len(study.trials) == 3 and list(complete_points(study).values()) == [1] * 3


def test_command_line_values_replace_the_configured_axes(workdir):
    run_module("src.train", *sweep_args("pinned", "lr=0.05", "seed=3,4"), cwd=workdir)
    study = load(workdir, "pinned")
    assert sorted(complete_points(study)) == [(0.05, 3), (0.05, 4)]


SLOW = ["epochs=40", "batch_size=8"]  # about 1 s per trial: time to kill the sweep mid-way


def test_sigkill_then_rerun_runs_every_point_exactly_once(workdir):
    args = [
        *sweep_args("killed", "sweep.points=5", *SLOW, SEQUENTIAL),
        "hydra.sweeper.heartbeat_interval=1",
    ]
    sweep = start_module("src.train", *args, cwd=workdir, stderr=subprocess.STDOUT)
    finished = 0
    while finished < 2:
        line = sweep.stdout.readline()
        assert line, "the sweep ended before it could be killed"
        finished += line.startswith("[") and "] lr=" in line
    # Kill it while a trial is in flight, so that the study holds an orphan.
    deadline = time.monotonic() + 30
    while not load(workdir, "killed").get_trials(states=(State.RUNNING,)):
        assert time.monotonic() < deadline, "no trial started after the second one"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    study = load(workdir, "killed")
    assert len(study.get_trials(states=(State.COMPLETE,))) >= 2
    assert len(study.get_trials(states=(State.RUNNING,))) == 1  # the orphan

    # The rerun fails the orphan once its heartbeat is older than the grace period (waiting for
    # that if it starts sooner) and runs its point again.
    run_module("src.train", *args, cwd=workdir)
    study = load(workdir, "killed")
    assert list(complete_points(study).values()) == [1] * 5
    assert len(study.get_trials(states=(State.RUNNING, State.WAITING))) == 0
    assert len(study.get_trials(states=(State.FAIL,))) == 1  # the orphan, failed as stale


def test_ctrl_c_fails_the_trial_in_flight_and_a_rerun_resumes(workdir):
    args = sweep_args("interrupted", "sweep.points=3", *SLOW)
    # SIGINT may be ignored by a CI shell and would be inherited: give the sweep the default.
    sweep = start_module(
        "src.train",
        *args,
        cwd=workdir,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    # Open the database only once the sweep has (its header line): creating the schema from
    # two processes at once races.
    header = sweep.stdout.readline()
    assert header.startswith("[lrsweep] study 'interrupted'"), header
    deadline = time.monotonic() + 60
    while not load(workdir, "interrupted").get_trials(states=(State.RUNNING,)):
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGINT)
    _, stderr = sweep.communicate(timeout=60)
    assert sweep.returncode == 130 and "run the same command again to resume" in stderr, stderr
    study = load(workdir, "interrupted")
    assert not study.get_trials(states=(State.RUNNING,))  # no orphan waits for a grace period
    run_module("src.train", *args, cwd=workdir)
    assert list(complete_points(load(workdir, "interrupted")).values()) == [1] * 3


def overlapping_pairs(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[int, int]]:
    """Pairs of trials whose jobs ran at the same time (their [started, finished] overlap)."""
    return [
        (a.number, b.number)
        for i, a in enumerate(trials)
        for b in trials[i + 1 :]
        if a.user_attrs["started"] < b.user_attrs["finished"]
        and b.user_attrs["started"] < a.user_attrs["finished"]
    ]


MEDIUM = ["epochs=6", "batch_size=16"]  # about 0.3 s per trial: long enough to overlap


def test_two_sweeps_on_one_study_run_each_point_once(workdir):
    args = ["-m", *TINY, *MEDIUM, SEQUENTIAL, "study.name=shared", "sweep.points=6"]
    args.append("sweep.seeds=[0,1]")
    procs = [start_module("src.train", *args, cwd=workdir) for _ in range(2)]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = load(workdir, "shared")
    counts = complete_points(study)
    assert len(counts) == 12 and set(counts.values()) == {1}
    # Both sweeps did work: each ran some of the points, in its own process.
    done_by = collections.Counter(
        t.user_attrs["pid"] for t in study.get_trials(states=(State.COMPLETE,))
    )
    assert set(done_by) == {p.pid for p in procs}, done_by
    for proc, (stdout, _) in zip(procs, outputs, strict=True):
        assert stdout.count("] lr=") == done_by[proc.pid]  # one progress line per trial it ran


def test_joblib_launcher_two_workers(workdir):
    sweep = start_module(
        "src.train",
        *sweep_args("joblib", *MEDIUM, "sweep.points=3", "sweep.seeds=[0,1]"),
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",  # the sweeper's batches follow: 2 trials at a time
        cwd=workdir,
    )
    output = sweep.communicate(timeout=240)
    assert sweep.returncode == 0, output
    study = load(workdir, "joblib")
    assert len(study.trials) == 6
    assert all(t.state == State.COMPLETE for t in study.trials)
    assert set(complete_points(study).values()) == {1}
    # Two worker processes, neither of them the sweep's, and trials that really ran at once.
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2 and sweep.pid not in pids
    pairs = overlapping_pairs(study.trials)
    assert pairs, [(t.user_attrs["started"], t.user_attrs["finished"]) for t in study.trials]
    by_number = {t.number: t.user_attrs["pid"] for t in study.trials}
    assert all(by_number[a] != by_number[b] for a, b in pairs)  # one worker runs one at a time
    # Jobs running at once have distinct worker slots (one lane each), hence distinct GPUs under
    # device=auto (tests/test_devices.py).
    slots = {}
    for t in study.trials:
        overrides = (Path(t.user_attrs["output_dir"]) / ".hydra" / "overrides.yaml").read_text()
        (slot,) = [line.split("=")[1] for line in overrides.splitlines() if "worker_slot=" in line]
        slots[t.number] = int(slot)
    assert set(slots.values()) == {0, 1}
    assert all(slots[a] != slots[b] for a, b in pairs)  # jobs running at once: distinct slots
    # No lane took its sibling's just-claimed trial for one running elsewhere (it then slept
    # poll_interval: seen in 1 of 3 runs of 24 points before the lanes' rounds were serialised).
    assert "running elsewhere" not in output[0], output[0]


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        (None, "job returned None, not a number"),
        ("oops", "job returned 'oops', not a number"),
        (True, "job returned True, not a number"),
        ({"loss": 0.1}, "job returned a mapping without the metric 'val_loss'"),
    ],
)
def test_a_missing_value_fails_the_trial_not_the_sweep(tmp_path, returned, error):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="t")
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name("t"), trial.number
    )
    told = results.tell(study, storage, trial.number, trial_id, JobResult(returned), "val_loss")
    assert told.error.startswith(error)
    (frozen,) = study.trials
    assert frozen.state == State.FAIL
    assert frozen.user_attrs["error"].startswith(error)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
@pytest.mark.parametrize("returned", [math.nan, math.inf, -math.inf, {"val_loss": math.nan}])
def test_a_non_finite_value_is_a_diverged_trial_with_the_worst_value(tmp_path, returned, direction):
    """A training that blew up (NaN loss) is a result: COMPLETE, `diverged`, and the worst value
    of the direction, so that its LR ranks last and the sweep goes on."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="t", direction=direction)
    trial = study.ask()
    told = results.tell(
        study, storage, trial.number, trial._trial_id, JobResult(returned), "val_loss", direction
    )
    worst = -math.inf if direction == "maximize" else math.inf
    assert (told.error, told.diverged, told.value) == (None, True, worst)
    (frozen,) = study.trials
    assert (frozen.state, frozen.value, frozen.user_attrs["diverged"]) == (
        State.COMPLETE,
        worst,
        True,
    )


def test_a_mapping_return_gives_its_metric(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="t")
    trial = study.ask()
    told = results.tell(
        study, storage, 0, trial._trial_id, JobResult({"acc": 0.9, "loss": 0.3}), "acc"
    )
    assert (told.value, study.trials[0].value) == (0.9, 0.9)


def test_claim_gives_way_to_an_older_trial_of_the_same_point(tmp_path):
    """Two machines that each enqueued the same point (no shared file lock): a claim that finds an
    older live or finished trial of its point is dropped, so the point runs once."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=60)
    study = optuna.create_study(storage=storage, study_name="race")
    study_id = storage.get_study_id_from_name("race")
    params = {"lr": 0.1, "seed": 0}
    grid = {point_key(params): params}
    for _ in range(3):  # three machines saw the point uncovered and enqueued it
        study.enqueue_trial(params, user_attrs={POINT_ATTR: point_key(params)})
    with Heartbeat(storage, 60) as heartbeat:
        first = study_protocol.claim(study, storage, study_id, grid, 1, heartbeat)  # machine A
        second = study_protocol.claim(
            study, storage, study_id, grid, 2, heartbeat
        )  # machine B, later
    assert [number for number, _, _ in first] == [0]
    assert second == []
    trials = study.get_trials()
    assert trials[0].state == State.RUNNING
    assert [(t.state, t.user_attrs["duplicate_of"]) for t in trials[1:]] == [(State.FAIL, 0)] * 2


def test_a_sqlite_study_is_written_in_wal_mode_with_normal_sync(workdir):
    """The sweep's database is in write-ahead-log mode (stored in the file: every later reader
    and writer uses it), lrsweep's connections commit with synchronous=NORMAL (1), and no log is
    left beside the file once the sweep has exited."""
    import sqlite3

    # A study of its own: no other test's reader (or dashboard) holds a connection to it.
    run_module("src.train", *sweep_args("wal", "sweep.points=2"), cwd=workdir)
    db = workdir / "outputs" / "lrsweep.db"
    # The sweep closed its connections at exit: the log is folded into the file, which alone
    # holds the whole study (it can be copied as it is).
    assert not db.with_name("lrsweep.db-wal").exists()
    plain = sqlite3.connect(db)
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert plain.execute("PRAGMA synchronous").fetchone()[0] == 2  # sqlite's own default
    finally:
        plain.close()
    storage = storage_module.open_storage(f"sqlite:///{db}")
    try:
        with storage.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1
    finally:
        storage.engine.dispose()
    # Any Optuna client still reads the whole study.
    assert len(load(workdir, "wal").trials) == 2


def test_a_file_that_is_no_database_is_left_alone_by_the_connection(tmp_path):
    """Switching to WAL must not write into a file that is not a database: its bytes stay."""
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database, but somebody's notes\n" * 10)
    before = path.read_bytes()
    with pytest.raises(Exception, match="not a database"):
        storage_module.open_storage(f"sqlite:///{path}")
    assert path.read_bytes() == before
    assert not (tmp_path / "notes.db-wal").exists()


def test_older_twin_reads_the_same_answer_by_query_as_from_the_trials(tmp_path):
    """The claim's duplicate check: one SQL query on an RDBStorage, `get_trials` elsewhere; both
    name the oldest other trial of the point that is COMPLETE, or alive and older."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="twins")
    study_id = storage.get_study_id_from_name("twins")
    keys = [point_key({"lr": lr, "seed": 0}) for lr in (0.1, 0.2, 0.3)]
    # trial: 0 (a, FAIL), 1 (a, WAITING), 2 (a, RUNNING), 3 (b, COMPLETE), 4 (b, RUNNING),
    # 5 (c, RUNNING)
    layout = [(0, State.FAIL), (0, State.WAITING), (0, State.RUNNING), (1, State.COMPLETE)]
    layout += [(1, State.RUNNING), (2, State.RUNNING)]
    for point, state in layout:
        frozen = optuna.trial.create_trial(
            state=state,
            value=0.5 if state == State.COMPLETE else None,
            user_attrs={POINT_ATTR: keys[point]},
        )
        study.add_trial(frozen) if state.is_finished() else storage.create_new_trial(
            study_id, template_trial=frozen
        )
    expected = {  # (number, point) -> twin
        (0, 0): None,  # (never asked for a FAIL trial) the alive ones are all younger
        (1, 0): None,  # the oldest alive trial of its point keeps it: an older FAIL is no twin
        (2, 0): 1,
        (3, 1): None,  # a COMPLETE trial is nobody's duplicate
        (4, 1): 3,  # a finished trial of the point, whatever its number
        (5, 2): None,
    }
    for (number, point), twin in expected.items():
        by_query = study_protocol.older_twin(study, storage, study_id, number, keys[point])
        by_trials = study_protocol.older_twin(study, None, study_id, number, keys[point])
        assert by_query == by_trials == twin, (number, by_query, by_trials)


def test_stale_trials_are_looked_for_at_most_once_per_interval(tmp_path):
    """The sweeper's rounds take milliseconds; the stale check runs once per `every` seconds."""
    storage = optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1
    )
    study = optuna.create_study(storage=storage, study_name="stale")
    study_id = storage.get_study_id_from_name("stale")
    key = point_key({"lr": 0.1, "seed": 0})
    stale = study_protocol.StaleTrials(storage, study_id, grace_period=0.0, every=0.5)
    assert stale.fail(study) == []  # the first look: nothing there yet
    storage.create_new_trial(
        study_id,
        template_trial=optuna.trial.create_trial(state=State.RUNNING, user_attrs={POINT_ATTR: key}),
    )  # RUNNING without a heartbeat: failed at the first look after the grace period (0 s)
    assert stale.fail(study) == []  # within 0.5 s of the last look: not looked at
    assert study.trials[0].state == State.RUNNING
    time.sleep(0.6)
    assert stale.fail(study) == [study.trials[0]._trial_id]
    assert study.get_trials()[0].state == State.FAIL


def test_done_points_are_grid_points_with_a_complete_trial():
    grid = {point_key({"lr": lr, "seed": 0}): {"lr": lr, "seed": 0} for lr in (0.1, 0.2, 0.3)}
    keys = list(grid)
    rows = [
        TrialRow(0, "COMPLETE", keys[0]),
        TrialRow(1, "COMPLETE", keys[0]),  # a twin
        TrialRow(2, "COMPLETE", keys[1]),
        TrialRow(3, "COMPLETE", point_key({"lr": 9.0, "seed": 0})),  # another grid
        TrialRow(4, "FAIL", keys[2]),
        TrialRow(5, "COMPLETE", None),  # not queued by a sweep
    ]
    assert study_protocol.done_points(rows, grid) == {keys[0], keys[1]}


def test_telling_a_trial_finished_elsewhere_records_nothing_and_says_so(tmp_path):
    """A trial failed behind the sweeper's back (stale, by another sweep) keeps its state; the
    outcome says it was not recorded, so this run does not count its point as done."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="t")
    trial = study.ask()
    study.tell(trial, state=State.FAIL)
    told = results.tell(study, storage, trial.number, trial._trial_id, JobResult(0.75))
    assert (told.value, told.error, told.recorded) == (0.75, None, False)
    assert study.trials[0].state == State.FAIL


@pytest.fixture(params=["sqlite", "in-memory", "postgres"])
def any_storage(request, tmp_path):
    """(storage, a fresh study name): SQLite, Optuna's in-memory storage (the fallback paths)
    and, when LRSWEEP_TEST_POSTGRES_URL names a server (always under CI), PostgreSQL."""
    name = f"s-{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        yield optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db"), name
        return
    if request.param == "in-memory":
        yield optuna.storages.InMemoryStorage(), name
        return
    url = os.environ.get("LRSWEEP_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide a PostgreSQL server in LRSWEEP_TEST_POSTGRES_URL")
        pytest.skip("no PostgreSQL server: set LRSWEEP_TEST_POSTGRES_URL")
    storage = optuna.storages.RDBStorage(url)
    yield storage, name
    optuna.delete_study(study_name=name, storage=storage)
    storage.engine.dispose()


@pytest.mark.parametrize("max_watched", [100, 1], ids=["named", "from-the-oldest"])
def test_trial_index_reads_what_changed_and_sees_every_trial(any_storage, max_watched):
    """Each read returns every trial's (number, state, point), as a whole read would, though it
    fetches only new trials and those unfinished at the last read (named in the query, or past
    `MAX_WATCHED` of them, all from the oldest on)."""
    storage, name = any_storage
    study = optuna.create_study(storage=storage, study_name=name)
    index = study_protocol.TrialIndex(study, storage, storage.get_study_id_from_name(name))
    index.MAX_WATCHED = max_watched

    def whole() -> list[TrialRow]:
        return [
            TrialRow(t.number, t.state.name, t.user_attrs.get(POINT_ATTR))
            for t in study.get_trials()
        ]

    assert index.rows() == []
    study.enqueue_trial({"lr": 0.1}, user_attrs={POINT_ATTR: "a"})
    study.enqueue_trial({"lr": 0.2}, user_attrs={POINT_ATTR: "b"})
    assert index.rows() == whole() == [TrialRow(0, "WAITING", "a"), TrialRow(1, "WAITING", "b")]
    first = study.ask()  # trial 0: WAITING -> RUNNING
    assert index.rows() == whole()
    study.tell(first, 0.5)
    other = study.ask()  # trial 1
    study.tell(other, state=optuna.trial.TrialState.FAIL)
    study.ask()  # trial 2: not a grid trial, RUNNING
    rows = index.rows()
    assert rows == whole()
    assert rows == [
        TrialRow(0, "COMPLETE", "a"),
        TrialRow(1, "FAIL", "b"),
        TrialRow(2, "RUNNING", None),
    ]
    study.enqueue_trial({"lr": 0.3}, user_attrs={POINT_ATTR: "c"})  # behind a RUNNING one
    assert index.rows() == whole() == [*rows, TrialRow(3, "WAITING", "c")]


def test_trial_user_attrs_reads_the_named_attrs_of_one_trial(any_storage):
    """The progress line's read: the named attributes the trial has, with their JSON values
    (one query on an RDBStorage, `get_trial` elsewhere)."""
    storage, name = any_storage
    study = optuna.create_study(storage=storage, study_name=name)
    first, second = study.ask(), study.ask()
    first.set_user_attr("seconds", 1.25)
    first.set_user_attr("diverged", True)
    first.set_user_attr("other", [1, 2])
    second.set_user_attr("seconds", 9.0)
    got = study_protocol.trial_user_attrs(storage, first._trial_id, ("seconds", "diverged", "pid"))
    assert got == {"seconds": 1.25, "diverged": True}


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,relatime 0 0
/dev/vdb /home/me/scratch ext4 rw 0 0
//nas/share /mnt/my\\040share cifs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/me/runs/outputs", "nfs4"),
        ("/home/me/scratch/outputs", "ext4"),  # the longest mount point above the path wins
        ("/home", "nfs4"),
        ("/homeless/outputs", "ext4"),  # a prefix of the name is not a mount point above it
        ("/mnt/my share/outputs", "cifs"),  # /proc/self/mounts writes a space as \040
        ("/work/outputs", "ext4"),
    ],
)
def test_filesystem_type_is_that_of_the_longest_mount_point_above(path, kind):
    assert storage_module.filesystem_type(path, MOUNTS) == kind


def test_sqlite_on_a_network_file_system_keeps_sqlite_defaults(tmp_path):
    """WAL needs shared memory on one machine: NFS, SMB, Lustre, ... keep the rollback journal;
    a local folder (this test's) gets the WAL connection."""
    assert {"nfs4", "cifs", "lustre", "gpfs"} <= storage_module.NETWORK_FILESYSTEMS
    assert (
        storage_module.filesystem_type("/home/me/x", MOUNTS) in storage_module.NETWORK_FILESYSTEMS
    )
    assert storage_module.wal_suits(tmp_path / "lrsweep.db")
    local = storage_module.engine_kwargs(f"sqlite:///{tmp_path}/lrsweep.db")
    assert local["connect_args"]["factory"] is storage_module._SQLiteConnection
    # A server: no SQLite connection factory, only the pool's size (lrsweep.connections).
    assert "connect_args" not in storage_module.engine_kwargs("postgresql+psycopg2://u@h/db")


def test_the_progress_line_says_a_trial_was_stopped_at_chance(capsys) -> None:
    from lrsweep import console

    attrs = {"seconds": 0.5, "diverged": False, "stopped_at_chance": True, "epochs_run": 2}
    attrs["fused_arms"] = 1  # trained alone
    assert set(attrs) == set(console.PROGRESS_ATTRS)  # the sweeper reads what the line shows
    console.progress(0.1, attrs, {"lr": 1e-6}, 1, 10, 9, 1, 0.5, "val_acc")
    assert "val_acc=0.1000 STOPPED at chance after epoch 2 0.5s ETA" in capsys.readouterr().out


def test_the_progress_line_of_a_fused_arm_shows_its_share_and_no_eta_for_ended_jobs(capsys):
    from lrsweep import console

    # The 10th of 10 arms trained together: its share of the batch's 0.4 s, and the 9 other arms
    # of the batch have ended too (the runner passes remaining=0): nothing is left to wait for.
    attrs = {"seconds": 0.04, "fused_arms": 10}
    console.progress(0.9, attrs, {"lr": 0.02}, 1, 10, 0, 10, 0.4, "val_acc")
    assert capsys.readouterr().out.endswith("0.04s (1/10 of a fused batch) ETA 0s\n")
    # A share of minutes (a large model's batch) in seconds, as a trial's own time is shown.
    console.progress(
        0.9, {"seconds": 123.4, "fused_arms": 10}, {"lr": 0.02}, 1, 10, 0, 10, 1e3, "a"
    )
    assert capsys.readouterr().out.endswith(" 123.4s (1/10 of a fused batch) ETA 0s\n")


def test_the_generic_end_table_counts_trials_stopped_at_chance(capsys) -> None:
    from lrsweep import console
    from lrsweep.grid import Axis

    def done(point: str, value: float, **attrs) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=value, user_attrs={"point": point, **attrs})

    trials = [
        done("a", 0.1, stopped_at_chance=True, diverged=False),
        done("b", 0.9, stopped_at_chance=False, diverged=False),
    ]
    grid = {"a": {"lr": 1e-6}, "b": {"lr": 0.1}}
    console.summary(trials, [Axis("lr", [1e-6, 0.1])], grid, "point", "acc", "maximize", "url")
    lines = capsys.readouterr().out.splitlines()
    header = next(line.split() for line in lines if line.strip().startswith("lr"))
    assert header[-3:] == ["diverged", "stopped", "seconds"]
    row = next(line.split() for line in lines if line.strip().startswith("1.000e-06"))
    assert row[4:6] == ["0", "1"]  # diverged 0, stopped 1


def test_the_generic_end_table_is_one_table_per_value_of_another_swept_key(capsys) -> None:
    """A sweep over a model size too: one table per size, each LR's row pooling its seeds' runs
    at that size only, never the two sizes' runs as if they were seeds."""
    from lrsweep import console
    from lrsweep.grid import Axis, build_grid

    axes = [Axis("lr", [0.01, 0.1]), Axis("seed", [0, 1]), Axis("size", [1, 2])]
    grid = build_grid(axes)
    trials = [
        optuna.trial.create_trial(
            value=0.9 if p["size"] == 1 else 0.1 + p["lr"], user_attrs={"point": key}
        )
        for key, p in grid.items()
    ]
    console.summary(trials, axes, grid, "point", "acc", "maximize", "url", pooled=["seed"])
    out = capsys.readouterr().out
    assert "\nsize=1\n" in out and "\nsize=2\n" in out
    assert out.index("size=1") < out.index("best lr=0.01: acc 0.9000 ± 0.0000 over 2 run(s)")
    assert "best lr=0.1: acc 0.2000 ± 0.0000 over 2 run(s)" in out.split("size=2")[1]
