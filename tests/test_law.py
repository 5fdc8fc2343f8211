"""The learning-rate law over several axes (lrsweep/law.py), on synthetic optima of known law."""

from __future__ import annotations

import math
import random

import pytest

from lrsweep.law import LawError, fit_law

# A design of 8 points over batch, width and steps: not the product of their scales (27 points).
DESIGN = [
    {"batch": b, "width": w, "steps": s}
    for b, w, s in [
        (32, 64, 1000), (128, 64, 1000), (512, 64, 1000), (32, 256, 1000),
        (32, 1024, 1000), (32, 64, 4000), (128, 256, 2000), (512, 1024, 4000),
    ]
]  # fmt: skip
TRUE = {"batch": 0.5, "width": -0.5, "steps": -0.2}
C = 0.05


def law(sizes: dict) -> float:
    return C * math.prod(sizes[a] ** e for a, e in TRUE.items())


def test_exact_optima_give_the_exponents_exactly():
    fit = fit_law(DESIGN, [law(d) for d in DESIGN])
    assert fit.axes == ("batch", "steps", "width") and fit.df == 4
    for e in fit.exponents:
        assert e.value == pytest.approx(TRUE[e.axis], abs=1e-9)
    assert all(r == pytest.approx(1.0) for r in fit.loo_ratios)
    target = {"batch": 2048, "width": 4096, "steps": 8000}  # outside the design on every axis
    lr, low, high = fit.predict(target)
    assert lr == pytest.approx(law(target))
    assert fit.outside(target, DESIGN) == ["batch", "steps", "width"]


def test_noisy_optima_hold_the_true_exponents_within_their_intervals():
    """Optima with a known noise (log10 sd 0.03: about 7%) on 20 resampled studies: each true
    exponent lies inside its 95% interval in about 95% of them, and a new point's optimum inside
    its prediction interval likewise."""
    rng = random.Random(0)
    design = DESIGN * 2  # two repeats of the design: 16 optima, 12 residual degrees of freedom
    covered = {a: 0 for a in TRUE}
    predicted = 0
    studies = 40
    target = {"batch": 256, "width": 512, "steps": 3000}
    for _ in range(studies):
        noisy = [law(d) * 10 ** rng.gauss(0, 0.03) for d in design]
        fit = fit_law(design, noisy)
        for e in fit.exponents:
            covered[e.axis] += e.ci95[0] <= TRUE[e.axis] <= e.ci95[1]
        _, low, high = fit.predict(target)
        predicted += low <= law(target) * 10 ** rng.gauss(0, 0.03) <= high
    for axis, hits in covered.items():
        assert hits >= 0.8 * studies, (axis, hits)
    assert predicted >= 0.8 * studies


def test_leave_one_out_predicts_each_point_from_the_others():
    """One optimum 3x off the law: the law fitted to the other seven (exact) points predicts it a
    third of what was measured, and the in-sample fit, pulled by it, misses elsewhere."""
    optima = [law(d) for d in DESIGN]
    optima[3] *= 3.0
    fit = fit_law(DESIGN, optima)
    assert fit.loo_ratios[3] == pytest.approx(1 / 3)
    assert fit.residual_sd > 0.05


@pytest.mark.parametrize(
    ("design", "optima", "says"),
    [
        ([{"batch": 32}, {"batch": 32}], [0.1, 0.2], "varies no axis"),
        ([{"batch": 32, "width": 64}, {"batch": 64, "width": 128}], [0.1, 0.2], "need >= 3"),
        (
            [{"batch": b, "width": 2 * b} for b in (32, 64, 128, 256)],
            [0.1, 0.2, 0.3, 0.4],
            "cannot tell the axes",
        ),
        ([{"batch": 32}, {"batch": 64}, {"batch": 0}], [0.1, 0.2, 0.3], "finite and > 0"),
    ],
)
def test_a_design_that_cannot_determine_the_law_is_one_line(design, optima, says):
    with pytest.raises(LawError, match=says):
        fit_law(design, optima)


# ---------------------------------------------------------------- the command: refusals first


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--design", "batch_size=32", "--design", "batch_size=64"], "no interval: give >= 3"),
        (
            [
                "--design",
                "batch_size=32,model.width=64",
                "--design",
                "batch_size=64,model.width=128",
                "--design",
                "batch_size=128,model.width=256",
            ],
            "cannot tell the axes",
        ),  # fmt: skip
        (["--design", "batch_size=thirty"], "expected key=size pairs"),
        (
            [
                "--design",
                "batch_size=32",
                "--design",
                "batch_size=64",
                "--design",
                "batch_size=128",
                "--predict",
                "model.width=512",
            ],
            "--predict names ['model.width'], the design ['batch_size']",
        ),  # fmt: skip
        (["--design", "batch_size=32", "--seeds", "0"], "--seeds: must be >= 1"),
    ],
)
def test_a_design_the_law_cannot_use_is_one_line_exit_2_before_training(
    workdir, cli_here, args, says
):
    from src import transfer

    proc = cli_here(transfer.main, "--law", *args, cwd=workdir)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and says in line, line
    assert not (workdir / "outputs").exists()  # nothing trained, no study touched
