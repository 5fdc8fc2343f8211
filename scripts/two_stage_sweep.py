"""The whole search in one command: stage 1, refine + stage 2, confirm, report.

    python scripts/two_stage_sweep.py [--auto-bounds] [--points N] [--confirm-top K]
                                      [--confirm-seeds S] [overrides...]

Each step runs as a subprocess of this interpreter (output streams through); the first step that
fails stops the search with its exit code. Every step is resumable, so re-running the command after
an interruption finishes the remaining trials. The overrides are the stage-1 Hydra overrides
(`python -m src.train -m <overrides>`):

0. with --auto-bounds: python -m src.range_test <overrides> study.name=<name>-auto; its last
             line `sweep.low=<x> sweep.high=<y>` joins the overrides of every later step
             (stage 1 then sweeps `sweep.points` LRs over at most 3 decades instead of 5; the
             study gets its own name, so a default-bounds study is never mixed with it)
1. stage 1:  python -m src.train -m <overrides>
2. stage 2:  python -m src.refine --run [--points N] <overrides>
3. confirm:  the top K LRs of the finest stage, the interpolated optimum (if any) and stage 1's
             best LR (to weigh stage 2's gain on the same seeds), on S fresh
             seeds, into <name>-confirm (`src.confirm.prepare_confirm` plans it), then
             python -m src.train -m <overrides> study.name=<name>-confirm
                 "hydra.sweeper.params.lr='choice(...)'" sweep.seeds=[...]
4. report:   python -m src.report <overrides>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from src.cli import run_cli  # noqa: E402
from src.confirm import prepare_confirm  # noqa: E402
from src.errors import ConfigError  # noqa: E402
from src.overrides import override_key  # noqa: E402


def step(title: str, args: list[str]) -> int:
    """Runs `python <args>` in the current directory, with the project importable."""
    print(f"\n==== {title}: python {' '.join(args)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.call([sys.executable, *args], env=env)


def step_last_line(title: str, args: list[str]) -> tuple[int, str]:
    """`step`, streaming the output through, and also returning its last non-empty stdout line."""
    print(f"\n==== {title}: python {' '.join(args)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    last = ""
    with subprocess.Popen(
        [sys.executable, *args], env=env, stdout=subprocess.PIPE, text=True, bufsize=1
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            print(line, end="", flush=True)
            last = line.strip() or last
    return proc.returncode, last


AUTO_SUFFIX = "-auto"


def auto_bounds(overrides: list[str]) -> tuple[int, list[str]]:
    """Runs the range test; returns (its exit status, the overrides for the later steps)."""
    taken = [o for o in overrides if override_key(o) in ("sweep.low", "sweep.high")]
    if taken:
        raise ConfigError(f"--auto-bounds sets sweep.low and sweep.high; drop {' '.join(taken)}")
    if not any(override_key(o) == "study.name" for o in overrides):
        from src.study import compose_config

        name = str(compose_config(overrides).study.name)
        overrides = [*overrides, f"study.name={name}{AUTO_SUFFIX}"]
    rc, last = step_last_line("range test", ["-m", "src.range_test", *overrides])
    if rc:
        return rc, overrides
    from src.range_test import parse_bounds_line  # imports torch: only when it is needed

    low, high = parse_bounds_line(last)
    return 0, [*overrides, f"sweep.low={low!r}", f"sweep.high={high!r}"]


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
    parser.add_argument("--confirm-top", type=int, default=3, help="LRs to confirm (default 3)")
    parser.add_argument("--confirm-seeds", type=int, default=3, help="fresh seeds (default 3)")
    args, overrides = parser.parse_known_args(argv)
    if args.confirm_top < 1 or args.confirm_seeds < 1 or (args.points or 2) < 2:
        raise ConfigError("--confirm-top and --confirm-seeds must be >= 1, --points >= 2")
    points = [] if args.points is None else ["--points", str(args.points)]

    if args.auto_bounds:
        rc, overrides = auto_bounds(overrides)
        if rc:
            return rc
    if rc := step("stage 1", ["-m", "src.train", "-m", *overrides]):
        return rc
    if rc := step("refine + stage 2", ["-m", "src.refine", "--run", *points, *overrides]):
        return rc
    print("\n==== confirm: planning", flush=True)
    confirm = prepare_confirm(overrides, args.confirm_top, args.confirm_seeds)
    if rc := step("confirm", ["-m", "src.train", "-m", *confirm]):
        return rc
    return step("report", ["-m", "src.report", *overrides])


def main(argv: list[str] | None = None) -> int:
    """Bad input (a ConfigError here, e.g. from planning the confirm step) is one line, status 2."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
