"""Fused arms (`src.fused`): the same records per arm as the sequential trial, on tiny real data.

Every test trains in-process: digits, a one-layer MLP of width 32 (or a cnn of 8 channels, or
their muP versions at twice their base width), 3 epochs (about 0.1 s a trial).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY
from mup import MuSharedReadout
from torch import nn

from lrsweep.fusing import CannotFuse
from src.data import digits
from src.fused import Arm, NotFusable, fusable, run_arms
from src.fused_jobs import train_groups
from src.study import compose_config
from src.train import train
from src.trial_record import TrialResult

FUSED = [*TINY, "epochs=3"]
CNN = ["model=cnn", "model.channels=8", "epochs=3", "warmup_epochs=1", "batch_size=64"]
# The muP models at twice their base width: every muP optimizer's per-layer LR scales are 2 or 1/2
# (mlp_mup's two hidden layers give a matrix-like weight, which MuAdam and MuAdamW scale too).
MUP = {
    "mlp_mup": [*FUSED, "model=mlp_mup", "model.depth=2", "model.base_width=16"],
    "cnn_mup": [*CNN, "model=cnn_mup", "model.base_width=4"],
}
N_VAL = 360  # digits' validation split: one example is 1/360 of accuracy
N_TEST = 359  # its test split at data.test_fraction=0.2
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
TOLERANCE = {"mlp": (1, 1e-4), "cnn": (2, 2e-2), "mlp_mup": (1, 1e-4), "cnn_mup": (2, 2e-2)}


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
    if seq.test_acc is None:
        assert fused.test_acc is None, where
    else:
        assert fused.test_acc == pytest.approx(seq.test_acc, abs=(examples + 0.01) / N_TEST), where


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


# (model, optimizer, LRs: at chance, learning, diverging), with warmup and cosine.
MUP_CASES = [
    ("mlp_mup", "musgd", (1e-6, 0.05, 1e4)),
    ("mlp_mup", "muadam", (1e-6, 0.01, 1e30)),
    ("mlp_mup", "muadamw", (1e-6, 0.01, 1e30)),
    ("cnn_mup", "musgd", (1e-6, 0.1, 1e4)),  # BatchNorm keeps lr=1e4 finite: at chance
    ("cnn_mup", "muadamw", (1e-6, 0.01, 1e30)),
]


@pytest.mark.parametrize(
    ("model", "optimizer", "lrs"), MUP_CASES, ids=[f"{m}-{o}" for m, o, _ in MUP_CASES]
)
def test_the_mup_models_fused_give_the_same_record_per_arm(
    model: str, optimizer: str, lrs: tuple[float, float, float]
) -> None:
    """MuReadout's input scaling, and each layer's LR multiple and weight decay from its muP
    parameter group, with warmup and cosine: at chance, learning on two data orders, diverged."""
    overrides = [*MUP[model], f"optimizer={optimizer}", "schedule=cosine"]
    low, good, high = lrs
    arms = [Arm(low, 0), Arm(good, 0), Arm(good, 1), Arm(high, 0)]
    seq = assert_same_records(overrides, arms, model)
    assert seq[0].stopped_at_chance and min(r.val_acc for r in seq[1:3]) > 0.75
    assert seq[3].diverged or (model == "cnn_mup" and seq[3].stopped_at_chance)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fused_arms_score_the_test_split_as_their_sequential_trials(model: str) -> None:
    """With a test split each arm records its test accuracy on the weights it finished with: a
    stopped arm on those it stopped with, a diverged arm 0.0 (the cnn's BatchNorm: evaluated with
    each arm's own running statistics; at lr=1e4 its losses are chaotic, so no diverging arm)."""
    overrides = [*(FUSED if model == "mlp" else CNN), "data.test_fraction=0.2"]
    arms = [Arm(1e-6, 0), Arm(0.05, 0), Arm(0.05, 1), *([Arm(1e4, 0)] if model == "mlp" else [])]
    seq = assert_same_records(overrides, arms, model)
    assert seq[0].stopped_at_chance and min(r.test_acc for r in seq[1:3]) > 0.8
    assert model == "cnn" or (seq[3].diverged and seq[3].test_acc == 0.0)
    assert seq[0].test_acc != seq[1].test_acc


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
        ([*FUSED, "optimizer=adam", "+optimizer.amsgrad=true"], "amsgrad"),
    ],
)
def test_a_trial_that_cannot_be_fused_says_why(overrides: list[str], why: str) -> None:
    with pytest.raises(NotFusable, match=why):
        run_arms(compose_config(overrides), [Arm(0.01, 0)])


def test_jobs_whose_configs_differ_through_an_arm_key_train_in_groups() -> None:
    """`init_seed=${seed}` gives each seed its own initial weights: the jobs' configs, resolved,
    differ in `init_seed` too, so each seed's jobs train as one fused model and each arm's record
    is its sequential trial's; a seed with one job has no other to fuse with and runs alone."""
    points = [(1e-3, 0), (0.05, 0), (0.05, 1), (1e-3, 1), (0.05, 2)]
    overrides = [*FUSED, "study.name=t", "init_seed=${seed}"]
    cfgs = [compose_config([*overrides, f"lr={lr}", f"seed={s}"]) for lr, s in points]
    out = train_groups(cfgs)
    alone = out[4]
    assert isinstance(alone, CannotFuse)
    assert str(alone) == "init_seed=2: no other job of the batch shares its config"
    arms = [Arm(lr, s) for lr, s in points[:4]]
    for (fused, _), seq, arm in zip(out[:4], sequential(overrides, arms), arms, strict=True):
        assert fused.fused_arms == 2 and fused.checkpoint == seq.checkpoint
        assert_same_record(fused, seq, arm, "mlp")
    assert out[0][0].checkpoint != out[2][0].checkpoint  # each seed's own initial weights


def test_a_job_whose_config_is_refused_runs_alone_and_fails_alone() -> None:
    """seed=1.5 fails its own job (`src.train.check_config`), as it does sequentially: it joins no
    group, so it neither trains as seed 1 nor fails the other jobs, which train fused."""
    cfgs = [compose_config([*FUSED, "study.name=t", f"seed={s}"]) for s in (0, 1.5, 1)]
    first, refused, last = train_groups(cfgs)
    assert isinstance(refused, CannotFuse)
    assert str(refused).startswith("a job's config is refused (seed=1.5 is invalid")
    assert first[0].fused_arms == last[0].fused_arms == 2


def test_a_group_that_does_not_fuse_is_named_and_the_others_train_fused() -> None:
    """A batch over `model.width`: the width too wide to pay on the CPU is handed back with the
    reason (one object for its jobs: the launcher says it once), the other trains fused."""
    from src.fused_plan import CPU_FUSE_MAX_PARAMS

    overrides = [*FUSED, "study.name=t", "device=cpu", "epochs=2"]
    cfgs = [
        compose_config([*overrides, f"model.width={w}", f"lr={lr}"])
        for lr in (1e-3, 0.05)
        for w in (32, 4096)
    ]
    narrow_1, wide_1, narrow_2, wide_2 = train_groups(cfgs)
    assert wide_1 is wide_2 and isinstance(wide_1, CannotFuse)
    assert str(wide_1).startswith("model.width=4096: on the CPU a model of ")
    assert f"(fused arms pay up to {CPU_FUSE_MAX_PARAMS:,};" in str(wide_1)
    assert narrow_1[0].fused_arms == narrow_2[0].fused_arms == 2


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))


@pytest.mark.parametrize(
    ("model", "groups", "why"),
    [
        (
            _net,
            lambda m: [
                {"params": m[1].parameters(), "momentum": 0.5},
                {"params": m[3].parameters()},
            ],
            "a parameter group differs in more than its LR and weight decay",
        ),
        (
            _net,
            lambda m: [{"params": m[3].parameters()}],
            "the optimizer does not train each of the model's parameters once",
        ),
        (
            lambda: nn.Sequential(nn.Flatten(), MuSharedReadout(nn.Parameter(torch.zeros(10, 64)))),
            lambda m: m.parameters(),
            "a MuSharedReadout layer",
        ),
    ],
    ids=["group-option", "untrained-parameter", "linear-subclass"],
)
def test_what_fused_arms_cannot_reproduce_is_named(model, groups, why: str) -> None:
    """Parameter groups beyond muP's (LR and weight decay), a parameter no group trains, a
    Linear subclass whose forward `Stack` does not know."""
    net = model()
    optimizer = torch.optim.SGD(groups(net), lr=0.1, momentum=0.9)
    assert why in fusable(net, optimizer, digits())


def test_fused_training_is_deterministic_on_cpu() -> None:
    arms = [Arm(0.05, 0), Arm(0.001, 1)]
    first = run_arms(compose_config(FUSED), arms)
    second = run_arms(compose_config(FUSED), arms)
    assert [(r.train_loss, r.val_acc_curve, r.val_loss) for r in first] == [
        (r.train_loss, r.val_acc_curve, r.val_loss) for r in second
    ]
    assert torch.get_num_threads() >= 1


def test_arms_in_consecutive_batches_train_as_in_one(tmp_path: Path):
    """A launch larger than the device's memory allows (`max_arms`, else from free memory) trains
    in consecutive fused batches: the same record per arm as one batch of all of them."""
    cfg = compose_config(FUSED)
    arms = [Arm(lr, seed) for lr in (1e-3, 0.05) for seed in SEEDS] + [Arm(0.01, 0)]
    whole = run_arms(cfg, arms)
    parts = run_arms(cfg, arms, max_arms=2)
    assert [r.fused_arms for r in whole] == [5] * 5
    assert [r.fused_arms for r in parts] == [2, 2, 2, 2, 1]  # batches_of(5, 2): 2 + 2 + 1
    for one, many, arm in zip(parts, whole, arms, strict=True):
        assert_same_record(one, many, arm, "mlp")


def test_the_probe_says_before_a_sweep_whether_its_jobs_will_fuse():
    """`probe`, asked by the sweeper before its first claim: the default trial over lr and seed
    fuses, and over another key too (in groups); a sweep where no two jobs share a config (lr and
    seed not swept, or each dragging another key along) or a model that does not fuse is named."""
    from src.fused_jobs import probe

    cfg = compose_config(FUSED)
    assert probe(cfg, ["lr", "seed"]) is None
    assert probe(cfg, ["lr", "model.width"]) is None
    assert (
        probe(cfg, ["model.width"])
        == "the sweep varies ['model.width'], not lr or seed: no two jobs share a config"
    )
    own_weights = compose_config([*FUSED, "init_seed=${seed}"])
    assert probe(own_weights, ["seed"]).endswith(": no two jobs share a config")
    assert probe(own_weights, ["seed"]).startswith("seed also changes ['init_seed'")
    assert probe(own_weights, ["lr", "seed"]) is None  # each seed's LRs fuse
    amsgrad = compose_config([*FUSED, "optimizer=adam", "+optimizer.amsgrad=true"])
    assert probe(amsgrad, ["lr"]) == "the optimizer maximizes or uses amsgrad"
    assert not list(Path("outputs").rglob("*.pt"))  # it wrote no initial weights


def test_a_long_fused_batch_says_how_far_it_got(monkeypatch, capsys):
    """A batch that trains longer than `PROGRESS_EVERY_S` prints a line after an epoch (here every
    epoch but the last, whose trials' own lines follow at once)."""
    import src.fused

    monkeypatch.setattr(src.fused, "PROGRESS_EVERY_S", 0.0)
    run_arms(compose_config([*FUSED, "stop_at_chance=false"]), [Arm(1e-3, 0), Arm(0.05, 1)])
    lines = [x for x in capsys.readouterr().err.splitlines() if "fused batch" in x]
    assert [x.split(",")[0] for x in lines] == [
        "[lrsweep] fused batch of 2 arms: epoch 1/3",
        "[lrsweep] fused batch of 2 arms: epoch 2/3",
    ]
    assert all(" 2 still training, " in x for x in lines)
