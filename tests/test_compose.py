"""The sweeper's compose-once path gives every job the config Hydra's own composition gives it."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, TINY, run_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.core.plugins import Plugins
from hydra.types import RunMode
from omegaconf import OmegaConf

from hydra_plugins.lrsweep_sweeper import compose
from hydra_plugins.lrsweep_sweeper.compose import TemplateConfigLoader

FIXED = ["model.width=16", "epochs=2", "+extra.note=hello"]


@pytest.fixture(scope="module")
def hydra_loader() -> tuple[ConfigLoaderImpl, object]:
    """Hydra's own config loader on conf/, and a multirun's master config, as `-m` makes them."""
    Plugins.instance()  # registers the plugins' config groups (hydra/sweeper=lrsweep)
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(ROOT / "conf")))
    master = loader.load_configuration("train", overrides=list(FIXED), run_mode=RunMode.MULTIRUN)
    return loader, master


def as_yaml(config) -> str:
    return OmegaConf.to_yaml(config, resolve=False)


def test_value_jobs_equal_hydras_composition_and_use_the_template(hydra_loader):
    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["lr", "seed", "trial"], token="t-values")
    jobs = [
        [*FIXED, "lr=0.1", "seed=0", "trial=0"],
        [*FIXED, "lr=1e-05", "seed=3", "trial=7"],
        [*FIXED, "lr=0.0031622776601683794", "seed=1", "trial=12"],
    ]
    for overrides in jobs:
        ours = fast.load_sweep_config(master, overrides)
        theirs = loader.load_sweep_config(master, overrides)
        assert as_yaml(ours) == as_yaml(theirs)
        assert list(ours.hydra.overrides.task) == overrides
        assert ours.lr == theirs.lr and type(ours.lr) is type(theirs.lr)
    # All three jobs share one shape: one template was composed, the others were copies of it.
    assert len(compose._TEMPLATES["t-values"]) == 1


def test_a_jobs_hydra_value_is_set_and_recorded_as_hydras_composition_does(hydra_loader):
    """The sweeper names each out-of-process job's trial in `hydra.sweeper.job_trial`: a value of
    Hydra's own config, recorded in `hydra.overrides.hydra`, not in the task's overrides."""
    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["lr", "hydra.sweeper.job_trial"], token="t-hydra-values")
    for trial_id in (3, 11):
        overrides = [*FIXED, "lr=0.1", f"hydra.sweeper.job_trial={trial_id}"]
        ours = fast.load_sweep_config(master, overrides)
        theirs = loader.load_sweep_config(master, overrides)
        assert as_yaml(ours) == as_yaml(theirs)
        assert ours.hydra.sweeper.job_trial == trial_id
        assert ours.hydra.overrides.hydra[-1] == f"hydra.sweeper.job_trial={trial_id}"
    assert len(compose._TEMPLATES["t-hydra-values"]) == 1


def test_a_job_never_changes_the_template_of_the_next(hydra_loader):
    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["lr", "trial"], token="t-mutate")
    first = fast.load_sweep_config(master, [*FIXED, "lr=0.1", "trial=0"])
    first.model.width = 999  # a job that mutates its config (Hydra hands out its own copy)
    second = fast.load_sweep_config(master, [*FIXED, "lr=0.2", "trial=1"])
    assert second.model.width == 16 and second.lr == 0.2


def test_a_swept_config_group_takes_hydras_full_composition(hydra_loader):
    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["model", "lr", "trial"], token="t-group")
    for group in ("mlp", "cnn", "mlp"):
        overrides = ["epochs=2", f"model={group}", "lr=0.1", "trial=0"]
        ours = fast.load_sweep_config(master, overrides)
        assert as_yaml(ours) == as_yaml(loader.load_sweep_config(master, overrides))
        assert ours.model._target_ == f"src.models.{group}"
    assert "model" not in fast.value_keys  # found to be a config group: never templated


def test_non_scalar_values_take_hydras_full_composition(hydra_loader):
    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["sweep.seeds", "trial"], token="t-list")
    for seeds in ("[0,1]", "[5]"):
        overrides = ["epochs=2", f"sweep.seeds={seeds}", "trial=0"]
        ours = fast.load_sweep_config(master, overrides)
        assert as_yaml(ours) == as_yaml(loader.load_sweep_config(master, overrides))
    assert list(ours.sweep.seeds) == [5]


def _records(workdir: Path, name: str) -> dict[str, str]:
    """trial folder -> its .hydra files, with the one line that names the compose mode removed."""
    out = {}
    for path in sorted((workdir / "outputs" / "sweeps" / name).glob("trial_*/.hydra/*.yaml")):
        text = path.read_text().replace("compose_once: false", "compose_once: true")
        text = re.sub(r"(?m)^ *- hydra\.sweeper\.compose_once=false\n", "", text)
        out[f"{path.parent.parent.name}/{path.name}"] = text
    return out


def test_a_sweep_gives_the_same_results_and_records_either_way(tmp_path: Path):
    args = ["-m", *TINY, "sweep.points=3", "sweep.seeds=[0,1]", "study.name=same"]
    fast_dir, full_dir = tmp_path / "fast", tmp_path / "full"
    fast_dir.mkdir()
    full_dir.mkdir()
    run_module("src.train", *args, cwd=fast_dir)
    run_module("src.train", *args, "hydra.sweeper.compose_once=false", cwd=full_dir)
    fast, full = _records(fast_dir, "same"), _records(full_dir, "same")
    assert len(fast) == 6 * 3 and fast.keys() == full.keys()
    for key in fast:
        # hydra.yaml holds absolute paths (the sweep dir, the cwd): compare with them made alike.
        assert fast[key].replace(str(fast_dir), "<dir>") == full[key].replace(
            str(full_dir), "<dir>"
        )
    values = {}
    for workdir in (fast_dir, full_dir):
        study = optuna.load_study(
            study_name="same", storage=f"sqlite:///{workdir}/outputs/lrsweep.db"
        )
        values[workdir] = sorted(
            (t.number, t.params["lr"], t.params["seed"], t.value) for t in study.trials
        )
    assert values[fast_dir] == values[full_dir] and len(values[fast_dir]) == 6


def test_templates_survive_hydra_re_executing_the_plugin_modules(hydra_loader):
    """A joblib worker restores Hydra's singletons for every job, and that re-executes every plugin
    module in place (`Singleton.set_state` -> `Plugins.instance()`). The templates must survive it,
    or every job in a worker takes Hydra's full composition."""
    from hydra.core.singleton import Singleton

    loader, master = hydra_loader
    fast = TemplateConfigLoader(loader, ["lr", "trial"], token="t-rescan")
    fast.load_sweep_config(master, [*FIXED, "lr=0.1", "trial=0"])
    templates, parsed = compose._TEMPLATES, compose._PARSED
    loader_class = compose.TemplateConfigLoader
    Singleton.set_state(Singleton.get_state())  # what hydra_joblib_launcher does per job
    assert compose.TemplateConfigLoader is not loader_class  # the module body ran again
    assert compose._TEMPLATES is templates and len(compose._TEMPLATES["t-rescan"]) == 1
    assert compose._PARSED is parsed and "lr=0.1" in parsed


def test_a_template_is_copied_through_pickle_and_falls_back_to_deepcopy():
    """`_Template` gives equal, independent copies: by pickle, or by deepcopy for a config that
    cannot be pickled (an object Hydra allows, such as a function, in a node)."""
    plain = OmegaConf.create({"a": {"b": 1}, "c": [1, 2], "d": "${a.b}"})
    template = compose._Template(plain)
    assert template._pickled is not None
    first = template.copy()
    first.a.b = 5
    second = template.copy()
    assert second == plain and second.d == 1 and first.d == 5

    def builder() -> int:  # a local function: not picklable
        return 1

    odd = OmegaConf.create({"f": builder, "x": 1}, flags={"allow_objects": True})
    template = compose._Template(odd)
    assert template._pickled is None
    copied = template.copy()
    assert copied.f is builder and copied.x == 1 and copied is not odd
