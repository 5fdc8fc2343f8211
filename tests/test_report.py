"""src.report: the choice, stage 2's gain, and the files on real studies."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from study_helpers import GRID, add_trial, agg_of, make_study, parabola

from lrsweep import choice as choosing
from lrsweep import curve
from lrsweep.confirm import plan_confirm
from lrsweep.stats import rank
from src import report
from src.study import TRIAL_COLUMNS, compose_config, experiment_identity, trials_frame

PNG = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- pure parts


def test_choose_prefers_confirm_then_every_lr_the_sweeps_measured():
    s1 = agg_of({GRID[3]: 0.8, GRID[4]: 0.85, GRID[5]: 0.7}, n=3, std=0.01)
    s2 = agg_of({0.001: 0.84, 0.002: 0.88, 0.003: 0.87}, n=3, std=0.01)
    conf = agg_of({0.002: 0.87, 0.003: 0.875}, n=3, std=0.002)
    assert choosing.choose({"stage1": s1}).lr == GRID[4]
    c = choosing.choose({"stage1": s1, "stage2": s2})
    assert (c.stage, c.lr, c.good_range) == ("stage2", 0.002, (0.002, 0.003))
    assert c.stage2_gain.gain == pytest.approx(0.03)
    assert c.stage2_gain.exceeds_noise is True  # 0.03 > t(0.975, 4) * 0.01 * sqrt(2/3) = 0.0227
    c = choosing.choose({"stage1": s1, "stage2": s2, "confirm": conf})
    # every stage's trials of an LR pooled: 0.002 scores (3 * 0.88 + 3 * 0.87) / 6 = 0.875 over 6
    # trials, ahead of 0.003's (3 * 0.87 + 3 * 0.875) / 6 = 0.8725
    assert (c.stage, c.lr, c.n) == ("confirm", 0.002, 6)
    assert c.mean == pytest.approx(0.875)
    spread = [0.88 - 0.875] * 3 + [0.87 - 0.875] * 3  # each trial's stage mean to the pooled one
    within = 2 * 0.01**2 + 2 * 0.002**2  # each stage's squared deviations, (n - 1) * std**2
    assert c.std == pytest.approx(math.sqrt((within + sum(d * d for d in spread)) / 5))


def test_choice_pools_stage1s_best_with_stage2_and_confirm():
    """Stage 1's best LR, part of stage 2's grid but run only in stage 1 and the confirm step,
    competes with all its trials: a stage-2 LR that looked better on its one sweep seed loses to
    it, and its pooled mean counts its sweep trial and its fresh seeds."""
    s1 = agg_of({GRID[4]: 0.75, GRID[5]: 0.90, GRID[6]: 0.75}, n=1)
    s2 = agg_of({GRID[5] * 0.8: 0.91, GRID[5] * 1.25: 0.89}, n=1)  # around stage 1's best
    conf = agg_of({GRID[5]: 0.90, GRID[5] * 0.8: 0.89}, n=3, std=0.004)
    c = choosing.choose({"stage1": s1, "stage2": s2})
    # one seed each: the curve through stage 1's neighbours and stage 2 peaks at stage 1's best,
    # not at the stage-2 LR whose one run scored 0.91
    assert (c.stage, c.lr) == ("stage1", GRID[5])
    c = choosing.choose({"stage1": s1, "stage2": s2, "confirm": conf})
    assert (c.lr, c.n, c.mean) == (GRID[5], 4, pytest.approx(0.90))
    assert c.stage == "confirm" and c.edge is None  # inside stage 2's range
    # the interpolated optimum is fitted on stages 1 and 2 together: stage 1's best included
    assert c.interpolated_optimum is not None


def curve_at(lr: float, peak: float = 0.02) -> float:
    """A smooth accuracy curve in log10(lr) with its top (0.9) at `peak`."""
    return 0.9 - 0.05 * (math.log10(lr) - math.log10(peak)) ** 2


def test_choice_reads_the_smoothed_curve_not_the_luckiest_mean():
    """Every trial lies on a curve that peaks at 0.02, but 0.005 had a lucky +0.03 on its confirm
    seeds. The best mean is 0.005's; the pick reads the curve through every trial: 0.02."""
    s1 = agg_of({g: curve_at(g) for g in GRID[4:9]}, n=1)  # stage 1's grid step: 0.556 decades
    s2 = agg_of({lr: curve_at(lr) for lr in np.logspace(-2.7, -1.2, 10)}, n=1)
    confirmed = {lr: curve_at(lr) for lr in (0.005, 0.01, 0.02, 0.04, 0.08)}
    confirmed[0.005] += 0.03
    conf = agg_of(confirmed, n=3, std=0.01)
    assert rank(conf).iloc[0]["lr"] == 0.005  # the luckiest mean
    c = choosing.choose({"stage1": s1, "stage2": s2, "confirm": conf})
    assert c.lr == 0.02 and c.stage == "confirm"
    assert c.mean == pytest.approx(0.9)  # its own trials' mean (the confirm step's here)
    # the good range: the candidates within one std (0.01) of the best mean (0.005's), and the pick
    assert c.good_range == (0.005, 0.02)
    # a std too small for the pick to be within one of the best mean: the range still holds it
    tight = agg_of(confirmed, n=3, std=0.002)
    c = choosing.choose({"stage1": s1, "stage2": s2, "confirm": tight})
    assert c.lr == 0.02 and c.good_range == (0.005, 0.02)
    assert c.rule == (
        "the best of 5 candidates on the smoothed curve (a local quadratic in log10(lr) through "
        "every trial, bandwidth 0.278 decades)"
    )
    # minimising (a loss: the same curve upside down) picks the same LR
    loss = agg_of({lr: 1 - v for lr, v in confirmed.items()}, n=3, std=0.01)
    s1_loss = agg_of({g: 1 - curve_at(g) for g in GRID[4:9]}, n=1)
    s2_loss = agg_of({lr: 1 - curve_at(lr) for lr in np.logspace(-2.7, -1.2, 10)}, n=1)
    aggs = {"stage1": s1_loss, "stage2": s2_loss, "confirm": loss}
    assert choosing.choose(aggs, direction="minimize").lr == 0.02
    # fewer than 3 LRs: nothing to smooth, the best mean
    two = {"stage1": agg_of({0.01: 0.900, 0.02: 0.905}, n=1)}
    c = choosing.choose(two)
    assert c.lr == 0.02 and c.rule == "the best mean (too few LRs to smooth)"


def test_a_candidate_with_an_infinite_mean_is_never_picked():
    """A loss that blew up (inf) on one seed of 0.02: its neighbours still make a smooth curve
    there, but an LR whose runs diverged is never the pick."""
    s1 = agg_of({g: 1 - curve_at(g) for g in GRID[4:9]}, n=1)
    loss = {lr: 1 - curve_at(lr) for lr in (0.005, 0.01, 0.02, 0.04, 0.08)}
    loss[0.02] = math.inf
    c = choosing.choose(
        {"stage1": s1, "confirm": agg_of(loss, n=3, std=0.01)}, direction="minimize"
    )
    assert c.lr in (0.01, 0.04) and math.isfinite(c.mean)


def test_an_optimum_at_the_edge_of_stage2s_range_is_flagged_and_extended(tmp_path):
    from lrsweep.bounds import propose_bounds, stage2_lrs

    s1 = agg_of({GRID[7]: 0.80, GRID[8]: 0.85, GRID[9]: 0.86}, n=1)  # best at stage 1's top
    p = propose_bounds(s1, GRID[7], GRID[9])
    fine = stage2_lrs(p.low, p.high, p.best_lr, 3, measured=list(s1["lr"]))
    assert fine[-1] == p.high > GRID[9]  # stage 2 reaches past stage 1's range
    s2 = agg_of(dict(zip(fine, [0.87, 0.88, 0.89], strict=True)), n=1)  # rising to its end
    c = choosing.choose({"stage1": s1, "stage2": s2})
    assert (c.lr, c.edge) == (fine[-1], "high") and "high end of stage2's range" in c.edge_note
    # the confirm step measures one grid step past the edge: the range extends
    frames = {
        "stage1": pd.DataFrame(_rows(s1, seeds=[0])),
        "stage2": pd.DataFrame(_rows(s2, seeds=[0])),
    }
    plan = plan_confirm(frames, top_k=1, n_seeds=2)
    beyond = fine[-1] * fine[-1] / fine[-2]
    assert plan.lrs[0] == fine[-1] and any(np.isclose(plan.lrs, beyond, rtol=1e-9))
    # chosen past the end, after the confirm step: still flagged, "past"
    conf = agg_of({fine[-1]: 0.87, beyond: 0.90}, n=2, std=0.002)
    c = choosing.choose({"stage1": s1, "stage2": s2, "confirm": conf})
    assert (c.lr, c.edge) == (beyond, "high") and "past the high end" in c.edge_note
    # an interior optimum is not flagged
    s2_peak = agg_of(dict(zip(fine, [0.87, 0.89, 0.88], strict=True)), n=1)
    assert choosing.choose({"stage1": s1, "stage2": s2_peak}).edge is None


def _rows(agg: pd.DataFrame, seeds: list[int]) -> list[dict]:
    """A trials frame whose every LR of `agg` scores its mean on each of `seeds`."""
    return [
        {
            "lr": float(r["lr"]),
            "seed": s,
            "value": float(r["mean"]),
            "state": "COMPLETE",
            "diverged": False,
            "stopped_at_chance": False,
            "seconds": 1.0,
        }
        for _, r in agg.iterrows()
        for s in seeds
    ]


def test_stage2_gain_within_noise_and_unknown_noise():
    s1 = agg_of({0.1: 0.85, 0.2: 0.8}, n=3, std=0.02)
    s2 = agg_of({0.1: 0.86, 0.15: 0.855}, n=3, std=0.02)
    gain = choosing.stage2_gain({"stage1": s1, "stage2": s2})
    assert (gain.outcome, gain.exceeds_noise) == ("within noise", False)
    assert "not larger than the noise" in gain.verdict
    gain = choosing.stage2_gain({"stage1": agg_of({0.1: 0.85}), "stage2": agg_of({0.1: 0.86})})
    assert (gain.outcome, gain.exceeds_noise, gain.noise) == ("unknown", None, None)
    assert "noise unknown" in gain.verdict


# The bug this guards: without confirm data a stage-2 *loss* larger than the noise was reported
# `exceeds_noise: true`, as if stage 2 had helped. One rule, both sources, both signs.
S1 = agg_of({0.1: 0.85, 0.2: 0.8}, n=1)  # the sweeps' best LRs: 0.1 (stage 1), 0.12 (stage 2)
SWEEP_STD = 0.01
# One rule on sweeps and fresh seeds alike: 3 seeds a side, std 0.01: the 95% Welch t interval's
# half-width, t(0.975, df=4) * sqrt(0.01**2 / 3 * 2) = 2.776 * 0.00816 = 0.0227.
NOISE = 2.7764451051977987 * math.sqrt(2 * 0.01**2 / 3)
CONFIRM_NOISE = NOISE


@pytest.mark.parametrize("source", ["sweeps", "confirm"])
@pytest.mark.parametrize(
    ("delta", "outcome", "words"),
    [
        (+0.05, "gain", "larger than the noise: stage 2 helped"),
        (-0.05, "loss", "a loss larger than the noise: stage 2 did worse"),
        (+0.005, "within noise", "not larger than the noise"),
        (-0.005, "within noise", "not larger than the noise"),
    ],
)
def test_stage2_gain_one_rule_for_a_gain_and_a_loss(source, delta, outcome, words):
    if source == "sweeps":
        aggs = {
            "stage1": agg_of({0.1: 0.85, 0.2: 0.8}, n=3, std=SWEEP_STD),
            "stage2": agg_of({0.12: 0.85 + delta, 0.15: 0.70}, n=3, std=SWEEP_STD),
        }
        noise = NOISE
    else:
        aggs = {
            "stage1": S1,
            "stage2": agg_of({0.12: 0.95, 0.15: 0.80}, n=1),  # the sweep says +0.10 ...
            "confirm": agg_of({0.1: 0.85, 0.12: 0.85 + delta}, n=3, std=0.01),  # ... fresh: delta
        }
        noise = CONFIRM_NOISE
    gain = choosing.stage2_gain(aggs)
    assert (gain.stage1_lr, gain.stage2_lr, gain.measured_on) == (0.1, 0.12, source)
    assert gain.gain == pytest.approx(delta) and gain.noise == pytest.approx(noise)
    assert gain.outcome == outcome
    assert gain.exceeds_noise is (outcome == "gain")  # never true for a loss
    assert words in gain.verdict and f"gain {delta:+.4f}" in gain.verdict
    assert gain.df == pytest.approx(4.0) and "(Welch t, df=4.0)" in gain.verdict
    assert gain.interval == pytest.approx((delta - noise, delta + noise))


def test_stage2_gain_zero_std_is_no_evidence_of_zero_noise():
    """3 fresh seeds each, every seed the same score: a difference of one validation example
    (1/360 on digits) is not a gain. The stds count as 1/n_val; unknown n_val: noise unknown."""
    conf = agg_of({0.1: 0.85, 0.12: 0.85 + 1 / 360}, n=3, std=0.0)
    aggs = {"stage1": S1, "stage2": agg_of({0.12: 0.95, 0.15: 0.80}, n=1), "confirm": conf}
    gain = choosing.stage2_gain(aggs, resolution=1 / 360)
    assert (gain.outcome, gain.exceeds_noise) == ("within noise", False)
    assert gain.noise == pytest.approx(2.7764451051977987 * math.sqrt(2 / 3) / 360)
    assert "stds floored at 1/n_val" in gain.verdict
    gain = choosing.stage2_gain(aggs)
    assert (gain.outcome, gain.noise) == ("unknown", None)
    assert "zero spread, n_val unknown" in gain.verdict


def test_stage2_gain_on_fresh_seeds_from_the_confirm_step():
    s2 = agg_of({0.12: 0.90, 0.15: 0.855}, n=1)  # stage 2's best flatters itself by 0.05 ...
    conf = agg_of({0.1: 0.852, 0.12: 0.855}, n=3, std=0.01)  # ... fresh seeds: +0.003
    gain = choosing.stage2_gain({"stage1": S1, "stage2": s2, "confirm": conf})
    assert gain.measured_on == "confirm" and gain.gain == pytest.approx(0.003)
    assert gain.noise == pytest.approx(CONFIRM_NOISE)
    assert gain.exceeds_noise is False and "fresh seeds" in gain.verdict


# ---------------------------------------------------------------- the files


def run_report(tmp_path, monkeypatch, name="a", *extra):
    monkeypatch.chdir(tmp_path)
    rc = report.main(
        [f"study.storage=sqlite:///{tmp_path}/s.db", f"study.name={name}", "data=digits", *extra]
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
    assert list(trials.columns) == ["stage", "study", *TRIAL_COLUMNS]
    assert len(trials) == 3 * (len(GRID) + len(fine))
    assert set(trials["stage"]) == {"stage1", "stage2"}
    assert trials["diverged"].sum() == 6
    assert (out / "curve.png").read_bytes()[:8] == PNG

    assert best["stage"] == "stage2" and best["lr"] == fine[2]  # 10**-2, nearest the peak
    assert best["overrides"] == ["data=digits", f"lr={fine[2]!r}"]
    assert best["good_range"][0] <= best["lr"] <= best["good_range"][1]
    # fitted on stages 1 and 2 pooled (here offset by 0.05 from each other): near the best
    assert fine[1] < best["interpolated_optimum"] < fine[3]
    gain = best["stage2_gain"]
    assert (gain["outcome"], gain["exceeds_noise"], gain["measured_on"]) == (
        "gain",
        True,
        "sweeps",
    )
    printed = capsys.readouterr().out
    assert "chosen lr" in printed and "stage 2 helped" in printed


def test_report_stage2_loss_is_not_reported_as_a_gain(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    fine = [float(x) for x in np.logspace(-2.5, -1.5, 5)]
    make_study(url, "a-stage2", {x: parabola(x) - 0.1 for x in fine})  # stage 2 did worse
    _, best = run_report(tmp_path, monkeypatch)
    gain = best["stage2_gain"]
    assert gain["gain"] < -gain["noise"] < 0
    assert (gain["outcome"], gain["exceeds_noise"]) == ("loss", False)


def test_report_with_confirm_chooses_the_best_confirmed_mean(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    s1 = make_study(url, "a", {x: parabola(x) for x in GRID})
    plan = plan_confirm({"stage1": trials_frame(s1)}, top_k=3, n_seeds=3)
    # the confirmed ranking differs from stage 1's: the second candidate wins
    confirmed = {lr: 0.8 + (0.05 if i == 1 else 0.0) for i, lr in enumerate(plan.lrs)}
    make_study(url, "a-confirm", confirmed, seeds=plan.seeds)
    _, best = run_report(tmp_path, monkeypatch)
    assert best["stage"] == "confirm"
    assert best["lr"] in plan.lrs and best["lr"] == plan.lrs[1]
    # pooled: its 3 stage-1 trials and its 3 confirm trials
    pooled = (parabola(plan.lrs[1]) + 0.85) / 2
    assert best["selection_score"]["mean"] == pytest.approx(pooled)
    assert best["selection_score"]["n"] == 6
    assert "optimistic" in best["selection_score"]["note"] and "test_score" not in best
    assert "stage2_gain" not in best


def test_best_yaml_gives_the_chosen_lrs_test_accuracy_over_the_confirm_seeds(tmp_path, monkeypatch):
    """The confirm step chose by validation accuracy; the test split, which no choice reads, gives
    the figure to quote: the mean over the chosen LR's confirm seeds."""
    url = f"sqlite:///{tmp_path}/s.db"
    s1 = make_study(url, "a", {x: parabola(x) for x in GRID})
    plan = plan_confirm({"stage1": trials_frame(s1)}, top_k=3, n_seeds=3)
    confirm = optuna.create_study(storage=url, study_name="a-confirm", direction="maximize")
    tests = {}
    for i, lr in enumerate(plan.lrs):
        for j, seed in enumerate(plan.seeds):
            tests[lr, seed] = 0.7 + 0.01 * i + 0.002 * j  # test accuracy below the selection's
            add_trial(confirm, lr, seed, 0.8 + (0.05 if i == 1 else 0.0), test_acc=tests[lr, seed])
    out, best = run_report(tmp_path, monkeypatch)
    chosen = plan.lrs[1]
    pooled = (parabola(chosen) + 0.85) / 2  # its stage-1 and confirm trials
    assert best["lr"] == chosen and best["selection_score"]["mean"] == pytest.approx(pooled)
    expected = [tests[chosen, seed] for seed in plan.seeds]
    assert best["test_score"] == {
        "mean": pytest.approx(np.mean(expected)),
        "std": pytest.approx(np.std(expected, ddof=1)),
        "n": 3,
    }
    assert "test_acc" in pd.read_csv(out / "trials.csv").columns


def test_monotone_curve_has_no_interpolated_optimum_key(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: 0.5 + 0.03 * i for i, x in enumerate(GRID)})
    _, best = run_report(tmp_path, monkeypatch)
    assert best["lr"] == GRID[-1] and "interpolated_optimum" not in best
    assert best["no_interpolated_optimum"] == (
        "the best LR is the highest that learned: no interior optimum"
    )


def test_report_folder_follows_paths(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    monkeypatch.chdir(tmp_path)
    assert report.main([f"study.storage={url}", "study.name=a", "paths.output_dir=elsewhere"]) == 0
    assert (tmp_path / "elsewhere" / "reports" / "a" / "best.yaml").is_file()
    assert report.main([f"study.storage={url}", "study.name=a", "paths.reports_dir=r"]) == 0
    assert (tmp_path / "r" / "a" / "best.yaml").is_file()
    assert not (tmp_path / "outputs").exists()


def test_report_unknown_study_is_status_2(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID})
    monkeypatch.chdir(tmp_path)
    assert report.main([f"study.storage={url}", "study.name=b"]) == 2
    assert capsys.readouterr().err.startswith("error: study.name: no study 'b'")
    assert not (tmp_path / "outputs" / "reports").exists()


def test_trials_csv_flags_trials_stopped_at_chance(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    study = make_study(url, "a", {x: parabola(x) for x in GRID})
    add_trial(study, 1e-6, 0, 0.1, stopped_at_chance=True)
    out, _ = run_report(tmp_path, monkeypatch)
    trials = pd.read_csv(out / "trials.csv")
    stopped = trials[trials["stopped_at_chance"]]
    assert list(stopped["lr"]) == [1e-6] and list(stopped["epochs_run"]) == [2]


def test_one_seed_says_the_good_range_is_unknown(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    make_study(url, "a", {x: parabola(x) for x in GRID}, seeds=(0,))
    _, best = run_report(tmp_path, monkeypatch)
    assert best["good_range"] == choosing.GOOD_RANGE_UNKNOWN
    assert "good range            unknown (one seed" in capsys.readouterr().out


def _labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_curve_legends_say_one_seed_and_mark_stopped_and_diverged():
    s1 = agg_of({1e-6: 0.1, 1e-3: 0.8, 1e-2: 0.9, 1.0: 0.0}, n=1)
    s1["stopped"] = [1, 0, 0, 0]
    s1["diverged"] = [0, 0, 0, 1]
    s2 = agg_of({0.005: 0.91, 0.01: 0.92, 0.02: 0.915}, n=1)
    aggs = {"stage1": s1, "stage2": s2}
    fig = curve.curve_figure(aggs, choosing.choose(aggs), "t", "acc")
    whole, zoom = fig.axes
    for ax in (whole, zoom):  # the zoom has its own legend
        labels = _labels(ax)
        assert "stage1 (one seed)" in labels and "stage2 (one seed)" in labels
        assert not any("±" in label for label in labels)  # no mean ± std at n=1
        assert "good range: unknown (one seed)" in labels
        assert {"diverged (scored 0)", "stopped at chance (early)"} <= set(labels)
    assert not whole.patches  # no band, no shaded range: nothing measured them


def test_curve_shades_the_good_range_with_several_seeds():
    s1 = agg_of({1e-3: 0.8, 1e-2: 0.9, 1e-1: 0.89}, n=3, std=0.02)
    choice = choosing.choose({"stage1": s1})
    fig = curve.curve_figure({"stage1": s1}, choice, "t", "acc")
    (ax,) = fig.axes
    assert "good range [0.01, 0.1]" in _labels(ax) and "stage1 (mean ± std, 3 seeds)" in _labels(ax)
    assert len(ax.patches) == 1  # the shaded span


# ---------------------------------------------------------------- commands from the study's record


def _recorded_study(url: str, name: str, overrides: list[str]) -> dict:
    """A study as the sweeper leaves it: trials, and the experiment identity of `overrides`."""
    identity = experiment_identity(compose_config(overrides))
    make_study(url, name, {x: parabola(x) for x in GRID}).set_user_attr("config", identity)
    return identity


@pytest.mark.parametrize(
    "swept",
    [
        ["epochs=2"],
        ["model=cnn", "model.channels=8", "optimizer=adamw", "batch_size=16"],
        ["~model", "+model._target_=tests.byo_example.TinyNet", "+model.hidden=8"],
    ],
    ids=["a-scalar", "groups-and-their-keys", "a-custom-model"],
)
def test_train_command_by_study_name_keeps_the_studys_settings(tmp_path, monkeypatch, swept):
    url = f"sqlite:///{tmp_path}/s.db"
    identity = _recorded_study(url, "a", swept)
    _, best = run_report(tmp_path, monkeypatch)  # names the study only: study.name=a
    assert best["overrides"][-1] == f"lr={best['lr']!r}"
    assert experiment_identity(compose_config(best["overrides"])) == identity
    assert best["command"] == "python -m src.train " + " ".join(best["overrides"])


def test_train_command_keeps_the_overrides_that_name_the_study(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    _recorded_study(url, "a", ["data=digits", "epochs=2"])
    monkeypatch.chdir(tmp_path)
    assert report.main([f"study.storage={url}", "study.name=a", "data=digits", "epochs=2"]) == 0
    best = yaml.safe_load((tmp_path / "outputs/reports/a/best.yaml").read_text())
    assert best["overrides"] == ["data=digits", "epochs=2", f"lr={best['lr']!r}"]


def test_train_command_drops_the_given_overrides_the_study_contradicts(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/s.db"
    identity = _recorded_study(url, "a", ["model=cnn", "epochs=2"])
    monkeypatch.chdir(tmp_path)
    given = [f"study.storage={url}", "study.name=a", "model.width=64", "epochs=3"]
    assert report.main(given) == 0
    best = yaml.safe_load((tmp_path / "outputs/reports/a/best.yaml").read_text())
    assert "model.width=64" not in best["overrides"] and "epochs=3" not in best["overrides"]
    assert experiment_identity(compose_config(best["overrides"])) == identity


def test_a_missing_study_is_described_by_the_nearest_one(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path}/s.db"
    _recorded_study(url, "near", ["epochs=2"])
    _recorded_study(url, "far", ["epochs=3", "batch_size=8", "model.width=16"])
    monkeypatch.chdir(tmp_path)
    assert report.main([f"study.storage={url}", "study.name=x"]) == 2
    err = capsys.readouterr().err
    assert "no study 'x'" in err and "the nearest, 'near', differs in epochs (2 vs 5)" in err


def test_stage2_gain_minimising_is_the_decrease_and_its_interval_holds_it():
    """A loss: stage 2's best lower by 0.2 is a gain of +0.2, and the printed interval is the
    gain's, around +0.2, not the raw difference's."""
    s1 = agg_of({0.1: 2.5}, std=0.01, n=3)
    s2 = agg_of({0.05: 2.3}, std=0.01, n=3)
    gain = choosing.stage2_gain({"stage1": s1, "stage2": s2}, direction="minimize")
    assert gain.gain == pytest.approx(0.2)
    low, high = gain.interval
    assert low < 0.2 < high and low > 0
    assert gain.outcome == "gain"


def test_stage2_gain_weighs_the_lr_the_confirm_step_reran_for_stage_2():
    """The confirm step re-runs stage 2's best on the smoothed curve, not its luckiest single run:
    the gain is then that LR's against stage 1's best, both on the fresh seeds."""
    from lrsweep.smooth import bandwidth, smoothed_rank
    from lrsweep.stats import pool

    s1 = agg_of({g: curve_at(g) for g in GRID[4:9]}, n=1)
    lrs = [float(x) for x in np.logspace(-2.7, -1.2, 10)]
    values = {lr: curve_at(lr) for lr in lrs}
    values[lrs[3]] += 0.03  # a lucky single run: stage 2's best mean
    s2 = agg_of(values, n=1)
    curve_best = float(smoothed_rank(rank(s2), pool([s1, s2]), bandwidth(GRID))["lr"].iloc[0])
    assert curve_best != lrs[3]
    stage1_best = float(rank(s1).iloc[0]["lr"])
    conf = agg_of({stage1_best: 0.89, curve_best: 0.90}, n=3, std=0.004)
    g = choosing.stage2_gain({"stage1": s1, "stage2": s2, "confirm": conf})
    assert (g.measured_on, g.stage2_lr, g.stage1_lr) == ("confirm", curve_best, stage1_best)
    assert g.gain == pytest.approx(0.01)
