"""Shared test helpers: run the real entry points in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tiny but real: digits, a small MLP, 2 epochs (about 0.1 s per trial in-process).
TINY = ["epochs=2", "warmup_epochs=1", "model.width=32", "model.depth=1", "batch_size=64"]


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra or {})}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def start_module(
    module: str, *args: str, cwd: Path, env: dict | None = None, **popen: object
) -> subprocess.Popen:
    """`python -m <module> <args>` started in `cwd`, text pipes for stdout and stderr; `env`
    adds variables to the environment."""
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=cwd, env=_env(env), **popen)


def run_module(
    module: str,
    *args: str,
    cwd: Path,
    check: bool = True,
    timeout: float = 240,
    env: dict | None = None,
    **run: object,
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` run to the end in `cwd` (where `outputs/` will be written)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        **run,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {proc.returncode}\n--- stdout\n{proc.stdout}"
            f"\n--- stderr\n{proc.stderr}"
        )
    return proc


def run_python(*args: str, cwd: Path, timeout: float = 120) -> str:
    """`python <args>` (`-c <code>`, a script and its arguments) run to the end in `cwd`, the
    project importable; its stdout. A non-zero exit fails the test with both streams."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"python exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def train_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """`python -m src.train <args>` (`-m` first for a sweep) run in this process, in `cwd`: a
    CompletedProcess with the exit status the command would have had and what it printed
    (`src.inprocess.run_hydra_main`, the way `src.train.run_multirun` runs a sweep). For the
    checks of a refusal's message and exit status: milliseconds where a new process costs
    seconds. Exit statuses of real processes and signals keep their subprocess tests."""
    from src import train
    from src.inprocess import run_hydra_main

    def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        capsys.readouterr()  # only this run's output
        with monkeypatch.context() as patch:
            patch.delenv("HYDRA_FULL_ERROR", raising=False)
            patch.chdir(cwd)
            if args[:1] == ("-m",):
                status = train.run_multirun(list(args[1:]))
            else:
                status = run_hydra_main(train.main, list(args), argv0=train.__file__)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["src.train", *args], status, out, err)

    return run
