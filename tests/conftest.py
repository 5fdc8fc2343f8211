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
def cli_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """`run(main, *args, cwd=...)`: an entry point's `main(argv) -> status` (refine, report,
    transfer, the two-stage script) called in this process in `cwd`, as its command line would
    call it; a CompletedProcess with the status and what it printed. For the checks of a
    refusal's message and exit status: milliseconds where a new process costs seconds. Exit
    statuses of real processes and signals keep their subprocess tests."""

    def run(main, *args: str, cwd: Path) -> subprocess.CompletedProcess:
        capsys.readouterr()  # only this run's output
        with monkeypatch.context() as patch:
            patch.delenv("HYDRA_FULL_ERROR", raising=False)
            patch.chdir(cwd)
            status = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess([main.__module__, *args], status, out, err)

    return run


def hydra_main_here(module) -> object:
    """`main(argv)` for a module whose `main` is a `@hydra.main` (src.train, src.range_test):
    `python -m <module> <argv>` in this process (`src.inprocess.run_hydra_main`)."""
    from src.inprocess import run_hydra_main

    def main(argv: list[str]) -> int:
        if module.__name__ == "src.train" and argv[:1] == ["-m"]:
            return module.run_multirun(argv[1:])  # restores torch's threads and RNG too
        return run_hydra_main(module.main, argv, argv0=module.__file__)

    main.__module__ = module.__name__
    return main


@pytest.fixture
def train_here(cli_here):
    """`python -m src.train <args>` (`-m` first for a sweep) run in this process: see cli_here."""
    from src import train

    main = hydra_main_here(train)
    return lambda *args, cwd: cli_here(main, *args, cwd=cwd)


def two_stage_main() -> object:
    """`scripts/two_stage_sweep.py`'s `main(argv)`, the script imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "two_stage_sweep", ROOT / "scripts" / "two_stage_sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
