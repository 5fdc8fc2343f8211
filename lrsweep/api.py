"""The Python API: the whole search around a plain function, from a script or a notebook.

    import lrsweep
    result = lrsweep.search(train_fn, low=1e-5, high=1.0, points=10, seeds=[0],
                            study="my-search", storage="sqlite:///lrsweep.db")

`train_fn(lr, seed)` trains once and returns the metric (a number; NaN or inf for a run that
blew up, which is recorded as diverged, not as a failure). Every call is one Optuna trial of the
same study format as the Hydra sweeper's (`optuna-dashboard <storage>` opens it), run exactly
once: re-running the same call (after a kernel restart, or Ctrl-C) runs only what is missing,
and a finished search runs nothing and reports again.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsweep.grid import Axis, SweepConfigError, build_grid, log_axis
from lrsweep.stage2_model import DEFAULT_METHOD

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from lrsweep.results import JobResult
    from lrsweep.sweep_spec import Claimed


@dataclass(frozen=True)
class SearchResult:
    """The answer of `search`: the chosen LR and what it rests on."""

    lr: float  # the chosen LR: the best confirm candidate on the smoothed curve (docs/choice.md)
    mean: float  # its mean metric over `n` seeds (the score that chose it: optimistic)
    std: float  # its std over those seeds (0 with one seed)
    n: int
    good_range: tuple[float, float] | None  # every LR within one std of the best; None: one seed
    best: dict[str, Any]  # the content of best.yaml
    trials: pd.DataFrame  # one row per trial of every stage
    report_dir: Path  # trials.csv, curve.png, best.yaml
    figure: Figure  # the curve: metric vs LR per stage (saved as curve.png)


def search(
    train_fn: Callable[[float, int], Any],
    *,
    low: float = 1e-5,
    high: float = 1.0,
    points: int = 10,
    seeds: Sequence[int] = (0,),
    study: str = "lrsweep",
    storage: str = "sqlite:///lrsweep.db",
    direction: str = "maximize",
    metric: str = "value",
    search: str = "full",
    stage2_points: int | None = None,
    stage2_method: str = DEFAULT_METHOD,
    confirm_top: int = 3,
    confirm_seeds: int = 3,
    report_dir: str | Path | None = None,
    max_failure_rate: float = 0.0,
) -> SearchResult:
    """Searches the LR of `train_fn(lr, seed) -> metric`: stage 1 (`points` LRs log-uniform in
    [low, high] x `seeds`), then with `search="full"` stage 2, the confirm step on
    `confirm_seeds` fresh seeds, and the report (`trials.csv`, `curve.png`, `best.yaml` in
    `report_dir`, default `lrsweep-reports/<study>`). `stage2_method`: stage 2's LRs on a grid
    through stage 1's best ("grid"), or proposed one at a time by Optuna's TPE ("tpe") or GP
    ("gp") sampler seeded with stage 1's trials (`lrsweep.stage2_model`), same budget. Studies: `<study>`, `<study>-stage2`,
    `<study>-confirm` in `storage`. Bad settings raise ValueError before any training; Ctrl-C
    marks the trials in flight failed and raises KeyboardInterrupt (re-run to resume); a
    `train_fn` that raises fails its trial and, past `max_failure_rate`, stops the search with
    RuntimeError."""
    from lrsweep.runner import run_sweep
    from lrsweep.stages import SearchPlan, run_later_stages, write_search_report
    from lrsweep.storage_url import check_storage_url
    from lrsweep.study_protocol import check_study_name
    from lrsweep.sweep_spec import SweepSpec

    if not callable(train_fn):
        raise SweepConfigError(f"train_fn must be callable, got {type(train_fn).__name__}")
    if search not in ("grid", "full"):
        raise SweepConfigError(f"search={search!r}: grid (stage 1 alone) or full")
    if direction not in ("maximize", "minimize"):
        raise SweepConfigError(f"direction={direction!r}: maximize or minimize")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SweepConfigError(f"seeds={list(seeds)!r}: a non-empty list of integers")
    check_study_name(study)
    check_storage_url(storage)
    axes = [log_axis("lr", low, high, points), Axis("seed", [int(s) for s in seeds])]
    plan = SearchPlan.from_axes(
        axes,
        lr_key="lr",
        seed_key="seed",
        points=stage2_points or points,
        stage2_method=stage2_method,
        confirm_top=confirm_top,
        confirm_seeds=confirm_seeds,
        report_dir=Path(report_dir or Path("lrsweep-reports") / study),
        metric=metric,
    )
    spec = SweepSpec(
        study_name=study,
        storage_url=storage,
        axes=axes,
        grid=build_grid(axes),
        direction=direction,
        metric_name=metric,
        identity={"train_fn": _qualified_name(train_fn), "metric": metric},
        max_failure_rate=max_failure_rate,
    )
    launch = _launcher(train_fn, metric)
    run_sweep(spec, launch)
    if search == "full":
        report = run_later_stages(plan, spec, lambda stage: run_sweep(stage, launch))
    else:
        from lrsweep.stages import _frame

        frames = {"stage1": _frame(study, storage, plan)}
        report = write_search_report(study, frames, plan, direction)
    print(report.text, flush=True)
    best = report.best
    return SearchResult(
        lr=float(best["lr"]),
        mean=report.choice.mean,
        std=report.choice.std,
        n=report.choice.n,
        good_range=report.choice.good_range,
        best=best,
        trials=report.trials,
        report_dir=report.out_dir,
        figure=report.figure,
    )


def _qualified_name(fn: Callable[..., Any]) -> str:
    """`module.qualname` of the function: what the study records as the experiment."""
    module = getattr(fn, "__module__", None) or "?"
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}"


def _launcher(
    train_fn: Callable[[float, int], Any], metric: str
) -> Callable[[list[Claimed], int], list[JobResult]]:
    """The runner's `launch`: each claimed point as one call of `train_fn`, in this process."""
    from lrsweep.results import JobResult

    takes_seed = _takes_seed(train_fn)

    def launch(claimed: list[Claimed], slot: int) -> list[JobResult]:
        results = []
        for _, _, params in claimed:
            started = time.time()
            try:
                args = (params["lr"], params["seed"]) if takes_seed else (params["lr"],)
                value = train_fn(*args)
            except Exception as err:  # the trial's fault: recorded, never the search's
                results.append(JobResult(error=f"{type(err).__name__}: {err}"))
                continue
            seconds = time.time() - started
            results.append(JobResult(value=value, attrs={"seconds": round(seconds, 4)}))
        return results

    return launch


def _takes_seed(fn: Callable[..., Any]) -> bool:
    """Whether `fn` accepts a second positional argument (the seed)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: assume (lr, seed)
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


@dataclass(frozen=True)
class Transferred:
    """The answer of `transfer`: the target LR and one factor per axis (rule, factor, source)."""

    lr: float
    factors: list[Any]  # lrsweep.scaling.Factor
    rules: dict[str, str]
    caveat: str


def transfer(
    lr: float,
    *,
    base: dict[str, float],
    target: dict[str, float],
    optimizer: str = "sgd",
    parametrisation: str = "standard",
    rules: dict[str, str] | None = None,
) -> Transferred:
    """Carries `lr`, found at sizes `base` (any of "batch", "width", "depth", "epochs"), to sizes
    `target` with named scaling rules (`lrsweep.scaling`; docs/transfer.md). `optimizer`: "sgd",
    "adam", or an optimizer's class name (`torch.optim.AdamW`); `parametrisation`: "standard" or
    "mup"; `rules` overrides the defaults per axis. An axis given in only one of `base` and
    `target` keeps its size. Bad input raises ValueError."""
    from lrsweep.scaling import AXES, CAVEAT, FAMILIES, default_rules, optimizer_family
    from lrsweep.scaling import transfer as scale

    unknown = sorted((set(base) | set(target)) - set(AXES))
    if unknown:
        raise SweepConfigError(f"unknown axes {unknown}: one of {list(AXES)}")
    family = optimizer.lower() if optimizer.lower() in FAMILIES else optimizer_family(optimizer)
    if family is None:
        raise SweepConfigError(f"optimizer={optimizer!r}: sgd, adam, or an SGD/Adam class name")
    chosen = {**default_rules(family, parametrisation), **(rules or {})}
    target_lr, factors = scale(
        lr,
        {axis: base.get(axis, target.get(axis)) for axis in AXES},
        {axis: target.get(axis, base.get(axis)) for axis in AXES},
        chosen,
    )
    return Transferred(lr=target_lr, factors=factors, rules=chosen, caveat=CAVEAT)
