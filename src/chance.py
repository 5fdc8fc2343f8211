"""The chance rule: when a trial is "at chance", i.e. has learned nothing its validation set can
tell apart from guessing, and may stop early (`stop_at_chance`)."""

from __future__ import annotations

import math

import torch

from src.data import Splits

# "At chance" (`chance_threshold`): within this many binomial standard errors of what the model
# scores without learning, and never past this fraction of the way from there to 1.0.
CHANCE_STANDARD_ERRORS = 2.0
CHANCE_HEADROOM = 0.5


def chance_accuracy(splits: Splits) -> float:
    """The accuracy of always answering the most frequent validation class."""
    if isinstance(splits.val, tuple):
        return torch.bincount(splits.val[1]).max().item() / len(splits.val[1])
    return 1.0 / splits.num_classes


def chance_threshold(majority: float, untrained: float, n_val: int) -> float | None:
    """The validation accuracy at or below which a trial is "at chance" (has learned nothing the
    validation set can tell apart from guessing), or None when no accuracy can be told apart.

    Without learning a model scores `base = max(majority, untrained)`: the majority-class rate,
    or the untrained (initial-weights) model's own accuracy if that is higher. An accuracy within
    two binomial standard errors above it, `2 * sqrt(base * (1 - base) / n_val)`, is not
    distinguishable from it on `n_val` validation examples; the margin is capped at half the
    headroom `(1 - base) / 2`, so the threshold stays below 1.0 and a trial that closed half the
    gap to perfect accuracy is never at chance, however imbalanced the classes (90/10 data:
    base 0.9, threshold at most 0.95; 10 balanced classes on 360 examples: 0.13)."""
    base = max(majority, untrained)
    if n_val < 1 or base >= 1.0:
        return None
    margin = CHANCE_STANDARD_ERRORS * math.sqrt(base * (1.0 - base) / n_val)
    return base + min(margin, CHANCE_HEADROOM * (1.0 - base))
