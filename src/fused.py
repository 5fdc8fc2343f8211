"""Fused arms: the LRs (and seeds) of a sweep trained together as one stacked model.

`run_arms(cfg, arms)` trains every arm `(lr, seed)` of the built-in trial `cfg` at once and returns
one `TrialResult` per arm, the record `src.train.train` gives for that `lr` and `seed`.

What it guarantees, arm by arm, against the sequential trial (`tests/test_fused.py`):
- the same start: every arm starts from the shared initial weights (`src.train.initial_state`);
- the same data order: each arm's batches are `Batches(..., seed=arm.seed).epoch(e)`;
- the same updates: SGD (momentum, dampening, nesterov, weight decay), Adam and AdamW as
  `torch.optim` computes them, at each arm's own LR under `src.train.lr_at` (per-batch warmup,
  then constant or cosine), each parameter at its group's multiple of that LR and with its
  group's weight decay (muP's `MuSGD`, `MuAdam`, `MuAdamW` set both per layer);
- the same records: validation accuracy and loss per epoch, train loss, epochs run, divergence
  (checked at the same steps: every `log_every` steps and at each epoch's end), the stop at
  chance, and the test accuracy of a data set with a test split (on the weights each arm finished
  with); equal to float tolerance (a batched matmul rounds differently from a plain one);
- independence: each arm's slice of every stacked tensor is computed from that arm's slice alone,
  and an arm that diverges or stops is removed from the stack at once: a NaN arm never touches the
  others.

What it fuses: a `Sequential` of `Flatten`, `Unflatten`, `Linear`, muP's `MuReadout`, `ReLU`,
`Conv1d`/`Conv2d` and `BatchNorm1d`/`2d` (the `mlp`, `cnn`, `mlp_mup` and `cnn_mup` models) on
in-memory splits, with `torch.optim.SGD`, `Adam` or `AdamW` whose parameter groups differ at most
in LR and weight decay (the muP optimizers). `fusable` names what stops anything else; such a
trial runs sequentially.

How: parameters stacked along a leading arm axis, each layer one kernel call for all arms
(`src.fused_models.Stack`: baddbmm, grouped convolutions, BatchNorm over arms x channels), and
the updates on the stacked tensors (`src.fused_optim.FusedOptimizer`).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from lrsweep.fusing import CannotFuse
from src.batches import Batches
from src.chance import chance_accuracy, chance_threshold
from src.checks import check_lr
from src.data import Splits
from src.fused_models import FUSED_LAYERS_TEXT, Stack, layer_problem
from src.fused_optim import FusedOptimizer
from src.fused_plan import arms_per_batch, batches_of, free_memory, fusing_pays, step_cost
from src.train import (
    EVAL_BATCH_SIZE,
    FitResult,
    check_config,
    evaluate,
    initial_state,
    load_data,
    lr_at,
    resolve_device,
)
from src.trial_record import TrialResult

OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


class NotFusable(CannotFuse):
    """This trial cannot be trained fused (the message says why); it runs sequentially."""


@dataclass(frozen=True)
class Arm:
    """One trial of a fused batch: its peak LR and its data-order seed."""

    lr: float
    seed: int


# --- what can be fused --------------------------------------------------------------------------


def fusable(model: nn.Module, optimizer: torch.optim.Optimizer, splits: Splits) -> str | None:
    """None when this trial can be fused, else the reason it cannot (one short phrase)."""
    in_memory = (
        isinstance(s, tuple) for s in (splits.train, splits.val, splits.test) if s is not None
    )
    if not all(in_memory):
        return "the data is a Dataset, not in-memory tensors"
    if not isinstance(model, nn.Sequential):
        return f"the model is a {type(model).__name__}, not a Sequential of {FUSED_LAYERS_TEXT}"
    problems = [why for why in map(layer_problem, model) if why is not None]
    if problems:
        return "the model has " + "; ".join(dict.fromkeys(problems))
    if type(optimizer) not in OPTIMIZERS:
        return f"the optimizer is {type(optimizer).__name__} (SGD, Adam and AdamW fuse)"
    return _groups_problem(model, optimizer)


# What a parameter group may set for itself: muP's optimizers scale both per group (`mup.optim`).
GROUP_KEYS = ("params", "lr", "weight_decay")


def _groups_problem(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why `FusedOptimizer` cannot reproduce this optimizer's parameter groups, or None."""
    options = optimizer.defaults
    if options.get("maximize") or options.get("amsgrad"):
        return "the optimizer maximizes or uses amsgrad"
    for group in optimizer.param_groups:
        if any(k in options and group[k] != options[k] for k in group if k not in GROUP_KEYS):
            return "a parameter group differs in more than its LR and weight decay"
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    if sorted(grouped) != sorted(id(p) for p in model.parameters()):
        return "the optimizer does not train each of the model's parameters once"
    return None


# --- training ------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_stack(stack: Stack, batches: Batches) -> tuple[Tensor, Tensor]:
    """Per arm (accuracy, mean cross-entropy) over a whole split, batched as `src.train.evaluate`."""
    arms = stack.params[0].shape[0]
    correct = torch.zeros(arms, dtype=torch.long, device=batches.device)
    loss_sum = torch.zeros(arms, device=batches.device)
    for x, y in batches.epoch(0):
        logits = stack.forward(x.expand(arms, *x.shape), training=False)
        correct += (logits.argmax(dim=2) == y).sum(dim=1)
        targets = y.expand(arms, -1).reshape(-1)
        losses = F.cross_entropy(logits.flatten(0, 1), targets, reduction="none")
        loss_sum += losses.view(arms, -1).sum(dim=1)
    return correct.double() / batches.n, loss_sum.double() / batches.n


def seed_batches(per_seed: list[Batches], epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Each step's (inputs (seeds, batch, ...), labels (seeds, batch)): row `s` is the batch of
    `per_seed[s]`'s order, the batch a sequential trial with that seed trains on."""
    for parts in zip(*(b.epoch(epoch) for b in per_seed), strict=True):
        yield torch.stack([x for x, _ in parts]), torch.stack([y for _, y in parts])


@dataclass
class ArmFit(FitResult):
    """An arm's `FitResult`, with its test accuracy as `src.train.train` scores it: on the weights
    it stopped with, 0.0 when it diverged, None without a test split."""

    test_acc: float | None = None


class _Live:
    """The arms still training, in stack order, and every arm's record so far."""

    def __init__(self, arms: Sequence[Arm], device: torch.device, distinct: list[int]) -> None:
        self.arms = list(range(len(arms)))  # original arm index of each stack row
        self.lrs = torch.tensor([arm.lr for arm in arms], dtype=torch.float64)
        self.seed_row = torch.tensor([distinct.index(arm.seed) for arm in arms], device=device)
        self.train_loss: list[list[float]] = [[] for _ in arms]
        self.val_acc: list[list[float]] = [[] for _ in arms]
        self.results: dict[int, ArmFit] = {}

    def finish(
        self,
        rows: list[int],
        why: str | None,
        epochs_run: int,
        val_loss: list[float],
        test_acc: list[float | None],
    ) -> None:
        """Record the arms at stack `rows` as finished with these final validation losses and
        test accuracies."""
        for row, loss, test in zip(rows, val_loss, test_acc, strict=True):
            arm = self.arms[row]
            self.results[arm] = ArmFit(
                why, epochs_run, self.train_loss[arm], self.val_acc[arm], loss, test
            )

    def keep(self, rows: list[int]) -> Tensor:
        """Only the stack `rows` stay live; their index tensor (for the stacked tensors)."""
        index = torch.tensor(rows, dtype=torch.long)
        self.arms = [self.arms[r] for r in rows]
        self.lrs = self.lrs[index]
        index = index.to(self.seed_row.device)
        self.seed_row = self.seed_row[index]
        return index


def fit_arms(
    cfg: DictConfig,
    stack: Stack,
    optimizer: FusedOptimizer,
    arms: Sequence[Arm],
    per_seed: dict[int, Batches],
    val_batches: Batches,
    hopeless_below: float | None = None,
    test_batches: Batches | None = None,
    on_epoch: Callable[[int, int, int], None] | None = None,
) -> list[ArmFit]:
    """`src.train.fit` for every arm at once (`per_seed`: the train batches of each distinct seed):
    one `ArmFit` per arm, in order; with `test_batches`, each arm that did not diverge is scored
    on them with the weights it finished with, as `src.train.train` scores a trial. `on_epoch`
    is called after each epoch with (epochs done, epochs, arms still training)."""
    schedule, log_every = str(cfg.schedule), int(cfg.log_every)
    epochs, warmup_epochs = int(cfg.epochs), int(cfg.warmup_epochs)
    seeds = list(per_seed)
    steps_per_epoch = len(per_seed[seeds[0]])
    warmup_steps, total_steps = warmup_epochs * steps_per_epoch, epochs * steps_per_epoch
    live = _Live(arms, val_batches.device, seeds)
    last_val_loss: list[float] = []
    step = 0
    no_test = None if test_batches is None else 0.0  # a diverged arm's test score

    def test_acc(rows: list[int]) -> list[float | None]:
        """The test accuracy of the stack `rows` now (None each without a test split)."""
        if test_batches is None or not rows:
            return [None] * len(rows)
        acc = evaluate_stack(stack, test_batches)[0].tolist()
        return [acc[r] for r in rows]

    def drop(rows_out: list[int]) -> Tensor | None:
        """Remove the stack rows `rows_out` from the stack and its optimizer's state."""
        if not rows_out:
            return None
        index = live.keep([r for r in range(len(live.arms)) if r not in rows_out])
        stack.keep(index)
        optimizer.keep(index)
        return index

    for epoch in range(epochs):
        loss_sum = torch.zeros(len(live.arms), device=val_batches.device)
        for xs, ys in seed_batches([per_seed[s] for s in seeds], epoch):
            step += 1
            factor = lr_at(step, 1.0, warmup_steps, total_steps, schedule)
            lr = (live.lrs * factor).to(xs.device, torch.float32)
            x, y = xs[live.seed_row], ys[live.seed_row]
            losses = F.cross_entropy(
                stack.forward(x).flatten(0, 1), y.reshape(-1), reduction="none"
            ).view(len(live.arms), -1)
            losses = losses.mean(dim=1)  # each arm's batch mean, as `fit`'s cross_entropy
            grads = torch.autograd.grad(losses.sum(), stack.params)  # arm a's grads: its own loss
            optimizer.step(stack.params, grads, lr)
            loss_sum += losses.detach()
            if step % log_every == 0:  # one host sync per `log_every` steps, as in `fit`
                bad = (~torch.isfinite(loss_sum)).nonzero().flatten().tolist()
                if bad:
                    n = len(bad)
                    live.finish(bad, "diverged", epoch + 1, [math.inf] * n, [no_test] * n)
                    index = drop(bad)
                    if not live.arms:
                        return [live.results[a] for a in range(len(arms))]
                    loss_sum = loss_sum[index]
        epoch_loss = (loss_sum.double() / steps_per_epoch).tolist()
        acc, val_loss = (t.tolist() for t in evaluate_stack(stack, val_batches))
        rows = range(len(live.arms))
        blown = [
            r for r in rows if not (math.isfinite(epoch_loss[r]) and math.isfinite(val_loss[r]))
        ]
        for row in rows:
            if row not in blown:
                live.train_loss[live.arms[row]].append(epoch_loss[row])
                live.val_acc[live.arms[row]].append(acc[row])
        # Still at chance a full epoch after warmup (never on the last epoch), as in `fit`.
        stoppable = hopeless_below is not None and warmup_epochs <= epoch < epochs - 1
        hopeless = [r for r in rows if stoppable and r not in blown and acc[r] <= hopeless_below]
        n = len(blown)
        live.finish(blown, "diverged", epoch + 1, [math.inf] * n, [no_test] * n)
        live.finish(
            hopeless, "chance", epoch + 1, [val_loss[r] for r in hopeless], test_acc(hopeless)
        )
        last_val_loss = [val_loss[r] for r in rows if r not in blown + hopeless]
        drop(blown + hopeless)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, len(live.arms))
        if not live.arms:
            break
    rows = list(range(len(live.arms)))
    live.finish(rows, None, epochs, last_val_loss, test_acc(rows))
    return [live.results[a] for a in range(len(arms))]


def prepare(cfg: DictConfig, only_if_pays: bool, create: bool = True) -> tuple:
    """(device, splits, model, optimizer, checkpoint key, one arm's `StepCost`) of the trial
    `cfg`; raises NotFusable when it cannot be fused, or with `only_if_pays` when it does not pay
    on this device. `create=False` writes no initial weights (`src.fused_jobs.probe`)."""
    device = resolve_device(cfg.device, cfg.get("worker_slot"))
    torch.set_num_threads(cfg.threads)
    splits = load_data(cfg)
    model, torch_optimizer, key = initial_state(cfg, splits, device, lr=cfg.lr, create=create)
    reason = fusable(model, torch_optimizer, splits)
    if reason is not None:
        raise NotFusable(reason)
    states = 2 if isinstance(torch_optimizer, torch.optim.Adam | torch.optim.AdamW) else 1
    x_train = splits.train[0]
    cost = step_cost(model, x_train[0].to(device), cfg.batch_size, EVAL_BATCH_SIZE, states)
    if only_if_pays and (why := fusing_pays(device, cost)) is not None:
        raise NotFusable(why)
    return device, splits, model, torch_optimizer, key, cost


def run_arms(
    cfg: DictConfig,
    arms: Sequence[Arm],
    stack_of: Callable[[nn.Module, int], Any] = Stack.of,
    only_if_pays: bool = False,
    max_arms: int | None = None,
) -> list[TrialResult]:
    """Every arm of the built-in trial `cfg` (its `lr` and `seed` replaced by the arm's) trained
    as fused models; one `TrialResult` per arm, as `src.train.train` gives it (`seconds`: its share
    of its fused batch's time, `fused_arms`: that batch's arms). The arms go in as few fused
    batches as the device's free memory holds (`src.fused_plan.arms_per_batch`), of at most
    `max_arms` arms each when given. No study is touched. Raises ConfigError for a bad config,
    and NotFusable for a trial this module cannot fuse (`fusable`), or, with `only_if_pays`, one
    that trains faster one arm at a time on this device (`src.fused_plan.fusing_pays`).
    `stack_of` builds the stacked model (`benchmarks/bench_fused.py` passes its torch.func
    variant)."""
    check_config(cfg)
    for arm in arms:
        check_lr(arm.lr)
    start = time.perf_counter()
    device, splits, model, torch_optimizer, key, cost = prepare(cfg, only_if_pays)
    data_bytes = sum(t.numel() * t.element_size() for t in (*splits.train, *splits.val))
    size = arms_per_batch(cost, free_memory(device), data_bytes if device.type != "cpu" else 0)
    size = min(size, max_arms or size)
    loader_args = {"device": device, "num_workers": splits.num_workers}
    val_batches = Batches(splits.val, EVAL_BATCH_SIZE, shuffle=False, **loader_args)
    hopeless_below = None
    if cfg.stop_at_chance:  # the untrained model's score: the same start for every arm
        untrained, _ = evaluate(model, val_batches)
        hopeless_below = chance_threshold(chance_accuracy(splits), untrained, val_batches.n)
    per_seed = {
        seed: Batches(splits.train, cfg.batch_size, shuffle=True, seed=seed, **loader_args)
        for seed in dict.fromkeys(arm.seed for arm in arms)
    }
    test_batches = None
    if splits.test is not None:  # scored once per arm, after its training
        test_batches = Batches(splits.test, EVAL_BATCH_SIZE, shuffle=False, **loader_args)
    results: list[TrialResult] = []
    for part in batches_of(len(arms), size):
        batch = [arms[i] for i in part]
        stack = stack_of(model, len(batch))
        optimizer = FusedOptimizer.of(torch_optimizer, model, stack.params)
        seeds = {arm.seed: per_seed[arm.seed] for arm in batch}
        progress = _Progress(len(batch))
        fitted = fit_arms(
            cfg, stack, optimizer, batch, seeds, val_batches, hopeless_below, test_batches, progress
        )
        share = (time.perf_counter() - start) / len(batch)
        results += [
            TrialResult.from_fit(f, share, key, val_batches.n, f.test_acc, len(batch))
            for f in fitted
        ]
        start = time.perf_counter()
    return results


# A fused batch prints nothing until its arms' trials are told: one that trains longer than this
# many seconds says how far it got, at most once per this many seconds (after an epoch).
PROGRESS_EVERY_S = 10.0


class _Progress:
    """`fit_arms`'s `on_epoch` for a long batch: `[lrsweep] fused batch of 30 arms: epoch 4/20,
    27 still training, 12s`, to stderr, at most every `PROGRESS_EVERY_S` seconds."""

    def __init__(self, arms: int) -> None:
        self.arms = arms
        self.start = self.last = time.perf_counter()

    def __call__(self, done: int, epochs: int, training: int) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY_S or done == epochs:
            return
        self.last = now
        print(
            f"[lrsweep] fused batch of {self.arms} arms: epoch {done}/{epochs}, {training} still "
            f"training, {now - self.start:.0f}s",
            file=sys.stderr,
            flush=True,
        )
