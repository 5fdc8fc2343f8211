"""src.refine: the per-LR aggregate, the stage-2 bound rules and the CLI, on real Optuna studies."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from study_helpers import GRID, add_trial, make_study

from lrsweep import bounds
from lrsweep.grid import SweepConfigError
from lrsweep.stats import aggregate
from src import refine
from src.study import compose_config, trials_frame

STEP = GRID[1] / GRID[0]


def grid_study(tmp_path, name="s1", means=None, seeds=(0, 1, 2), diverged=(), failed=()):
    """A stage-1 study on GRID: seed s of LR i scores means[i] + 0.01 * (s - mean seed); the
    indices in `diverged` / `failed` diverge / fail on every seed."""
    return make_study(
        f"sqlite:///{tmp_path}/s.db",
        name,
        dict(zip(GRID, means, strict=True)),
        seeds,
        noise=0.01,
        diverged=[GRID[i] for i in diverged],
        failed=[GRID[i] for i in failed],
    )


def peak_at(i, width=10):
    return [0.9 - 0.1 * abs(j - i) for j in range(width)]


def propose(study):
    return bounds.propose_bounds(aggregate(trials_frame(study)), GRID[0], GRID[-1])


def test_an_lr_that_diverges_on_one_seed_does_not_win(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    for seed in range(3):
        add_trial(study, 0.01, seed, 0.90)
        add_trial(study, 0.1, seed, 0.95) if seed < 2 else add_trial(
            study, 0.1, seed, diverged=True
        )
        add_trial(study, 1.0, seed, diverged=True)
    p = bounds.propose_bounds(aggregate(trials_frame(study)), 0.01, 1.0)
    assert p.best_lr == 0.01


def test_interior_peak_takes_the_neighbours(tmp_path):
    p = propose(grid_study(tmp_path, means=peak_at(4)))
    assert (p.low, p.high, p.best_lr, p.edge) == (GRID[3], GRID[5], GRID[4], None)
    assert p.top_lrs == (GRID[4],)
    assert "interior" in p.reason


def test_peak_at_low_edge_moves_the_range_below(tmp_path):
    p = propose(grid_study(tmp_path, means=peak_at(0)))
    assert p.edge == "low" and p.best_lr == GRID[0]
    assert p.low == pytest.approx(GRID[0] / STEP**bounds.EDGE_STEPS)
    assert p.low < GRID[0] and p.high == GRID[1]


def test_peak_at_high_edge_moves_the_range_above(tmp_path):
    p = propose(grid_study(tmp_path, means=peak_at(9)))
    assert p.edge == "high" and p.best_lr == GRID[9]
    assert p.low == GRID[8]
    assert p.high == pytest.approx(GRID[9] * STEP**bounds.EDGE_STEPS)
    assert p.high > GRID[-1]


def test_flat_top_covers_every_point_within_one_std(tmp_path):
    means = peak_at(4)
    means[3], means[5] = 0.895, 0.893  # within the best's std (0.01 between seeds)
    p = propose(grid_study(tmp_path, means=means))
    assert p.top_lrs == (GRID[3], GRID[4], GRID[5])
    assert (p.low, p.high, p.edge) == (GRID[2], GRID[6], None)


def test_single_seed_only_ties_join_the_best(tmp_path):
    means = peak_at(5)
    means[6] = 0.8999  # no std with one seed: a near miss is not a tie
    p = propose(grid_study(tmp_path, means=means, seeds=(0,)))
    assert p.best_std == 0.0 and p.top_lrs == (GRID[5],)
    assert (p.low, p.high) == (GRID[4], GRID[6])

    means[6] = 0.9  # an exact tie widens the range
    p = propose(grid_study(tmp_path, name="tie", means=means, seeds=(0,)))
    assert p.top_lrs == (GRID[5], GRID[6])
    assert (p.low, p.high) == (GRID[4], GRID[7])


def test_divergence_above_the_best_bounds_it(tmp_path):
    p = propose(grid_study(tmp_path, means=peak_at(9), diverged=(7, 8, 9)))
    assert p.best_lr == GRID[6] and p.edge is None
    assert (p.low, p.high) == (GRID[5], GRID[7])


def test_failed_points_are_not_grid_points(tmp_path):
    # The top LRs raised: nothing is known there, so the best (GRID[6]) is at the edge.
    p = propose(grid_study(tmp_path, means=peak_at(9), failed=(7, 8, 9)))
    assert p.best_lr == GRID[6] and p.edge == "high"
    assert p.high == pytest.approx(GRID[6] * STEP**bounds.EDGE_STEPS)


def test_all_diverged_is_a_config_error(tmp_path):
    study = grid_study(tmp_path, means=peak_at(4), diverged=range(10))
    with pytest.raises(SweepConfigError, match="at least 2 LRs"):
        propose(study)


def test_fewer_than_two_finished_points_is_a_config_error(tmp_path):
    study = grid_study(tmp_path, means=peak_at(4), diverged=range(5, 10), failed=range(1, 5))
    with pytest.raises(SweepConfigError, match="got 1 of 10"):
        propose(study)


def test_stage2_overrides_replace_keys_and_keep_floats_exact():
    p = bounds.Proposal(0.1 / 3, 0.1 * 3, "r", 0.1, 0.9, 0.0, (0.1,), None)
    out = refine.stage2_overrides(["data=mnist1d", "study.name=x", "sweep.points=7"], "x", p, 12)
    lrs = bounds.stage2_lrs(p.low, p.high, p.best_lr, 12)  # no `measured`: the ends included
    assert out == [
        "data=mnist1d",
        "study.name=x-stage2",
        f"sweep.low={0.1 / 3!r}",
        f"sweep.high={0.1 * 3!r}",
        "sweep.points=12",
        "hydra.sweeper.params.lr='choice(" + ",".join(repr(x) for x in lrs) + ")'",
    ]
    cfg = compose_config(out[:-1])  # Hydra reads the values back exactly
    assert (cfg.sweep.low, cfg.sweep.high, cfg.study.name) == (0.1 / 3, 0.1 * 3, "x-stage2")
    parsed = OverridesParser.create().parse_overrides(out)
    assert not any(o.is_sweep_override() for o in parsed)
    assert OverridesParser.create().parse_override("lr=" + parsed[-1].value()).value().list == lrs


@pytest.mark.parametrize("points", [2, 3, 4, 5, 10, 11])
@pytest.mark.parametrize("best", [4, 0, 9])  # interior, at the low edge, at the high edge
def test_stage2_grid_holds_stage1_best_whatever_points(tmp_path, points, best):
    p = propose(grid_study(tmp_path, means=peak_at(best)))
    lrs = bounds.stage2_lrs(p.low, p.high, p.best_lr, points, measured=GRID)
    assert len(lrs) == points and lrs == sorted(lrs) and len(set(lrs)) == points
    assert p.low < p.best_lr < p.high  # the best is inside the range, on the grid ...
    grid = sorted({*lrs, p.best_lr, p.low, p.high})
    assert (grid[0], grid[-1]) == (p.low, p.high)
    steps = np.diff(np.log(grid))
    split = grid.index(p.best_lr)
    below, above = steps[:split], steps[split:]
    assert np.allclose(below, below[0]) and np.allclose(above, above[0])  # log-uniform each side
    # ... and neither it nor an end stage 1 measured (the same seeds) is run again
    assert not any(np.isclose(lrs, x, rtol=1e-9).any() for x in GRID)
    assert len(grid) == points + 1 + sum(end in GRID for end in (p.low, p.high))


def test_cli_unknown_study_is_one_line_and_status_2(tmp_path, capsys):
    grid_study(tmp_path, means=peak_at(4))
    rc = refine.main([f"study.storage=sqlite:///{tmp_path}/s.db", "study.name=nope"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: study.name: no study 'nope'") and err.count("\n") == 1
    assert "s1" in err


def test_cli_prints_table_proposal_and_stage2_overrides(tmp_path, capsys):
    grid_study(tmp_path, means=peak_at(4))
    storage = f"study.storage=sqlite:///{tmp_path}/s.db"
    rc = refine.main(["--points", "8", storage, "study.name=s1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "proposal:" in out and "interior" in out
    assert f"stage 2: python -m src.train -m {storage} study.name=s1-stage2 " in out
    assert f"sweep.low={GRID[3]!r} sweep.high={GRID[5]!r} sweep.points=8" in out
