"""One trial: restore the shared initial weights, train at `lr` with per-batch linear warmup, score
validation accuracy. `python -m src.train lr=0.05` runs one; `python -m src.train -m` runs the
stage-1 sweep, one trial per grid point, through the `lrsweep` sweeper plugin; `run_multirun` runs
that command's sweep inside the calling process (the two-stage script's steps, refine --run).
"""

from __future__ import annotations

import gc

if __name__ == "__main__":
    # Run as a program: its imports (torch, Hydra, Optuna, ...) live as long as it does. No
    # garbage collection while they load (each full pass walks all of torch); frozen and turned
    # back on at the bottom, before any work. With the sweeper's own rule (no collection while it
    # validates), a 10-trial sweep makes no full pass before its trials instead of 7 (0.5 s).
    gc.disable()

import atexit
import functools
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lrsweep.scaling import parametrisation
from src.base_lr import lr_scales, set_base_lr
from src.batches import Batches
from src.chance import chance_accuracy, chance_threshold
from src.checkpoint import checkpoint_key, initial_model
from src.checks import (
    build_error,
    check_importable,
    check_lr,
    check_model,
    check_output_dirs,
)
from src.cli import exit_on_user_error
from src.data import Splits, as_splits
from src.devices import gpu_for_slot
from src.errors import ConfigError
from src.inprocess import run_hydra_main
from src.study import CONF_DIR, TrialReporter, check_name
from src.trial_record import TrialResult, record_trial

SCHEDULES = ("constant", "cosine")
# What a trial returns. A diverged trial scores 0.0 accuracy, or an infinite loss (the sweeper
# records it as diverged, with the worst value).
METRICS = ("val_acc", "val_loss")
EVAL_BATCH_SIZE = 1024

# A process that imported torch spends ~1 s exiting here, most of it in the interpreter's last
# garbage collections over the ~360k objects torch and torch._dynamo hold (measured: 0.9 s ->
# 0.2 s). Frozen objects are left to the OS, which frees the memory anyway. Every trial process
# imports this module: sweeps, joblib's workers, the README's search.
atexit.register(gc.freeze)


_frozen = False


def freeze_long_lived() -> None:
    """After a process's first trial: what it holds now (torch, torch._dynamo, the data, the
    study's storage, ...) lives as long as the process, so the garbage collector's full passes
    leave it out (`gc.freeze`) instead of walking its ~360k objects (~0.2 s) every few dozen
    trials. Measured in a joblib worker: 13 full passes, 1.8 s over 60 one-epoch trials, 30 ms a
    trial. Once per process, kept in a flag: `gc.get_freeze_count()` walks every frozen object
    (~30 ms here). In the sweeper's process, its own `gc.unfreeze` at the end of the sweep
    releases this too; a joblib worker keeps it frozen for its whole life."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()  # the first trial's garbage is not frozen with it (a joblib worker collects
        gc.freeze()  # in full after its first job anyway: that pass is cheap now)


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data: run before training, and by the sweeper before the study is
    touched. Raises ConfigError naming the key and what is allowed."""

    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is invalid: {allowed}")

    def is_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    check_lr(cfg.lr)
    need(is_int(cfg.epochs) and cfg.epochs >= 1, "epochs", "an integer >= 1")
    need(
        is_int(cfg.warmup_epochs) and 0 <= cfg.warmup_epochs < cfg.epochs,
        "warmup_epochs",
        f"an integer in [0, epochs) = [0, {cfg.epochs})"
        + (" (with epochs=1, add warmup_epochs=0)" if cfg.epochs == 1 else ""),
    )
    need(is_int(cfg.batch_size) and cfg.batch_size >= 1, "batch_size", "an integer >= 1")
    need(cfg.schedule in SCHEDULES, "schedule", f"one of {list(SCHEDULES)}")
    need(cfg.metric in METRICS, "metric", f"one of {list(METRICS)}")
    need(is_int(cfg.threads) and cfg.threads >= 1, "threads", "an integer >= 1")
    need(is_int(cfg.log_every) and cfg.log_every >= 1, "log_every", "an integer >= 1")
    need(is_int(cfg.seed), "seed", "an integer")
    need(isinstance(cfg.stop_at_chance, bool), "stop_at_chance", "true or false")
    need(
        cfg.get("worker_slot") is None or (is_int(cfg.worker_slot) and cfg.worker_slot >= 0),
        "worker_slot",
        "null or an integer >= 0 (set by the sweeper)",
    )
    resolve_device(cfg.device, cfg.get("worker_slot"))
    if OmegaConf.select(cfg, "study.name") is not None:  # it names folders: trials, reports
        check_name(str(cfg.study.name))
    for group in ("data", "model", "optimizer"):
        target = OmegaConf.select(cfg, f"{group}._target_")
        check_importable(group, str(target))
    # A muP model (it has a base_width) under a standard optimizer would train, but with no
    # per-width LR scaling: its LR would not transfer. (A muP optimizer on a standard model fails
    # to build.)
    if "base_width" in cfg.model:
        parametrisation(cfg.model, cfg.optimizer)


def check_job(cfg: DictConfig) -> None:
    """`check_config`, then what needs the data: build the model, load and verify the shared
    initial weights if their file exists (a missing one is not created here: the first trial
    creates it), and build the optimizer. The sweeper's `check` hook: run on the first grid
    point's config before the study is touched, so that under `-m` a corrupt or mismatched
    checkpoint or an unbuildable model is exit 2, as in a single run. Raises ConfigError."""
    if OmegaConf.select(cfg, "hydra.sweeper.search") == "full":
        # A job records into the study `study.name` names, never into stage 2's or the confirm
        # step's that the sweeper opens: their trials would fail, or write into stage 1's.
        raise ConfigError(
            "hydra.sweeper.search=full: the built-in trial's jobs record into study.name's study, "
            "not the later stages' own; run the whole search with scripts/two_stage_sweep.py "
            "(the same overrides)"
        )
    check_config(cfg)
    check_output_dirs(cfg)
    # torch's first optimizer imports torch._dynamo, and that import leaves the frames it ran
    # under in a reference cycle, the model built before it with them. The sweeper collects
    # nothing while it validates and then freezes what is left: imported first, the model is
    # freed when this returns (tests/test_inprocess.py).
    import torch._dynamo  # noqa: F401

    initial_state(cfg, load_data(cfg), torch.device("cpu"), cfg.lr, create=False)


def resolve_device(name: str, worker_slot: int | None = None) -> torch.device:
    """`auto`: the GPU of this worker slot (src/devices.py) when CUDA is present, else the CPU."""
    if name == "auto":
        index = gpu_for_slot(
            worker_slot, torch.cuda.device_count() if torch.cuda.is_available() else 0
        )
        return torch.device("cpu") if index is None else torch.device("cuda", index)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={name!r} is invalid: auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ConfigError(f"device={name!r}: {found} CUDA device(s) here; use device=auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={name!r}: MPS is not available here; use device=auto or cpu")
    return device


def lr_at(step: int, lr: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The LR of optimizer step `step` (1-based): `lr * step / warmup_steps` during warmup, then
    constant, or a cosine from `lr` down to 0 at the last step."""
    if step <= warmup_steps:
        return lr * step / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps - 1) / max(1, total_steps - warmup_steps - 1)
        return lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return lr


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over a whole split."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=batches.device)
    loss_sum = torch.zeros((), device=batches.device)
    for x, y in batches.epoch(0):
        logits = model(x)
        correct += (logits.argmax(dim=1) == y).sum()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
    return correct.item() / batches.n, loss_sum.item() / batches.n


# Why `fit` stopped early: a non-finite loss, or still at chance a full epoch after warmup.
Stop = Literal["diverged", "chance"]


@dataclass
class FitResult:
    stop: Stop | None  # None: every epoch ran
    epochs_run: int
    train_loss: list[float]  # per finished epoch
    val_acc: list[float]  # per finished epoch
    val_loss: float  # of the last finished epoch; inf when diverged


def fit(
    cfg: DictConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: Batches,
    val_batches: Batches,
    hopeless_below: float | None = None,
    on_epoch=None,
) -> FitResult:
    """Train for `cfg.epochs`. Stops at once on a non-finite loss, and after an epoch past warmup
    whose validation accuracy is still at or below `hopeless_below` (None: never), unless that
    epoch is the last: a trial that ran all its epochs was not stopped."""
    # Plain locals: an OmegaConf read costs ~7.5 us, ~6% of a small model's step (bench_train.py).
    base_lr, schedule, log_every = float(cfg.lr), str(cfg.schedule), int(cfg.log_every)
    epochs, warmup_epochs = int(cfg.epochs), int(cfg.warmup_epochs)
    steps_per_epoch = len(train_batches)
    warmup_steps, total_steps = warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    train_loss, val_acc, step = [], [], 0
    # muP optimizers give each group its own multiple of `lr`, which the schedule must keep.
    scales = lr_scales(optimizer, base_lr)

    def diverged(epoch: int) -> FitResult:
        return FitResult("diverged", epoch + 1, train_loss, val_acc, math.inf)

    for epoch in range(epochs):
        model.train()
        loss_sum = torch.zeros((), device=train_batches.device)
        for x, y in train_batches.epoch(epoch):
            step += 1
            set_base_lr(
                optimizer, lr_at(step, base_lr, warmup_steps, total_steps, schedule), scales
            )
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            # NaN/inf propagates into the sum: one host sync per `log_every` steps finds it.
            if step % log_every == 0 and not torch.isfinite(loss_sum):
                return diverged(epoch)
        epoch_loss = loss_sum.item() / steps_per_epoch
        acc, val_loss = evaluate(model, val_batches)
        if not (math.isfinite(epoch_loss) and math.isfinite(val_loss)):  # blew up after a check
            return diverged(epoch)
        train_loss.append(epoch_loss)
        val_acc.append(acc)
        if on_epoch is not None:
            on_epoch(epoch, epoch_loss, acc)
        # Still at chance a full epoch after warmup: such a run does not come back to win.
        stoppable = warmup_epochs <= epoch < epochs - 1
        if hopeless_below is not None and stoppable and acc <= hopeless_below:
            return FitResult("chance", epoch + 1, train_loss, val_acc, val_loss)
    return FitResult(None, epochs, train_loss, val_acc, val_loss)


@functools.lru_cache(maxsize=1)
def _load_data(data_json: str) -> Splits:
    """Built once per process and data config: a sweep's in-process trials share it."""
    node = OmegaConf.create(json.loads(data_json))
    try:
        built = instantiate(node)
    except Exception as err:
        raise build_error("data", node, err) from err
    return as_splits(built)


def _build(group: str, node: DictConfig, *args, **kwargs):
    """`node`'s `_target_` called with its config keys plus `args`/`kwargs`, passed as they are
    (through `instantiate` a tuple would arrive as a ListConfig). Any error is one line."""
    try:
        return _builder(json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True))(
            *args, **kwargs
        )
    except ConfigError:
        raise
    except Exception as err:
        raise build_error(group, node, err) from None


@functools.lru_cache(maxsize=8)
def _cached_builder(node_json: str):
    return instantiate(OmegaConf.create(json.loads(node_json)), _partial_=True)


def _builder(node_json: str):
    """The callable `instantiate(node, _partial_=True)` makes, made once per process and config
    (Hydra's instantiate costs ~3 ms a call; a sweep's in-process trials share the partial). A node
    with nested `_target_`s is instantiated afresh each time: its nested objects are built when
    the partial is made, and trials must never share them."""
    if node_json.count('"_target_"') > 1:
        return instantiate(OmegaConf.create(json.loads(node_json)), _partial_=True)
    return _cached_builder(node_json)


def load_data(cfg: DictConfig) -> Splits:
    """The splits of `cfg.data`, built once per process and data config."""
    return _load_data(json.dumps(OmegaConf.to_container(cfg.data, resolve=True), sort_keys=True))


def initial_state(
    cfg: DictConfig, splits: Splits, device: torch.device, lr: float, create: bool = True
) -> tuple[nn.Module, torch.optim.Optimizer, str]:
    """(model with the shared initial weights on `device`, its fresh optimizer at `lr`, checkpoint
    key): the start every trial, and the range test, share. An existing checkpoint is only read;
    a missing one is created unless `create=False` (`check_job` writes nothing)."""
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    key = checkpoint_key(model_config, splits.input_shape, splits.num_classes, cfg.init_seed)
    model = initial_model(
        lambda: _build(
            "model", cfg.model, input_shape=splits.input_shape, num_classes=splits.num_classes
        ),
        key,
        cfg.checkpoint_dir,
        cfg.init_seed,
        create=create,
    ).to(device)
    check_model(model, splits, key)
    optimizer = _build("optimizer", cfg.optimizer, model.parameters(), lr=lr)
    return model, optimizer, key


def train(cfg: DictConfig, verbose: bool = False) -> TrialResult:
    """One trial, start to end. Reports to the trial `cfg.trial` of study `cfg.study.name`."""
    check_config(cfg)
    start, started = time.perf_counter(), time.time()
    device = resolve_device(cfg.device, cfg.get("worker_slot"))
    torch.set_num_threads(cfg.threads)
    splits = load_data(cfg)
    model, optimizer, key = initial_state(cfg, splits, device, lr=cfg.lr)

    reporter = TrialReporter(cfg.study.storage, cfg.study.name, cfg.trial)
    loader_args = {"device": device, "num_workers": splits.num_workers}
    train_batches = Batches(
        splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed, **loader_args
    )
    val_batches = Batches(splits.val, EVAL_BATCH_SIZE, shuffle=False, **loader_args)

    def on_epoch(epoch: int, loss: float, acc: float) -> None:
        reporter.report(epoch, acc)
        if verbose:
            print(
                f"epoch {epoch + 1}/{cfg.epochs}  train_loss={loss:.4f}  val_acc={acc:.4f}",
                flush=True,
            )

    hopeless_below = None
    if cfg.stop_at_chance:  # the untrained model's score: one pass, no update; before the seed
        untrained, _ = evaluate(model, val_batches)  # (a DataLoader draws from the global RNG)
        hopeless_below = chance_threshold(chance_accuracy(splits), untrained, val_batches.n)
    torch.manual_seed(cfg.seed)
    fitted = fit(cfg, model, optimizer, train_batches, val_batches, hopeless_below, on_epoch)
    diverged = fitted.stop == "diverged"
    test_acc = None
    if splits.test is not None:  # scored once, after training: nothing is ever chosen on it
        test_batches = Batches(splits.test, EVAL_BATCH_SIZE, shuffle=False, **loader_args)
        test_acc = 0.0 if diverged else evaluate(model, test_batches)[0]
    seconds = time.perf_counter() - start
    result = TrialResult.from_fit(fitted, seconds, key, val_batches.n, test_acc)
    record_trial(reporter, result, started)
    return result


def run_multirun(overrides: Sequence[str]) -> int:
    """`python -m src.train -m <overrides>` in this process: the same trials, values, output folders
    and `.hydra/` records, and the exit status that command would have had (0, 1, 2, 130). What
    Hydra leaves behind is put back (`src.inprocess`), and so are torch's CPU thread count and
    random state, which trials set; the data cache stays, for the next sweep in this process."""
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    try:
        return run_hydra_main(main, ["-m", *overrides], argv0=__file__)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        # A ConfigError propagates: the sweeper records it in the trial.
        value = float(getattr(train(cfg), cfg.metric))
        freeze_long_lived()
        return value
    with exit_on_user_error():  # alone: one line, exit 2
        result = train(cfg, verbose=True)
    value = float(getattr(result, cfg.metric))
    status = f"DIVERGED (returned {value})" if result.diverged else f"{value:.4f}"
    if result.stopped_at_chance:
        status += f" (stopped at chance after {result.epochs_run} epochs)"
    test = "" if result.test_acc is None else f" test_acc={result.test_acc:.4f}"
    print(f"lr={cfg.lr:g} seed={cfg.seed}: {cfg.metric}={status}{test} ({result.seconds:.1f}s)")
    return value


if __name__ == "__main__":
    # Run `main` from the module `src.train`, not `__main__`: process-based launchers (joblib,
    # submitit) pickle the task function by reference and must find it by import in the worker.
    from src.key_typos import check_override_keys
    from src.train import main as importable_main

    with exit_on_user_error():  # a mistyped key (`lrr=0.05`): one line naming the close key
        check_override_keys(sys.argv[1:])
    gc.freeze()  # what the imports built, left out of every later pass
    gc.enable()
    importable_main()
