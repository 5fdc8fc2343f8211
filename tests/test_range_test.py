"""The LR range test: its pure parts, the ramp against torch-lr-finder, the checkpoint, the CLI."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, hydra_main_here, run_module, two_stage_main
from torch import nn
from torch_lr_finder import LRFinder

from src.batches import Batches
from src.errors import ConfigError
from src.range_test import (
    DebiasedEMA,
    bounds_line,
    compose_range_config,
    ema_debiased,
    lr_finder_batches,
    printed_bounds,
    propose_bounds,
    ramp_lrs,
    range_test,
    stop_reason,
    suggest,
)
from src.train import initial_state, load_data

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the ramp's schedule


def test_ramp_lrs_is_exponential_from_start_to_end():
    lrs = ramp_lrs(1e-7, 10.0, 100)
    assert len(lrs) == 100
    assert lrs[0] == pytest.approx(1e-7, rel=1e-12) and lrs[-1] == pytest.approx(10.0, rel=1e-12)
    ratios = lrs[1:] / lrs[:-1]
    assert np.allclose(ratios, 10 ** (8 / 99), rtol=1e-12)  # 8 decades in 99 equal steps


def test_ramp_lrs_match_torch_lr_finder_exponential_schedule():
    from torch_lr_finder.lr_finder import ExponentialLR

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1e-4)
    schedule = ExponentialLR(optimizer, end_lr=3.0, num_iter=37)
    reference = []
    for _ in range(37):
        reference.append(schedule.get_lr()[0])
        optimizer.step()
        schedule.step()
    assert np.allclose(ramp_lrs(1e-4, 3.0, 37), reference, rtol=1e-12)


# ---------------------------------------------------------------- smoothing, stop rule


def test_ema_with_bias_correction_on_a_known_sequence():
    # beta 0.5 on [1, 2, 3]: avg = 0.5, 1.25, 2.125; corrections 0.5, 0.75, 0.875.
    assert np.allclose(ema_debiased([1.0, 2.0, 3.0], 0.5), [1.0, 5 / 3, 2.125 / 0.875])
    # Bias correction: a constant sequence is smoothed to itself from the first value on
    # (without it the first value would be (1 - beta) * 2.3).
    assert np.allclose(ema_debiased([2.3] * 50, 0.98), 2.3, rtol=1e-12)
    # It is the weighted mean of the values so far, weights beta ** age.
    values = np.random.default_rng(0).normal(size=30)
    weights = 0.9 ** np.arange(29, -1, -1)
    assert ema_debiased(values, 0.9)[-1] == pytest.approx((weights * values).sum() / weights.sum())
    # beta 0: no smoothing.
    assert np.allclose(ema_debiased(values, 0.0), values)


def test_ema_streams_the_same_as_on_a_sequence():
    ema = DebiasedEMA(0.7)
    values = [3.0, 1.0, 4.0, 1.0, 5.0]
    assert [ema.update(v) for v in values] == pytest.approx(list(ema_debiased(values, 0.7)))


def test_stop_rule():
    assert stop_reason(1.0, 1.0, 1.0, 4.0) is None
    assert stop_reason(2.0, 4.0, 1.0, 4.0) is None  # exactly 4x: not yet
    assert "exceeds 4x" in stop_reason(9.0, 4.01, 1.0, 4.0)
    # A non-finite loss stops at once, whatever the smoothed value says (torch-lr-finder's
    # `loss > 5 * best` is False for NaN: its ramp runs on with NaN weights).
    assert "not finite" in stop_reason(math.nan, 1.0, 1.0, 4.0)
    assert "not finite" in stop_reason(math.inf, 1.0, 1.0, 4.0)
    assert "not finite" in stop_reason(1.0, math.nan, 1.0, 4.0)


# ---------------------------------------------------------------- suggestions and bounds


def synthetic_ramp(lr_min: float, n: int = 100, beta: float = 0.98, factor: float = 4.0):
    """A range test on a made-up loss: flat at 2.3, falling from lr_min/300 to its minimum at
    lr_min, exploding past it; smoothed and stopped with the real rules."""
    lrs = ramp_lrs(1e-7, 10.0, n)
    x = np.log10(lrs / lr_min)
    raw = np.where(x < 0, 0.3 + 2.0 / (1 + np.exp(4 * (x + 1.25))), 0.3 * 100 ** (x * 4))
    ema, best, kept = DebiasedEMA(beta), math.inf, []
    for lr, loss in zip(lrs, raw, strict=True):
        smooth = ema.update(float(loss))
        best = min(best, smooth)
        kept.append((lr, smooth))
        if stop_reason(float(loss), smooth, best, factor):
            break
    return [k[0] for k in kept], [k[1] for k in kept]


@pytest.mark.parametrize("lr_min", [3e-4, 1e-2, 0.5])
def test_bound_rule_brackets_the_optimum_on_synthetic_curves(lr_min):
    lrs, smoothed = synthetic_ramp(lr_min)
    found = suggest(lrs, smoothed)
    assert lrs[-1] < 10.0  # the ramp stopped at the divergence
    low, high = propose_bounds(found.lr_min, high_factor=1.0, decades=3.0)
    assert math.log10(high / low) == pytest.approx(3.0)
    # The smoothed minimum lags the raw one by a few batches, never by a decade.
    assert lr_min <= found.lr_min < 10 * lr_min
    # The steepest descent lies below the minimum; min/10 is a tenth of it; all inside the bounds.
    assert low < found.steepest < found.lr_min and found.min_over_10 == found.lr_min / 10
    # Where accuracy peaks in our measurements (1/100 to 1/3 of the smoothed minimum) is inside.
    for optimum in (found.lr_min / 100, found.lr_min / 3):
        assert low < optimum < high


def test_suggestions_on_a_known_curve():
    lrs = 10.0 ** np.arange(-6, 1, 0.5)  # 14 points
    smoothed = np.array(
        [2.3, 2.3, 2.3, 2.2, 2.0, 1.5, 0.7, 0.5, 0.45, 0.4, 0.6, 2.0, 9.0, math.nan]
    )
    found = suggest(lrs, smoothed, skip_start=0)
    assert found.lr_min == pytest.approx(lrs[9])
    assert found.steepest == pytest.approx(lrs[5])  # np.gradient: (0.7 - 2.0) / 1 decade
    assert found.min_over_10 == pytest.approx(lrs[9] / 10)
    assert lrs[0] <= found.valley <= found.lr_min
    # Noise at the start of the ramp (few losses in the average) is skipped, as torch-lr-finder
    # skips its first 10 points.
    noisy = smoothed.copy()
    noisy[1] = 0.9  # a dip of 1.4 in one step, steeper than the real descent
    assert suggest(lrs, noisy, skip_start=0).steepest < lrs[2]
    assert suggest(lrs, noisy, skip_start=3).steepest == pytest.approx(lrs[5])
    with pytest.raises(ValueError):
        suggest(lrs[:2], smoothed[:2])


def test_printed_bounds_are_the_values_of_the_last_line():
    low, high = 0.000509123, 0.50912
    assert printed_bounds(low, high) == (0.000509, 0.509)
    assert bounds_line(*printed_bounds(low, high)) == bounds_line(low, high)
    assert bounds_line(low, high) == "sweep.low=0.000509 sweep.high=0.509"


# ---------------------------------------------------------------- the ramp on real training


def _tiny(tmp_path: Path, *extra: str):
    return compose_range_config(
        [
            *TINY,
            f"checkpoint_dir={tmp_path / 'init'}",
            "range_test.num_batches=40",
            *extra,
        ]
    )


def test_range_test_leaves_the_checkpoint_unchanged(tmp_path):
    cfg = _tiny(tmp_path)
    first = range_test(cfg)  # creates the checkpoint, like a first trial would
    path = tmp_path / "init" / f"{first.checkpoint}.pt"
    digest, mtime = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns
    second = range_test(cfg)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files beside it
    # Same start, same batches: the same ramp, bit for bit.
    assert second.losses == first.losses and second.lrs == first.lrs
    assert first.stop is not None  # ramping to 10 diverges, and that is a normal end
    assert first.low < first.high


def test_ramp_reproduces_torch_lr_finder_raw_losses(tmp_path):
    """The reference: torch-lr-finder on the same start, batches and schedule (no smoothing, a
    ramp that stays below divergence) measures the same per-batch losses."""
    cfg = _tiny(tmp_path, "range_test.end_lr=0.3", "range_test.diverge_factor=1000")
    ours = range_test(cfg)
    splits = load_data(cfg)
    model, optimizer, _ = initial_state(cfg, splits, torch.device("cpu"), lr=1e-7)
    batches = Batches(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)

    finder = LRFinder(model, optimizer, nn.CrossEntropyLoss(), device="cpu")
    finder.range_test(
        lr_finder_batches(batches), end_lr=0.3, num_iter=40, smooth_f=0.0, diverge_th=1000
    )
    assert ours.stop is None and len(ours.lrs) == 40
    assert np.allclose(ours.lrs, finder.history["lr"], rtol=1e-12)
    assert np.allclose(ours.losses, finder.history["loss"], rtol=1e-5)


def test_bad_range_config_is_a_config_error(tmp_path):
    for bad in ("range_test.end_lr=1e-8", "range_test.num_batches=3", "range_test.decades=5"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            range_test(_tiny(tmp_path, bad))


# ---------------------------------------------------------------- the CLI


def test_cli_prints_the_bounds_as_its_last_line_and_writes_the_plot(tmp_path):
    proc = run_module("src.range_test", *TINY, "study.name=rt", cwd=tmp_path, timeout=120)
    last = proc.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"sweep\.low=(\S+) sweep\.high=(\S+)", last)
    assert match, proc.stdout
    low, high = float(match[1]), float(match[2])
    assert 0 < low < high and math.log10(high / low) == pytest.approx(3.0, abs=0.01)
    report = tmp_path / "outputs" / "reports" / "rt"
    assert (report / "range_test.png").read_bytes()[:8] == PNG_SIGNATURE
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["init", "reports"]


def test_cli_bad_input_is_one_line_and_status_2(tmp_path, cli_here):
    from src import range_test as module

    proc = cli_here(hydra_main_here(module), *TINY, "range_test.start_lr=0", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: range_test.start_lr=0 is invalid: a number > 0"), (
        proc.stderr
    )
    assert not (tmp_path / "outputs").exists()  # nothing written before the check


def test_two_stage_auto_bounds_refuses_explicit_bounds(tmp_path, cli_here):
    proc = cli_here(two_stage_main(), "--auto-bounds", "sweep.low=1e-3", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --auto-bounds sets sweep.low and sweep.high; drop sweep.low=1e-3"
    ]
    assert not (tmp_path / "outputs").exists()


def test_ramp_keeps_mup_per_layer_lr_ratios(tmp_path):
    """Under muP the ramp moves the base LR: each group keeps the multiple of it that the muP
    optimizer gave it (here at twice the base width), as in training, so the bounds are measured
    on the optimizer that trains. Reference: the same ramp written out with those multiples."""
    mup = ["model=mlp_mup", "model.width=64", "model.base_width=32", "optimizer=musgd"]
    cfg = _tiny(tmp_path, *mup, "range_test.end_lr=0.3", "range_test.diverge_factor=1000")
    ours = range_test(cfg)
    splits = load_data(cfg)
    model, optimizer, _ = initial_state(cfg, splits, torch.device("cpu"), lr=1.0)
    multiples = [group["lr"] for group in optimizer.param_groups]  # built at lr=1: the multiples
    assert len(set(multiples)) > 1  # muP at 2x the base width: the groups differ
    batches = Batches(splits.train, cfg.batch_size, shuffle=True, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    model.train()
    losses, stream = [], iter(lr_finder_batches(batches))
    for lr in ours.lrs:
        for group, multiple in zip(optimizer.param_groups, multiples, strict=True):
            group["lr"] = lr * multiple
        x, y = next(stream)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert ours.stop is None and len(ours.lrs) == 40
    assert np.allclose(ours.losses, losses, rtol=1e-5)


def test_two_stage_auto_bounds_sweeps_inside_the_range_tests_bounds(tmp_path, cli_here):
    """The normal path: the range test's printed bounds become stage 1's grid, and every step
    goes into the `-auto` studies."""
    import optuna

    args = ["--auto-bounds", "--points", "3", "--confirm-top", "1", "--confirm-seeds", "1"]
    proc = cli_here(two_stage_main(), *args, *TINY, "sweep.points=4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "==== range test: python -m src.range_test" in proc.stdout
    (bounds,) = re.findall(r"(?m)^sweep\.low=(\S+) sweep\.high=(\S+)$", proc.stdout)
    low, high = float(bounds[0]), float(bounds[1])
    assert math.log10(high / low) == pytest.approx(3.0, abs=0.01)  # three decades
    storage = f"sqlite:///{tmp_path}/outputs/lrsweep.db"
    names = optuna.get_all_study_names(storage)
    (stage1,) = [n for n in names if n.endswith("-auto")]
    assert sorted(names) == sorted([stage1, f"{stage1}-stage2", f"{stage1}-confirm"])
    grid = optuna.load_study(study_name=stage1, storage=storage).user_attrs["grid"]["lr"]
    np.testing.assert_allclose(grid, np.logspace(math.log10(low), math.log10(high), 4))
    assert f"sweep.low={low!r}" in proc.stdout and f"sweep.high={high!r}" in proc.stdout
    assert (tmp_path / "outputs" / "reports" / stage1 / "best.yaml").exists()
