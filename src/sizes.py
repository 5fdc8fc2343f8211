"""A model config's sizes: the keys that hold its width and depth, shared by `src.transfer` (the
rules' base and target sizes) and `src.transfer_check` (the scale each measured sweep sets)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

WIDTH_KEYS = ("width", "channels")  # the model config key that holds a model's width


def width_key(model: Mapping[str, Any]) -> str | None:
    """The key of `model`'s config that holds its width (`width`, `channels`), None without one."""
    return next((k for k in WIDTH_KEYS if k in model), None)


def model_sizes(model: Mapping[str, Any]) -> dict[str, Any]:
    """{"width": ..., "depth": ...} of a model config, None where it has no such key."""
    key = width_key(model)
    return {"width": model[key] if key else None, "depth": model.get("depth")}
