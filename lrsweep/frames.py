"""A study's trials as a table: one row per trial, what every statistic, choice and report reads.

Any app's study reads the same way: the LR and the seed are the params named `lr_key` and
`seed_key` (lrsweep's own trial: `lr`, `seed`; a Hydra app: e.g. `model.optimizer.lr`), the value
is the metric the study optimised, `diverged`, `stopped_at_chance`, `epochs_run`, `seconds`,
`val_examples` (the validation set's size) and `test_acc` are user attributes when the job or the
sweeper wrote them (NaN, 0 or False when not).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# Columns of `trials_frame`, in order.
# `stopped_at_chance`: stopped before its last epoch, still at chance (its value as it stood).
TRIAL_COLUMNS = [
    "number",
    "state",
    "lr",
    "seed",
    "value",
    "diverged",
    "stopped_at_chance",
    "epochs_run",
    "seconds",
    "val_examples",
    "test_acc",
]


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def trials_frame(study: Any, lr_key: str = "lr", seed_key: str | None = "seed") -> pd.DataFrame:
    """One row per trial, columns `TRIAL_COLUMNS`; `value` is NaN unless the trial is COMPLETE;
    `seed` is 0 for a study without a seed axis. A confirm study's rows are those of its current
    plan (`current_plan`)."""
    import optuna
    import pandas as pd

    rows = []
    for t in study.get_trials(deepcopy=False):
        params = t.params or t.system_attrs.get("fixed_params", {})
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "lr": params.get(lr_key, math.nan),
                "seed": params.get(seed_key, 0) if seed_key else 0,
                "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else math.nan,
                "diverged": bool(t.user_attrs.get("diverged", False)),
                "stopped_at_chance": bool(t.user_attrs.get("stopped_at_chance", False)),
                "epochs_run": t.user_attrs.get("epochs_run", 0),
                "seconds": t.user_attrs.get("seconds", math.nan),
                "val_examples": t.user_attrs.get("val_examples", math.nan),
                "test_acc": _number(t.user_attrs.get("test_acc")),
            }
        )
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    attrs = study.user_attrs
    return current_plan(frame, attrs) if attrs.get("stage") == "confirm" else frame


def current_plan(frame: pd.DataFrame, attrs: dict[str, Any]) -> pd.DataFrame:
    """The trials of a confirm study's current plan: LR among its recorded `candidates` (to 1e-9
    relative) and seed among its `seeds`. A search re-run on more seeds plans its confirm step
    anew, on seeds above every seed its sweeps now use; the earlier plan's trials stay in the
    study, on seeds the grown sweeps may have used for the choice, and are no fresh evidence.
    The frame as it is when the study records no plan."""
    candidates, seeds = attrs.get("candidates"), attrs.get("seeds")
    if not candidates or not seeds:
        return frame
    in_plan = frame["lr"].map(
        lambda lr: any(math.isclose(float(lr), float(c), rel_tol=1e-9) for c in candidates)
    ) & frame["seed"].isin([int(s) for s in seeds])
    return frame[in_plan.astype(bool)].reset_index(drop=True)
