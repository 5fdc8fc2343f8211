"""The `lrsweep` command: one entry point for the built-in trial's commands.

    lrsweep search [--auto-bounds] [overrides...]   the whole search (scripts/two_stage_sweep.py)
    lrsweep sweep [overrides...]                    stage 1        (python -m src.train -m)
    lrsweep train [overrides...]                    one trial      (python -m src.train)
    lrsweep refine [--run] [overrides...]           stage 2        (python -m src.refine)
    lrsweep report [overrides...]                   the report     (python -m src.report)
    lrsweep transfer [--measure] [overrides...]     the LR at another size (python -m src.transfer)
    lrsweep range-test [overrides...]               stage 1's bounds (python -m src.range_test)

Each subcommand is the module's own `main`, run in this process with the same arguments: the same
output, files and exit status as the `python -m` command it names.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, whether Hydra's `-m` goes first, what it does)
COMMANDS = {
    "search": ("src.search", False, "the whole search: stage 1, stage 2, confirm, report"),
    "sweep": ("src.train", True, "stage 1: a grid of LRs into the study"),
    "train": ("src.train", False, "one trial at one LR"),
    "refine": ("src.refine", False, "stage 2: narrow the range around stage 1's best"),
    "report": ("src.report", False, "trials.csv, curve.png and best.yaml of a search"),
    "transfer": ("src.transfer", False, "the LR for another batch size, width or depth"),
    "range-test": ("src.range_test", False, "the LR range test: stage 1's bounds"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: lrsweep COMMAND [options] [hydra overrides...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, _, what) in COMMANDS.items()]
    lines += ["", "`lrsweep COMMAND --help` describes one; see README.md for the whole tool."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, multirun, _ = COMMANDS[name]
    if module == "src.train":  # a @hydra.main app: run as `python -m src.train [-m] ...` would
        from src import train
        from src.inprocess import run_hydra_main

        return run_hydra_main(train.main, ["-m", *rest] if multirun else rest, argv0=train.__file__)
    status = importlib.import_module(module).main(rest)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
