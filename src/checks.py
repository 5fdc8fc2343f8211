"""Checks of what the user's config names and builds, run before any training and before the
study is touched: a `_target_` that imports, a builder's error as one line, a model whose initial
weights are finite and whose output is one logit per class, a folder lrsweep can write to, an LR
training accepts. Each raises `ConfigError` (one line, exit status 2 at the entry points)."""

from __future__ import annotations

import functools
import importlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from src.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a model is checked: src.report runs without it
    import torch
    from torch import nn

    from src.data import Splits


def build_error(group: str, node: DictConfig, err: Exception) -> ConfigError:
    """One line for a `_target_` that raised: its own ConfigError as it is (Hydra's instantiate
    wraps it), else the error's first line; a keyword the builder does not take gets the hint that
    the group's default keys are still set (`'~data' +data._target_=...` drops them)."""
    link: BaseException | None = err
    while link is not None:
        if isinstance(link, ConfigError):
            return link
        link = link.__cause__
    cause = err.__cause__ or err  # Hydra's InstantiationException wraps the builder's error
    target = node.get("_target_")
    line = f"{group}: cannot build {target}: {cause}".splitlines()[0]
    if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
        line += (
            f" (the keys of the default {group} config are still set: replace the whole group "
            f"with '~{group}' +{group}._target_={target}, then +{group}.<arg>=<value>)"
        )
    return ConfigError(line)


def check_importable(group: str, path: str) -> None:
    """A ConfigError unless the dotted `path` names an object (`hydra.utils.get_object` would
    also log an error). A module that exists but fails to import (a broken import inside the
    user's own module) is reported with its real error, not as a missing target."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if module == missing or module.startswith(missing + "."):
                continue  # `module` itself does not exist: try a shorter one
            raise _import_failed(group, path, module, err) from err
        except Exception as err:  # SyntaxError, an error raised at import, ...
            raise _import_failed(group, path, module, err) from err
        if functools.reduce(lambda o, a: getattr(o, a, None), parts[i:], obj) is not None:
            return
        break
    raise ConfigError(
        f"{group}._target_={path!r} cannot be imported: pick one of conf/{group}/*.yaml "
        f"(e.g. {group}=<name>) or name an importable callable"
    )


def _import_failed(group: str, path: str, module: str, err: Exception) -> ConfigError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ConfigError(
        f"{group}._target_={path!r}: importing {module} failed: {type(err).__name__}: {reason}"
    )


def check_model(model: nn.Module, splits: Splits, key: str) -> None:
    """Before training: finite initial weights, and one logit per class for an example of the
    validation split (more logits would train silently on classes that never occur, fewer would
    fail inside the loss). Raises ConfigError."""
    import torch

    from src.data import first_example

    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    # One host sync for all of them (a GPU model's tensors would each cost one).
    if tensors and not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):
        raise ConfigError(
            f"model: the initial weights (checkpoint {key}) hold NaN or infinite values: fix the "
            "model's initialisation or delete the checkpoint (every LR would look diverged)"
        )
    x = first_example(splits.val)[0].unsqueeze(0).float().to(_device_of(model))
    was_training = model.training
    model.eval()  # one example: no batch statistics, and no update of running ones
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (1, splits.num_classes):
        raise ConfigError(
            f"model: outputs shape {tuple(logits.shape[1:])} for one example but the data has "
            f"{splits.num_classes} classes: its output must be {splits.num_classes} class logits "
            "(model builders get num_classes=)"
        )


def _device_of(model: nn.Module) -> torch.device:
    import torch

    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def check_writable(path: str | os.PathLike, key: str, shown: str | None = None) -> None:
    """A ConfigError unless lrsweep can write into the folder `path` (set by `key`; the message
    names it as `shown`, default `key=path`): it exists and takes a new entry, or the nearest
    existing folder above it does (the folder would be made there). Probed by making and removing
    an empty folder, which works for every user (root ignores permission bits, not a read-only
    mount, an immutable folder or /proc); nothing is left behind."""
    shown = shown or f"{key}={os.fspath(path)!r}"
    folder = Path(path).expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{shown}: {existing} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lrsweep-probe-", dir=existing))
    except OSError as err:
        raise ConfigError(
            f"{shown} is not writable: nothing can be created in {existing} "
            f"({err.strerror or err}); "
            "pick a writable folder, e.g. paths.output_dir=<dir>"
        ) from None


# The largest LR training accepts: the largest finite float32 (torch.finfo(torch.float32).max).
MAX_LR = 3.4028234663852886e38


def check_lr(value: object, key: str = "lr") -> None:
    """`src.train`'s rule for an LR: a number > 0 and a finite float32. Raises ConfigError."""
    if not (isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= MAX_LR):
        raise ConfigError(f"{key}={value!r} is invalid: a number > 0 (and a finite float32)")


def check_sweep(cfg: DictConfig) -> None:
    """The stage-1 sweep's settings as the sweeper checks them (its grid, from `cfg.hydra`'s
    sweeper node, and its storage URL), for tools that run sweeps later (the two-stage script):
    bad input is refused before any step runs. Raises ConfigError."""
    from hydra_plugins.lrsweep_sweeper.grid import build_axes
    from lrsweep.grid import build_grid
    from lrsweep.storage_url import check_storage_url

    sweeper = cfg.hydra.sweeper
    try:
        build_grid(build_axes(sweeper.params, [], sweeper.points)[0])
        check_storage_url(str(cfg.study.storage))
    except ValueError as err:
        raise ConfigError(str(err)) from None


class RunDirCheck(Callback):
    """Hydra callback (`hydra.callbacks` in conf/train.yaml): a single run's folder
    (`hydra.run.dir`) must be writable. Hydra calls `on_run_start` before it creates the folder,
    which would otherwise fail with a traceback (`paths.output_dir=/proc/x`): here it is one line,
    exit status 2. A sweep checks its folders in its check hook (`check_output_dirs`)."""

    def on_run_start(self, config: DictConfig, **kwargs: object) -> None:
        from src.cli import exit_on_user_error

        with exit_on_user_error():
            check_writable(config.hydra.run.dir, "hydra.run.dir")


def check_output_dirs(cfg: DictConfig) -> None:
    """The folders a sweep's trials write into (the initial weights, the trial folders, the SQLite
    study's folder) must be writable: checked before the study is created. Raises ConfigError."""
    from lrsweep.storage_url import hide_password, sqlite_path

    url = str(cfg.study.storage)
    try:
        db = sqlite_path(url)
    except Exception:  # not a URL: the sweeper's own check says so
        db = None
    if db is not None:
        check_writable(db.parent, "study.storage", f"the folder of {hide_password(url)!r}")
    check_writable(cfg.checkpoint_dir, "checkpoint_dir")
    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
    if sweep_dir is not None:
        check_writable(sweep_dir, "hydra.sweep.dir")
