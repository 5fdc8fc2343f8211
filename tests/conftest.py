"""Shared test helpers: run the real entry points in a temporary working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tiny but real: digits, a small MLP, 2 epochs (about 0.1 s per trial in-process).
TINY = ["epochs=2", "warmup_epochs=1", "model.width=32", "model.depth=1", "batch_size=64"]
# The default launcher trains a batch's LRs together (hydra/launcher=fused). Tests of what happens
# while one trial runs (killed, interrupted, overlapping with another sweep's) take the sequential
# launcher, where a trial at a time is in flight; tests/test_fused_launcher.py has the fused cases.
SEQUENTIAL = "hydra/launcher=lrsweep"


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


@dataclass(frozen=True)
class SlurmCluster:
    """A SLURM cluster with accounting that the tests may submit jobs to (`slurm_cluster`)."""

    partition: str

    def launcher(self, name: str = "submitit_slurm", *extra: str) -> list[str]:
        """Overrides for a sweep whose trials are jobs on this cluster: `hydra/launcher=<name>`,
        sized for the test cluster (one CPU, 1 GB a task)."""
        return [
            f"hydra/launcher={name}",
            f"hydra.launcher.partition={self.partition}",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1",
            "hydra.launcher.timeout_min=10",
            *extra,
        ]

    def sbatch(self, *args: str, cwd: Path, env: dict | None = None) -> str:
        """`sbatch --parsable -p <partition> <args>` run in `cwd` (`env` adds variables to the
        environment the jobs get); the job id."""
        proc = subprocess.run(
            ["sbatch", "--parsable", "-p", self.partition, *args],
            cwd=cwd, env=_env(env), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return proc.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float = 240) -> dict[str, str]:
        """Waits until job `job` (all of an array's tasks) has left the queue; each task's final
        state from accounting (`{"12_0": "COMPLETED", ...}`). Past `timeout` seconds the job is
        cancelled and the test fails: a test leaves nothing running on the cluster."""
        deadline = time.monotonic() + timeout
        while squeue(job):
            if time.monotonic() > deadline:
                subprocess.run(["scancel", job], check=False)
                pytest.fail(f"SLURM job {job} still queued or running after {timeout} s")
            time.sleep(0.5)  # polls the queue: SLURM offers no event to wait on
        return job_states(job)


def squeue(job: str) -> list[str]:
    """The ids of job `job`'s tasks still pending or running."""
    proc = subprocess.run(
        ["squeue", "-h", "-j", job, "-o", "%i"], capture_output=True, text=True, timeout=30
    )
    return proc.stdout.split()


def job_states(job: str) -> dict[str, str]:
    """Accounting's state of each task of job `job` (an array's tasks `<job>_<index>`): the
    first word (`CANCELLED by 0` is CANCELLED)."""
    deadline = time.monotonic() + 30
    while True:  # a job just out of the queue may reach accounting a moment later
        proc = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job, "-o", "JobID,State"],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        rows = [line.split("|") for line in proc.stdout.splitlines() if line]
        states = {task: state.split()[0] for task, state in rows}
        pending = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING"}
        if states and not pending & set(states.values()) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def _slurm_answers(partition: str) -> str:
    """Why the cluster cannot take the tests' jobs, or "" when `sinfo` knows the partition and
    `sacct` (accounting, which submitit needs to see a job end) answers."""
    for command in (["sinfo", "-h", "-p", partition, "-o", "%P"], ["sacct", "-n", "-X"]):
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(command)}` failed: {exc}"
        if proc.returncode != 0 or (command[0] == "sinfo" and not proc.stdout.strip()):
            return f"`{' '.join(command)}` exited {proc.returncode}: {proc.stderr.strip()}"
    return ""


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """The SLURM cluster named by LRSWEEP_TEST_SLURM_PARTITION (`scripts/test_slurm.sh` starts
    one and prints its partition). Without it the test skips, except under CI=true, where it
    fails: CI (`.ci/run`) always provides the cluster. A named cluster that does not answer
    fails the test."""
    partition = required_service("LRSWEEP_TEST_SLURM_PARTITION", "SLURM cluster", "test_slurm.sh")
    problem = _slurm_answers(partition)
    if problem:
        pytest.fail(f"SLURM partition {partition!r} does not answer: {problem}")
    return SlurmCluster(partition)


def required_service(variable: str, what: str, script: str) -> str:
    """The value of the environment `variable` that names a service the test needs (a database
    server, a cluster). Without it the test skips, except under CI=true, where it fails: CI
    (`.ci/run`) starts every service with `scripts/<script>`."""
    value = os.environ.get(variable)
    if not value:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must provide a {what} in {variable}")
        pytest.skip(f"no {what}: set {variable} (export {variable}=$(scripts/{script}))")
    return value


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    """Polls `condition` until it returns something true, and returns that; past `timeout`
    seconds the test fails, naming `what` it waited for. For states with no event to wait on:
    a SLURM queue, a study written by other processes, files another process writes."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)
    return found
