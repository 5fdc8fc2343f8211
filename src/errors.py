"""The one error type for bad user input.

A `ConfigError` is raised before any training and before the study is touched. Entry points print
it as a single line (`error: <message>`) and exit with status 2; `HYDRA_FULL_ERROR=1` shows the
traceback instead. It is the library's `SweepConfigError` (bad sweep settings) for this app.
"""

from lrsweep.grid import SweepConfigError


class ConfigError(SweepConfigError):
    """Bad user input: names the key and the allowed values."""
