"""The held-out prediction of docs/transfer.md: the law measured at widths 64..512 (3 seeds),
carried to width 2048, against the optimum swept there (3 seeds), and the accuracy of training at
each prediction (3 seeds). Run after scripts/transfer_measured.sh:

    .venv/bin/python scripts/transfer_heldout.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lrsweep.seed_bootstrap import SeedCurves, optimum_interval  # noqa: E402
from src.study import compose_config, load_frames  # noqa: E402

CHECK = ROOT / "docs/transfer/measured-width-adam-sp/check.yaml"
COMMON = [
    "data=mnist1d",
    "epochs=5",
    "warmup_epochs=1",
    "threads=1",
    "batch_size=64",
    "optimizer=adam",
    "paths.output_dir=outputs/measured",
]
TARGET = 2048
SEEDS = (0, 1, 2)


def accuracy(lr: float) -> list[float]:
    """val_acc of width TARGET trained at `lr`, one per seed."""
    scores = []
    for seed in SEEDS:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "src.train",
                *COMMON,
                f"model.width={TARGET}",
                f"lr={lr!r}",
                f"seed={seed}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        scores.append(float(re.findall(r"val_acc=([0-9.]+) \(", out)[-1]))
    return scores


def main() -> None:
    check = yaml.safe_load(CHECK.read_text())
    base = check["scales"][0]
    ratio = TARGET / base["scale"]
    low, high = check["alpha_interval"]
    predictions = {
        "measured law": base["lr_opt"] * ratio ** check["alpha"],
        "inverse_sqrt": base["lr_opt"] * ratio**-0.5,
        "inverse": base["lr_opt"] / ratio,
    }
    name = str(compose_config([*COMMON, f"model.width={TARGET}"]).study.name)
    frames = load_frames(name, str(compose_config(COMMON).study.storage))
    frames.pop("confirm", None)
    curves = SeedCurves(pd.concat(list(frames.values())))
    measured, how = curves.optimum()
    interval = optimum_interval(curves)
    agg = curves.aggregate(range(len(curves.seeds)))
    best = agg.loc[agg["mean"].idxmax()]
    print(f"width {TARGET}: measured optimum {measured:.4g} ({how}), 95% {interval.text()}")
    print(
        f"best swept LR {best['lr']:.4g}: val_acc {best['mean']:.4f} ± {best['std']:.4f} (3 seeds)"
    )
    print(
        f"measured law interval: [{base['lr_opt'] * ratio**low:.4g}, {base['lr_opt'] * ratio**high:.4g}]"
    )
    for rule, lr in predictions.items():
        scores = accuracy(lr) if rule != "inverse" else []
        mean = sum(scores) / len(scores) if scores else float("nan")
        print(
            f"{rule}: predicted {lr:.4g}, predicted/measured {lr / measured:.2f}"
            + (f", val_acc {mean:.4f} {scores}, lost {best['mean'] - mean:+.4f}" if scores else "")
        )


if __name__ == "__main__":
    main()
