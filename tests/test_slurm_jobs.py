"""Per-trial jobs on a real SLURM cluster (`hydra/launcher=submitit_slurm`): the whole two-stage
search, a task cancelled mid-trial (what preemption and node failures look like), and the sweep's
own process killed while its tasks run (a dropped SSH session, a rebooted login node).

Needs a cluster with accounting (`scripts/test_slurm.sh`); see tests/conftest.py `slurm_cluster`.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import ROOT, TINY, run_python, wait_for

from lrsweep.results import RECORDED_BY_JOB
from lrsweep.study_protocol import POINT_ATTR
from tests.test_jobs_elsewhere import trials
from tests.test_own_code import run_app, start_app

pytestmark = pytest.mark.slurm
COMPLETE, RUNNING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING


def our_jobs(cwd: Path, state: str) -> list[str]:
    """Ids of this sweep's SLURM jobs (submitit's folders under the sweep folder) in `state`."""
    jobs = [path.name for path in cwd.glob("multirun/*/*/.submitit/*") if path.is_dir()]
    if not jobs:
        return []
    proc = subprocess.run(
        ["squeue", "-h", "-t", state, "-j", ",".join(jobs), "-o", "%i"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return proc.stdout.split()


def test_the_two_stage_search_runs_through_submitit_slurm(slurm_cluster, tmp_path):
    run_python(
        str(ROOT / "scripts" / "two_stage_sweep.py"), *TINY, "sweep.points=4", "--points", "3",
        "--confirm-top", "1", "--confirm-seeds", "2",
        *slurm_cluster.launcher("submitit_slurm", "hydra.launcher.array_parallelism=2"),
        cwd=tmp_path, timeout=600,
    )  # fmt: skip
    (best_file,) = tmp_path.glob("outputs/reports/*/best.yaml")
    best = yaml.safe_load(best_file.read_text())
    assert best["stage"] == "confirm"
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    for name in best["stages"].values():
        stage = optuna.load_study(study_name=name, storage=storage).trials
        assert {t.state for t in stage} == {COMPLETE}, name
        points = [t.user_attrs[POINT_ATTR] for t in stage]
        assert len(points) == len(set(points)), name  # each point exactly once
        assert all(t.user_attrs[RECORDED_BY_JOB] for t in stage)  # told by its own job


def test_a_task_cancelled_mid_trial_is_retried_and_the_sweep_ends_cleanly(slurm_cluster, tmp_path):
    args = [
        *slurm_cluster.launcher("submitit_slurm", "hydra.launcher.array_parallelism=2"),
        "sleep=10", "optim.lr=choice(0.001,0.01,0.1)",
    ]  # fmt: skip
    sweep = start_app(*args, cwd=tmp_path, log="sweep.log")
    try:
        (job, *_) = wait_for(lambda: our_jobs(tmp_path, "RUNNING"), "a task to run")
        subprocess.run(["scancel", job], check=True, timeout=30)
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    err = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, err
    (line,) = [line for line in err.splitlines() if "ended without a result" in line]
    assert line.startswith("[lrsweep] trial ")
    assert f"job {job} ended without a result (CANCELLED" in line
    assert line.endswith("launching it again (1 of 2)")
    assert "Traceback" not in err and "UncompletedJobError" not in err
    done = trials(tmp_path)
    assert [t.state for t in done] == [COMPLETE] * 3
    assert len({t.user_attrs[POINT_ATTR] for t in done}) == 3


def test_a_sweep_killed_mid_trial_loses_nothing(slurm_cluster, tmp_path):
    """The sweep's process is killed with SIGKILL while both of its tasks run: the tasks run on
    and record their results; the rerun trains nothing."""
    args = [
        *slurm_cluster.launcher("submitit_slurm", "hydra.launcher.array_parallelism=2"),
        "sleep=8", "optim.lr=choice(0.001,0.01)",
    ]  # fmt: skip
    sweep = start_app(*args, cwd=tmp_path, log="killed_sweep.log")
    try:
        jobs = wait_for(
            lambda: (found := our_jobs(tmp_path, "RUNNING")) and len(found) == 2 and found,
            "both tasks to run",
        )
        sweep.send_signal(signal.SIGKILL)
    finally:
        sweep.wait(timeout=60)
    assert [t.state for t in trials(tmp_path)] == [RUNNING, RUNNING]
    for job in jobs:
        assert slurm_cluster.wait(job) == {job: "COMPLETED"}
    done = trials(tmp_path)
    assert [t.state for t in done] == [COMPLETE, COMPLETE]
    rerun = run_app(*args, cwd=tmp_path)
    assert "nothing to run: all 2 grid points are done" in rerun.stdout
    assert len(trials(tmp_path)) == 2
