"""lrsweep.stats: the per-LR aggregate and what every table and choice reads from it."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from study_helpers import GRID, add_trial, agg_of, parabola

from lrsweep import stats
from src.study import trials_frame


def test_aggregate_counts_and_stats(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    add_trial(study, 0.1, 0, 0.5)
    add_trial(study, 0.1, 1, 0.7)
    add_trial(study, 0.1, 2, diverged=True)
    add_trial(study, 0.1, 3, failed=True)
    add_trial(study, 0.01, 0, 0.6)
    add_trial(study, 1.0, 0, diverged=True)
    agg = stats.aggregate(trials_frame(study))
    assert list(agg.columns) == stats.AGG_COLUMNS
    assert agg["lr"].tolist() == [0.01, 0.1, 1.0]
    row = agg.iloc[1]
    # A diverged seed counts with its value, 0.0: the LR pays for diverging.
    assert row["mean"] == pytest.approx(0.4)
    assert row["std"] == pytest.approx(np.std([0.5, 0.7, 0.0], ddof=1))
    assert (row["n"], row["diverged"], row["failed"]) == (3, 1, 1)
    assert agg.iloc[0]["std"] == 0.0 and agg.iloc[0]["n"] == 1  # one seed: std 0
    assert agg.iloc[2]["mean"] == 0.0 and agg.iloc[2]["diverged"] == 1
    # The LR that diverged on every seed is not ranked; the best is 0.01 (0.6 > 0.4).
    assert stats.rank(agg)["lr"].tolist() == [0.01, 0.1]
    assert stats.best_line(agg, "val_acc") == "best lr=0.01: val_acc 0.6000 ± 0.0000 over 1 run(s)"


def test_top_set_is_within_one_std_of_the_best():
    agg = agg_of({0.1: 0.80, 0.2: 0.90, 0.3: 0.885, 0.4: 0.87}, n=3, std=0.02)
    assert stats.top_set(stats.rank(agg))["lr"].tolist() == [0.2, 0.3]
    single = agg_of({0.1: 0.9, 0.2: 0.9, 0.3: 0.8999})  # one seed: only exact ties
    assert stats.top_set(stats.rank(single))["lr"].tolist() == [0.1, 0.2]


def test_interpolated_optimum_of_a_clean_concave_peak():
    lrs = [float(x) for x in np.logspace(-3, -1, 9)]
    peak = 10**-1.9  # between grid points
    opt = stats.interpolated_optimum(agg_of({x: parabola(x, peak) for x in lrs}))
    assert opt == pytest.approx(peak, rel=1e-6)


def test_no_interpolated_optimum_for_a_monotone_curve_or_an_edge_peak():
    monotone = agg_of({x: 0.5 + 0.01 * i for i, x in enumerate(GRID)})
    assert stats.interpolated_optimum(monotone) is None
    # concave, but the peak lies beyond the fitted points: no extrapolation
    lrs = GRID[:6]
    assert stats.interpolated_optimum(agg_of({x: parabola(x, peak=1.0) for x in lrs})) is None
    assert stats.interpolated_optimum(agg_of({GRID[0]: 0.5, GRID[1]: 0.6})) is None


# digits, epochs=3, 9 LRs in [1e-3, 1e2]: four LRs learn, then the cliff (chance, then diverged).
CLIFF_LRS = [float(x) for x in np.logspace(-3, 2, 9)]
CLIFF_LEARNED = [0.578, 0.783, 0.953, 0.944]


def _cliff_study(tmp_path, learned):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    for lr, value in zip(CLIFF_LRS, learned, strict=False):
        add_trial(study, lr, 0, value)
    add_trial(study, CLIFF_LRS[len(learned)], 0, 0.100, stopped_at_chance=True)
    for lr in CLIFF_LRS[len(learned) + 1 :]:
        add_trial(study, lr, 0, diverged=True)
    return stats.aggregate(trials_frame(study))


def test_interpolated_optimum_fits_only_the_lrs_that_learned(tmp_path):
    agg = _cliff_study(tmp_path, CLIFF_LEARNED)
    assert agg["learned"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0]
    # The parabola over the four LRs that learned, not over the cliff beside them.
    x = np.log10(CLIFF_LRS[:4])
    a, b, _ = np.polyfit(x, CLIFF_LEARNED, 2)
    opt = stats.interpolated_optimum(agg)
    assert opt == pytest.approx(10 ** (-b / (2 * a)), rel=1e-9)
    assert 0.0237 < opt < 0.075  # between the best grid point and its nearly-as-good neighbour


def test_no_interpolated_optimum_when_the_best_is_the_last_lr_that_learned(tmp_path):
    agg = _cliff_study(tmp_path, [0.578, 0.783, 0.953])
    opt, why = stats.fit_optimum(agg)
    assert opt is None
    assert why == "the best LR is the highest that learned: no interior optimum"


def test_equal_scores_rank_by_the_documented_order_whatever_the_summation_order(tmp_path):
    """The same three scores in another seed order: their float means differ in the last bit
    (0.19999999999999998 vs 0.20000000000000004). Equal means and stds: the lower LR first."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    for seed, value in enumerate([0.3, 0.2, 0.1]):
        add_trial(study, 0.1, seed, value)
    for seed, value in enumerate([0.1, 0.2, 0.3]):
        add_trial(study, 0.2, seed, value)
    agg = stats.aggregate(trials_frame(study))
    assert agg["mean"].iloc[0] != agg["mean"].iloc[1]  # the last bits differ ...
    assert stats.rank(agg)["lr"].tolist() == [0.1, 0.2]  # ... and do not decide
    assert stats.best_line(agg).startswith("best lr=0.1:")
