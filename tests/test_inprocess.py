"""`src.train.run_multirun`: sweeps run back to back in one process are the sweeps
`python -m src.train -m` runs, each in its own process: same trial values, output folders and
`.hydra/` records, same exit statuses; and the process is left as it was found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, run_module, run_python

# Two different sweeps (grids, seeds, widths), and bad input (exit 2) in between.
SWEEPS = {
    "first": [*TINY, "study.name=first", "sweep.points=3"],
    "second": [*TINY, "study.name=second", "model.width=16", "sweep.points=2", "sweep.seeds=[0,1]"],
}
BAD = [*TINY, "study.name=bad", "epochs=0"]

IN_ONE_PROCESS = """
import gc, json, os, signal, sys
import torch
from hydra.core.hydra_config import HydraConfig
from src.train import run_multirun

sweeps, bad = json.loads(sys.argv[1]), json.loads(sys.argv[2])
def state():  # the garbage collector too: on, nothing frozen (the sweeper turns it off, freezes)
    return (list(sys.argv), os.getcwd(), signal.getsignal(signal.SIGINT), torch.get_num_threads(),
            gc.isenabled(), gc.get_freeze_count())
before = state()
status = {"first": run_multirun(sweeps["first"]), "bad": run_multirun(bad)}
status["second"] = run_multirun(sweeps["second"])
after = state()
gc.disable()  # a caller that turned collection off finds it off after a sweep (a resume here)
status["resumed"] = run_multirun(sweeps["first"])
collection_left_off = not gc.isenabled()
gc.enable()
print(json.dumps({"status": status, "restored": before == after,
                  "collection_left_off": collection_left_off,
                  "hydra_config_set": HydraConfig.initialized()}))
"""


def trial_values(db: Path, name: str) -> dict[tuple[float, int], float]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return {(t.params["lr"], t.params["seed"]): t.value for t in study.trials}


def trial_pids(db: Path, name: str) -> set[int]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    return {t.user_attrs["pid"] for t in study.trials}


def folder_records(root: Path, workdir: Path) -> dict[str, str]:
    """Every file under the sweep folders, by relative path, with this run's folder masked."""
    return {
        str(p.relative_to(root)): p.read_text().replace(str(workdir), "<workdir>")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sweeps_in_one_process_equal_sweeps_in_their_own(tmp_path):
    together, apart = tmp_path / "together", tmp_path / "apart"
    together.mkdir()
    apart.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", IN_ONE_PROCESS, json.dumps(SWEEPS), json.dumps(BAD)],
        cwd=together,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = run_module("src.train", "-m", *BAD, cwd=apart, check=False)
    for overrides in SWEEPS.values():
        run_module("src.train", "-m", *overrides, cwd=apart)

    assert state["status"] == {"first": 0, "bad": bad.returncode, "second": 0, "resumed": 0}
    assert bad.returncode == 2
    assert "error: epochs=0 is invalid: an integer >= 1" in proc.stderr
    assert state["restored"] and state["collection_left_off"] and not state["hydra_config_set"]

    db_together, db_apart = (d / "outputs" / "lrsweep.db" for d in (together, apart))
    for name in SWEEPS:
        values = trial_values(db_together, name)
        assert len(values) == {"first": 3, "second": 4}[name]
        assert values == trial_values(db_apart, name)
    # One process ran both sweeps; each command ran in its own.
    assert len(trial_pids(db_together, "first") | trial_pids(db_together, "second")) == 1
    assert trial_pids(db_apart, "first").isdisjoint(trial_pids(db_apart, "second"))

    records = folder_records(together / "outputs" / "sweeps", together)
    assert records == folder_records(apart / "outputs" / "sweeps", apart)
    assert {path.split("/")[0] for path in records} == set(SWEEPS)  # nothing for the bad sweep
    assert "first/trial_2/.hydra/overrides.yaml" in records
    assert "second/trial_3/.hydra/config.yaml" in records


CHECK_MODEL_FREED = """
import json, sys, weakref
import src.fused as fused_module
import src.train as train_module

checks, seen = [], []
initial_state, train = train_module.initial_state, train_module.train
run_arms = fused_module.run_arms

def recording_initial_state(*args, create=True, **kwargs):
    made = initial_state(*args, create=create, **kwargs)
    if not create:  # the sweeper's `check` hook (check_job)
        checks.append(weakref.ref(made[0]))
    return made

def recording_train(cfg, *args, **kwargs):
    seen.append([ref() is not None for ref in checks])
    return train(cfg, *args, **kwargs)

def recording_run_arms(cfg, *args, **kwargs):  # a fused batch: one look for all its trials
    seen.append([ref() is not None for ref in checks])
    return run_arms(cfg, *args, **kwargs)

train_module.initial_state, train_module.train = recording_initial_state, recording_train
fused_module.run_arms = recording_run_arms
status = train_module.run_multirun(json.loads(sys.argv[1]))
print(json.dumps({"status": status, "seen": seen}))
"""


@pytest.mark.parametrize(("launcher", "looks"), [("lrsweep", 3), ("fused", 1)])
def test_the_check_hooks_model_is_gone_before_the_trials(tmp_path, launcher, looks):
    """The sweeper collects nothing while it validates, then freezes what is left: the model
    the `check` hook built must be freed by then, not held through the sweep (torch's first
    optimizer imports torch._dynamo, which leaves the frames under it in a reference cycle).
    Looked at as each trial starts, or as the fused batch of all three does."""
    args = [*SWEEPS["first"], f"hydra/launcher={launcher}"]
    out = run_python("-c", CHECK_MODEL_FREED, json.dumps(args), cwd=tmp_path)
    state = json.loads(out.strip().splitlines()[-1])
    assert state["status"] == 0
    assert state["seen"] == [[False]] * looks  # one check, then the trials: never alive


def test_sweeps_in_one_process_from_two_folders_each_write_their_own_study(tmp_path, train_here):
    """The default storage is a relative SQLite path: a second sweep run in this process from
    another folder writes that folder's study, not the one the first sweep opened."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        proc = train_here("-m", *TINY, "study.name=same", "sweep.points=2", cwd=tmp_path / folder)
        assert proc.returncode == 0, proc.stderr
    for folder in ("a", "b"):  # each trial's own reports (per-epoch values, attributes) there
        db = tmp_path / folder / "outputs" / "lrsweep.db"
        trials = optuna.load_study(study_name="same", storage=f"sqlite:///{db}").trials
        assert [sorted(t.intermediate_values) for t in trials] == [[0, 1]] * 2, folder
        assert [t.user_attrs.get("epochs_run") for t in trials] == [2, 2], folder
