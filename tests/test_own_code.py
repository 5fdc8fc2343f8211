"""Your own training code: the whole search around a Hydra app that is not lrsweep's trial
(`tests/apps/peak.py`: a known optimum in log10(lr)) and around a plain Python function
(`lrsweep.search`)."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

import lrsweep
from lrsweep.study_protocol import POINT_ATTR
from tests.conftest import ROOT, _env

APP = ROOT / "tests" / "apps" / "peak.py"
OPTIMUM = 0.003


def run_app(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(APP), "-m", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_app(*args: str, cwd: Path, log: str, **popen: object) -> subprocess.Popen:
    """The app's sweep (`-m <args>`) started in `cwd`, its output (both streams) into the file
    `cwd/<log>`: jobs in processes of their own inherit it, and a pipe would stay open until
    they end, long after the sweep was killed."""
    with open(cwd / log, "w") as out:
        return subprocess.Popen(
            [sys.executable, str(APP), "-m", *args],
            cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT, **popen,
        )  # fmt: skip


def best_yaml(cwd: Path) -> dict:
    (path,) = cwd.glob("multirun/*/*/best.yaml")
    return yaml.safe_load(path.read_text())


def stage2_step(best: dict) -> float:
    """The ratio between neighbouring LRs of stage 2's grid."""
    study = optuna.load_study(study_name=best["stages"]["stage2"], storage="sqlite:///peak.db")
    lrs = sorted({t.params["optim.lr"] for t in study.trials})
    return lrs[1] / lrs[0]


def trials_per_point(cwd: Path, name: str) -> dict[str, int]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/peak.db")
    counts: dict[str, int] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        counts[t.user_attrs[POINT_ATTR]] = counts.get(t.user_attrs[POINT_ATTR], 0) + 1
    return counts


@pytest.mark.parametrize("minimize", [False, True])
def test_a_hydra_app_gets_the_whole_search_and_its_lr_key(tmp_path, minimize):
    """`-m hydra.sweeper.search=full` on an app whose LR is `optim.lr` and that has no key of
    lrsweep's: stage 1, stage 2, the confirm step and the report, in either direction; the
    chosen LR lies within one stage-2 grid step of the known optimum."""
    direction = "minimize" if minimize else "maximize"
    proc = run_app(
        "hydra.sweeper.search=full",
        f"hydra.sweeper.direction={direction}",
        f"minimize={minimize}",
        "noise=0.01",
        cwd=tmp_path,
    )
    assert "Could not override" not in proc.stderr
    best = best_yaml(tmp_path)
    assert (best["lr_key"], best["direction"], best["stage"]) == ("optim.lr", direction, "confirm")
    os.chdir(tmp_path)
    step = stage2_step(best)
    assert abs(math.log(best["lr"] / OPTIMUM)) <= math.log(step) + 1e-9, (best["lr"], step)
    assert best["overrides"] == [f"optim.lr={best['lr']!r}"]
    assert set(best["stages"]) == {"stage1", "stage2", "confirm"}
    out = next(tmp_path.glob("multirun/*/*"))
    assert (out / "curve.png").stat().st_size > 0
    trials = (out / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 6 + 6 + 3 * 5  # header, stage 1, stage 2, confirm (5 LRs x 3)
    # The confirm step's fresh seeds went to the app's own `seed` key.
    confirm = optuna.load_study(study_name="peak-confirm", storage="sqlite:///peak.db")
    assert {t.params["seed"] for t in confirm.trials} == {1, 2, 3}


def test_a_rerun_of_a_finished_search_runs_nothing_again(tmp_path):
    run_app("hydra.sweeper.search=full", cwd=tmp_path)
    again = run_app("hydra.sweeper.search=full", cwd=tmp_path)
    assert again.stdout.count("nothing to run") == 3, again.stdout
    for name in ("peak", "peak-stage2", "peak-confirm"):
        assert set(trials_per_point(tmp_path, name).values()) == {1}


def test_an_app_that_names_no_study_sweeps_into_the_study_named_after_it(tmp_path):
    """`study_name` null, the sweeper's default: the study is the app's name, `peak`. Every job
    names no study either, which is not a study name of its own."""
    proc = run_app("hydra.sweeper.study_name=null", "hydra.sweeper.points=2", cwd=tmp_path)
    assert "study 'peak'" in proc.stdout
    assert set(trials_per_point(tmp_path, "peak").values()) == {1}
    assert len(trials_per_point(tmp_path, "peak")) == 2


def test_a_diverged_run_is_recorded_and_the_search_goes_on(tmp_path):
    """NaN above lr=0.1: those trials are COMPLETE and diverged, never chosen; a mapping return
    gives the metric named by metric_name."""
    run_app(
        "hydra.sweeper.search=full",
        "diverge_above=0.1",
        "as_dict=true",
        "hydra.sweeper.metric_name=score",
        cwd=tmp_path,
    )
    study = optuna.load_study(study_name="peak", storage=f"sqlite:///{tmp_path}/peak.db")
    diverged = [t for t in study.trials if t.user_attrs.get("diverged")]
    assert {t.params["optim.lr"] for t in diverged} == {1.0}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert best_yaml(tmp_path)["lr"] < 0.1


def test_a_killed_search_resumes_exactly_once(tmp_path):
    """SIGKILL in the middle of stage 1; the rerun finishes the search and every point of every
    stage has exactly one COMPLETE trial."""
    proc = subprocess.Popen(
        [sys.executable, str(APP), "-m", "hydra.sweeper.search=full", "sleep=0.3",
         "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        if line.startswith("[3/6]"):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_app(
        "hydra.sweeper.search=full",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        cwd=tmp_path,
    )
    for name, points in (("peak", 6), ("peak-stage2", 6), ("peak-confirm", 15)):
        counts = trials_per_point(tmp_path, name)
        assert len(counts) == points and set(counts.values()) == {1}, (name, counts)


def test_the_garbage_collector_runs_while_the_jobs_run(tmp_path):
    """The sweeper turns collection off while it validates, and back on for the trials: off, each
    trial's cyclic garbage would stay (RSS grew 10% over 150 trials of lrsweep's own app)."""
    log = tmp_path / "gc.txt"
    run_app("hydra.sweeper.search=full", f"gc_log={log}", cwd=tmp_path)
    assert set(log.read_text().split()) == {"1"}


def test_a_hydra_app_under_the_joblib_launcher(tmp_path):
    run_app(
        "hydra.sweeper.search=full",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        cwd=tmp_path,
    )
    assert best_yaml(tmp_path)["stage"] == "confirm"


def test_a_grid_that_search_full_cannot_refine_is_one_line_exit_2(tmp_path):
    proc = run_app("hydra.sweeper.search=full", "noise=0,0.1", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: search=full refines one learning rate; the grid also sweeps ['noise']: fix "
        "them to one value each, or use search=grid"
    ]
    assert not (tmp_path / "peak.db").exists()


# ---------------------------------------------------------------- the Python API


def peak(lr: float, seed: int) -> float:
    """A validation loss with its minimum at lr=0.02 and a small seed wobble."""
    import random

    return (math.log10(lr) - math.log10(0.02)) ** 2 + random.Random(f"{seed}-{lr}").gauss(0, 0.01)


def test_python_search_finds_a_known_minimum_and_returns_its_tables(tmp_path):
    result = lrsweep.search(
        peak,
        low=1e-4,
        high=1.0,
        points=6,
        study="api",
        storage=f"sqlite:///{tmp_path}/api.db",
        direction="minimize",
        metric="val_loss",
        report_dir=tmp_path / "report",
    )
    stage2 = result.trials[result.trials["stage"] == "stage2"]["lr"].sort_values().to_numpy()
    step = stage2[1] / stage2[0]
    assert abs(math.log(result.lr / 0.02)) <= math.log(step) + 1e-9
    assert result.best["stage"] == "confirm" and result.n == 3
    assert list(result.trials["stage"].unique()) == ["stage1", "stage2", "confirm"]
    assert len(result.trials) == 6 + 6 + 3 * len(result.best["good_range"]) or len(result.trials)
    assert {"lr", "seed", "value", "state"} <= set(result.trials.columns)
    assert (tmp_path / "report" / "best.yaml").exists()
    assert result.figure.get_axes()  # a matplotlib Figure with the curve


def test_python_search_resumes_after_an_interruption(tmp_path):
    """Ctrl-C (KeyboardInterrupt inside train_fn) in the middle of stage 1: the trial in flight
    is failed, and the same call again runs only what is missing."""
    calls: list[float] = []

    def train(lr: float, seed: int) -> float:
        calls.append(lr)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return peak(lr, seed)

    kwargs = dict(
        low=1e-4, high=1.0, points=6, study="resume", storage=f"sqlite:///{tmp_path}/r.db",
        direction="minimize", report_dir=tmp_path / "rep",
    )  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        lrsweep.search(train, **kwargs)
    assert len(calls) == 4
    lrsweep.search(train, **kwargs)
    first_run = 3  # finished before the interrupt
    assert len(calls) == 4 + (6 - first_run) + 6 + 15
    again = len(calls)
    lrsweep.search(train, **kwargs)
    assert len(calls) == again  # a finished search runs nothing


def test_python_search_refuses_bad_settings_before_any_call(tmp_path):
    calls = []
    for bad in (
        {"low": 0.0},
        {"high": math.inf},
        {"points": 1},
        {"direction": "up"},
        {"seeds": []},
        {"search": "tpe"},
    ):
        with pytest.raises(ValueError):
            lrsweep.search(calls.append, storage=f"sqlite:///{tmp_path}/b.db", **bad)
    assert calls == [] and not (tmp_path / "b.db").exists()


def test_python_transfer_applies_the_named_rules():
    t = lrsweep.transfer(
        0.01,
        base={"batch": 32, "width": 128},
        target={"batch": 512, "width": 2048},
        optimizer="torch.optim.AdamW",
    )
    assert [(f.axis, f.rule, f.factor) for f in t.factors] == [
        ("batch", "sqrt", 4.0),
        ("width", "inverse_sqrt", 1 / 4),
    ]
    assert t.lr == pytest.approx(0.01 * 4 / 4)
    muP = lrsweep.transfer(0.01, base={"width": 64}, target={"width": 1024}, parametrisation="mup")
    assert muP.lr == 0.01
    with pytest.raises(ValueError, match="unknown axes"):
        lrsweep.transfer(0.01, base={"heads": 4}, target={"heads": 8})


def test_the_lrsweep_command_runs_each_module_as_its_python_m_command(capsys):
    from src import command, transfer

    args = ["base.lr=0.01", "target.batch_size=128"]
    assert transfer.main(args) == 0
    direct = capsys.readouterr().out
    assert command.main(["transfer", *args]) == 0
    assert capsys.readouterr().out == direct
    assert direct.strip().splitlines()[-1].startswith("target_lr=")
    assert command.main([]) == 0 and "range-test" in capsys.readouterr().out
    assert command.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_the_builtin_trial_minimises_val_loss_through_every_stage(tmp_path):
    """`metric=val_loss`: every study minimises, the choice is the confirmed LR with the lowest
    smoothed loss (every stage's trials of an LR pooled, a local quadratic through them), and the
    report says so."""
    import pandas as pd

    from lrsweep.smooth import bandwidth, local_quadratic
    from tests.conftest import TINY, run_python

    out = run_python(
        str(ROOT / "scripts" / "two_stage_sweep.py"), *TINY, "metric=val_loss", cwd=tmp_path
    )
    (best_file,) = tmp_path.glob("outputs/reports/*/best.yaml")
    best = yaml.safe_load(best_file.read_text())
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    values: dict[float, list[float]] = {}
    for name in best["stages"].values():
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.direction == optuna.study.StudyDirection.MINIMIZE
        for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            values.setdefault(t.params["lr"], []).append(t.value)
    confirm = optuna.load_study(study_name=best["stages"]["confirm"], storage=storage)
    candidates = sorted({t.params["lr"] for t in confirm.trials})
    assert best["lr"] in candidates
    assert best["selection_score"]["mean"] == pytest.approx(statistics.mean(values[best["lr"]]))
    pooled = pd.DataFrame(
        {"lr": list(values), "mean": [statistics.mean(v) for v in values.values()],
         "n": [len(v) for v in values.values()]}
    )  # fmt: skip
    stage1 = optuna.load_study(study_name=best["stages"]["stage1"], storage=storage)
    h = bandwidth([t.params["lr"] for t in stage1.trials])
    smoothed = dict(zip(candidates, local_quadratic(pooled, candidates, h), strict=True))
    assert best["lr"] == min(candidates, key=lambda lr: (smoothed[lr], lr))
    assert "on the smoothed curve" in best["selection_score"]["rule"]
    assert "validation loss" in out or "val_loss" in out


def test_a_minimised_search_with_diverged_runs_plots_and_reports(tmp_path):
    """A loss that blows up (inf) above lr=0.3 on one seed of each LR there: those LRs' means are
    infinite, the search still chooses, and the curve is drawn (no infinite axis limit)."""

    def train(lr: float, seed: int) -> float:
        if lr > 0.3 and seed % 2 == 0:
            return math.inf
        return peak(lr, seed)

    result = lrsweep.search(
        train, low=1e-3, high=3.0, points=6, seeds=[0, 1], study="blowup",
        storage=f"sqlite:///{tmp_path}/b.db", direction="minimize", report_dir=tmp_path / "r",
    )  # fmt: skip
    assert result.lr < 0.3
    assert (tmp_path / "r" / "curve.png").stat().st_size > 0
    diverged = result.trials[result.trials["diverged"]]
    assert len(diverged) and (diverged["lr"] > 0.3).all()


def test_a_hydra_apps_stage_2_by_a_model_and_a_bad_method_refused(tmp_path):
    """`hydra.sweeper.stage2_method=gp`: stage 2's LRs proposed one at a time by Optuna's GP
    sampler seeded with stage 1; an unknown method is one line, exit 2, before the study."""
    bad = run_app("hydra.sweeper.search=full", "hydra.sweeper.stage2_method=bogus", cwd=tmp_path,
                  check=False)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: stage 2 method='bogus': one of grid, tpe, gp"
    ]
    assert not (tmp_path / "peak.db").exists()
    proc = run_app("hydra.sweeper.search=full", "hydra.sweeper.stage2_method=gp", cwd=tmp_path)
    assert "stage 2 by gp: 6 LRs, one at a time" in proc.stdout
    assert best_yaml(tmp_path)["stage"] == "confirm"
    assert len(trials_per_point(tmp_path, "peak-stage2")) == 6
