"""lrsweep.same_initial_weights: one saved start for every run with the same key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from torch import nn

import lrsweep
from lrsweep.weights import UnreadableWeights, WeightsMismatch, save_atomic, weights_path


def _net(width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


def _equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_import_lrsweep_does_not_import_torch() -> None:
    code = "import sys, lrsweep; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_save_then_restore_gives_equal_tensors(tmp_path: Path) -> None:
    first, second = _net(seed=0), _net(seed=1)
    assert not _equal(first, second)
    path = lrsweep.same_initial_weights(first, "mlp-8", tmp_path)
    assert lrsweep.same_initial_weights(second, "mlp-8", tmp_path) == path
    assert _equal(first, second)


def test_the_file_is_named_by_the_keys_hash(tmp_path: Path) -> None:
    path = lrsweep.same_initial_weights(_net(), "mlp-8", tmp_path)
    assert path == weights_path("mlp-8", tmp_path)
    assert path.parent == tmp_path and len(path.stem) == 16 and path.suffix == ".pt"


def test_a_second_key_gives_a_different_file_and_keeps_its_own_weights(tmp_path: Path) -> None:
    first, second = _net(seed=0), _net(seed=1)
    expected = {k: v.clone() for k, v in second.state_dict().items()}
    a = lrsweep.same_initial_weights(first, "key-a", tmp_path)
    b = lrsweep.same_initial_weights(second, "key-b", tmp_path)
    assert a != b and a.exists() and b.exists()
    assert all(torch.equal(second.state_dict()[k], v) for k, v in expected.items())


def test_a_shape_mismatch_raises_naming_the_tensors(tmp_path: Path) -> None:
    lrsweep.same_initial_weights(_net(width=8), "mlp", tmp_path)
    wider = _net(width=16)
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(ValueError, match=r"other shapes \['0.bias', '0.weight', '2.weight'\]"):
        lrsweep.same_initial_weights(wider, "mlp", tmp_path)
    assert all(torch.equal(wider.state_dict()[k], v) for k, v in before.items())


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path) -> None:
    lrsweep.same_initial_weights(_net(), "mlp", tmp_path)
    deeper = nn.Sequential(*_net(), nn.Linear(2, 2))
    with pytest.raises(WeightsMismatch) as err:
        lrsweep.same_initial_weights(deeper, "mlp", tmp_path)
    assert err.value.missing == ["3.bias", "3.weight"] and err.value.unexpected == []


def test_a_truncated_file_is_unreadable_not_reinitialised(tmp_path: Path) -> None:
    path = lrsweep.same_initial_weights(_net(), "mlp", tmp_path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(UnreadableWeights, match="cannot be read"):
        lrsweep.same_initial_weights(_net(), "mlp", tmp_path)


class _Unsaveable:
    """torch.save fails on it after writing part of the file (pickling stops here)."""

    def __reduce__(self):
        raise RuntimeError("interrupted mid-write")


def test_a_torn_temp_file_never_appears_under_the_final_name(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    big = {"w": torch.zeros(100_000), "x": _Unsaveable()}
    with pytest.raises(RuntimeError, match="interrupted mid-write"):
        save_atomic(big, path)  # type: ignore[dict-item]
    assert not path.exists()
    assert os.listdir(tmp_path) == []  # the temp file is removed too


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    save_atomic({"w": torch.ones(3)}, path)
    with pytest.raises(RuntimeError):
        save_atomic({"w": torch.zeros(100_000), "x": _Unsaveable()}, path)  # type: ignore[dict-item]
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
