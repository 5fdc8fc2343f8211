"""The residual MLP with depth-muP's branch multiplier (src/residual_mlp.py): its shape, its
multiplier, what the multiplier is for, and its place in transfer and the measured check."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from src.errors import ConfigError
from src.residual_mlp import ResidualBlock, residual_mlp
from src.study import compose_config


@pytest.mark.parametrize(
    ("branch", "depth", "multiplier"),
    [("sqrt", 16, 0.25), ("depth", 16, 1 / 16), ("none", 16, 1.0), ("sqrt", 1, 1.0)],
)
def test_blocks_carry_the_branch_multiplier_and_the_model_maps_to_logits(branch, depth, multiplier):
    model = residual_mlp((40,), 10, width=32, depth=depth, branch_multiplier=branch)
    blocks = [m for m in model if isinstance(m, ResidualBlock)]
    assert len(blocks) == depth
    assert all(b.multiplier == pytest.approx(multiplier) for b in blocks)
    assert model(torch.randn(5, 40)).shape == (5, 10)


def test_depth_mup_keeps_the_output_of_order_one_at_any_depth():
    """The point of 1/sqrt(depth): the sum of `depth` branches does not grow with depth, where
    unscaled branches make the residual stream grow with depth."""

    def spread(depth: int, branch: str) -> float:
        torch.manual_seed(0)
        model = residual_mlp((64,), 10, width=256, depth=depth, branch_multiplier=branch)
        with torch.no_grad():
            return float(model[:-2](torch.randn(256, 64)).std())  # the residual stream

    assert spread(64, "sqrt") / spread(4, "sqrt") < 2
    assert spread(64, "none") / spread(4, "none") > 2


def test_bad_sizes_and_multipliers_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="depth >= 1"):
        residual_mlp((8,), 2, depth=0)
    with pytest.raises(ConfigError, match="branch_multiplier='cube'"):
        residual_mlp((8,), 2, branch_multiplier="cube")


def test_the_depth_axis_of_transfer_and_the_check_set_its_depth():
    from src.transfer import plan
    from src.transfer_check import axis_key

    model = OmegaConf.to_container(compose_config(["model=resmlp"]).model, resolve=True)
    assert axis_key("depth", model) == "model.depth"
    args = ["base.lr=0.01", "model=resmlp", "optimizer=adam", "target.depth=8"]
    p = plan(compose_config(args, config_name="transfer"), args)
    assert p.target_lr == pytest.approx(0.01 * math.sqrt(2 / 8))  # inverse_sqrt from depth 2
    assert "model.depth=8" in p.overrides
