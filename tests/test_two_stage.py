"""The README's main job end to end on a tiny config: stage 1, refine + stage 2, confirm, report."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pandas as pd
import yaml
from conftest import ROOT, TINY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_two_stage_script_end_to_end(tmp_path):
    name = "e2e"
    overrides = [*TINY, f"study.name={name}", "sweep.points=5", "sweep.seeds=[0,1]"]
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "two_stage_sweep.py"),
            "--points",
            "4",
            "--confirm-top",
            "2",
            "--confirm-seeds",
            "2",
            *overrides,
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
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
    assert (lr2[0], lr2[-1]) == (proposal["low"], proposal["high"]) or (
        abs(lr2[0] / proposal["low"] - 1) < 1e-12 and abs(lr2[-1] / proposal["high"] - 1) < 1e-12
    )
    # Interior: two stage-1 grid points around the best, a strictly narrower range.
    inside = lr1[0] <= lr2[0] and lr2[-1] <= lr1[-1] and lr2[-1] / lr2[0] < lr1[-1] / lr1[0]
    past_an_edge = lr2[0] < lr1[0] or lr2[-1] > lr1[-1]
    assert inside != past_an_edge
    if inside:
        assert lr2[0] in lr1 and lr2[-1] in lr1 and "interior" in proposal["reason"]
    else:
        assert "edge" in proposal["reason"]

    # Confirm: the candidates ran on seeds stages 1 and 2 never used.
    confirm_seeds = {t.params["seed"] for t in confirm.trials}
    assert len(confirm_seeds) == 2 and not confirm_seeds & {0, 1}
    candidates = {t.params["lr"] for t in confirm.get_trials(states=(complete,))}
    assert 2 <= len(candidates) <= 4  # top 2, the interpolated optimum, stage 1's best
    stage1_best = max(
        lr1, key=lambda lr: sum(t.value for t in stage1.trials if t.params["lr"] == lr)
    )
    assert stage1_best in candidates

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
