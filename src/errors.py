"""The one error type for bad user input.

A `ConfigError` is raised before any training and before the study is touched. Entry points print
it as a single line (`error: <message>`) and exit with status 2; `HYDRA_FULL_ERROR=1` shows the
traceback instead.
"""


class ConfigError(ValueError):
    """Bad user input: names the key and the allowed values."""
