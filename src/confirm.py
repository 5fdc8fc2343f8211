"""The confirm step of the built-in trial: plan it (`lrsweep.confirm.plan_confirm`), create the
study `<name>-confirm`, and return the overrides that sweep it with `python -m src.train -m`.
"""

from __future__ import annotations

from collections.abc import Sequence

from lrsweep.confirm import plan_confirm
from lrsweep.stages import study_names
from src.overrides import ChoiceOverride, replace_overrides
from src.study import (
    compose_config,
    create_child_study,
    direction_of,
    load_frames,
    open_study,
)


def prepare_confirm(overrides: Sequence[str], top_k: int = 3, n_seeds: int = 3) -> list[str]:
    """Plans the confirm step for the stage-1 `overrides`, creates the study `<name>-confirm`
    (user attrs parent_study, stage="confirm", candidates, seeds) and returns the overrides for
    `python -m src.train -m`."""
    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    direction = direction_of(open_study(name, storage_url))
    plan = plan_confirm(load_frames(name, storage_url), top_k, n_seeds, direction)
    names = study_names(name)
    create_child_study(
        names["confirm"],
        storage_url,
        parent=names[plan.stage],
        stage="confirm",
        meta={"candidates": plan.lrs, "seeds": plan.seeds},
        direction=direction,
        identity=open_study(name, storage_url).user_attrs.get("config"),  # stage 1's experiment
    )
    print(f"confirm: lrs {[f'{x:.4g}' for x in plan.lrs]} from {plan.stage}, seeds {plan.seeds}")
    return replace_overrides(
        overrides,
        {
            "study.name": names["confirm"],
            "hydra.sweeper.params.lr": ChoiceOverride(plan.lrs),
            "sweep.seeds": plan.seeds,
        },
    )
