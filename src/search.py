"""The whole search in one command: stage 1, refine + stage 2, confirm, report.

    python scripts/two_stage_sweep.py [--auto-bounds] [--points N] [--stage2-method M]
                                      [--confirm-top K] [--confirm-seeds S] [overrides...]

Every step runs inside this process, exactly as the command in its header
(`==== <step>: python ...`, which a user can re-run by hand) would run it: the sweeps through
`src.train.run_multirun` (the real Hydra app and sweeper, the same trials, folders and `.hydra/`
records), the other steps through their modules' own functions. Python, torch, Hydra and the data
are loaded once instead of once per step. The overrides are composed and checked before anything
runs (bad input: one line, exit 2, nothing written); the first step that fails stops the search with
its exit code; Ctrl-C stops it with 130, SIGTERM (preemption, `timeout`) with 143, trials in flight
marked FAIL. Every step is resumable, so re-running the command after an interruption finishes the
remaining trials. The overrides are the stage-1 Hydra overrides
(`python -m src.train -m <overrides>`):

0. with --auto-bounds: python -m src.range_test <overrides> study.name=<name>-auto (the overrides
             `range_test.*` go to it alone); the bounds of its
             last line `sweep.low=<x> sweep.high=<y>` (`src.range_test.run` returns them) join the
             overrides of every later step (stage 1 then sweeps `sweep.points` LRs over at most 3
             decades instead of 5; the study gets its own name, so a default-bounds study is never
             mixed with it)
1. stage 1:  python -m src.train -m <overrides>
2. stage 2:  python -m src.refine --run [--points N] [--method M] <overrides> (M: grid, the
             default, or tpe / gp: Optuna's sampler seeded with stage 1's trials proposes the N
             LRs one at a time; `docs/choice.md`)
3. confirm:  the top K LRs of the finest stage on the smoothed curve (`docs/choice.md`), the
             interpolated optimum (if any) and stage 1's best LR (to weigh stage 2's gain on
             the same seeds), on S fresh seeds, into <name>-confirm (`src.confirm.prepare_confirm` plans it), then
             python -m src.train -m <overrides> study.name=<name>-confirm
                 "hydra.sweeper.params.lr='choice(...)'" sweep.seeds=[...]
4. report:   python -m src.report <overrides>
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from lrsweep.interrupts import interrupt_noted
from lrsweep.stage2_model import DEFAULT_METHOD, METHODS
from src import range_test, refine, report
from src.checks import check_output_dirs, check_sweep
from src.cli import run_cli
from src.confirm import prepare_confirm
from src.errors import ConfigError
from src.overrides import override_key
from src.study import compose_config
from src.train import check_config, run_multirun

AUTO_SUFFIX = "-auto"
RANGE_TEST_PREFIX = "range_test."


def header(title: str, command: list[str]) -> None:
    """The step's header: the command it stands for, which a user can re-run by hand."""
    print(f"\n==== {title}: python {' '.join(command)}", flush=True)


def step(title: str, command: list[str], run: Callable[[], int]) -> int:
    """Prints the step's header and runs it here; its exit status."""
    header(title, command)
    return run()


def sweep(title: str, overrides: list[str]) -> int:
    """`python -m src.train -m <overrides>`, in this process."""
    return step(title, ["-m", "src.train", "-m", *overrides], lambda: run_multirun(overrides))


def refuse_explicit_bounds(overrides: list[str]) -> None:
    taken = [o for o in overrides if override_key(o) in ("sweep.low", "sweep.high")]
    if taken:
        raise ConfigError(f"--auto-bounds sets sweep.low and sweep.high; drop {' '.join(taken)}")


def split_range_test(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the range test's own `range_test.*` overrides, the others): the range test takes both,
    the sweeps only the others (their config has no `range_test` section)."""
    own = [o for o in overrides if override_key(o).startswith(RANGE_TEST_PREFIX)]
    return own, [o for o in overrides if o not in own]


def auto_named(overrides: list[str], study_name: str) -> list[str]:
    """The overrides with the auto-bounds search's own study name, unless one is given."""
    if any(override_key(o) == "study.name" for o in overrides):
        return overrides
    return [*overrides, f"study.name={study_name}{AUTO_SUFFIX}"]


def auto_bounds(overrides: list[str], own: list[str]) -> list[str]:
    """Runs the range test (with its own overrides `own`); returns the overrides for the later
    steps with its bounds as its last line prints them. Its errors are ConfigErrors (exit 2)."""
    header("range test", ["-m", "src.range_test", *overrides, *own])
    low, high = range_test.run(range_test.compose_range_config([*overrides, *own]))
    return [*overrides, f"sweep.low={low!r}", f"sweep.high={high!r}"]


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/two_stage_sweep.py",
        description="Stage 1, refine + stage 2, confirm, report. Other arguments are Hydra overrides.",
    )
    parser.add_argument(
        "--auto-bounds",
        action="store_true",
        help="run the LR range test first and sweep stage 1 inside its bounds (at most 3 decades)",
    )
    parser.add_argument(
        "--points", type=int, default=None, help="stage-2 points (default: stage 1's)"
    )
    parser.add_argument(
        "--stage2-method",
        default=DEFAULT_METHOD,
        help=f"how stage 2 spends its points: grid, tpe or gp (default {DEFAULT_METHOD}; "
        "src.refine --method)",
    )
    parser.add_argument("--confirm-top", type=int, default=3, help="LRs to confirm (default 3)")
    parser.add_argument("--confirm-seeds", type=int, default=3, help="fresh seeds (default 3)")
    args, overrides = parser.parse_known_args(argv)
    if args.confirm_top < 1 or args.confirm_seeds < 1 or (args.points or 2) < 2:
        raise ConfigError("--confirm-top and --confirm-seeds must be >= 1, --points >= 2")
    points = [] if args.points is None else ["--points", str(args.points)]
    if args.stage2_method not in METHODS:
        raise ConfigError(
            f"--stage2-method: one of {', '.join(METHODS)}, got {args.stage2_method!r}"
        )
    if args.stage2_method != DEFAULT_METHOD:
        points += ["--method", args.stage2_method]
    own, overrides = split_range_test(overrides)
    if own and not args.auto_bounds:
        raise ConfigError(f"{' '.join(own)}: range_test.* overrides need --auto-bounds")
    if args.auto_bounds:
        refuse_explicit_bounds(overrides)
    # Bad input: one line, exit 2, before anything runs (the range test included).
    cfg = compose_config(overrides, return_hydra_config=True)
    check_config(cfg)
    check_sweep(cfg)
    check_output_dirs(cfg)
    if args.auto_bounds:
        overrides = auto_named(overrides, str(cfg.study.name))
        range_test.check_range_config(range_test.compose_range_config([*overrides, *own]))
        overrides = auto_bounds(overrides, own)
    if rc := sweep("stage 1", overrides):
        return rc
    refine_args = ["--run", *points, *overrides]
    if rc := step(
        "refine + stage 2", ["-m", "src.refine", *refine_args], lambda: refine.main(refine_args)
    ):
        return rc
    print("\n==== confirm: planning", flush=True)
    confirm = prepare_confirm(overrides, args.confirm_top, args.confirm_seeds)
    if rc := sweep("confirm", confirm):
        return rc
    return step("report", ["-m", "src.report", *overrides], lambda: report.main(overrides))


def main(argv: list[str] | None = None) -> int:
    """Bad input (a ConfigError here, e.g. from planning the confirm step) is one line, status 2;
    Ctrl-C or SIGTERM outside a sweep (a sweep reports its own) is one line, status 130 or 143
    (128 + the signal's number)."""
    with interrupt_noted() as interrupted:
        try:
            return run_cli(_main, argv)
        except KeyboardInterrupt:
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return interrupted.exit_status


if __name__ == "__main__":  # python -m src.search: the same as scripts/two_stage_sweep.py
    sys.exit(main())
