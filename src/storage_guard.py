"""The storage URL's password rule for a single run (`python -m src.train lr=0.05`, no `-m`).

Hydra writes the composed config and the overrides into the run's `.hydra/*.yaml` before the task
starts, so a literal password in `study.storage` must be refused before that: by this Hydra
callback (`hydra.callbacks` in conf/train.yaml), whose `on_run_start` runs before Hydra creates the
run folder. Under `-m` the sweeper applies the same rule (`storage_url.refuse_literal_password`);
the tools that compose the config themselves (refine, report, transfer, the two-stage script) do it
in `src.study.compose_config`.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src.cli import exit_on_user_error
from src.errors import ConfigError

STORAGE_KEY = "study.storage"


def refuse_literal_password(config: DictConfig) -> None:
    """A ConfigError when `study.storage`, as written, holds a password."""
    from lrsweep.storage_url import refuse_password_in

    try:
        refuse_password_in(config, STORAGE_KEY)
    except ValueError as err:  # the plugin's SweepConfigError
        raise ConfigError(str(err)) from None


class RefuseLiteralPassword(Callback):
    """Refuses a literal storage password before a run writes anything: one line, exit 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            refuse_literal_password(config)
