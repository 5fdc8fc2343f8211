"""src.report: the pure choice/interpolation/confirm planning, and the files on real studies."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from optuna.distributions import FloatDistribution, IntDistribution

from src import report
from src.study import trials_frame

optuna.logging.set_verbosity(optuna.logging.WARNING)

DISTS = {"lr": FloatDistribution(1e-6, 100.0, log=True), "seed": IntDistribution(0, 10_000)}
GRID = [float(x) for x in np.logspace(-5, 0, 10)]
PNG = b"\x89PNG\r\n\x1a\n"


def parabola(lr, peak=1e-2, top=0.9, curv=0.05):
    """A clean concave peak in log10(lr)."""
    return top - curv * (math.log10(lr) - math.log10(peak)) ** 2


def make_study(url, name, values, seeds=(0, 1, 2), noise=0.004, diverged=()):
    """`values`: lr -> mean; seed s scores mean + noise * (s - mean seed)."""
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    offsets = np.array(seeds, dtype=float) - np.mean(seeds)
    for lr, mean in values.items():
        for s, off in zip(seeds, offsets, strict=True):
            div = lr in diverged
            study.add_trial(
                optuna.trial.create_trial(
                    params={"lr": lr, "seed": s},
                    distributions=DISTS,
                    value=0.0 if div else mean + noise * off,
                    user_attrs={"diverged": div, "epochs_run": 5, "seconds": 0.5},
                )
            )
    return study


def agg_of(values, n=1, std=0.0):
    return pd.DataFrame(
        {
            "lr": list(values),
            "mean": list(values.values()),
            "std": std,
            "n": n,
            "diverged": 0,
            "failed": 0,
            "seconds": 0.5,
        }
    )


# ---------------------------------------------------------------- pure parts


def test_interpolated_optimum_of_a_clean_concave_peak():
    lrs = [float(x) for x in np.logspace(-3, -1, 9)]
    peak = 10**-1.9  # between grid points
    opt = report.interpolated_optimum(agg_of({x: parabola(x, peak) for x in lrs}))
    assert opt == pytest.approx(peak, rel=1e-6)


def test_no_interpolated_optimum_for_a_monotone_curve_or_an_edge_peak():
    assert (
        report.interpolated_optimum(agg_of({x: 0.5 + 0.01 * i for i, x in enumerate(GRID)})) is None
    )
    # concave, but the peak lies beyond the fitted points: no extrapolation
    lrs = GRID[:6]
    assert report.interpolated_optimum(agg_of({x: parabola(x, peak=1.0) for x in lrs})) is None
    assert report.interpolated_optimum(agg_of({GRID[0]: 0.5, GRID[1]: 0.6})) is None


def test_choose_prefers_confirm_then_the_finest_stage():
    s1 = agg_of({GRID[3]: 0.8, GRID[4]: 0.85, GRID[5]: 0.7}, n=3, std=0.01)
    s2 = agg_of({0.001: 0.86, 0.002: 0.88, 0.003: 0.87}, n=3, std=0.01)
    conf = agg_of({0.002: 0.87, 0.003: 0.875}, n=3, std=0.002)
    assert report.choose({"stage1": s1}).lr == GRID[4]
    c = report.choose({"stage1": s1, "stage2": s2})
    assert (c.stage, c.lr, c.good_range) == ("stage2", 0.002, (0.002, 0.003))
    assert c.stage2_gain["gain"] == pytest.approx(0.03)
    assert c.stage2_gain["exceeds_noise"] is True  # 0.03 > hypot(0.01, 0.01)
    c = report.choose({"stage1": s1, "stage2": s2, "confirm": conf})
    assert (c.stage, c.lr, c.good_range) == ("confirm", 0.003, (0.003, 0.003))


def test_stage2_gain_within_noise_and_unknown_noise():
    s1 = agg_of({0.1: 0.85, 0.2: 0.8}, n=3, std=0.02)
    s2 = agg_of({0.1: 0.86, 0.15: 0.855}, n=3, std=0.02)
    gain = report.stage2_gain({"stage1": s1, "stage2": s2})
    assert gain["exceeds_noise"] is False and "not larger than the noise" in gain["verdict"]
    gain = report.stage2_gain({"stage1": agg_of({0.1: 0.85}), "stage2": agg_of({0.1: 0.86})})
    assert gain["exceeds_noise"] is None and "noise unknown" in gain["verdict"]


def test_stage2_gain_on_fresh_seeds_from_the_confirm_step():
    s1 = agg_of({0.1: 0.85, 0.2: 0.8}, n=1)
    s2 = agg_of({0.12: 0.90, 0.15: 0.855}, n=1)  # stage 2's best flatters itself by 0.05 ...
    conf = agg_of({0.1: 0.852, 0.12: 0.855}, n=3, std=0.01)  # ... fresh seeds: +0.003
    gain = report.stage2_gain({"stage1": s1, "stage2": s2, "confirm": conf})
    assert gain["measured_on"] == "confirm" and gain["gain"] == pytest.approx(0.003)
    assert gain["noise"] == pytest.approx(2 * math.hypot(0.01 / 3**0.5, 0.01 / 3**0.5))
    assert gain["exceeds_noise"] is False and "fresh seeds" in gain["verdict"]
    conf = agg_of({0.1: 0.80, 0.12: 0.855}, n=3, std=0.01)
    assert report.stage2_gain({"stage1": s1, "stage2": s2, "confirm": conf})["exceeds_noise"]


def test_confirm_candidates_top_k_plus_interpolated():
    agg = agg_of({0.1: 0.8, 0.2: 0.9, 0.3: 0.85, 0.4: 0.7})
    assert report.confirm_candidates(agg, 3) == [0.2, 0.3, 0.1]
    assert report.confirm_candidates(agg, 2, [0.25]) == [0.2, 0.3, 0.25]
    assert report.confirm_candidates(agg, 2, [0.2 * (1 + 1e-12), None]) == [
        0.2,
        0.3,
    ]  # already there


def test_fresh_seeds():
    assert report.fresh_seeds([0, 1, 2], 3) == [3, 4, 5]
    assert report.fresh_seeds([], 2) == [0, 1]


def test_plan_confirm_uses_the_finest_stage_and_fresh_seeds(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    s1 = make_study(url, "a", {x: parabola(x) for x in GRID}, seeds=(0, 1))
    fine = [float(x) for x in np.logspace(-2.6, -1.4, 7)]
    s2 = make_study(url, "a-stage2", {x: parabola(x, 10**-1.95) for x in fine}, seeds=(0, 1, 4))
    plan = report.plan_confirm({"stage1": trials_frame(s1), "stage2": trials_frame(s2)}, 3, 2)
    assert plan.stage == "stage2" and plan.seeds == [5, 6]
    assert plan.lrs[:3] == [fine[3], fine[4], fine[2]]  # by distance to the peak 10**-1.95
    assert plan.lrs[3] == pytest.approx(10**-1.95, rel=1e-3)  # the interpolated optimum
    assert plan.lrs[4:] == [GRID[5]]  # stage 1's best, to weigh stage 2's gain on fresh seeds
    only1 = report.plan_confirm({"stage1": trials_frame(s1)}, top_k=1, n_seeds=1)
    assert (only1.stage, only1.lrs[0], only1.seeds) == ("stage1", GRID[5], [2])


def test_train_overrides_drop_the_sweep_keys():
    out = report.train_overrides(
        [
            "data=mnist1d",
            "study.name=x",
            "sweep.seeds=[1,2]",
            "hydra.sweeper.n_jobs=2",
            "lr=1",
            "epochs=3",
        ],
        0.03,
    )
    assert out == ["data=mnist1d", "epochs=3", "lr=0.03"]


# ---------------------------------------------------------------- the files


def run_report(tmp_path, monkeypatch, name="a"):
    monkeypatch.chdir(tmp_path)
    rc = report.main(
        [f"study.storage=sqlite:///{tmp_path}/s.db", f"study.name={name}", "data=digits"]
    )
    assert rc == 0
    out = tmp_path / "outputs" / "reports" / name
    return out, yaml.safe_load((out / "best.yaml").read_text())


def test_report_stage1_and_stage2(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID}, diverged=GRID[8:])
    fine = [float(x) for x in np.logspace(-2.5, -1.5, 5)]
    make_study(url, "a-stage2", {x: parabola(x, 10**-1.9) + 0.05 for x in fine})
    out, best = run_report(tmp_path, monkeypatch)

    trials = pd.read_csv(out / "trials.csv")
    for col in ["stage", "lr", "seed", "value", "diverged", "epochs_run", "seconds"]:
        assert col in trials.columns
    assert len(trials) == 3 * (len(GRID) + len(fine))
    assert set(trials["stage"]) == {"stage1", "stage2"}
    assert trials["diverged"].sum() == 6
    assert (out / "curve.png").read_bytes()[:8] == PNG

    assert best["stage"] == "stage2" and best["lr"] == fine[2]  # 10**-2, nearest the peak
    assert best["overrides"] == ["data=digits", f"lr={fine[2]!r}"]
    assert best["good_range"][0] <= best["lr"] <= best["good_range"][1]
    assert best["interpolated_optimum"] == pytest.approx(10**-1.9, rel=1e-6)
    assert best["stage2_gain"]["exceeds_noise"] is True
    printed = capsys.readouterr().out
    assert "chosen lr" in printed and "larger than the noise" in printed


def test_report_with_confirm_chooses_the_best_confirmed_mean(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    s1 = make_study(url, "a", {x: parabola(x) for x in GRID})
    plan = report.plan_confirm({"stage1": trials_frame(s1)}, top_k=3, n_seeds=3)
    # the confirmed ranking differs from stage 1's: the second candidate wins
    confirmed = {lr: 0.8 + (0.05 if i == 1 else 0.0) for i, lr in enumerate(plan.lrs)}
    make_study(url, "a-confirm", confirmed, seeds=plan.seeds)
    _, best = run_report(tmp_path, monkeypatch)
    assert best["stage"] == "confirm"
    assert best["lr"] in plan.lrs and best["lr"] == plan.lrs[1]
    assert best["mean"] == pytest.approx(0.85)
    assert "stage2_gain" not in best


def test_monotone_curve_has_no_interpolated_optimum_key(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: 0.5 + 0.03 * i for i, x in enumerate(GRID)})
    _, best = run_report(tmp_path, monkeypatch)
    assert best["lr"] == GRID[-1] and "interpolated_optimum" not in best


def test_report_unknown_study_is_status_2(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    monkeypatch.chdir(tmp_path)
    assert report.main([f"study.storage={url}", "study.name=b"]) == 2
    assert capsys.readouterr().err.startswith("error: study.name: no study 'b'")
    assert not (tmp_path / "outputs" / "reports").exists()


def test_prepare_confirm_creates_the_study_and_quotes_the_choice(tmp_path):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    base = [f"study.storage={url}", "study.name=a", "epochs=3"]
    out = report.prepare_confirm(base, top_k=2, n_seeds=2)
    plan = report.plan_confirm(
        {"stage1": trials_frame(optuna.load_study(study_name="a", storage=url))}, 2, 2
    )
    choice = "'choice(" + ",".join(repr(x) for x in plan.lrs) + ")'"
    assert out == [
        f"study.storage={url}",
        "epochs=3",
        "study.name=a-confirm",
        f"hydra.sweeper.params.lr={choice}",
        "sweep.seeds=[3,4]",
    ]
    # no sweep override of a hydra. key (Hydra refuses those); the values survive exactly
    parsed = OverridesParser.create().parse_overrides(out)
    assert not any(o.is_sweep_override() for o in parsed)
    lr_spec = OverridesParser.create().parse_override("lr=" + parsed[3].value())
    assert lr_spec.value().list == plan.lrs
    confirm = optuna.load_study(study_name="a-confirm", storage=url)
    assert confirm.user_attrs["parent_study"] == "a" and confirm.user_attrs["stage"] == "confirm"
