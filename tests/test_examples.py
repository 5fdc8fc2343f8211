"""The examples of searching your own training code, run end to end at a tiny size.

`examples/charlm` is a user's own Hydra app (the lrsweep sweeper in its config) and
`examples/plain_pytorch.py` a plain PyTorch loop handed to `lrsweep.search`; both are real
subprocesses here, as a user would run them."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch
import yaml
from conftest import ROOT
from hydra import compose, initialize_config_dir

CHARLM = ROOT / "examples" / "charlm"
# About 1 s of training: a one-layer model of width 16 on 16 KB of text.
CHARLM_TINY = [
    "steps=20",
    "warmup_steps=5",
    "batch_size=8",
    "eval_batches=2",
    "data.kilobytes=16",
    "model.d_model=16",
    "model.n_layers=1",
    "model.n_heads=2",
    "model.context=16",
]


def _run(*args: str, cwd: Path, env: dict | None = None) -> str:
    """`python <args>` run to the end in `cwd`; its stdout (both streams on failure)."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _charlm_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("charlm_train", CHARLM / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_charlm_single_run_at_tiny_size_prints_a_finite_loss(tmp_path: Path) -> None:
    out = _run(str(CHARLM / "train.py"), *CHARLM_TINY, "optim.lr=3e-3", cwd=tmp_path)
    val_loss = float(re.search(r"val_loss=(\S+)", out).group(1))
    assert math.isfinite(val_loss) and 0 < val_loss < 10
    assert len(list((tmp_path / "outputs" / "charlm" / "init").glob("*.pt"))) == 1


def test_charlm_runs_start_from_the_saved_initial_weights(tmp_path: Path) -> None:
    """The second run loads the first run's file: what is in it, not a fresh initialisation."""
    charlm = _charlm_module()
    with initialize_config_dir(config_dir=str(CHARLM / "conf"), version_base=None):
        cfg = compose("config", overrides=[*CHARLM_TINY, f"init_dir={tmp_path}"])
    first, path = charlm.initial_model(cfg, vocab=50)
    # Stand-in for a first run whose weights differ from what this process would initialise.
    saved = {k: v + 1.0 for k, v in first.state_dict().items()}
    torch.save(saved, path)
    second, _ = charlm.initial_model(cfg, vocab=50)
    third, _ = charlm.initial_model(cfg, vocab=50)
    for name, tensor in saved.items():
        assert torch.equal(second.state_dict()[name], tensor), name
        assert torch.equal(third.state_dict()[name], tensor), name


def test_charlm_full_search_at_tiny_size_writes_the_report(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    _run(
        str(CHARLM / "train.py"),
        "-m",
        "hydra.sweeper.search=full",
        "hydra.sweeper.points=3",
        f"hydra.sweep.dir={sweep_dir}",
        *CHARLM_TINY,
        cwd=tmp_path,
    )
    for name in ("trials.csv", "curve.png", "best.yaml"):
        assert (sweep_dir / name).is_file(), name
    best = yaml.safe_load((sweep_dir / "best.yaml").read_text())
    # stage 1's range [1e-4, 3e-2] (3 points: step r), which stage 2 extends by 2 steps past an
    # edge that holds the best, and the confirm step by one more
    r = (3e-2 / 1e-4) ** 0.5
    assert 1e-4 / r**3 <= best["lr"] <= 3e-2 * r**3


def test_plain_pytorch_search_at_tiny_size_prints_the_result(tmp_path: Path) -> None:
    out = _run(
        str(ROOT / "examples" / "plain_pytorch.py"),
        cwd=tmp_path,
        env={"LRSWEEP_EXAMPLE_SIZE": "tiny"},
    )
    lr = float(re.search(r"best lr=(\S+):", out).group(1))
    assert 1e-4 <= lr <= 1.0
    report = tmp_path / "outputs" / "reports" / "plain-pytorch-tiny"
    for name in ("trials.csv", "curve.png", "best.yaml"):
        assert (report / name).is_file(), name
    assert (tmp_path / "outputs" / "plain_pytorch_curve.png").is_file()
