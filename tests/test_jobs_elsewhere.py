"""Jobs in other processes (joblib workers, submitit's tasks): a job that ends without a result is
launched again (`hydra.sweeper.retries`), and a job records its own result, so that results
outlive the sweep's own process. The same on a SLURM cluster: tests/test_slurm.py."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import optuna
import pytest

from hydra_plugins.lrsweep_sweeper.job_side import job_error, lost
from lrsweep import optuna_tables
from lrsweep.job_record import TrialNotRunning, recorded
from lrsweep.results import RECORDED_BY_JOB, JobResult, tell
from lrsweep.study_protocol import POINT_ATTR
from tests.conftest import wait_for
from tests.test_own_code import run_app, start_app

THREE = "optim.lr=choice(0.001,0.01,0.1)"
COMPLETE, RUNNING = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING


def trials(cwd: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="peak", storage=f"sqlite:///{cwd}/peak.db").trials


def lost_lines(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if "ended without a result" in line or "died" in line
    ]


def test_a_killed_joblib_worker_is_launched_again_and_the_sweep_goes_on(tmp_path):
    """The job at lr=0.01 kills its own worker process once (what the OOM killer does): a line
    says so, the job is launched again, and every point ends COMPLETE exactly once. (loky may
    take the other lane's worker down with it: that job is launched again too, with its line.)"""
    proc = run_app(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", THREE,
        "fail_at=0.01", f"kill_once={tmp_path / 'killed'}",
        cwd=tmp_path,
    )  # fmt: skip
    lines = lost_lines(proc.stderr)
    assert any("(optim.lr=0.01 seed=0)" in line for line in lines)
    for line in lines:
        assert line.startswith("[lrsweep] trial ") and "joblib worker process died" in line
        assert line.endswith("launching it again (1 of 2)")
    done = trials(tmp_path)
    assert [t.state for t in done] == [COMPLETE] * 3
    assert len({t.user_attrs[POINT_ATTR] for t in done}) == 3
    assert all(t.user_attrs[RECORDED_BY_JOB] for t in done)  # each job told its own result


def test_a_job_lost_beyond_its_retries_fails_its_trial_with_the_reason(tmp_path):
    proc = run_app(
        "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", THREE,
        "fail_at=0.01", f"kill_once={tmp_path / 'killed'}",
        "hydra.sweeper.n_jobs=1",  # one lane: no other job shares the killed worker's pool
        "hydra.sweeper.retries=0", "hydra.sweeper.max_failure_rate=0.5",
        cwd=tmp_path,
    )  # fmt: skip
    (line,) = lost_lines(proc.stderr)  # one line: the trial's failure, with the reason
    assert line.startswith("[lrsweep] trial 1 FAILED: a joblib worker process died")
    assert line.endswith("no result after 1 launch (retries=0)")
    by_lr = {t.params["optim.lr"]: t for t in trials(tmp_path)}
    failed = by_lr[0.01]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "joblib worker process died" in failed.user_attrs["error"]
    assert "no result after 1 launch (retries=0)" in failed.user_attrs["error"]
    assert by_lr[0.001].state == by_lr[0.1].state == COMPLETE


def test_bad_retries_is_one_line_exit_2_before_the_study(tmp_path):
    proc = run_app("hydra.sweeper.retries=-1", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: hydra.sweeper.retries=-1 is invalid")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "peak.db").exists()


def jobs_started(cwd: Path) -> int:
    """How many of the sweep's jobs have started: Hydra writes a job's config before its task."""
    return len(list(cwd.glob("multirun/*/*/*/.hydra/config.yaml")))


def test_results_outlive_the_sweeps_process_and_a_rerun_waits_for_them(tmp_path):
    """submitit's local launcher runs each job in a process of its own. The sweep is killed with
    SIGKILL while two jobs train; a rerun started at once waits for them (their own heartbeats
    keep their trials alive), takes their results from the study and runs only the third point."""
    args = ["hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "sleep=4", THREE]
    sweep = start_app(*args, cwd=tmp_path, log="killed_sweep.log")
    try:
        # Both jobs have started once Hydra has written their configs (before the task runs).
        wait_for(lambda: jobs_started(tmp_path) == 2, "two jobs to start")
        sweep.send_signal(signal.SIGKILL)
    finally:
        sweep.wait(timeout=60)
    assert [t.state for t in trials(tmp_path)[:2]] == [RUNNING, RUNNING]
    rerun = run_app(*args, cwd=tmp_path)
    assert "waiting for 2 trial(s) running elsewhere" in rerun.stdout
    progress = [line for line in rerun.stdout.splitlines() if re.match(r"\[\d+/3\] ", line)]
    assert len(progress) == 1 and "optim.lr=1.00e-01" in progress[0]  # the third point alone
    done = trials(tmp_path)
    assert [t.state for t in done] == [COMPLETE] * 3
    assert len({t.user_attrs[POINT_ATTR] for t in done}) == 3


def test_ctrl_c_leaves_the_trials_in_flight_to_their_jobs(tmp_path):
    """Ctrl-C stops the sweep, not the jobs that run in processes of their own: their trials are
    not failed, the jobs record their results, and the rerun runs only the point never started."""
    args = ["hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2", "sleep=4", THREE]
    sweep = start_app(
        *args, cwd=tmp_path, log="interrupted_sweep.log",
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_for(lambda: jobs_started(tmp_path) == 2, "two jobs to start")
        sweep.send_signal(signal.SIGINT)
    finally:
        sweep.wait(timeout=60)
    said = (tmp_path / "interrupted_sweep.log").read_text()
    assert sweep.returncode == 130, said
    assert "trials in flight run on in their own processes and record their results" in said
    wait_for(
        lambda: [t.state for t in trials(tmp_path)[:2]] == [COMPLETE, COMPLETE],
        "the two jobs to record their results",
    )
    rerun = run_app(*args, cwd=tmp_path)
    progress = [line for line in rerun.stdout.splitlines() if re.match(r"\[\d+/3\] ", line)]
    assert len(progress) == 1 and "optim.lr=1.00e-01" in progress[0]


# ---------------------------------------------------------------- the job's side, in-process


@pytest.fixture
def running_trial(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/job.db")
    study = optuna.create_study(storage=storage, study_name="job")
    trial = study.ask()
    return storage, study, trial._trial_id, f"sqlite:///{tmp_path}/job.db"


def test_a_job_tells_its_own_result_and_the_sweep_reads_it_back(running_trial):
    storage, study, trial_id, url = running_trial
    assert recorded(lambda: 0.75, url, trial_id) == 0.75
    own = storage.get_trial(trial_id)
    assert own.state == COMPLETE and own.value == 0.75 and own.user_attrs[RECORDED_BY_JOB]
    told = tell(study, storage, own.number, trial_id, JobResult(value=0.75))
    assert told.recorded and told.value == 0.75 and told.error is None


def test_a_job_records_its_error_and_raises_it(running_trial):
    storage, study, trial_id, url = running_trial

    def boom() -> float:
        raise RuntimeError("out of ideas")

    with pytest.raises(RuntimeError, match="out of ideas"):
        recorded(boom, url, trial_id)
    own = storage.get_trial(trial_id)
    assert own.state == optuna.trial.TrialState.FAIL
    assert own.user_attrs["error"] == "RuntimeError: out of ideas"


def test_a_job_that_cannot_record_still_returns_its_value_for_the_sweep(running_trial, caplog):
    """A storage that fails at the end of the job (here: a table gone) costs the job nothing: it
    returns its value, and the sweep that launched it records it."""
    import sqlalchemy

    _, _, trial_id, url = running_trial

    def train() -> float:
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text("DROP TABLE trial_values"))
        engine.dispose()
        return 0.5

    assert recorded(train, url, trial_id) == 0.5
    assert "its result could not be recorded here" in caplog.text


def test_a_job_whose_trial_was_failed_meanwhile_does_not_train(running_trial):
    storage, _, trial_id, url = running_trial
    storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    calls = []
    with pytest.raises(TrialNotRunning, match="not RUNNING: its point is run elsewhere"):
        recorded(lambda: calls.append(1), url, trial_id)
    assert calls == []


def test_a_job_keeps_its_trials_heartbeat_while_it_runs(running_trial):
    """Before the training begins the trial has a heartbeat of its job's (a later sweep waits for
    a RUNNING trial that beats, and fails one that does not)."""
    storage, study, trial_id, url = running_trial
    storage.set_trial_user_attr(trial_id, "mark", True)
    study_id = study._study_id
    unbeaten = []

    def train() -> float:
        unbeaten.extend(optuna_tables.running_without_heartbeat(engine, study_id, "mark"))
        return 1.0

    engine = optuna_tables.engine(storage)
    assert optuna_tables.running_without_heartbeat(engine, study_id, "mark") == [trial_id]
    recorded(train, url, trial_id)
    assert unbeaten == []


if os.name != "posix":  # SIGKILL, process groups
    pytestmark = pytest.mark.skip("POSIX only")


# ---------------------------------------------------------------- what a launcher's error says


def _uncompleted(state: str) -> Exception:
    """submitit's error for a task that left no result, with the text submitit writes."""
    from submitit.core.utils import UncompletedJobError

    return UncompletedJobError(
        "Job 12_3 (task: 0) with path /s/.submitit/12_3/12_3_0_result.pkl\n"
        f"has not produced any output (state: {state})\nError stream produced:\n"
        "----------------------------------------\nsrun: error: ... (state: ignored)"
    )


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("CANCELLED by 0", "job 12_3 ended without a result (CANCELLED by 0)"),
        ("PREEMPTED", "job 12_3 ended without a result (PREEMPTED)"),
        ("NODE_FAIL", "job 12_3 ended without a result (NODE_FAIL)"),
        (
            "TIMEOUT",
            "job 12_3 ended without a result (TIMEOUT); the job ran out of time: raise "
            "hydra.launcher.timeout_min",
        ),
        (
            "OUT_OF_MEMORY",
            "job 12_3 ended without a result (OUT_OF_MEMORY); the job ran out of memory: raise "
            "hydra.launcher.mem_gb",
        ),
    ],
)
def test_a_task_without_a_result_is_read_as_lost_with_the_setting_to_raise(state, says):
    assert lost(_uncompleted(state)) == says


def test_a_task_that_raised_outside_the_app_is_an_error_of_one_line_not_lost():
    from submitit.core.utils import FailedJobError

    exc = FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\n"
        'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\n'
        "ModuleNotFoundError: No module named 'myapp'\n----------------------\n"
        "You can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
        "  - /s/0.err\n  - /s/0.out"
    )
    assert lost(exc) is None
    assert job_error(exc) == "ModuleNotFoundError: No module named 'myapp'"
