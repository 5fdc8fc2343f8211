"""The whole search in one command: stage 1, refine + stage 2, confirm, report.

    python scripts/two_stage_sweep.py [--points N] [--confirm-top K] [--confirm-seeds S] [overrides...]

Each step runs as a subprocess of this interpreter (output streams through); the first step that
fails stops the search with its exit code. Every step is resumable, so re-running the command after
an interruption finishes the remaining trials. The overrides are the stage-1 Hydra overrides
(`python -m src.train -m <overrides>`):

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


def step(title: str, args: list[str]) -> int:
    """Runs `python <args>` in the current directory, with the project importable."""
    print(f"\n==== {title}: python {' '.join(args)}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return subprocess.call([sys.executable, *args], env=env)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/two_stage_sweep.py",
        description="Stage 1, refine + stage 2, confirm, report. Other arguments are Hydra overrides.",
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
