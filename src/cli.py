"""The command-line error rule, for every entry point under `src/` and `scripts/`.

Bad input (a `ConfigError`, or a Hydra error such as a malformed override) is one line on stderr,
`error: <message>` with the message's whitespace folded to single spaces, and exit status 2. No
traceback, unless `HYDRA_FULL_ERROR=1` (Hydra's own switch), which re-raises instead.

`run_cli` wraps an argparse-style `main(argv) -> int` (refine, report, the scripts) and returns the
status; `exit_on_user_error` wraps the body of a `@hydra.main` function (train) and exits.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from hydra.errors import HydraException

from lrsweep.grid import SweepConfigError

USER_ERRORS = (SweepConfigError, HydraException)
EXIT_BAD_INPUT = 2


def full_error() -> bool:
    """Whether the user asked for tracebacks (`HYDRA_FULL_ERROR=1`)."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def error_line(err: BaseException) -> str:
    """`error: <message>` on one line."""
    return "error: " + " ".join(str(err).split())


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """`main(argv)`; bad input is printed by the rule above and returns `EXIT_BAD_INPUT`."""
    try:
        return main(argv)
    except USER_ERRORS as err:
        if full_error():
            raise
        print(error_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT


@contextlib.contextmanager
def exit_on_user_error() -> Iterator[None]:
    """The same rule for code that cannot return a status: prints the line, exits 2."""
    try:
        yield
    except USER_ERRORS as err:
        if full_error():
            raise
        print(error_line(err), file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
