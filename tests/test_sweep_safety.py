"""A sweep never hangs and leaks nothing (issue 7): the claim window, unsafe names, huge grids,
broken storages, and checks that must stop a `-m` run before the study is touched.

Real sweeps through the real plugin on real SQLite studies; the PostgreSQL side is in
test_postgres.py."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from conftest import TINY, run_module

from lrsweep import results, study_protocol
from lrsweep import storage as storage_module
from lrsweep.grid import point_key
from lrsweep.heartbeat import Heartbeat
from lrsweep.interrupts import interrupt_deferred
from lrsweep.study_protocol import POINT_ATTR
from src.study import compose_config, experiment_identity

State = optuna.trial.TrialState


def db_url(workdir: Path) -> str:
    return f"sqlite:///{workdir}/outputs/lrsweep.db"


def sweep(workdir: Path, name: str, *extra: str, timeout: float = 120, check: bool = False):
    return run_module(
        "src.train", "-m", *TINY, f"study.name={name}", *extra, cwd=workdir, check=check,
        timeout=timeout,
    )  # fmt: skip


def refuse(train_here, workdir: Path, name: str, *extra: str):
    """The sweep of `sweep` run in this process (`train_here`): for the refusals, which stop
    before any trial."""
    return train_here("-m", *TINY, f"study.name={name}", *extra, cwd=workdir)


def assert_one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: to assert that nothing changed."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---- 1. the hang: a RUNNING trial with no heartbeat ----


def test_a_running_trial_without_heartbeat_is_failed_and_its_point_rerun(workdir):
    """The state a kill inside the old claim window left behind (WAITING -> RUNNING committed, no
    heartbeat recorded yet), made with Optuna's API: the rerun used to wait for it forever."""
    url = db_url(workdir)
    (workdir / "outputs").mkdir()
    study = optuna.create_study(storage=url, study_name="stuck", direction="maximize")
    # What lrsweep records first in a study it makes: a study without it is not adopted.
    study.set_user_attr("config", experiment_identity(compose_config(TINY)))
    params = {"lr": 0.05, "seed": 0}
    study.enqueue_trial(params, user_attrs={POINT_ATTR: point_key(params)})
    orphan = study.ask()  # WAITING -> RUNNING; this storage records no heartbeat
    assert orphan.number == 0
    proc = sweep(
        workdir, "stuck", "lr=0.05", "seed=0",
        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
        "hydra.sweeper.poll_interval=0.2",
        timeout=90,  # the old sweeper waits forever: this ends the test as a failure
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "waiting for 1 trial(s) running elsewhere" in proc.stdout
    trials = optuna.load_study(study_name="stuck", storage=url).trials
    assert [t.state for t in trials] == [State.FAIL, State.COMPLETE]
    assert trials[0].user_attrs["error"] == "stale: RUNNING without a heartbeat"
    assert trials[1].params == params


class InterruptingStorage(optuna.storages.RDBStorage):
    """A real SQLite storage that delivers a real Ctrl-C (SIGINT to this process) the moment a
    claim has turned a trial RUNNING, and notes whether the trial had a heartbeat by then."""

    had_heartbeat: list[bool]

    def set_trial_state_values(self, trial_id, state, values=None):
        won = super().set_trial_state_values(trial_id, state, values)
        if state == State.RUNNING:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    sqlalchemy.text("SELECT 1 FROM trial_heartbeats WHERE trial_id = :t"),
                    {"t": trial_id},
                ).all()
            self.had_heartbeat.append(bool(rows))
            os.kill(os.getpid(), signal.SIGINT)
        return won


def test_a_claimed_trial_has_a_heartbeat_and_a_ctrl_c_during_the_claim_fails_it(tmp_path):
    storage = InterruptingStorage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=60)
    storage.had_heartbeat = []
    study = optuna.create_study(storage=storage, study_name="claim")
    study_id = storage.get_study_id_from_name("claim")
    params = {"lr": 0.1, "seed": 0}
    grid = {point_key(params): params}
    study_protocol.queue_ahead(study, storage, study_id, grid, set())
    in_flight: dict[int, int] = {}
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        # What the sweeper does: the interrupt waits until the claim is registered...
        with (
            pytest.raises(KeyboardInterrupt),
            Heartbeat(storage, 60) as heartbeat,
            interrupt_deferred(),
        ):
            for number, trial_id, _ in study_protocol.claim(
                study, storage, study_id, grid, 1, heartbeat
            ):
                in_flight[number] = trial_id
    finally:
        signal.signal(signal.SIGINT, previous)
    assert storage.had_heartbeat == [True]  # RUNNING only with a heartbeat already recorded
    assert list(in_flight) == [0]
    # ...and the sweeper's handler fails what is in flight: no orphan waits for anyone.
    study_protocol.fail_trials(storage, list(in_flight.values()))
    assert [t.state for t in study.trials] == [State.FAIL]


# ---- 3. study names that would write outside outputs/ ----


@pytest.mark.parametrize("name", ["../../etc/x", "a/b", "..", "a\\b", "x" * 300])
def test_an_unsafe_study_name_is_refused_before_anything_is_touched(tmp_path, name, train_here):
    workdir = tmp_path / "deep" / "work"
    workdir.mkdir(parents=True)
    proc = refuse(train_here, workdir, name, "sweep.points=2")
    assert_one_line_error(proc, "study name")
    assert list(tmp_path.rglob("*")) == [tmp_path / "deep", workdir]  # nothing written anywhere


def test_report_refuses_an_unsafe_study_name(workdir, monkeypatch, capsys):
    from src import report

    monkeypatch.chdir(workdir)
    status = report.main(["study.name=../../x"])  # what `python -m src.report` runs
    out, err = capsys.readouterr()
    assert_one_line_error(subprocess.CompletedProcess([], status, out, err), "study name")
    assert not (workdir / "outputs").exists()


# ---- 4. grids too large to enqueue ----


def test_a_grid_above_the_maximum_is_refused_with_the_reason(workdir, train_here):
    proc = refuse(train_here, workdir, "huge", "sweep.points=100000")
    assert_one_line_error(proc, "100000 points", "at most 10000", "coarser grid")
    assert not (workdir / "outputs").exists()


def test_missing_points_are_enqueued_in_one_transaction(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="q")
    study_id = storage.get_study_id_from_name("q")
    study.enqueue_trial({"lr": 9.0, "seed": 0})  # an existing trial: numbering continues after it
    grid = {point_key(p): p for p in ({"lr": float(i), "seed": 0} for i in range(500))}
    commits = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda connection: commits.append(1))
    queued = study_protocol.enqueue_points(storage, study_id, grid)
    assert len(commits) == 1
    assert queued == [(number, key) for number, key in enumerate(grid, start=1)]
    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(501))
    assert all(t.state == State.WAITING for t in trials)
    assert [t.user_attrs[POINT_ATTR] for t in trials[1:]] == list(grid)
    assert [t.system_attrs["fixed_params"] for t in trials[1:]] == list(grid.values())
    # Covered points are not queued again; a new one is.
    assert study_protocol.queue_ahead(study, storage, study_id, grid, set())[0] == 0
    grid[point_key({"lr": 0.5, "seed": 0})] = {"lr": 0.5, "seed": 0}
    assert study_protocol.queue_ahead(study, storage, study_id, grid, set())[0] == 1


def test_queue_ahead_keeps_a_few_points_waiting_and_names_them_for_the_claim(tmp_path):
    """The sweeper's round: at most `ahead` of the grid's points WAITING, and the WAITING trials
    (already there, and just queued) returned in number order, so the claim reads nothing."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(storage=storage, study_name="q")
    study_id = storage.get_study_id_from_name("q")
    grid = {point_key(p): p for p in ({"lr": float(i), "seed": 0} for i in range(5))}
    keys = list(grid)
    study.enqueue_trial({"lr": 9.0}, user_attrs={POINT_ATTR: "another grid's point"})
    assert study_protocol.queue_ahead(study, storage, study_id, grid, set(), ahead=2) == (
        2,
        [(1, keys[0]), (2, keys[1])],
        set(),
    )
    # Still two WAITING: nothing queued, the same two named.
    assert study_protocol.queue_ahead(study, storage, study_id, grid, set(), ahead=2) == (
        0,
        [(1, keys[0]), (2, keys[1])],
        set(),
    )
    with Heartbeat(storage, 60) as heartbeat:
        waiting = study_protocol.queue_ahead(study, storage, study_id, grid, set(), ahead=2).waiting
        claimed = study_protocol.claim(study, storage, study_id, grid, 1, heartbeat, waiting)
        assert [number for number, _, _ in claimed] == [1]
        # One claimed: one more queued; a skipped point (failed in this run) is passed over.
        assert study_protocol.queue_ahead(study, storage, study_id, grid, {keys[2]}, ahead=2) == (
            1,
            [(2, keys[1]), (3, keys[3])],
            set(),
        )
        # The claimed trial told COMPLETE: the next round names its point among the done ones.
        _, trial_id, _ = claimed[0]
        told = results.tell(study, storage, 1, trial_id, results.JobResult(0.5))
        assert (told.value, told.error, told.recorded) == (0.5, None, True)
        assert study_protocol.queue_ahead(study, storage, study_id, grid, set(), ahead=2).done == {
            keys[0]
        }


# ---- 5. storage problems ----


def _not_a_database(workdir: Path) -> str:
    (workdir / "outputs").mkdir()
    (workdir / "outputs" / "notes.db").write_text("these are my notes, not a database\n" * 20)
    return f"sqlite:///{workdir}/outputs/notes.db"


def _truncated(workdir: Path) -> str:
    url = db_url(workdir)
    (workdir / "outputs").mkdir()
    optuna.create_study(storage=url, study_name="other")
    path = workdir / "outputs" / "lrsweep.db"
    path.write_bytes(path.read_bytes()[:6000])  # the header survives, the pages do not
    return url


@pytest.mark.parametrize(
    "make_url, needle",
    [
        (lambda w: "notaurl", "is not a database URL"),
        (lambda w: "foo://bar", "knows no database 'foo'"),
        (lambda w: "postgresql+pg8000://user@127.0.0.1/db", "driver is not installed"),
        (_not_a_database, "is not a SQLite database"),
        (_truncated, "is damaged"),
    ],
    ids=["notaurl", "unknown-scheme", "no-driver", "not-a-database", "truncated"],
)
def test_a_storage_problem_is_one_line_and_changes_nothing(workdir, make_url, needle, train_here):
    url = make_url(workdir)
    before = tree(workdir)
    proc = refuse(train_here, workdir, "s", "sweep.points=2", f"study.storage={url}")
    assert_one_line_error(proc, needle)
    assert tree(workdir) == before  # no checkpoint, no lock file, no trial folder, no new bytes


def _make_read_only(folder: Path) -> Callable[[], None]:
    """Make `folder` read-only for this user; returns the undo. Permission bits do not bind root
    (CI runs as root): there the folder is made immutable (`chattr +i`), which binds root too."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") is None:
        pytest.skip("running as root without chattr: no way to make a folder read-only for root")
    done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i failed here: {done.stderr.strip()}")
    return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX only")
def test_a_read_only_outputs_folder_is_one_line_and_changes_nothing(workdir, train_here):
    outputs = workdir / "outputs"
    outputs.mkdir()
    before = tree(workdir)
    undo = _make_read_only(outputs)
    try:
        assert not os.access(outputs, os.W_OK) or os.geteuid() == 0
        proc = refuse(train_here, workdir, "ro", "sweep.points=2")
    finally:
        undo()
    assert_one_line_error(proc, "is not writable")
    assert tree(workdir) == before


# ---- 6. checks under -m that need the model and the checkpoint ----


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder whose outputs/init holds the TINY model's initial weights."""
    from src import train
    from src.inprocess import run_hydra_main

    workdir = tmp_path_factory.mktemp("ckpt")
    with pytest.MonkeyPatch.context() as patch:  # `python -m src.train`, in this process
        patch.chdir(workdir)
        assert run_hydra_main(train.main, [*TINY, "lr=0.05"], argv0=train.__file__) == 0
    return workdir


def _corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def _mismatched(path: Path) -> None:
    torch.save({"weight": torch.zeros(3, 3)}, path)


@pytest.mark.parametrize(
    "spoil, needle",
    [(_corrupt, "cannot be read"), (_mismatched, "does not match the model")],
    ids=["corrupt", "mismatched"],
)
def test_a_bad_checkpoint_under_m_is_exit_2_before_the_study(
    checkpointed, spoil, needle, train_here
):
    (checkpoint,) = (checkpointed / "outputs" / "init").glob("*.pt")
    good = checkpoint.read_bytes()
    spoil(checkpoint)
    try:
        proc = refuse(train_here, checkpointed, f"bad-{needle[:5]}", "sweep.points=2")
    finally:
        checkpoint.write_bytes(good)
    assert_one_line_error(proc, needle)
    names = optuna.get_all_study_names(db_url(checkpointed))
    assert f"bad-{needle[:5]}" not in names


def test_an_unbuildable_model_under_m_is_exit_2_and_writes_nothing(workdir, train_here):
    proc = refuse(train_here, workdir, "w0", "sweep.points=2", "model.width=0")
    assert_one_line_error(proc, "width")
    assert not (workdir / "outputs").exists()  # no study, no checkpoint


def test_the_check_creates_no_checkpoint(workdir, train_here):
    """The sweep's check loads the initial weights when they exist and never creates them: a
    sweep refused later (here: its storage) leaves no file behind."""
    proc = refuse(train_here, workdir, "c", "sweep.points=2", "study.storage=foo://bar")
    assert_one_line_error(proc, "foo")
    assert not (workdir / "outputs").exists()


# ---- 2. passwords (without a server; the full check runs in test_postgres.py) ----


def test_a_password_typed_into_the_url_is_refused_and_never_shown(workdir, train_here):
    url = "postgresql+psycopg2://user:s3cret-pw@127.0.0.1:9/db"
    proc = refuse(train_here, workdir, "pw", "sweep.points=2", f"study.storage={url}")
    line = assert_one_line_error(proc, "holds a password", "user:***@127.0.0.1", "oc.env")
    assert "s3cret-pw" not in proc.stdout + proc.stderr + line
    assert not (workdir / "outputs").exists()


def test_a_shown_url_hides_its_password():
    from lrsweep.storage_url import hide_password

    assert hide_password("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert hide_password("sqlite:///outputs/lrsweep.db") == "sqlite:///outputs/lrsweep.db"
    assert "pw" not in hide_password("not a url but u:pw@h")


def test_a_storage_that_fails_is_named_without_its_password(workdir, train_here, monkeypatch):
    """A run whose storage cannot be reached (a password from the environment, as the README
    says to pass one): one line naming the storage with `***` for the password, which is
    printed nowhere; and a driver message that quotes the password gets `***` too."""
    from lrsweep.storage_url import storage_problem

    monkeypatch.setenv("LRSWEEP_TEST_UNREACHABLE_PW", "s3cret-pw")
    url = "postgresql+psycopg2://user:${oc.env:LRSWEEP_TEST_UNREACHABLE_PW}@127.0.0.1:9/db"
    proc = refuse(train_here, workdir, "pw", "sweep.points=2", f"study.storage={url}")
    line = assert_one_line_error(proc, "cannot be used", "user:***@127.0.0.1:9/db")
    assert "s3cret-pw" not in proc.stdout + proc.stderr + line
    assert not (workdir / "outputs").exists()
    # The driver's own message is quoted: a password in it is hidden as well.
    real = "postgresql+psycopg2://user:s3cret-pw@127.0.0.1:9/db"
    try:
        raise RuntimeError("wrapper") from RuntimeError("login user:s3cret-pw refused")
    except RuntimeError as err:
        line = storage_problem(real, err)
    assert "s3cret-pw" not in line and "login user:*** refused" in line


def test_a_wal_study_in_a_read_only_folder_is_named_as_such_not_as_damaged(workdir):
    """A healthy study in WAL mode needs its `-shm` index beside it: in a folder that does not
    allow one, the error says so (and never calls the file damaged); nothing is written."""
    from lrsweep.storage_url import check_storage_url

    folder = workdir / "archive"
    folder.mkdir()
    url = f"sqlite:///{folder}/lrsweep.db"
    storage = storage_module.open_storage(url)
    optuna.create_study(storage=storage, study_name="kept")
    storage.engine.dispose()  # the last connection: the log folded in, -wal and -shm removed
    assert sorted(p.name for p in folder.iterdir()) == ["lrsweep.db"]
    before = tree(workdir)
    undo = _make_read_only(folder)
    try:
        with pytest.raises(ValueError, match="cannot be opened: SQLite cannot create its index"):
            check_storage_url(url)
    finally:
        undo()
    assert tree(workdir) == before
