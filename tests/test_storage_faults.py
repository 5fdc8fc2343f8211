"""Storage faults (issue 16): passwords on every path, read-only commands on a storage that is not
there, the driver a URL needs, storage errors in the middle of a sweep.

Real entry points on real SQLite files; an unreachable server is a closed local port."""

from __future__ import annotations

import os
import resource
import signal
import sys
from pathlib import Path

import optuna
import pytest
from conftest import SEQUENTIAL, TINY, run_module

from lrsweep.storage_url import (
    check_storage_url,
    hide_password,
    refuse_literal_password,
    storage_problem,
)
from lrsweep.study_protocol import POINT_ATTR
from src import refine, report, transfer

SECRET = "s3cret-pw"
TYPED = f"postgresql+psycopg2://user:{SECRET}@127.0.0.1:9/db"
IN_QUERY = f"postgresql+psycopg2://user@127.0.0.1:9/db?sslmode=disable&password={SECRET}"
UNREACHABLE = "postgresql+psycopg2://user@127.0.0.1:9/db"  # nothing listens on port 9


def one_error_line(err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# ---- 2. passwords ----


@pytest.mark.parametrize(
    ("url", "shown"), [(TYPED, "user:***@127.0.0.1"), (IN_QUERY, "password=***")]
)
def test_a_single_run_refuses_a_typed_password_before_writing_its_hydra_folder(workdir, url, shown):
    """Without -m Hydra writes config.yaml, overrides.yaml, hydra.yaml under .hydra/ before the
    task runs: the refusal comes first."""
    proc = run_module(
        "src.train", *TINY, f"study.storage='{url}'", cwd=workdir, check=False, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    one_error_line(proc.stderr, "holds a password", shown)
    assert SECRET not in proc.stdout + proc.stderr
    assert list(workdir.iterdir()) == []


def test_a_password_query_parameter_is_refused_and_hidden():
    with pytest.raises(ValueError, match="holds a password") as refused:
        refuse_literal_password(IN_QUERY)
    assert SECRET not in str(refused.value)
    shown = hide_password(IN_QUERY)
    assert "password=***" in shown and "sslmode=disable" in shown and SECRET not in shown
    assert SECRET not in storage_problem(IN_QUERY, RuntimeError(f"bad password {SECRET}"))
    # From the environment, as an interpolation Hydra stores unresolved: allowed.
    refuse_literal_password("postgresql+psycopg2://user@h/db?password=${oc.env:PW}")


def test_the_two_stage_script_refuses_a_password_before_printing_a_command(
    workdir, monkeypatch, capsys
):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import two_stage_sweep

    monkeypatch.chdir(workdir)
    assert two_stage_sweep.main([*TINY, f"study.storage='{IN_QUERY}'"]) == 2
    printed = capsys.readouterr()
    assert printed.out == ""  # no `==== stage 1: python ...` header
    one_error_line(printed.err, "holds a password", "password=***")
    assert SECRET not in printed.err
    assert list(workdir.iterdir()) == []


# ---- 5. read-only commands: one line, exit 2, nothing created ----

READERS = {
    "report": lambda args: report.main(args),
    "refine": lambda args: refine.main(args),
    "transfer": lambda args: transfer.main(["base.study=s", *args]),
}


@pytest.mark.parametrize("command", sorted(READERS))
@pytest.mark.parametrize(
    ("storage", "needle"),
    [
        (None, "no study database at outputs/lrsweep.db"),  # the default, never swept
        ("sqlite:///deep/folder/missing.db", "no study database at deep/folder/missing.db"),
        ("sqlite:///junk.db", "junk.db is not a SQLite database"),
        ("garbage", "is not a database URL"),
        ("nosuch://host/db", "SQLAlchemy knows no database 'nosuch'"),
        (UNREACHABLE, "cannot be used: OperationalError"),
    ],
)
def test_a_read_only_command_on_a_bad_storage_is_one_line_and_creates_nothing(
    workdir, monkeypatch, capsys, command, storage, needle
):
    (workdir / "junk.db").write_text("not a database\n" * 100)
    before = sorted(p.name for p in workdir.rglob("*"))
    monkeypatch.chdir(workdir)
    args = ["study.name=s"] + ([] if storage is None else [f"study.storage={storage}"])
    assert READERS[command](args) == 2
    one_error_line(capsys.readouterr().err, needle)
    assert sorted(p.name for p in workdir.rglob("*")) == before


# ---- 12. the driver a URL needs ----


@pytest.mark.parametrize(
    ("url", "advice"),
    [
        # SQLAlchemy 2 reads `postgresql://` as psycopg 3, which the postgres extra does not bring.
        (
            "postgresql://user@h/db",
            "pip install 'psycopg[binary]', or write postgresql+psycopg2://",
        ),
        ("postgresql+psycopg://user@h/db", "(pip install 'psycopg[binary]')"),
        ("postgresql+pg8000://user@h/db", "(pip install 'pg8000')"),
    ],
)
def test_a_missing_driver_names_the_package_that_installs_it(url, advice):
    # ValueError: Hydra execs plugin modules anew, so SweepConfigError may be another class object.
    try:
        import psycopg  # noqa: F401

        if "pg8000" not in url:
            pytest.skip("psycopg 3 is installed here")
    except ImportError:
        pass
    with pytest.raises(ValueError, match="driver is not installed") as refused:
        check_storage_url(url)
    assert advice in str(refused.value)
    assert "lrsweep[postgres]" not in str(refused.value).replace(
        "postgresql+psycopg2:// and pip install 'lrsweep[postgres]'", ""
    )


# ---- 10. the storage fails in the middle of a sweep ----


def _file_size_limit(limit: int):
    """For the child process: no file may grow past `limit` bytes (RLIMIT_FSIZE), and a write
    that would gets EFBIG instead of the default SIGXFSZ: the OS refusing the database's writes
    from some trial on, as a full disk does."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_storage_that_fails_mid_sweep_is_one_line_and_the_rerun_completes_the_grid(workdir):
    args = [
        *TINY, SEQUENTIAL, "study.name=full", "sweep.points=16",
        "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2",
    ]  # fmt: skip
    # 800 kB: the study and a few trials fit (the write-ahead log grows with every commit).
    proc = run_module(
        "src.train", "-m", *args, cwd=workdir, check=False, preexec_fn=_file_size_limit(800_000)
    )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    line = one_error_line(proc.stderr, "failed during the sweep", "run the same command again")
    assert "sqlite:///outputs/lrsweep.db" in line
    done = [x for x in proc.stdout.splitlines() if x.startswith("[") and "/16]" in x]
    assert 0 < len(done) < 16  # it failed in the middle, not before the first trial

    rerun = run_module("src.train", "-m", *args, cwd=workdir)
    assert f"{len(done)} done before this run" in rerun.stdout
    study = optuna.load_study(study_name="full", storage=f"sqlite:///{workdir}/outputs/lrsweep.db")
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    points = [t.user_attrs[POINT_ATTR] for t in complete]
    assert len(points) == 16 and len(set(points)) == 16  # every point once, none lost


# ---- 16. many workers on one PostgreSQL study ----


def test_sweep_workers_on_postgresql_hold_at_most_three_connections_each(workdir):
    """Two sweep processes of the benchmark's trivial app on one fresh PostgreSQL study: every
    point once, and at most 3 connections per process at any time (the storage's, the study
    lock's, a heartbeat's for a moment); each held 5 (4 of them all along) before."""
    url = os.environ.get("LRSWEEP_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server: set LRSWEEP_TEST_POSTGRES_URL")
    pytest.importorskip("psycopg2", reason="pip install 'lrsweep[postgres]'")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_workers import run_workers

    result = run_workers(url, n=2, points=12, work_s=0.05, folder=workdir)
    assert (result["complete"], result["duplicates"], result["lost"]) == (12, 0, 0)
    assert 2 <= result["peak"] <= 2 * 3, result


def test_a_relative_storage_checked_in_one_folder_is_checked_again_in_another(
    tmp_path, monkeypatch
):
    """The default `sqlite:///outputs/lrsweep.db` is another file in another folder: a study
    database found in one working directory says nothing of the next (one process, two folders:
    a notebook, the tests)."""
    from src.errors import ConfigError
    from src.study import existing_storage

    url = "sqlite:///outputs/lrsweep.db"
    swept, empty = tmp_path / "swept", tmp_path / "empty"
    (swept / "outputs").mkdir(parents=True)
    empty.mkdir()
    optuna.create_study(storage=f"sqlite:///{swept}/outputs/lrsweep.db", study_name="s")
    monkeypatch.chdir(swept)
    existing_storage(url)
    monkeypatch.chdir(empty)
    with pytest.raises(ConfigError, match="no study database at outputs/lrsweep.db"):
        existing_storage(url)
    assert list(empty.iterdir()) == []
