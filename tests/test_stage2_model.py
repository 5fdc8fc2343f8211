"""Stage 2 by each method (the grid, or a model: `stage2_method="tpe"` / `"gp"`,
`lrsweep.stage2_model`) through the Python API on a plain function: the budget split, the report
and plot, exactly-once resume without drift."""

from __future__ import annotations

import math
import random

import optuna
import pytest

import lrsweep
from lrsweep.stage2_model import history, propose


def peak(lr: float, seed: int) -> float:
    """An accuracy with its maximum at lr=0.02 and a small seed wobble."""
    wobble = random.Random(f"{seed}-{lr!r}").gauss(0, 0.005)
    return 0.9 - 0.05 * (math.log10(lr) - math.log10(0.02)) ** 2 + wobble


def search(tmp_path, train, method, name="m", **kwargs):
    settings = dict(
        low=1e-4,
        high=1.0,
        points=6,
        stage2_points=5,
        seeds=[0, 1],
        confirm_top=2,
        confirm_seeds=2,
        study=name,
        storage=f"sqlite:///{tmp_path}/{name}.db",
        report_dir=tmp_path / f"report-{name}",
        stage2_method=method,
    )
    return lrsweep.search(train, **{**settings, **kwargs})


def stage2_lrs(tmp_path, name="m") -> list[float]:
    """Stage 2's LRs in the order their trials were created."""
    study = optuna.load_study(
        study_name=f"{name}-stage2", storage=f"sqlite:///{tmp_path}/{name}.db"
    )
    return list(dict.fromkeys(t.params["lr"] for t in sorted(study.trials, key=lambda t: t.number)))


@pytest.mark.parametrize("method", ["grid", "tpe", "gp"])
def test_stage2_honours_the_budget_split_and_shows_in_the_report(tmp_path, method):
    result = search(tmp_path, peak, method)
    by_stage = result.trials.groupby("stage").size().to_dict()
    assert by_stage["stage1"] == 6 * 2 and by_stage["stage2"] == 5 * 2  # LRs x stage 1's seeds
    confirm = result.trials[result.trials["stage"] == "confirm"]
    assert set(confirm["seed"]) == {2, 3}  # confirm_seeds fresh seeds
    study = optuna.load_study(study_name="m-stage2", storage=f"sqlite:///{tmp_path}/m.db")
    proposal = study.user_attrs["proposal"]
    assert proposal["method"] == method
    lrs = stage2_lrs(tmp_path)
    assert len(lrs) == 5 and all(proposal["low"] <= x <= proposal["high"] for x in lrs)
    # the report and the plot show stage 2's trials
    csv = (result.report_dir / "trials.csv").read_text()
    assert csv.count("\nstage2,") == 10
    labels = [t.get_text() for ax in result.figure.get_axes() for t in ax.get_legend().get_texts()]
    assert any(label.startswith("stage2 (mean ± std, 2 seeds)") for label in labels)
    assert 0.005 < result.lr < 0.08  # near the peak at 0.02


@pytest.mark.parametrize("method", ["tpe", "gp"])
def test_model_stage2_resumes_after_a_kill_the_same_search_without_rerunning(tmp_path, method):
    """Ctrl-C in the middle of a model-based stage 2, then the same call: stage 2 goes on with
    the very LRs an uninterrupted search proposes, and no finished trial runs again."""
    clean_calls: list[tuple] = []

    def clean(lr: float, seed: int) -> float:
        clean_calls.append((lr, seed))
        return peak(lr, seed)

    search(tmp_path, clean, method, name="clean")

    calls: list[tuple] = []

    def killed(lr: float, seed: int) -> float:
        calls.append((lr, seed))
        if len(calls) == 6 * 2 + 2 * 2 + 1:  # stage 1, two stage-2 LRs, then one more trial
            raise KeyboardInterrupt
        return peak(lr, seed)

    with pytest.raises(KeyboardInterrupt):
        search(tmp_path, killed, method, name="killed")
    assert len(stage2_lrs(tmp_path, "killed")) == 3
    search(tmp_path, killed, method, name="killed")
    assert stage2_lrs(tmp_path, "killed") == stage2_lrs(tmp_path, "clean")  # no drift
    # the same trials, each once, but the one in flight at the kill (failed, then run again)
    assert len(calls) == len(clean_calls) + 1
    assert sorted(calls) == sorted([*clean_calls, calls[6 * 2 + 2 * 2]])
    again = len(calls)
    search(tmp_path, killed, method, name="killed")
    assert len(calls) == again  # a finished search runs nothing


def test_a_proposal_is_a_function_of_its_history_and_step():
    observed = [(1e-3, 0.5), (1e-2, 0.8), (1e-1, 0.6)]
    first = propose("tpe", observed, 1e-3, 1e-1, "maximize", 3)
    assert propose("tpe", observed, 1e-3, 1e-1, "maximize", 3) == first
    assert 1e-3 <= first <= 1e-1


def test_history_keeps_the_range_orders_and_replaces_non_finite_values():
    import pandas as pd

    frame = pd.DataFrame(
        {
            "lr": [0.1, 0.01, 0.01, 1.0, 0.05],
            "seed": [0, 1, 0, 0, 0],
            "value": [0.3, 0.2, 0.25, 0.1, math.inf],
            "state": ["COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"],
        }
    )
    assert history(frame, 0.01, 0.1, "minimize") == [
        (0.01, 0.25),
        (0.01, 0.2),
        (0.05, 0.3),  # diverged (inf): the worst finite value
        (0.1, 0.3),
    ]


def test_an_unknown_stage2_method_is_refused_before_any_call(tmp_path):
    calls: list = []
    with pytest.raises(ValueError, match="stage 2 method='bayes': one of grid, tpe, gp"):
        search(tmp_path, lambda lr, seed: calls.append(lr), "bayes")
    assert calls == [] and not (tmp_path / "m.db").exists()


def test_the_builtin_search_runs_a_tpe_stage2_and_reports_it(tmp_path, cli_here):
    from conftest import TINY, two_stage_main

    args = ["--points", "3", "--stage2-method", "tpe", "--confirm-top", "1", "--confirm-seeds", "2"]
    args += [*TINY, "study.name=tpe", "sweep.points=4"]
    proc = cli_here(two_stage_main(), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (
        "==== refine + stage 2: python -m src.refine --run --points 3 --method tpe " in proc.stdout
    )
    assert "stage 2, tpe step 3/3" in proc.stdout
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    stage2 = optuna.load_study(study_name="tpe-stage2", storage=storage)
    assert stage2.user_attrs["proposal"]["method"] == "tpe"
    assert len(stage2.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    trials = (tmp_path / "outputs" / "reports" / "tpe" / "trials.csv").read_text()
    assert trials.count("\nstage2,") == 3


def test_the_builtin_tpe_stage2_resumes_after_sigterm_the_same_search(tmp_path, cli_here):
    """`scripts/two_stage_sweep.py --stage2-method tpe` stopped by SIGTERM during stage 2's second
    step, then the same command: stage 2 proposes the very LRs an uninterrupted search does, and
    no trial that finished before the stop runs again."""
    import signal

    from conftest import TINY, start_module, two_stage_main

    args = ["--points", "3", "--stage2-method", "tpe", "--confirm-top", "1", "--confirm-seeds", "2"]
    args = [*args, *TINY, "study.name=tpe", "sweep.points=4"]
    storage = "sqlite:///{}/outputs/lrsweep.db"

    def stage2(where) -> list[optuna.trial.FrozenTrial]:
        study = optuna.load_study(study_name="tpe-stage2", storage=storage.format(where))
        return sorted(study.trials, key=lambda t: t.number)

    def order(trials) -> list[float]:
        return list(dict.fromkeys(t.params["lr"] for t in trials))

    (tmp_path / "clean").mkdir()
    assert cli_here(two_stage_main(), *args, cwd=tmp_path / "clean").returncode == 0

    (tmp_path / "killed").mkdir()
    proc = start_module("src.search", *args, cwd=tmp_path / "killed")
    for line in proc.stdout:  # stop it once stage 2's second step has started
        if line.startswith("stage 2, tpe step 2/3"):
            proc.send_signal(signal.SIGTERM)
            break
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    complete = optuna.trial.TrialState.COMPLETE
    finished = {t.number: t.datetime_complete for t in stage2(tmp_path / "killed")}
    finished = {n: d for n, d in finished.items() if d is not None}
    assert len(order(stage2(tmp_path / "killed"))) < 3  # stopped before stage 2's end

    rerun = cli_here(two_stage_main(), *args, cwd=tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    after = stage2(tmp_path / "killed")
    assert order(after) == order(stage2(tmp_path / "clean"))  # no drift
    done = [t for t in after if t.state == complete]
    assert len(done) == len({(t.params["lr"], t.params["seed"]) for t in done}) == 3
    for trial in done:  # what had finished before the stop is that very trial, not a re-run
        if trial.number in finished:
            assert trial.datetime_complete == finished[trial.number]
    assert len([t for t in done if t.number in finished]) >= 1
