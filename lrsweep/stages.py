"""The whole search after stage 1: stage 2 on a narrowed range, the confirm step on fresh seeds,
and the report. Every adapter runs it the same way (`run_later_stages`): the Hydra sweeper with
`search=full`, the Python API (`lrsweep.search`); each stage is a sweep of its own study
(`<name>-stage2`, `<name>-confirm`, tagged `parent_study` and `stage`) through the adapter's
`run_stage`, so every stage is exactly-once and resumable: re-running the search re-runs only
what is missing, and plans the same later stages from the same finished trials.

1. stage 2: `propose_bounds` on stage 1's per-LR statistics, then `points` new LRs in the new
   range, on stage 1's seeds: on a grid that holds stage 1's best (`stage2_lrs`, method "grid"),
   or proposed one at a time by Optuna's TPE or GP sampler seeded with stage 1's trials
   (`lrsweep.stage2_model`, methods "tpe" and "gp");
2. confirm: the best LRs of the finest stage on the smoothed curve (`lrsweep.confirm`), the
   interpolated optimum and stage 1's best, on `confirm_seeds` seeds no sweep used
   (`plan_confirm`); skipped, with a note, when the app has
   no seed key (fresh seeds would be the same run again);
3. report: `trials.csv`, `curve.png`, `best.yaml` (`lr`: the chosen LR) in `report_dir`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrsweep.grid import Axis, SweepConfigError, build_grid
from lrsweep.stage2_model import DEFAULT_METHOD

if TYPE_CHECKING:
    import pandas as pd

    from lrsweep.sweep_spec import SweepResult, SweepSpec

STAGE_SUFFIXES = {"stage1": "", "stage2": "-stage2", "confirm": "-confirm"}


def study_names(name: str) -> dict[str, str]:
    """stage -> study name, for the search whose stage-1 study is `name`."""
    return {stage: name + suffix for stage, suffix in STAGE_SUFFIXES.items()}


@dataclass(frozen=True)
class SearchPlan:
    """What the later stages need to know about stage 1's grid."""

    lr_key: str
    seed_key: str | None  # None: no seed axis in the app, no confirm step
    low: float  # stage 1's LR range
    high: float
    seeds: tuple[int, ...]  # stage 1's seeds (its seed axis), () without one
    points: int  # stage 2's LRs
    confirm_top: int = 3
    confirm_seeds: int = 3
    report_dir: Path = Path(".")
    metric: str = "value"
    stage2_method: str = DEFAULT_METHOD  # grid | tpe | gp (`lrsweep.stage2_model`)

    @classmethod
    def from_axes(
        cls,
        axes: Sequence[Axis],
        lr_key: str | None,
        seed_key: str | None,
        points: int,
        confirm_top: int = 3,
        confirm_seeds: int = 3,
        report_dir: Path = Path("."),
        metric: str | None = None,
        stage2_method: str = DEFAULT_METHOD,
    ) -> SearchPlan:
        """The plan for stage 1's `axes`; a grid the search cannot refine is a SweepConfigError.
        The LR axis is `lr_key`, else the one log interval (`tag(log, interval(a, b))`)."""
        by_name = {axis.name: axis for axis in axes}
        if lr_key is None:
            logs = [axis.name for axis in axes if axis.log]
            if len(logs) != 1:
                raise SweepConfigError(
                    f"search=full: cannot tell which axis is the learning rate ({len(logs)} log "
                    f"intervals among {list(by_name)}); set hydra.sweeper.lr_key"
                )
            lr_key = logs[0]
        if lr_key not in by_name:
            raise SweepConfigError(
                f"search=full: lr_key={lr_key!r} is not a swept axis ({list(by_name)})"
            )
        others = [name for name in by_name if name not in (lr_key, seed_key)]
        if others:
            raise SweepConfigError(
                f"search=full refines one learning rate; the grid also sweeps {others}: fix them "
                "to one value each, or use search=grid"
            )
        lrs = by_name[lr_key].values
        if len(lrs) < 2 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in lrs
        ):
            raise SweepConfigError(
                f"search=full: the {lr_key} axis needs at least 2 positive numbers, got {lrs}"
            )
        seeds = tuple(int(s) for s in by_name[seed_key].values) if seed_key in by_name else ()
        if seeds and not all(isinstance(s, int) for s in by_name[seed_key].values):
            raise SweepConfigError(f"search=full: the {seed_key} axis must hold integers")
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise SweepConfigError(f"stage 2 points={points!r}: need an integer >= 2")
        if confirm_top < 1 or confirm_seeds < 1:
            raise SweepConfigError("confirm_top and confirm_seeds must be >= 1")
        from lrsweep.stage2_model import check_method

        try:
            check_method(stage2_method)
        except ValueError as err:
            raise SweepConfigError(str(err)) from None
        return cls(
            lr_key=lr_key,
            seed_key=seed_key,
            low=float(min(lrs)),
            high=float(max(lrs)),
            seeds=seeds,
            points=points,
            confirm_top=confirm_top,
            confirm_seeds=confirm_seeds,
            report_dir=Path(report_dir),
            metric=metric or "value",
            stage2_method=stage2_method,
        )

    def seed_axis(self, seeds: Sequence[int]) -> list[Axis]:
        return [Axis(self.seed_key, [int(s) for s in seeds])] if self.seed_key and seeds else []


@dataclass(frozen=True)
class SearchReport:
    """The report of a search: what `best.yaml` holds (`best`), the per-LR tables and the text."""

    best: dict[str, Any]
    aggs: dict[str, pd.DataFrame]
    trials: pd.DataFrame
    text: str
    out_dir: Path
    choice: Any  # the chosen LR and its statistics (`choose`)
    figure: Any  # the curve, a matplotlib Figure (saved as curve.png)


def _frame(study_name: str, storage_url: str, plan: SearchPlan) -> pd.DataFrame:
    import optuna

    from lrsweep.frames import trials_frame
    from lrsweep.storage import open_storage

    storage = open_storage(storage_url)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        return trials_frame(study, plan.lr_key, plan.seed_key)
    finally:
        storage.engine.dispose()


def run_later_stages(
    plan: SearchPlan, stage1: SweepSpec, run_stage: Callable[[SweepSpec], SweepResult]
) -> SearchReport:
    """Stage 2, the confirm step and the report after `stage1` ran (module docstring)."""
    from lrsweep.bounds import propose_bounds, stage2_lrs
    from lrsweep.confirm import plan_confirm
    from lrsweep.stats import aggregate

    names = study_names(stage1.study_name)
    url, direction = stage1.storage_url, stage1.direction
    frames = {"stage1": _frame(names["stage1"], url, plan)}
    proposal = propose_bounds(aggregate(frames["stage1"]), plan.low, plan.high, direction)
    print(f"\n[lrsweep] stage 2: [{proposal.low:.4g}, {proposal.high:.4g}] -- {proposal.reason}")

    def sweep(stage: str, axes: list[Axis], parent: str, **attrs: Any) -> None:
        """Stage `stage` as a sweep of its own study, its trials then read into `frames`."""
        study_attrs = {"parent_study": names[parent], "stage": stage, **attrs}
        spec = dataclasses.replace(
            stage1,
            study_name=names[stage],
            axes=axes,
            grid=build_grid(axes),
            study_attrs=study_attrs,
        )
        run_stage(spec)
        frames[stage] = _frame(names[stage], url, plan)

    proposal_attrs = {
        "low": proposal.low,
        "high": proposal.high,
        "reason": proposal.reason,
        "stage1_best": proposal.best_lr,
        "method": plan.stage2_method,
    }

    def stage2(lrs: list[float]) -> pd.DataFrame:
        """Stage 2 over `lrs` on stage 1's seeds; its trials frame."""
        axes = [Axis(plan.lr_key, lrs), *plan.seed_axis(plan.seeds)]
        sweep("stage2", axes, "stage1", proposal=proposal_attrs)
        return frames["stage2"]

    if plan.stage2_method == "grid":
        measured = [float(x) for x in frames["stage1"]["lr"].dropna()]
        stage2(stage2_lrs(proposal.low, proposal.high, proposal.best_lr, plan.points, measured))
    else:
        from lrsweep.stage2_model import model_stage2

        print(f"[lrsweep] stage 2 by {plan.stage2_method}: {plan.points} LRs, one at a time")
        model_stage2(
            plan.stage2_method,
            frames["stage1"],
            proposal.low,
            proposal.high,
            plan.points,
            direction,
            stage2,
        )
    if plan.seed_key is None:
        print("[lrsweep] confirm step skipped: the app has no seed key (hydra.sweeper.seed_key)")
    else:
        confirm = plan_confirm(frames, plan.confirm_top, plan.confirm_seeds, direction)
        print(
            f"\n[lrsweep] confirm: {plan.lr_key} {[f'{x:.4g}' for x in confirm.lrs]} from "
            f"{confirm.stage}, seeds {confirm.seeds}"
        )
        axes = [Axis(plan.lr_key, confirm.lrs), *plan.seed_axis(confirm.seeds)]
        sweep("confirm", axes, confirm.stage, candidates=confirm.lrs, seeds=confirm.seeds)
    return write_search_report(stage1.study_name, frames, plan, direction)


def write_search_report(
    name: str, frames: Mapping[str, pd.DataFrame], plan: SearchPlan, direction: str
) -> SearchReport:
    """`trials.csv`, `curve.png` and `best.yaml` under `plan.report_dir`."""
    import pandas as pd
    import yaml

    from lrsweep.choice import SELECTION_NOTE, choose, resolution
    from lrsweep.curve import curve_figure
    from lrsweep.frames import TRIAL_COLUMNS
    from lrsweep.stats import aggregate, format_table

    out = plan.report_dir
    out.mkdir(parents=True, exist_ok=True)
    names = study_names(name)
    trials = pd.concat(
        [f.assign(stage=s, study=names[s]) for s, f in frames.items()], ignore_index=True
    )[["stage", "study", *TRIAL_COLUMNS]]
    trials.to_csv(out / "trials.csv", index=False)
    aggs = {s: aggregate(f) for s, f in frames.items()}
    choice = choose(aggs, resolution(frames), direction)
    title = f"{name}: {plan.metric} vs {plan.lr_key}"
    figure = curve_figure(aggs, choice, title, plan.metric, direction)
    figure.savefig(out / "curve.png", format="png", dpi=100)
    best: dict[str, Any] = {
        "study": name,
        "stages": {s: names[s] for s in frames},
        "stage": choice.stage,
        "lr_key": plan.lr_key,
        "lr": choice.lr,
        "metric": plan.metric,
        "direction": direction,
        "selection_score": {
            "mean": choice.mean,
            "std": choice.std,
            "n": choice.n,
            "note": SELECTION_NOTE,
            "rule": choice.rule,
        },
        "good_range": (
            list(choice.good_range)
            if choice.good_range is not None
            else "unknown (one seed: no spread to measure)"
        ),
    }
    if choice.interpolated_optimum is not None:
        best["interpolated_optimum"] = choice.interpolated_optimum
    else:
        best["no_interpolated_optimum"] = choice.optimum_note
    best["overrides"] = [f"{plan.lr_key}={choice.lr!r}"]
    if choice.stage2_gain is not None:
        best["stage2_gain"] = dataclasses.asdict(choice.stage2_gain)
    if choice.edge is not None:
        best["edge"] = {"side": choice.edge, "note": choice.edge_note}
    (out / "best.yaml").write_text(yaml.safe_dump(best, sort_keys=False))
    lines = []
    for stage, agg in aggs.items():
        lines += [f"== {stage}: {names[stage]} ({len(agg)} LRs)", format_table(agg), ""]
    std = "one seed" if choice.n < 2 else f"± {choice.std:.4g} (std over {choice.n} seeds)"
    lines += [
        f"chosen {plan.lr_key}={choice.lr:.4g} (from {choice.stage}): {plan.metric} "
        f"{choice.mean:.4g} {std}: {choice.rule}",
        "good range: "
        + (
            "[{:.4g}, {:.4g}]".format(*choice.good_range)
            if choice.good_range is not None
            else "unknown (one seed)"
        ),
        "stage 2 gain: " + (choice.stage2_gain.verdict if choice.stage2_gain else "no stage 2"),
        f"wrote {out}/trials.csv, curve.png, best.yaml",
    ]
    if choice.edge is not None:
        lines.append(f"warning: {choice.edge_note}")
    if math.isnan(choice.mean):
        lines.append("warning: the chosen LR has no finite mean")
    return SearchReport(
        best=best,
        aggs=aggs,
        trials=trials,
        text="\n".join(lines),
        out_dir=out,
        choice=choice,
        figure=figure,
    )
