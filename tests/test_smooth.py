"""lrsweep.smooth: the local quadratic the choice reads, and its bandwidth."""

from __future__ import annotations

import math

import numpy as np
import pytest
from study_helpers import GRID, agg_of

from lrsweep.smooth import bandwidth, local_quadratic


def test_the_bandwidth_is_half_of_stage_1s_grid_step():
    assert bandwidth(GRID) == pytest.approx(5 / 9 / 2)  # 10 LRs over 5 decades
    assert bandwidth([0.01, 0.01]) is None and bandwidth([]) is None


def test_a_quadratic_curve_is_read_exactly_and_its_peak_is_not_flattened():
    """On a parabola in log10(lr) the fit is exact, at the peak too (a weighted mean of the
    neighbours would read the peak lower)."""
    lrs = [float(x) for x in np.logspace(-3, -1, 9)]
    agg = agg_of({lr: 0.9 - 0.05 * (math.log10(lr) + 2) ** 2 for lr in lrs}, n=2)
    assert local_quadratic(agg, [0.01, 0.001], 0.25) == pytest.approx([0.9, 0.85])


def test_each_lr_weighs_as_many_trials_as_it_has():
    """Three LRs on a line, the middle one off it: with more trials it pulls the fit harder."""
    few = agg_of({0.001: 0.80, 0.01: 0.90, 0.1: 0.80}, n=1)
    many = few.assign(n=[1, 5, 1])
    for agg in (few, many):  # 3 LRs, a quadratic: the fit passes through each
        assert local_quadratic(agg, [0.01], 0.5)[0] == pytest.approx(0.90)
    four = agg_of({0.001: 0.80, 0.003: 0.86, 0.01: 0.90, 0.1: 0.80}, n=1)
    heavy = four.assign(n=[1, 10, 1, 1])
    assert abs(local_quadratic(heavy, [0.003], 0.5)[0] - 0.86) < abs(
        local_quadratic(four, [0.003], 0.5)[0] - 0.86
    )


def test_non_finite_means_are_left_out_and_too_few_lrs_give_nan():
    agg = agg_of({0.001: 0.3, 0.01: 0.1, 0.1: 0.3, 1.0: math.inf}, n=1)
    assert local_quadratic(agg, [0.01], 0.5)[0] == pytest.approx(0.1)
    assert np.isnan(local_quadratic(agg_of({0.001: 0.3, 1.0: math.inf}), [0.01], 0.5)).all()
