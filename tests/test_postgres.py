"""Sweeps sharing a real PostgreSQL server: exactly once across processes, crash recovery, the
advisory lock, and a password that is never printed or stored.

Needs a server: set LRSWEEP_TEST_POSTGRES_URL (`scripts/test_postgres.sh` starts Debian's
PostgreSQL and prints one). Without it these tests skip, except under CI=true, where they fail:
CI (`.ci/run`) always provides the server.

The sweeps get the URL with its password as `${oc.env:LRSWEEP_TEST_DB_PASSWORD}`, the way the
README tells users to pass one.
"""

from __future__ import annotations

import collections
import hashlib
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import SEQUENTIAL, TINY, required_service, run_module, start_module

from lrsweep.storage import StudyLock

State = optuna.trial.TrialState
PASSWORD_ENV = "LRSWEEP_TEST_DB_PASSWORD"


@pytest.fixture(scope="session")
def server() -> dict:
    """The server's real URL (for this test process) and the URL the sweeps get, with the
    password replaced by an interpolation, plus the environment holding the password."""
    url = required_service("LRSWEEP_TEST_POSTGRES_URL", "PostgreSQL server", "test_postgres.sh")
    if os.environ.get("CI") == "true":
        import psycopg2  # noqa: F401  (CI installs lrsweep[postgres]: a missing driver fails)
    else:
        pytest.importorskip("psycopg2", reason="pip install 'lrsweep[postgres]'")
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    password = parsed.password or ""
    assert len(password) >= 6, "the test server needs a password (the leak tests look for it)"
    typed = parsed.set(password="PASSWORD").render_as_string(hide_password=False)
    typed = typed.replace("PASSWORD", "${oc.env:" + PASSWORD_ENV + "}")
    return {"url": url, "typed": typed, "password": password, "env": {PASSWORD_ENV: password}}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def sweep_args(server: dict, name: str, *extra: str) -> list[str]:
    # One trial at a time in flight: the tests here share and kill sweeps mid-trial.
    return [
        "-m",
        *TINY,
        SEQUENTIAL,
        f"study.name={name}",
        f"study.storage={server['typed']}",
        *extra,
    ]


def start(server: dict, args: list[str], cwd: Path) -> subprocess.Popen:
    """A sweep started in the background, with the password in its environment."""
    return start_module("src.train", *args, cwd=cwd, env=server["env"])


def complete_points(study: optuna.Study) -> collections.Counter:
    return collections.Counter(
        (t.params["lr"], t.params["seed"]) for t in study.get_trials(states=(State.COMPLETE,))
    )


def test_three_sweeps_drain_one_12_point_grid_exactly_once(server, workdir):
    name = unique("three")
    args = sweep_args(server, name, "sweep.points=6", "sweep.seeds=[0,1]")
    procs = [start(server, args, workdir) for _ in range(3)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    study = optuna.load_study(study_name=name, storage=server["url"])
    counts = complete_points(study)
    assert len(counts) == 12 and set(counts.values()) == {1}
    assert not study.get_trials(states=(State.RUNNING, State.WAITING))
    # Every other trial is a claim that gave way to an older trial of its point.
    others = [t for t in study.trials if t.state != State.COMPLETE]
    assert all("duplicate_of" in t.user_attrs for t in others)
    # The work was shared: more than one process ran trials.
    ran = [out.count("] lr=") for out, _ in outputs]
    assert sum(ran) == 12 and sum(1 for n in ran if n) >= 2, ran


def test_a_sigkilled_workers_point_is_run_again(server, workdir):
    name = unique("killed")
    args = sweep_args(
        server, name, "sweep.points=4", "epochs=40", "batch_size=8",
        "hydra.sweeper.heartbeat_interval=1",
    )  # fmt: skip
    proc = start(server, args, workdir)
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline, "no trial started"
        if name in optuna.get_all_study_names(server["url"]):
            study = optuna.load_study(study_name=name, storage=server["url"])
            if study.get_trials(states=(State.COMPLETE,)) and study.get_trials(
                states=(State.RUNNING,)
            ):
                break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    study = optuna.load_study(study_name=name, storage=server["url"])
    (orphan,) = study.get_trials(states=(State.RUNNING,))
    run_module("src.train", *args, cwd=workdir, env=server["env"])
    study = optuna.load_study(study_name=name, storage=server["url"])
    assert list(complete_points(study).values()) == [1] * 4
    assert study.trials[orphan.number].state == State.FAIL  # failed as stale
    assert (orphan.params["lr"], orphan.params["seed"]) in complete_points(study)
    assert not study.get_trials(states=(State.RUNNING, State.WAITING))


def wait_until_blocked_on_the_advisory_lock(
    url: str, name: str, proc: subprocess.Popen, timeout: float = 120
) -> None:
    """Return once a server session waits (pg_stat_activity: wait_event_type `Lock`, event
    `advisory`) in `pg_advisory_lock` on study `name`'s key; fail if `proc` exits first."""
    import sqlalchemy

    digest = hashlib.sha256(f"lrsweep:{name}".encode()).digest()  # StudyLock's key
    key = int.from_bytes(digest[:8], "big", signed=True)
    query = sqlalchemy.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND wait_event = 'advisory' AND query ~ :pattern"
    )
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as connection:
                # psycopg2 writes a bound negative number with a space before it.
                pattern = rf"pg_advisory_lock\(\s*{key}\)"
                waiting = connection.execute(query, {"pattern": pattern})
                if waiting.scalar():
                    return
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the sweep never waited for the lock"
            time.sleep(0.1)
    finally:
        engine.dispose()


def test_the_advisory_lock_holds_a_sweep_until_released(server, workdir):
    """While another session holds the study's advisory lock, a sweep does not create, stale-fail
    or enqueue anything; once it is released the sweep runs."""
    name = unique("locked")
    lock = StudyLock(server["url"], name)
    release = threading.Event()
    held = threading.Event()

    def hold() -> None:
        with lock():
            held.set()
            release.wait(600)  # released by the test; longer than it waits for the sweep

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        proc = start(server, sweep_args(server, name, "sweep.points=2"), workdir)
        # Not a sleep: the server itself says when the sweep's session waits for the lock.
        wait_until_blocked_on_the_advisory_lock(server["url"], name, proc)
        assert name not in optuna.get_all_study_names(server["url"])
        assert proc.poll() is None
    finally:
        release.set()
        holder.join()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    study = optuna.load_study(study_name=name, storage=server["url"])
    assert list(complete_points(study).values()) == [1] * 2


def test_the_password_is_never_printed_or_stored(server, workdir):
    name = unique("secret")
    args = sweep_args(server, name, "sweep.points=3")
    printed = []
    sweep = run_module("src.train", *args, cwd=workdir, env=server["env"])
    printed += [sweep.stdout, sweep.stderr]
    assert "lrsweep_test:***@" in sweep.stdout  # the header and the dashboard hint
    assert "optuna-dashboard postgresql+psycopg2://lrsweep_test:***@" in sweep.stdout
    overrides = [f"study.name={name}", f"study.storage={server['typed']}", *TINY, "sweep.points=3"]
    refine = run_module("src.refine", *overrides, cwd=workdir, env=server["env"])
    printed += [refine.stdout, refine.stderr]
    assert "***@" in refine.stdout and "stage 2: python -m src.train -m" in refine.stdout
    missing = run_module(
        "src.report", f"study.name={name}-nope", f"study.storage={server['typed']}",
        cwd=workdir, env=server["env"], check=False,
    )  # fmt: skip
    printed += [missing.stdout, missing.stderr]
    assert missing.returncode == 2 and "no study" in missing.stderr
    for text in printed:
        assert server["password"] not in text
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.parent.name == ".hydra" for p in files)  # the job folders were written...
    for path in files:  # ...and no file anywhere holds the password
        assert server["password"].encode() not in path.read_bytes(), path
    # A password typed into the URL is refused: Hydra would store it in every job's folder.
    typed = sweep_args(server, unique("typed"), "sweep.points=2")
    typed[-2] = f"study.storage={server['url']}"
    refused = run_module("src.train", *typed, cwd=workdir, check=False)
    assert refused.returncode == 2 and "holds a password" in refused.stderr
    assert server["password"] not in refused.stdout + refused.stderr
