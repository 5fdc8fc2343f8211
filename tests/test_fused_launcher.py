"""`hydra/launcher=fused`: a batch's jobs trained as one stacked model (src/fused.py), each arm still
its own Hydra job and Optuna trial; a batch it cannot fuse runs one job at a time, and says why."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import ROOT, SEQUENTIAL, TINY, run_module, run_python, wait_for

State = optuna.trial.TrialState
# SIGINT may be ignored by a CI shell and would be inherited: give a sweep the default.
DEFAULT_SIGINT = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
FUSED = "hydra/launcher=fused"
# 8 arms: 4 LRs x 2 data orders, below the edge of stability (there, float rounding grows over the
# epochs into a different run: src/fused.py's benchmark shows it at lr=1 on digits).
GRID = ["sweep.points=4", "sweep.high=0.1", "sweep.seeds=[0,1]"]
N_TEST = 359  # digits' test split at data.test_fraction=0.2


def trials(workdir: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{workdir}/outputs/lrsweep.db"
    return optuna.load_study(study_name=name, storage=storage).get_trials(states=(State.COMPLETE,))


def by_point(done: list[optuna.trial.FrozenTrial]) -> dict[tuple[float, int], object]:
    return {(t.params["lr"], t.params["seed"]): t for t in done}


def test_a_fused_sweep_records_each_arm_as_its_own_job_and_trial_as_the_sequential_one(
    tmp_path: Path,
):
    grid = [*TINY, *GRID, "data.test_fraction=0.2"]  # each arm records its test accuracy too
    proc = run_module("src.train", "-m", *grid, "study.name=fused", FUSED, cwd=tmp_path)
    run_module("src.train", "-m", *grid, "study.name=alone", SEQUENTIAL, cwd=tmp_path)
    fused, alone = by_point(trials(tmp_path, "fused")), by_point(trials(tmp_path, "alone"))
    assert sorted(fused) == sorted(alone) and len(fused) == 8
    for point, arm in fused.items():
        one = alone[point]
        assert arm.user_attrs["fused_arms"] == 8 and "fused_arms" not in one.user_attrs
        # The same training to float rounding: within one validation example.
        assert abs(arm.value - one.value) <= 1.5 / arm.user_attrs["val_examples"], point
        assert abs(arm.user_attrs["test_acc"] - one.user_attrs["test_acc"]) <= 1.5 / N_TEST, point
        assert arm.user_attrs["epochs_run"] == one.user_attrs["epochs_run"]
        assert arm.user_attrs["diverged"] == one.user_attrs["diverged"]
        assert sorted(arm.intermediate_values) == sorted(one.intermediate_values)
    # One job folder and .hydra record per arm, as sequential jobs have.
    configs = list((tmp_path / "outputs" / "sweeps").glob("fused*/trial_*/.hydra/config.yaml"))
    assert len(configs) == 8
    # The arms' seconds are their shares of one batch: equal, adding up to the batch's time.
    assert len({arm.user_attrs["seconds"] for arm in fused.values()}) == 1
    # The report reads the same from both: the same choice, the same rows to float rounding.
    reports = {}
    for name in ("fused", "alone"):
        out = tmp_path / "reports" / name
        run_module("src.report", "--out", str(out), *grid, f"study.name={name}", cwd=tmp_path)
        best = yaml.safe_load((out / "best.yaml").read_text())
        rows = pd.read_csv(out / "trials.csv").sort_values(["lr", "seed"])
        reports[name] = (best, rows)
    (best_f, rows_f), (best_a, rows_a) = reports["fused"], reports["alone"]
    assert best_f["lr"] == best_a["lr"]
    assert list(rows_f["lr"]) == list(rows_a["lr"]) and list(rows_f["seed"]) == list(rows_a["seed"])
    metric = [c for c in rows_a.columns if c in ("value", "val_acc")][0]
    assert np.abs(rows_f[metric].to_numpy() - rows_a[metric].to_numpy()).max() <= 1.5 / 360
    # Each arm's progress line says so; once the batch has ended nothing is left to wait for.
    progress = [line for line in proc.stdout.splitlines() if line.startswith("[")]
    progress = [line for line in progress if "/8] lr=" in line]
    assert len(progress) == 8
    assert all(line.endswith("(1/8 of a fused batch) ETA 0s") for line in progress), progress


def test_a_sweep_over_another_key_fuses_each_group_as_its_sequential_trials(tmp_path: Path):
    """`model.width` x lr x seed with `init_seed=${seed}`: the jobs that share everything but lr
    and seed (a width and a seed, its own initial weights) train as one fused model, each group
    apart; every arm records what its trial records under the sequential launcher."""
    grid = [*TINY, *GRID[:2], "sweep.points=3", "sweep.seeds=[0,1]", "model.width=16,32"]
    grid.append("init_seed=${seed}")
    proc = run_module("src.train", "-m", *grid, "study.name=groups", FUSED, cwd=tmp_path)
    run_module("src.train", "-m", *grid, "study.name=one", SEQUENTIAL, cwd=tmp_path)
    key = lambda t: (t.params["lr"], t.params["seed"], t.params["model.width"])  # noqa: E731
    fused = {key(t): t for t in trials(tmp_path, "groups")}
    alone = {key(t): t for t in trials(tmp_path, "one")}
    assert sorted(fused) == sorted(alone) and len(fused) == 12
    for point, arm in fused.items():
        one = alone[point]
        assert arm.user_attrs["fused_arms"] == 3, point  # its width and seed's 3 LRs
        assert arm.user_attrs["checkpoint"] == one.user_attrs["checkpoint"], point
        assert abs(arm.value - one.value) <= 1.5 / arm.user_attrs["val_examples"], point
        assert arm.user_attrs["epochs_run"] == one.user_attrs["epochs_run"], point
        assert arm.user_attrs["diverged"] == one.user_attrs["diverged"], point
    assert len({arm.user_attrs["checkpoint"] for arm in fused.values()}) == 4
    assert "fused launcher" not in proc.stderr, proc.stderr


def test_a_batch_smaller_than_the_grid_holds_one_widths_lrs(tmp_path: Path):
    """The grid varies the LR (and seed) fastest: batches of 3 over widths 16, 32, 64 x 3 LRs
    are one width's 3 LRs each, one fused model of 3 arms, not three widths at one LR (three
    singletons, nothing fused)."""
    args = [
        "-m", *TINY, "sweep.points=3", "model.width=16,32,64", "study.name=order",
        "hydra.launcher.n_jobs=3", FUSED,
    ]  # fmt: skip
    proc = run_module("src.train", *args, cwd=tmp_path)
    done = trials(tmp_path, "order")
    assert len(done) == 9 and all(t.user_attrs.get("fused_arms") == 3 for t in done)
    assert "fused launcher" not in proc.stderr, proc.stderr
    by_number = sorted(done, key=lambda t: t.number)
    assert [t.params["model.width"] for t in by_number] == [16] * 3 + [32] * 3 + [64] * 3


def test_a_batch_whose_one_group_does_not_fuse_trains_the_other_fused(tmp_path: Path):
    """Widths 32 and 4096 in one batch, on the CPU: width 32's LRs train fused, width 4096's (too
    wide to pay) one at a time with one line saying why; every trial completes."""
    args = [
        "-m", *TINY, "sweep.points=3", "sweep.low=0.01", "sweep.high=0.1", "device=cpu",
        "model.width=32,4096", "study.name=mixed", FUSED,
    ]  # fmt: skip
    proc = run_module("src.train", *args, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if "fused launcher" in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("[lrsweep] fused launcher: model.width=4096: on the CPU a model")
    assert lines[0].endswith("; these 3 jobs run one at a time")
    done = trials(tmp_path, "mixed")
    assert len(done) == 6 and all(t.state == State.COMPLETE for t in done)
    arms = {t.params["model.width"]: [] for t in done}
    for t in done:
        arms[t.params["model.width"]].append(t.user_attrs.get("fused_arms"))
    assert arms == {32: [3, 3, 3], 4096: [None, None, None]}


def test_a_model_too_wide_to_pay_on_the_cpu_runs_one_job_at_a_time_and_says_why(tmp_path: Path):
    import torch

    from src.fused_plan import CPU_FUSE_MAX_PARAMS, step_cost
    from src.study import compose_config
    from src.train import EVAL_BATCH_SIZE, initial_state, load_data

    wide = [*TINY, "model.width=4096", "epochs=2"]
    cfg = compose_config([*wide, f"paths.output_dir={tmp_path}/outputs"])
    splits = load_data(cfg)
    model, _, _ = initial_state(cfg, splits, torch.device("cpu"), lr=0.01)
    cost = step_cost(model, splits.train[0][0], cfg.batch_size, EVAL_BATCH_SIZE, states=1)
    assert cost.params > CPU_FUSE_MAX_PARAMS  # the rule's side this test is about
    args = ["-m", *wide, "sweep.points=3", "sweep.low=0.01", "sweep.high=0.1", "device=cpu"]
    proc = run_module("src.train", *args, "study.name=wide", FUSED, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if "fused launcher" in line]
    assert lines == [
        f"[lrsweep] fused launcher: on the CPU a model of {cost.params:,} parameters per arm "
        f"trains faster one arm at a time (fused arms pay up to {CPU_FUSE_MAX_PARAMS:,}; "
        "benchmarks/bench_fused.py --parts d); the jobs run one at a time"
    ], proc.stderr
    done = sorted(trials(tmp_path, "wide"), key=lambda t: t.number)
    assert len(done) == 3 and not any("fused_arms" in t.user_attrs for t in done)
    # Known before the first claim: each trial claimed as the one before it ended, not all three
    # at once, so other sweeps on the study could have taken the next points meanwhile.
    for before, after in zip(done, done[1:], strict=False):
        assert after.datetime_start >= before.datetime_complete


def test_a_finished_fused_sweep_runs_nothing_again(tmp_path: Path):
    args = ["-m", *TINY, "sweep.points=3", "study.name=again", FUSED]
    run_module("src.train", *args, cwd=tmp_path)
    rerun = run_module("src.train", *args, cwd=tmp_path)
    assert "nothing to run: all 3 grid points are done" in rerun.stdout
    assert len(trials(tmp_path, "again")) == 3


def test_a_batch_it_cannot_fuse_runs_one_job_at_a_time_and_says_why(tmp_path: Path):
    proc = run_module(
        "src.train", "-m", *TINY, "sweep.points=3", "study.name=amsgrad",
        "optimizer=adam", "+optimizer.amsgrad=true", FUSED,
        cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in proc.stderr.splitlines() if "fused launcher" in line]
    assert lines == [
        "[lrsweep] fused launcher: the optimizer maximizes or uses amsgrad; the jobs run one at a "
        "time"
    ]
    done = trials(tmp_path, "amsgrad")
    assert len(done) == 3 and not any("fused_arms" in t.user_attrs for t in done)


def test_the_whole_search_runs_fused(tmp_path: Path):
    out = run_python(
        str(ROOT / "scripts" / "two_stage_sweep.py"), *TINY, FUSED, cwd=tmp_path, timeout=300
    )
    assert "chosen lr" in out
    (report,) = tmp_path.glob("outputs/reports/*/best.yaml")
    assert report.is_file()


def test_a_fused_batch_killed_mid_training_is_run_again_exactly_once(tmp_path: Path):
    """Two batches of 3 arms; the sweep is killed while the second trains: the rerun fails its 3
    orphans as stale (heartbeat 1 s, grace 3 s) and trains them again, every point once."""
    import signal
    import time

    from conftest import start_module

    args = [
        "-m", *TINY, "epochs=30", "sweep.points=6", "study.name=killed", FUSED,
        "hydra.launcher.n_jobs=3", "hydra.sweeper.heartbeat_interval=1",
    ]  # fmt: skip
    sweep = start_module("src.train", *args, cwd=tmp_path, stderr=subprocess.STDOUT)
    finished = 0
    while finished < 3:  # the first batch's progress lines
        line = sweep.stdout.readline()
        assert line, "the sweep ended before it could be killed"
        finished += line.startswith("[") and "] lr=" in line
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    deadline = time.monotonic() + 60
    while len(optuna.load_study(study_name="killed", storage=storage).get_trials(
        states=(State.RUNNING,)
    )) < 3:  # fmt: skip
        assert time.monotonic() < deadline, "the second batch did not start"
        time.sleep(0.05)
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    run_module("src.train", *args, cwd=tmp_path)
    study = optuna.load_study(study_name="killed", storage=storage)
    done = study.get_trials(states=(State.COMPLETE,))
    assert len(done) == 6 and len({(t.params["lr"], t.params["seed"]) for t in done}) == 6
    assert len(study.get_trials(states=(State.FAIL,))) == 3  # the orphans, failed as stale


def test_ctrl_c_in_a_batch_run_one_job_at_a_time_keeps_the_trials_that_finished(tmp_path: Path):
    """A batch whose width-4096 jobs do not fuse (too wide to pay on the CPU) runs them one at a
    time, between the width-32 arms trained fused: each job is told as it ends, with its
    progress line, and a Ctrl-C fails only the jobs that had not been told (their results are not
    thrown away); the rerun trains just those."""
    from conftest import start_module

    args = [
        "-m", *TINY, "model.width=32,4096", "epochs=6", "stop_at_chance=false", "device=cpu",
        "sweep.points=4", "sweep.high=0.1", "study.name=fallback", FUSED,
    ]  # fmt: skip
    sweep = start_module("src.train", *args, cwd=tmp_path, preexec_fn=DEFAULT_SIGINT)
    line = ""
    while not line.startswith("[1/8] lr="):  # the first job's progress line, printed as it ended
        line = sweep.stdout.readline()
        assert line, "the sweep ended before it printed a progress line"
    sweep.send_signal(signal.SIGINT)
    _, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    assert "Traceback" not in err
    kept = trials(tmp_path, "fallback")  # at least the first job's, told before the Ctrl-C
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    failed = optuna.load_study(study_name="fallback", storage=storage).get_trials(
        states=(State.FAIL,)
    )
    # The failed trials' jobs had not run, but for at most one that ended as the Ctrl-C came.
    assert kept and len(kept) + len(failed) == 8
    assert sum("finished" in t.user_attrs for t in failed) <= 1
    run_module("src.train", *args, cwd=tmp_path)
    done = trials(tmp_path, "fallback")
    assert len(done) == 8 and len({(t.params["lr"], t.params["model.width"]) for t in done}) == 8
    assert {t.number for t in kept} <= {t.number for t in done}
    assert len({t.user_attrs["checkpoint"] for t in done}) == 2  # each width's own weights


def test_a_batch_run_one_job_at_a_time_stops_at_its_first_failure(tmp_path: Path, train_here):
    """max_failure_rate=0 (the default) stops the sweep at the first failed job, as the sequential
    launcher does. FailingSGD (raises in every step) does not fuse, which the sweep knows before
    its first claim: it claims one job at a time, and the later points are never claimed."""
    args = ["-m", *TINY, "sweep.points=4", "study.name=fails", FUSED]
    proc = train_here(*args, "optimizer._target_=tests.byo_example.FailingSGD", cwd=tmp_path)
    assert proc.returncode != 0 and "1 of 1 trials failed (max_failure_rate=0.0)" in proc.stderr
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    failed = optuna.load_study(study_name="fails", storage=storage).get_trials()
    assert [t.state for t in failed] == [State.FAIL]
    assert "on purpose" in failed[0].user_attrs["error"]


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_batch_fails_its_trials_at_once_and_the_rerun_does_not_wait(
    tmp_path: Path, signum: int, status: int
):
    """Ctrl-C or SIGTERM while a fused batch of 4 arms trains: exit 130 / 143, one line and no
    traceback, every trial of the batch FAIL at once; the rerun (grace period far above the
    test's timeout) trains each point once, without waiting."""
    from conftest import start_module

    args = [
        "-m", *TINY, "epochs=60", "batch_size=8", "stop_at_chance=false", "sweep.points=4",
        "sweep.high=0.1", "study.name=stopped", "hydra.sweeper.grace_period=600", FUSED,
    ]  # fmt: skip
    sweep = start_module("src.train", *args, cwd=tmp_path, preexec_fn=DEFAULT_SIGINT)
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    for line in sweep.stdout:  # the study exists once the header is printed
        if line.startswith("[lrsweep] study 'stopped'"):
            break
    study = optuna.load_study(study_name="stopped", storage=storage)
    wait_for(lambda: len(study.get_trials(states=(State.RUNNING,))) == 4, "the batch to start")
    sweep.send_signal(signum)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == status, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("[lrsweep] interrupted")
    assert [t.state for t in study.get_trials()] == [State.FAIL] * 4
    rerun = run_module("src.train", *args, cwd=tmp_path)
    assert "waiting for" not in rerun.stdout
    assert len({t.params["lr"] for t in trials(tmp_path, "stopped")}) == 4


def launcher_lines(tmp_path: Path, batch_function: str, study: str) -> tuple[list[str], list]:
    """A 3-LR sweep with `batch_function`: the fused launcher's lines, and the study's trials."""
    args = ["-m", *TINY, "sweep.points=3", f"study.name={study}", FUSED]
    args.append(f"hydra.launcher.batch_function=tests.byo_example.{batch_function}")
    proc = run_module("src.train", *args, cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if "fused launcher" in line]
    return lines, trials(tmp_path, study)


def test_a_batch_function_that_fails_leaves_the_jobs_to_run_one_at_a_time(tmp_path: Path):
    """An error of the fused path itself fails no job: the batch runs one job at a time, with one
    line naming the error, and every job completes as it would alone."""
    lines, done = launcher_lines(tmp_path, "broken_batch", "broken")
    assert lines == [
        "[lrsweep] fused launcher: the fused batch failed (RuntimeError: a bug in the batch "
        "function); these 3 jobs run one at a time"
    ]
    assert len(done) == 3


def test_jobs_a_batch_function_did_not_train_run_with_the_task_function(tmp_path: Path):
    """The launcher's contract: an entry None runs its job with the task function without a
    word; jobs that share one CannotFuse get one line between them."""
    lines, done = launcher_lines(tmp_path, "declining_batch", "declined")
    assert lines == [
        "[lrsweep] fused launcher: declined on purpose; these 2 jobs run one at a time"
    ]
    assert len(done) == 3 and not any("fused_arms" in t.user_attrs for t in done)
