"""src.confirm: candidates, fresh seeds, the plan, and the confirm study on real studies."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from study_helpers import GRID, agg_of, make_study, parabola

from lrsweep import confirm as confirm_plan
from src import confirm
from src.study import trials_frame


def test_confirm_candidates_top_k_plus_extra():
    agg = agg_of({0.1: 0.8, 0.2: 0.9, 0.3: 0.85, 0.4: 0.7})
    assert confirm_plan.confirm_candidates(agg, 3) == [0.2, 0.3, 0.1]
    assert confirm_plan.confirm_candidates(agg, 2, [0.25]) == [0.2, 0.3, 0.25]
    already_there = [0.2 * (1 + 1e-12), None]
    assert confirm_plan.confirm_candidates(agg, 2, already_there) == [0.2, 0.3]


def test_fresh_seeds():
    assert confirm_plan.fresh_seeds([0, 1, 2], 3) == [3, 4, 5]
    assert confirm_plan.fresh_seeds([], 2) == [0, 1]


def test_plan_confirm_uses_the_finest_stage_and_fresh_seeds(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    s1 = make_study(url, "a", {x: parabola(x, 10**-1.95) for x in GRID}, seeds=(0, 1))
    fine = [float(x) for x in np.logspace(-2.6, -1.4, 7)]
    s2 = make_study(url, "a-stage2", {x: parabola(x, 10**-1.95) for x in fine}, seeds=(0, 1, 4))
    plan = confirm_plan.plan_confirm({"stage1": trials_frame(s1), "stage2": trials_frame(s2)}, 3, 2)
    assert plan.stage == "stage2" and plan.seeds == [5, 6]
    assert plan.lrs[:3] == [fine[3], fine[4], fine[2]]  # by distance to the peak 10**-1.95
    assert plan.lrs[3] == pytest.approx(10**-1.95, rel=1e-3)  # the optimum of stages 1 + 2
    assert plan.lrs[4:] == [GRID[5]]  # stage 1's best, to weigh stage 2's gain on fresh seeds
    only1 = confirm_plan.plan_confirm({"stage1": trials_frame(s1)}, top_k=1, n_seeds=1)
    assert (only1.stage, only1.lrs[0], only1.seeds) == ("stage1", GRID[5], [2])


def test_prepare_confirm_creates_the_study_and_quotes_the_choice(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    base = [f"study.storage={url}", "study.name=a", "epochs=3"]
    out = confirm.prepare_confirm(base, top_k=2, n_seeds=2)
    plan = confirm_plan.plan_confirm(
        {"stage1": trials_frame(optuna.load_study(study_name="a", storage=url))}, 2, 2
    )
    choice = "'choice(" + ",".join(repr(x) for x in plan.lrs) + ")'"
    assert out == [
        f"study.storage={url}",
        "epochs=3",
        "study.name=a-confirm",
        f"hydra.sweeper.params.lr={choice}",
        "sweep.seeds=[3,4]",
    ]
    # no sweep override of a hydra. key (Hydra refuses those); the values survive exactly
    parsed = OverridesParser.create().parse_overrides(out)
    assert not any(o.is_sweep_override() for o in parsed)
    lr_spec = OverridesParser.create().parse_override("lr=" + parsed[3].value())
    assert lr_spec.value().list == plan.lrs
    study = optuna.load_study(study_name="a-confirm", storage=url)
    assert study.user_attrs["parent_study"] == "a" and study.user_attrs["stage"] == "confirm"
    assert study.user_attrs["candidates"] == plan.lrs and study.user_attrs["seeds"] == [3, 4]


def test_a_replanned_confirm_study_reads_only_its_current_plan(tmp_path):
    """A search re-run on more seeds plans its confirm step anew (other LRs, seeds above every
    seed the sweeps now use): the earlier plan's trials stay in the study but are not read."""
    from study_helpers import add_trial

    from lrsweep.frames import trials_frame as frame_of

    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/c.db", study_name="c-confirm")
    for lr in (0.1, 0.2):  # the first plan: seeds 1, 2
        for seed in (1, 2):
            add_trial(study, lr, seed, 0.9)
    for lr in (0.2, 0.3):  # the second: seeds 3, 4
        for seed in (3, 4):
            add_trial(study, lr, seed, 0.8)
    study.set_user_attr("stage", "confirm")
    study.set_user_attr("candidates", [0.2, 0.3])
    study.set_user_attr("seeds", [3, 4])
    read = frame_of(study)
    assert sorted(zip(read["lr"], read["seed"], strict=True)) == [
        (0.2, 3), (0.2, 4), (0.3, 3), (0.3, 4)
    ]  # fmt: skip
    study.set_user_attr("stage", "stage2")  # a sweep stage: every trial
    assert len(frame_of(study)) == 8


def test_confirm_candidates_are_the_top_of_the_smoothed_curve():
    """Given the sweeps' trials and a bandwidth, the top LRs are those of the curve through every
    trial, not the luckiest single runs: a lucky 0.0063 (+0.03 on its one seed) is not confirmed,
    LRs between it and the curve's peak are."""
    import math

    from lrsweep.stats import pool

    def curve(lr: float) -> float:
        return 0.9 - 0.05 * (math.log10(lr) - math.log10(0.02)) ** 2

    s1 = agg_of({g: curve(g) for g in GRID[4:9]})
    lrs = [float(x) for x in np.logspace(-2.7, -1.2, 10)]
    values = {lr: curve(lr) for lr in lrs}
    lucky = lrs[3]  # 0.0063
    values[lucky] += 0.03
    s2 = agg_of(values)
    assert confirm_plan.confirm_candidates(s2, 1) == [lucky]  # by mean: the lucky run
    top = confirm_plan.confirm_candidates(s2, 3, pooled=pool([s1, s2]), h=5 / 9 / 2)
    assert lucky not in top and all(lucky < lr < 0.03 for lr in top)  # around the peak
