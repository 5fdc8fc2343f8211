"""Stage 2: narrow the LR range around the stage-1 optimum and sweep it again, finer.

    python -m src.refine [--run] [--points N] [--method grid|tpe|gp] [hydra overrides...]

The overrides are those of the stage-1 sweep (`python -m src.train -m <overrides>`): they name the
same study. Prints the per-LR table, the proposed range and the overrides for stage 2; with `--run`
creates the study `<name>-stage2` (user attrs `parent_study`, `stage`) and runs stage 2 into it, in
this process (`src.train.run_multirun`: the printed command, without a second interpreter).

The bound rules are `lrsweep.bounds.propose_bounds`'s; stage 2's LRs are `lrsweep.bounds.stage2_lrs`:
`points` new LRs on a grid that also holds stage 1's best LR (already measured on the same seeds),
passed to the sweep as `hydra.sweeper.params.lr='choice(...)'` (exact floats), with `sweep.low`
and `sweep.high` recording the range. `--method tpe` or `gp` proposes the `points` LRs one at a
time instead, by Optuna's TPE or GP sampler seeded with stage 1's trials
(`lrsweep.stage2_model`): each step sweeps the LRs proposed so far into `<name>-stage2` (the
printed command with the choice of those LRs), so a rerun replays the same proposals and runs only
what is missing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import optuna

from lrsweep.bounds import Proposal, propose_bounds, stage2_lrs
from lrsweep.stage2_model import DEFAULT_METHOD, METHODS, model_stage2
from lrsweep.stages import study_names
from lrsweep.stats import aggregate, format_table
from src.cli import run_cli
from src.errors import ConfigError
from src.overrides import ChoiceOverride, override_key, replace_overrides
from src.study import (
    compose_config,
    create_child_study,
    direction_of,
    open_study,
    shown_url,
    trials_frame,
)


def stage2_overrides(
    overrides: Sequence[str],
    name: str,
    proposal: Proposal,
    points: int,
    lrs: Sequence[float] | None = None,
    measured: Sequence[float] = (),
) -> list[str]:
    """The overrides of the stage-2 sweep: its study, its range, and its LRs exactly: `lrs`, by
    default the `points` of `stage2_lrs` (a grid through stage 1's best; neither it nor an end
    among `measured`, stage 1's LRs, is run again)."""
    if lrs is None:
        lrs = stage2_lrs(proposal.low, proposal.high, proposal.best_lr, int(points), measured)
    return replace_overrides(
        overrides,
        {
            "study.name": study_names(name)["stage2"],
            "sweep.low": proposal.low,
            "sweep.high": proposal.high,
            "sweep.points": int(points),
            "hydra.sweeper.params.lr": ChoiceOverride(lrs),
        },
    )


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.refine",
        description="Propose (and with --run, sweep) the stage-2 LR range from a stage-1 study. "
        "Other arguments are the stage-1 Hydra overrides.",
    )
    parser.add_argument("--run", action="store_true", help="create <name>-stage2 and sweep it")
    parser.add_argument(
        "--points", type=int, default=None, help="stage-2 points (default: stage 1's)"
    )
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        help=f"grid, tpe or gp (default {DEFAULT_METHOD}): tpe / gp: Optuna's sampler seeded "
        "with stage 1's trials proposes the LRs one at a time",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.points is not None and args.points < 2:
        raise ConfigError(f"--points: must be >= 2, got {args.points}")
    if args.method not in METHODS:
        raise ConfigError(f"--method: one of {', '.join(METHODS)}, got {args.method!r}")

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    study = open_study(name, storage_url)
    direction = direction_of(study)
    agg = aggregate(trials_frame(study))
    proposal = propose_bounds(agg, float(cfg.sweep.low), float(cfg.sweep.high), direction)
    points = args.points or int(cfg.sweep.points)
    stage2 = stage2_overrides(overrides, name, proposal, points, measured=list(agg["lr"]))

    print(f"study {name} ({shown_url(storage_url)}): {len(agg)} LRs")
    print(format_table(agg))
    print(f"proposal: [{proposal.low:.4g}, {proposal.high:.4g}] -- {proposal.reason}")
    shown = [
        f"{o.split('=', 1)[0]}={shown_url(o.split('=', 1)[1])}"
        if override_key(o) == "study.storage"
        else o
        for o in stage2
    ]
    if args.method == "grid":
        print("stage 2: python -m src.train -m " + " ".join(shown))
    else:
        print(f"stage 2: {points} LRs proposed one at a time by {args.method} in the range above")
    sys.stdout.flush()
    if not args.run:
        return 0
    create_child_study(
        study_names(name)["stage2"],
        storage_url,
        parent=name,
        stage="stage2",
        meta={
            "proposal": {
                "low": proposal.low,
                "high": proposal.high,
                "reason": proposal.reason,
                "stage1_best": proposal.best_lr,
                "method": args.method,
            }
        },
        direction=direction,
        identity=study.user_attrs.get("config"),  # stage 1's experiment
    )
    from src.train import run_multirun  # imports torch: only when a sweep runs

    if args.method == "grid":
        return run_multirun(stage2)
    return model_stage2_run(args.method, study, overrides, name, proposal, points, direction)


class _StepFailed(Exception):
    def __init__(self, rc: int):
        self.rc = rc


def model_stage2_run(
    method: str,
    stage1: optuna.Study,
    overrides: Sequence[str],
    name: str,
    proposal: Proposal,
    points: int,
    direction: str,
) -> int:
    """Stage 2 by `method` (`lrsweep.stage2_model.model_stage2`): each step runs
    `python -m src.train -m` (in this process) over the LRs proposed so far; its exit status."""
    from src.train import run_multirun

    stage2_name = study_names(name)["stage2"]
    storage_url = str(compose_config(overrides).study.storage)

    def run(lrs: list[float]):
        step = stage2_overrides(overrides, name, proposal, points, lrs)
        print(f"stage 2, {method} step {len(lrs)}/{points}: lr={lrs[-1]:.4g}", flush=True)
        if rc := run_multirun(step):
            raise _StepFailed(rc)
        return trials_frame(open_study(stage2_name, storage_url))

    try:
        model_stage2(
            method, trials_frame(stage1), proposal.low, proposal.high, points, direction, run
        )
    except _StepFailed as failed:
        return failed.rc
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
