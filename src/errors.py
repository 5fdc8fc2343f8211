"""The one error type for bad user input.

A `ConfigError` is raised before any training and before the study is touched. Entry points print
it as a single line (`error: <message>`) and exit with status 2; `HYDRA_FULL_ERROR=1` shows the
traceback instead. It is the library's own error for bad settings (`lrsweep.grid.SweepConfigError`,
a ValueError), under the name this app has always used: the library's refusals and the app's are
one type.
"""

from lrsweep.grid import SweepConfigError as ConfigError

__all__ = ["ConfigError"]
