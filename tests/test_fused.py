"""Fused arms (`src.fused`): the same records per arm as the sequential trial, on tiny real data.

Every test trains in-process: digits, a one-layer MLP of width 32, 3 epochs (about 0.1 s a trial).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY

from src.fused import Arm, NotFusable, run_arms
from src.study import compose_config
from src.train import train
from src.trial_record import TrialResult

FUSED = [*TINY, "epochs=3"]
CNN = ["model=cnn", "model.channels=8", "epochs=3", "warmup_epochs=1", "batch_size=64"]
N_VAL = 360  # digits' validation split: one example is 1/360 of accuracy
# Per optimizer: an LR at chance (stops), two that learn, one that diverges.
LRS = {
    "sgd": (1e-6, 1e-3, 0.05, 1e4),
    "adam": (1e-6, 1e-3, 0.01, 1e30),
    "adamw": (1e-6, 1e-3, 0.01, 1e30),
}
SEEDS = (0, 1)
# Float tolerance per model: (accuracy in validation examples, relative loss). A batched matmul
# or a grouped convolution rounds differently from a plain one, and training amplifies it (most
# under Adam, whose per-element normalisation turns a rounding in a tiny gradient into an
# LR-sized step): the cnn's differ more.
TOLERANCE = {"mlp": (1, 1e-4), "cnn": (2, 2e-2)}


@pytest.fixture(autouse=True)
def in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test in its own folder: `outputs/` (the shared initial weights) lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(ROOT))  # tests.byo_example, as `python -m src.train` finds it


def sequential(overrides: list[str], arms: list[Arm]) -> list[TrialResult]:
    return [train(compose_config([*overrides, f"lr={a.lr}", f"seed={a.seed}"])) for a in arms]


def assert_same_record(fused: TrialResult, seq: TrialResult, arm: Arm, model: str) -> None:
    """Same outcome and epochs; accuracies and losses to the model's float tolerance."""
    examples, rel = TOLERANCE[model]
    where = f"{arm}: fused {fused} vs sequential {seq}"
    assert (fused.diverged, fused.stopped_at_chance) == (seq.diverged, seq.stopped_at_chance), where
    assert fused.epochs_run == seq.epochs_run, where
    assert fused.val_acc == pytest.approx(seq.val_acc, abs=(examples + 0.01) / N_VAL), where
    curve = pytest.approx(seq.val_acc_curve, abs=(examples + 0.01) / N_VAL)
    assert fused.val_acc_curve == curve, where
    assert fused.train_loss == pytest.approx(seq.train_loss, rel=rel), where
    if seq.diverged:
        assert fused.val_loss == seq.val_loss == math.inf and fused.val_acc == 0.0
    else:
        assert fused.val_loss == pytest.approx(seq.val_loss, rel=rel), where


def assert_same_records(overrides: list[str], arms: list[Arm], model: str) -> list[TrialResult]:
    """Fused and sequential records of `arms` agree arm by arm; the sequential ones."""
    fused = run_arms(compose_config(overrides), arms)
    seq = sequential(overrides, arms)
    for arm, f, s in zip(arms, fused, seq, strict=True):
        assert_same_record(f, s, arm, model)
    return seq


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_fused_and_sequential_give_the_same_record_per_arm(optimizer: str, schedule: str) -> None:
    overrides = [*FUSED, f"optimizer={optimizer}", f"schedule={schedule}"]
    arms = [Arm(lr, seed) for lr in LRS[optimizer] for seed in SEEDS]
    seq = assert_same_records(overrides, arms, "mlp")
    # Every case the comparison must cover happened: stopped, learned, diverged.
    assert seq[0].stopped_at_chance and seq[1].stopped_at_chance
    assert seq[-1].diverged and seq[-2].diverged
    assert min(r.val_acc for r in seq[4:6]) > 0.8
    assert seq[0].val_acc_curve != seq[2].val_acc_curve  # the LR matters: no arm shares another's


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_cnn_fused_gives_the_same_record_per_arm(optimizer: str) -> None:
    """Convolutions and BatchNorm: each arm normalised by its own batch, its own running
    statistics at evaluation."""
    overrides = [*CNN, f"optimizer={optimizer}", "schedule=cosine"]
    arms = [Arm(lr, seed) for lr in (1e-6, LRS[optimizer][2]) for seed in SEEDS]
    seq = assert_same_records(overrides, arms, "cnn")
    assert seq[0].stopped_at_chance and min(r.val_acc for r in seq[2:]) > 0.8


def test_a_cnn_arm_that_batchnorm_keeps_finite_stays_finite_fused() -> None:
    """SGD at lr=1e4: BatchNorm keeps the sequential trial finite, at chance; fused too (its
    losses are chaotic, so only the outcome is compared)."""
    arms = [Arm(1e4, 0), Arm(1e4, 1)]
    fused = run_arms(compose_config(CNN), arms)
    for f, s in zip(fused, sequential(CNN, arms), strict=True):
        assert (f.diverged, f.stopped_at_chance, f.epochs_run) == (False, True, 2)
        assert (s.diverged, s.stopped_at_chance, s.epochs_run) == (False, True, 2)


def test_arms_of_different_seeds_train_on_their_own_data_order() -> None:
    fused = run_arms(compose_config(FUSED), [Arm(0.05, 0), Arm(0.05, 1), Arm(0.05, 0)])
    assert fused[0].train_loss == fused[2].train_loss  # same seed, same LR: the same run
    assert fused[0].train_loss != fused[1].train_loss  # another seed: another order


@pytest.mark.parametrize("log_every", [1, 10_000], ids=["mid-epoch", "at-epoch-end"])
def test_a_diverging_arm_stops_alone_and_never_touches_the_others(log_every: int) -> None:
    overrides = [*FUSED, f"log_every={log_every}"]
    sane = [Arm(0.05, 0), Arm(0.01, 1)]
    alone = run_arms(compose_config(overrides), sane)
    mixed = run_arms(compose_config(overrides), [sane[0], Arm(1e4, 0), sane[1]])
    assert mixed[1].diverged and mixed[1].epochs_run < 3 and mixed[1].val_acc == 0.0
    for a, m in zip(alone, [mixed[0], mixed[2]], strict=True):
        assert not m.diverged and m.epochs_run == 3
        assert m.val_acc_curve == pytest.approx(a.val_acc_curve, abs=1e-12)
        assert m.val_loss == pytest.approx(a.val_loss, rel=1e-6)
    assert sequential(overrides, [Arm(1e4, 0)])[0].diverged  # and it diverges alone too


def test_every_arm_diverging_ends_the_batch() -> None:
    fused = run_arms(compose_config([*FUSED, "log_every=1"]), [Arm(1e4, 0), Arm(1e5, 1)])
    assert all(r.diverged and r.epochs_run == 1 and r.val_loss == math.inf for r in fused)


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["~model", "+model._target_=tests.byo_example.TinyNet"], "TinyNet, not a Sequential"),
        ([*FUSED, "data.test_fraction=0.2"], "test split"),
        ([*FUSED, "optimizer=adam", "+optimizer.amsgrad=true"], "amsgrad"),
    ],
)
def test_a_trial_that_cannot_be_fused_says_why(overrides: list[str], why: str) -> None:
    with pytest.raises(NotFusable, match=why):
        run_arms(compose_config(overrides), [Arm(0.01, 0)])


def test_fused_training_is_deterministic_on_cpu() -> None:
    arms = [Arm(0.05, 0), Arm(0.001, 1)]
    first = run_arms(compose_config(FUSED), arms)
    second = run_arms(compose_config(FUSED), arms)
    assert [(r.train_loss, r.val_acc_curve, r.val_loss) for r in first] == [
        (r.train_loss, r.val_acc_curve, r.val_loss) for r in second
    ]
    assert torch.get_num_threads() >= 1
