"""The measured check's intervals on synthetic studies with known noise: no training. Each seed's
accuracy curve is a parabola in log10(lr) peaking at the true optimum shifted by that seed's noise,
so the optimum of a seeds' mean curve is the mean of their peaks, and its spread is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from lrsweep import scaling
from lrsweep.seed_bootstrap import SeedCurves, alpha_interval, optimum_interval
from src.transfer_check import AlphaIntervals, alpha_intervals, format_table, scale_result

GRID = np.logspace(-5, 0, 21)  # a quarter decade apart


def trials(peaks: list[float], grid: np.ndarray = GRID) -> pd.DataFrame:
    """A trials frame: seed i's curve peaks at log10(lr) = peaks[i]."""
    rows = [
        {
            "state": "COMPLETE",
            "lr": float(lr),
            "seed": seed,
            "value": 0.9 - 0.1 * (math.log10(lr) - peak) ** 2,
            "diverged": False,
            "stopped_at_chance": False,
            "seconds": 0.5,
        }
        for seed, peak in enumerate(peaks)
        for lr in grid
    ]
    return pd.DataFrame(rows)


def test_the_optimum_of_the_seeds_mean_curve_is_the_mean_of_their_peaks():
    curves = SeedCurves(trials([-2.0, -1.5, -2.5]))
    lr, how = curves.optimum()
    assert how == "interpolated" and math.log10(lr) == pytest.approx(-2.0)
    assert math.log10(curves.optimum([1, 1, 2])[0]) == pytest.approx((-1.5 - 1.5 - 2.5) / 3)


def test_two_seeds_interval_is_the_span_of_their_optima():
    """From 2 seeds the replicates are {0,0} (1/4), {0,1} (1/2), {1,1} (1/4): the 2.5% and 97.5%
    percentiles are seed 0's and seed 1's own optima."""
    interval = optimum_interval(SeedCurves(trials([-2.0, -1.5])))
    assert math.log10(interval.low) == pytest.approx(-2.0)
    assert math.log10(interval.high) == pytest.approx(-1.5)
    assert interval.seeds == 2 and interval.text() == "[0.01, 0.0316] (95% bootstrap over 2 seeds)"


def test_one_seed_has_no_interval_and_the_bootstrap_is_reproducible():
    assert optimum_interval(SeedCurves(trials([-2.0]))) is None
    peaks = [-2.0, -1.7, -2.2, -1.9]
    first = optimum_interval(SeedCurves(trials(peaks)), resamples=300)
    again = optimum_interval(SeedCurves(trials(peaks)), resamples=300)
    assert (first.low, first.high) == (again.low, again.high)  # seeded: same trials, same interval


def test_alpha_interval_matches_the_known_noise():
    """Five scales, true alpha -0.5, every seed's peak off by N(0, tau) in log10: the seeds' mean
    optimum has sd tau / sqrt(k), alpha sd tau / sqrt(k) / sqrt(Sxx). The 95% bootstrap interval
    holds the true alpha and its half-width is 1.96 of those sds, within the bootstrap's own
    error (and its known shrinkage sqrt((k - 1) / k))."""
    rng = np.random.default_rng(7)
    scales, k, tau = [8, 16, 32, 64, 128], 6, 0.15
    true = [math.log10(0.01) - 0.5 * math.log10(s / 8) for s in scales]
    curves = [SeedCurves(trials(list(t + rng.normal(0, tau, k)))) for t in true]
    interval = alpha_interval(scales, curves, resamples=400)
    assert interval.low < -0.5 < interval.high
    x = np.log10(scales)
    sd = tau / math.sqrt(k) / math.sqrt(((x - x.mean()) ** 2).sum())
    half = (interval.high - interval.low) / 2
    assert 0.5 < half / (1.96 * sd) < 1.5
    # Less noise, a narrower interval.
    quiet = [SeedCurves(trials(list(t + rng.normal(0, tau / 10, k)))) for t in true]
    narrow = alpha_interval(scales, quiet, resamples=400)
    assert narrow.high - narrow.low < (interval.high - interval.low) / 4


def test_rule_verdicts_judge_each_rule_against_the_hull_of_both_intervals():
    scales = [64, 128, 256, 512]
    fit = scaling.fit_power_law(scales, [0.01 * (s / 64) ** -0.4 for s in scales])
    rules = {"mup": 0.0, "inverse_sqrt": -0.5, "inverse": -1.0}
    both = scaling.hull((-0.45, -0.35), (-0.6, -0.38))
    assert both == (-0.6, -0.35)
    assert scaling.rule_verdicts(fit, rules, both) == {
        "mup": "not consistent",
        "inverse_sqrt": "consistent",
        "inverse": "not consistent",
    }
    assert scaling.alpha_verdict(fit, rules, both) == "consistent with inverse_sqrt (alpha -0.5)"
    assert scaling.hull(None, (math.nan, math.nan)) is None
    assert set(scaling.rule_verdicts(fit, rules, None).values()) == {"undecided: no interval"}
    three = scaling.fit_power_law(scales[:3], [0.01, 0.008, 0.006])
    assert set(scaling.rule_verdicts(three, rules, both).values()) == {
        "undecided: need >= 4 scales"
    }


def test_the_check_table_prints_each_optimum_with_its_interval_and_alpha_with_both():
    rng = np.random.default_rng(3)
    scales = [64, 128, 256, 512]
    results = [
        scale_result(
            s,
            f"study-{s}",
            trials(list(-2.0 - 0.5 * math.log10(s / 64) + rng.normal(0, 0.05, 3))),
            "maximize",
        )
        for s in scales
    ]
    for r in results:
        assert r.interval.low <= r.lr_opt <= r.interval.high
        assert r.trials == 3 * len(GRID) and r.trial_seconds == pytest.approx(0.5 * r.trials)
    fit = scaling.fit_power_law(scales, [r.lr_opt for r in results])
    alphas = alpha_intervals(fit, results)
    assert isinstance(alphas, AlphaIntervals) and alphas.bootstrap.seeds == 3
    assert alphas.verdict == scaling.hull(fit.ci95, (alphas.bootstrap.low, alphas.bootstrap.high))
    text = "\n".join(format_table("width", results, fit, alphas))
    assert f"[{results[0].interval.low:.3g}, {results[0].interval.high:.3g}]" in text
    assert "alpha, bootstrap over the seeds: [" in text and "(95% bootstrap over 3 seeds)" in text
    assert "inverse_sqrt consistent" in text and "inverse not consistent" in text
    assert "verdict: consistent with inverse_sqrt (alpha -0.5)" in text


def test_a_scale_where_every_lr_diverged_is_a_one_line_error_not_a_traceback():
    from lrsweep.grid import SweepConfigError

    frame = trials([-2.0, -2.0])
    frame["diverged"] = True
    with pytest.raises(SweepConfigError, match="no LR with a finished trial on every seed"):
        SeedCurves(frame).optimum()


def test_a_real_sqlite_study_of_two_stages_gives_the_same_optimum_and_interval(tmp_path):
    """The synthetic trials written as the sweeper records them (stage 1 and its stage-2 study,
    an LR of stage 1 re-run in stage 2), read back as `--measure` reads a scale."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from src.study import load_frames, storage

    url = f"sqlite:///{tmp_path}/s.db"
    dists = {"lr": FloatDistribution(1e-6, 10.0, log=True), "seed": IntDistribution(0, 100)}
    frame = trials([-2.0, -1.8, -2.3])
    stage2 = frame["lr"].between(1e-3, 1e-1)  # the finer stage: the LRs around the best
    for name, part in (
        ("scale", frame[~stage2 | (frame["lr"] == GRID[12])]),
        ("scale-stage2", frame[stage2]),
    ):
        study = optuna.create_study(study_name=name, storage=storage(url), direction="maximize")
        for row in part.itertuples():
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": row.lr, "seed": row.seed},
                    distributions=dists,
                    value=row.value,
                    user_attrs={"diverged": False, "seconds": row.seconds},
                )
            )
    frames = load_frames("scale", url)
    assert set(frames) == {"stage1", "stage2"}
    from_db = scale_result(64, "scale", pd.concat(list(frames.values())), "maximize")
    direct = scale_result(64, "scale", frame, "maximize")
    assert from_db.lr_opt == pytest.approx(direct.lr_opt)
    assert math.log10(from_db.lr_opt) == pytest.approx((-2.0 - 1.8 - 2.3) / 3)
    assert (from_db.interval.low, from_db.interval.high) == pytest.approx(
        (direct.interval.low, direct.interval.high)
    )
    assert from_db.trials == len(frame) + 3  # GRID[12] ran in both stages, on every seed
