"""Running a `@hydra.main` entry point in the calling process, as its command line would run it.

`run_hydra_main(main, args, argv0)` is `python <argv0> <args>` without the new interpreter: it calls
the real decorated `main` with `sys.argv = [argv0, *args]` and returns the exit status the command
would have had (0 on success; Hydra's 1 for an error it reports itself; our 2 for bad input; 130
for an interrupted sweep; `sys.exit("text")` prints the text and gives 1, as Python does).

The protocol, read from hydra-core 1.3 (`hydra.main`, `_internal.utils._run_hydra`,
`core.utils.run_job`): each call builds a fresh `Hydra` (config search path, config loader) and
clears `GlobalHydra` in a `finally`, so two calls in one process compose independently. What a call
leaves behind, and is restored here, whatever the outcome:

- `sys.argv` (Hydra parses it) and the working directory (a job with `hydra.job.chdir=true`);
- `HydraConfig` (left holding the sweep's config) and `JobRuntime` (the last job's name);
- the root logger's level and handlers (a `hydra/job_logging` other than `none` configures them);
- the SIGINT and SIGTERM handlers.

Kept on purpose: imported modules, the plugin registry (`Plugins`, discovered once) and the
process's caches (`src.train`'s data cache), which is what a second call saves. An exception other
than `SystemExit` (e.g. a KeyboardInterrupt outside a sweep, or any error under
`HYDRA_FULL_ERROR=1`, where Hydra re-raises) propagates after the state is restored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

RESTORED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(code: object) -> int:
    """The process exit status `raise SystemExit(code)` gives (printing a non-int code, as Python
    does)."""
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def hydra_app_state(argv: Sequence[str]) -> Iterator[None]:
    """`sys.argv = argv` for the block; then the process state listed in the module docstring is
    put back as it was."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime

    saved_argv, saved_cwd = sys.argv, os.getcwd()
    hydra_cfg = HydraConfig.instance().cfg
    job_runtime = JobRuntime.instance().conf.copy()
    root = logging.getLogger()
    root_level, root_handlers = root.level, list(root.handlers)
    handlers = {sig: signal.getsignal(sig) for sig in RESTORED_SIGNALS}
    sys.argv = list(argv)
    try:
        yield
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_cfg
        JobRuntime.instance().conf = job_runtime
        root.setLevel(root_level)
        root.handlers[:] = root_handlers
        for sig, handler in handlers.items():
            # None: installed outside Python, cannot be put back. Only a changed handler is set
            # (signal.signal works in the main thread only).
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


def run_hydra_main(main: Callable[[], Any], args: Sequence[str], argv0: str) -> int:
    """`python <argv0> <args>`'s exit status, run in this process through the `@hydra.main`
    function `main`; the process is left as it was found (module docstring)."""
    with hydra_app_state([argv0, *args]):
        try:
            main()
        except SystemExit as stop:
            return exit_status(stop.code)
    return 0
