"""The README's main job end to end on a tiny config: stage 1, refine + stage 2, confirm, report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY, two_stage_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


SCRIPT = str(ROOT / "scripts" / "two_stage_sweep.py")
NAME = "e2e"


@dataclass
class Search:
    workdir: Path
    pid: int  # the script's process
    returncode: int
    output: str


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> Search:
    """The script run once on a tiny config: stage 1 (5 LRs x 2 seeds), stage 2 (4 x 2), confirm
    (2 to 4 LRs x 2 fresh seeds), report."""
    workdir = tmp_path_factory.mktemp("two_stage")
    overrides = [*TINY, f"study.name={NAME}", "sweep.points=5", "sweep.seeds=[0,1]"]
    args = ["--points", "4", "--confirm-top", "2", "--confirm-seeds", "2", *overrides]
    with subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        output, _ = proc.communicate(timeout=400)
    return Search(workdir, proc.pid, proc.returncode, output)


def test_two_stage_script_end_to_end(search):
    assert search.returncode == 0, search.output
    tmp_path, name = search.workdir, NAME
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    stage1, stage2, confirm = (
        optuna.load_study(study_name=n, storage=storage)
        for n in (name, f"{name}-stage2", f"{name}-confirm")
    )
    complete = optuna.trial.TrialState.COMPLETE
    assert len(stage1.get_trials(states=(complete,))) == 10
    assert len(stage2.get_trials(states=(complete,))) == 8
    assert stage2.user_attrs["parent_study"] == name
    assert confirm.user_attrs["parent_study"] == f"{name}-stage2"

    # Stage 2 searches strictly inside stage 1's range, or past the edge that held the best.
    lr1 = sorted(stage1.user_attrs["grid"]["lr"])
    lr2 = sorted(stage2.user_attrs["grid"]["lr"])
    proposal = stage2.user_attrs["proposal"]
    low, high = proposal["low"], proposal["high"]
    assert low <= lr2[0] and lr2[-1] <= high
    assert not set(lr2) & set(lr1)  # stage 1's LRs (the range's ends among them) not run again
    # Interior: two stage-1 grid points around the best, a strictly narrower range.
    inside = lr1[0] <= low and high <= lr1[-1] and high / low < lr1[-1] / lr1[0]
    past_an_edge = low < lr1[0] or high > lr1[-1]
    assert inside != past_an_edge
    if inside:
        assert low in lr1 and high in lr1 and "interior" in proposal["reason"]
    else:
        assert "edge" in proposal["reason"] and (lr2[0] == low or lr2[-1] == high)

    # Confirm: the candidates ran on seeds stages 1 and 2 never used.
    confirm_seeds = {t.params["seed"] for t in confirm.trials}
    assert len(confirm_seeds) == 2 and not confirm_seeds & {0, 1}
    candidates = {t.params["lr"] for t in confirm.get_trials(states=(complete,))}
    assert 2 <= len(candidates) <= 4  # top 2, the interpolated optimum, stage 1's best
    stage1_best = max(
        lr1, key=lambda lr: sum(t.value for t in stage1.trials if t.params["lr"] == lr)
    )
    assert stage1_best in candidates
    # Stage 2's grid holds stage 1's best (--points 4, even): inside its range, not run again
    assert proposal["stage1_best"] == stage1_best
    assert lr2[0] < stage1_best < lr2[-1] and stage1_best not in lr2

    report = tmp_path / "outputs" / "reports" / name
    assert (report / "curve.png").read_bytes()[:8] == PNG_SIGNATURE
    trials = pd.read_csv(report / "trials.csv")
    for column in ("stage", "lr", "seed", "value", "diverged", "epochs_run", "seconds"):
        assert column in trials.columns
    assert set(trials["stage"]) == {"stage1", "stage2", "confirm"}
    best = yaml.safe_load((report / "best.yaml").read_text())
    assert best["lr"] in candidates
    assert f"lr={best['lr']!r}" in " ".join(best["overrides"])
    assert best["stage2_gain"]["measured_on"] == "confirm"


def test_two_stage_script_runs_the_whole_search_in_one_process(search):
    assert search.returncode == 0, search.output
    storage = f"sqlite:///{search.workdir}/outputs/lrsweep.db"
    pids = {
        stage: {
            t.user_attrs["pid"] for t in optuna.load_study(study_name=study, storage=storage).trials
        }
        for stage, study in (
            ("stage1", NAME),
            ("stage2", f"{NAME}-stage2"),
            ("confirm", f"{NAME}-confirm"),
        )
    }
    assert pids == {"stage1": {search.pid}, "stage2": {search.pid}, "confirm": {search.pid}}
    # The headers still name the command each step stands for.
    headers = [line for line in search.output.splitlines() if line.startswith("==== ")]
    assert [h.split(":")[0] for h in headers] == [
        "==== stage 1",
        "==== refine + stage 2",
        "==== confirm",
        "==== confirm",
        "==== report",
    ]
    assert headers[0].startswith("==== stage 1: python -m src.train -m epochs=2 ")
    assert headers[1].startswith("==== refine + stage 2: python -m src.refine --run --points 4 ")


def test_two_stage_script_bad_override_is_one_line_before_anything_runs(tmp_path, cli_here):
    args = [*TINY, "study.name=bad", "optimizer.lr_decay=0.5"]
    proc = cli_here(two_stage_main(), *args, cwd=tmp_path)  # `python <SCRIPT> <args>`
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Could not override 'optimizer.lr_decay'")
    assert "====" not in proc.stdout  # no step started
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_two_stage_script_ctrl_c_stops_the_search_with_130(tmp_path):
    # About 1 s per trial: time to interrupt stage 1 mid-trial. SIGINT may be ignored by a CI
    # shell and would be inherited: give the script the default handler.
    args = [*TINY, "study.name=stopped", "sweep.points=3", "epochs=40", "batch_size=8"]
    with subprocess.Popen(
        [sys.executable, SCRIPT, *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    ) as proc:
        seen = []
        for line in proc.stdout:  # the study exists once the sweep's header is out
            seen.append(line)
            if line.startswith("[lrsweep] study 'stopped'"):
                break
        storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
        running = optuna.trial.TrialState.RUNNING
        deadline = time.monotonic() + 60
        while not optuna.load_study(study_name="stopped", storage=storage).get_trials(
            states=(running,)
        ):
            assert time.monotonic() < deadline, "no trial started:\n" + "".join(seen)
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "run the same command again to resume" in stderr
    assert "==== refine" not in stdout  # the search stopped at the interrupted step
    study = optuna.load_study(study_name="stopped", storage=storage)
    assert not study.get_trials(states=(running,))  # the trial in flight is FAIL: a rerun resumes
