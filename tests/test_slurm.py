"""Sweeps on a real SLURM cluster: a worker array on one PostgreSQL study, and the jobs of the
`slurm_gpu` launcher config.

Needs a cluster with accounting (`scripts/test_slurm.sh` starts a single-node one and prints its
partition for LRSWEEP_TEST_SLURM_PARTITION) and, for the worker array, the PostgreSQL server of
tests/test_postgres.py. Without them these tests skip, except under CI=true, where they fail.
`pytest -m slurm` runs them alone.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, run_module
from test_postgres import server, unique  # noqa: F401  (server: the PostgreSQL fixture)

pytestmark = pytest.mark.slurm
State = optuna.trial.TrialState
WORKER_ARRAY = ROOT / "scripts" / "slurm" / "worker_array.sbatch"


def test_a_worker_array_of_4_tasks_runs_every_point_exactly_once(slurm_cluster, server, workdir):  # noqa: F811
    name = unique("array")
    points = ["sweep.points=4", "sweep.seeds=[0,1]"]  # 8 grid points
    job = slurm_cluster.sbatch(
        "--array=0-3", str(WORKER_ARRAY),
        *TINY, *points, f"study.name={name}", f"study.storage={server['typed']}",
        cwd=workdir, env={**server["env"], "LRSWEEP_PYTHON": sys.executable},
    )  # fmt: skip
    states = slurm_cluster.wait(job)
    logs = {path.name: path.read_text() for path in workdir.glob(f"slurm-{job}_*.out")}
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}, (states, logs)
    study = optuna.load_study(study_name=name, storage=server["url"])
    keys = [(t.params["lr"], t.params["seed"]) for t in study.trials]
    # Each point one COMPLETE trial, and no other trial: nothing claimed twice, nothing left over.
    assert len(study.trials) == 8 and len(set(keys)) == 8, keys
    assert {t.state for t in study.trials} == {State.COMPLETE}
    trained = [log.count("] lr=") for log in logs.values()]
    assert sum(trained) == 8, logs
    # The password reached the tasks through their environment only.
    assert not any(server["password"] in log for log in logs.values())
    assert server["password"] not in WORKER_ARRAY.read_text()


def submission_files(sweep_dir: Path) -> list[Path]:
    """The sbatch scripts submitit wrote for a sweep's jobs (`.submitit/<job>/<job>_submission.sh`)."""
    return sorted(sweep_dir.glob(".submitit/*/*_submission.sh"))


def test_slurm_gpu_jobs_ask_for_one_gpu_per_task_and_get_it(slurm_cluster, workdir):
    # The config as shipped, pointed at the test cluster's partition: its 4 CPUs and 16 GB a task
    # fit the test node, whose one GPU is a fake SLURM counts (no device: the trial trains on CPU).
    # One point: one job.
    name = "gpu"
    sweep = run_module(
        "src.train", "-m", *TINY, "hydra.sweeper.params.lr='choice(0.1)'", f"study.name={name}",
        "hydra/launcher=slurm_gpu", f"hydra.launcher.partition={slurm_cluster.partition}",
        cwd=workdir,
    )  # fmt: skip
    assert "[1/1] lr=" in sweep.stdout, sweep.stdout
    files = submission_files(workdir / "outputs" / "sweeps" / name)
    (file,) = files
    lines = file.read_text().splitlines()
    assert "#SBATCH --gpus-per-task=1" in lines, lines
    assert "#SBATCH --ntasks-per-node=1" in lines, lines
    # SLURM gave the job one GPU (accounting's allocated resources), not merely read the line.
    proc = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", file.parent.name, "-o", "AllocTRES"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert "gres/gpu=1" in proc.stdout.strip().split(","), proc.stdout
