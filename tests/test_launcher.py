"""`hydra/launcher=lrsweep` runs each job as Hydra's basic launcher does: the same trial results,
trial folders, `.hydra/` records, `HydraConfig` inside the job and callbacks."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, run_module, run_python
from omegaconf import OmegaConf

from hydra_plugins.lrsweep_sweeper.in_process import to_yaml
from src.study import compose_config

LAUNCHERS = ("lrsweep", "basic")


def test_to_yaml_is_omegaconfs_text():
    """The libyaml emitter with OmegaConf's representers writes what OmegaConf.to_yaml writes,
    on the whole composed config (hydra node included) and on values YAML could misread."""
    tricky = OmegaConf.create(
        {
            "looks_like": ["1e-3", "true", "null", "~", "0x10", "", " pad ", "a: b", "- x", "#c"],
            "numbers": [0, -1, 1e-05, 0.1, math.inf, -math.inf, 10**20],
            "nan": math.nan,
            "none": None,
            "unicode": "µP — 学习率",
            "multi": "line one\nline two\n",
            "long": "word " * 40,
            "interp": "${numbers}",
            "nested": {"empty_list": [], "empty_dict": {}, "deep": [{"a": [1, {"b": None}]}]},
        }
    )
    for cfg in (tricky, compose_config(["lr=0.1"], return_hydra_config=True)):
        assert to_yaml(cfg) == OmegaConf.to_yaml(cfg)


CALLBACK = '''
import json, os
from hydra.experimental.callback import Callback

class Record(Callback):
    """Appends what a callback sees of each job to $RECORD_FILE."""
    def _write(self, **row):
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(json.dumps(row) + "\\n")
    def on_job_start(self, config, **kwargs):
        self._write(event="start", num=config.hydra.job.num, lr=config.lr,
                    out=config.hydra.runtime.output_dir)
    def on_job_end(self, config, job_return, **kwargs):
        self._write(event="end", num=config.hydra.job.num, status=job_return.status.name,
                    value=job_return.return_value, lr=job_return.cfg.lr,
                    has_hydra="hydra" in job_return.cfg, overrides=job_return.overrides,
                    out=job_return.hydra_cfg.hydra.runtime.output_dir,
                    workdir=job_return.working_dir, task=job_return.task_name)
'''


def _records(workdir: Path, name: str) -> dict[str, str]:
    """trial file -> its .hydra text, with absolute paths and the launcher's own lines made alike."""
    out = {}
    for path in sorted((workdir / "outputs" / "sweeps" / name).glob("trial_*/.hydra/*.yaml")):
        text = path.read_text().replace(str(workdir), "<dir>")
        text = re.sub(r"(?m)^ *- hydra/launcher=\w+\n", "", text)
        text = re.sub(r"(?m)^( *hydra/launcher: )\w+$", r"\1<launcher>", text)
        text = re.sub(r"(?m)^( *_target_: )\S+(Launcher)$", r"\1<launcher>", text)
        out[f"{path.parent.parent.name}/{path.name}"] = text
    return out


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same sweep (2 LRs x 2 seeds, a callback recording each job, Hydra's default job
    logging: a file whose name interpolates the Hydra config into itself) under each launcher."""
    out = {}
    for launcher in LAUNCHERS:
        workdir = tmp_path_factory.mktemp(launcher)
        (workdir / "record_callback.py").write_text(CALLBACK)
        run_module(
            "src.train",
            "-m",
            *TINY,
            "sweep.points=2",
            "sweep.seeds=[0,1]",
            "study.name=same",
            f"hydra/launcher={launcher}",
            "hydra/job_logging=default",
            "+hydra.callbacks.record._target_=record_callback.Record",
            cwd=workdir,
            env={
                "PYTHONPATH": os.pathsep.join([str(ROOT), str(workdir)]),
                "RECORD_FILE": str(workdir / "callbacks.jsonl"),
            },
        )
        out[launcher] = workdir
    return out


def test_same_trial_results_and_output_folders(sweeps):
    rows = {}
    for launcher, workdir in sweeps.items():
        study = optuna.load_study(
            study_name="same", storage=f"sqlite:///{workdir}/outputs/lrsweep.db"
        )
        trials = study.get_trials()
        assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
        # HydraConfig inside the job: its output_dir is the trial's own folder.
        for t in trials:
            assert t.user_attrs["output_dir"] == str(
                workdir / "outputs" / "sweeps" / "same" / f"trial_{t.number}"
            )
        rows[launcher] = sorted(
            (t.number, t.params["lr"], t.params["seed"], t.value) for t in trials
        )
    assert rows["lrsweep"] == rows["basic"]


def test_same_hydra_records_byte_for_byte(sweeps):
    ours, hydras = (_records(sweeps[launcher], "same") for launcher in LAUNCHERS)
    assert len(ours) == 4 * 3 and ours.keys() == hydras.keys()
    for key in ours:
        assert ours[key] == hydras[key], key


def test_same_job_log_files(sweeps):
    """Hydra's job logging writes `${hydra.runtime.output_dir}/${hydra.job.name}.log`: the job's
    Hydra config resolves into itself under both launchers."""
    logs = {
        launcher: sorted(str(p.relative_to(workdir)) for p in (workdir / "outputs").rglob("*.log"))
        for launcher, workdir in sweeps.items()
    }
    assert logs["lrsweep"] == logs["basic"]
    assert logs["lrsweep"] == [f"outputs/sweeps/same/trial_{n}/train.log" for n in range(4)]


def test_callbacks_see_the_same_jobs(sweeps):
    seen = {}
    for launcher, workdir in sweeps.items():
        rows = [json.loads(line) for line in (workdir / "callbacks.jsonl").read_text().splitlines()]
        for row in rows:
            for key in ("out", "workdir"):
                if key in row:
                    row[key] = row[key].replace(str(workdir), "<dir>")
        seen[launcher] = rows
    assert seen["lrsweep"] == seen["basic"]
    ends = [r for r in seen["lrsweep"] if r["event"] == "end"]
    assert len(ends) == 4 and all(r["status"] == "COMPLETED" and not r["has_hydra"] for r in ends)
    assert all(re.fullmatch(r"<dir>/outputs/sweeps/same/trial_\d", r["out"]) for r in ends)


RUN_JOB_SCRIPT = """
import copy, json, sys, time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize
from hydra._internal.callbacks import Callbacks
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job as hydras_run_job
from hydra.types import HydraContext
from omegaconf import OmegaConf, read_write
from omegaconf.errors import ValidationError

from hydra_plugins.lrsweep_sweeper.in_process import run_job as our_run_job


@dataclass
class Typed:
    lr: float = 0.1
    stamp: str = "${now:%H:%M:%S.%f}"
    out: str = "${hydra:runtime.output_dir}"


ConfigStore.instance().store(name="typed", node=Typed)
tmp = Path(sys.argv[1])
seen = {}


def task(cfg):
    try:
        cfg.lr = "not a float"
        typed = False
    except ValidationError:
        typed = True
    hydra = HydraConfig.get()
    return {
        "type": OmegaConf.get_type(cfg).__name__,
        "struct": OmegaConf.is_struct(cfg),
        "typed": typed,
        "has_hydra": "hydra" in cfg,
        "stamp": cfg.stamp,
        "out": cfg.out,
        "log_file": hydra.job_logging.handlers.file.filename,
        "hydra_out": hydra.runtime.output_dir,
        "resolved": sorted(OmegaConf.to_container(hydra, resolve=True)),
    }


with initialize(version_base="1.3"):
    overrides = ["hydra/job_logging=default", f"hydra.sweep.dir={tmp}"]
    master = compose("typed", overrides, return_hydra_config=True)
HydraConfig.instance().set_config(master)
_ = master.stamp  # resolved once, as a sweep resolves `${now:}` before its jobs: cached
time.sleep(0.01)
for name, run_job in (("job-h", hydras_run_job), ("job-o", our_run_job)):
    config = copy.deepcopy(master)
    with read_write(config.hydra):
        config.hydra.sweep.subdir = name
    context = HydraContext(config_loader=None, callbacks=Callbacks())
    if name == "job-h":
        ret = run_job(task, config, "hydra.sweep.dir", "hydra.sweep.subdir", context)
    else:
        ret = run_job(context, task, config, "hydra.sweep.dir", "hydra.sweep.subdir")
    out = ret.return_value
    out["files"] = {
        p.name: p.read_text().replace(name, "<job>")
        for p in sorted((tmp / name / ".hydra").glob("*.yaml"))
    }
    out["log_exists"] = Path(out["log_file"]).is_file()
    for key in ("out", "log_file", "hydra_out"):
        out[key] = out[key].replace(name, "<job>")
    out["ret_cfg_type"] = OmegaConf.get_type(ret.cfg).__name__
    seen[name] = out
print(json.dumps(seen))
"""


def test_run_job_hands_the_task_what_hydras_run_job_hands_it(tmp_path):
    """`in_process.run_job` against Hydra's `run_job`, without callbacks, on a structured primary
    config: the task's config keeps its type, struct flag and typed keys, `${now:}` resolves to
    the time cached before the job (as in a deep copy), `${hydra:...}` and the Hydra config's
    interpolations into itself resolve (Hydra's job log file is written), the `.hydra/` files
    are the same text."""
    (tmp_path / "script.py").write_text(RUN_JOB_SCRIPT)
    (tmp_path / "out").mkdir()
    seen = json.loads(run_python("script.py", str(tmp_path / "out"), cwd=tmp_path))
    assert seen["job-o"] == seen["job-h"]
    ours = seen["job-o"]
    assert ours["type"] == ours["ret_cfg_type"] == "Typed"
    assert ours["struct"] and ours["typed"] and not ours["has_hydra"] and ours["log_exists"]
    assert ours["out"] == ours["hydra_out"] == str(tmp_path / "out" / "<job>")
    assert set(ours["files"]) == {"config.yaml", "hydra.yaml", "overrides.yaml"}


def test_the_submitit_local_launcher_runs_each_point_once_in_its_own_process(sweeps, tmp_path):
    """`hydra/launcher=submitit_local` (the README's cluster path, on this machine): each job in a
    process of its own, every point once, the same values as in-process trials."""
    proc = run_module(
        "src.train", "-m", *TINY, "sweep.points=2", "sweep.seeds=[0]", "study.name=same",
        "hydra/launcher=submitit_local", cwd=tmp_path,
    )  # fmt: skip
    assert "best lr=" in proc.stdout
    study = optuna.load_study(study_name="same", storage=f"sqlite:///{tmp_path}/outputs/lrsweep.db")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 2
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # one process per job
    in_process = optuna.load_study(
        study_name="same", storage=f"sqlite:///{sweeps['lrsweep']}/outputs/lrsweep.db"
    )
    expected = {(t.params["lr"], t.params["seed"]): t.value for t in in_process.trials}
    assert {(t.params["lr"], t.params["seed"]): t.value for t in trials} == {
        point: expected[point] for point in expected if point[1] == 0
    }
