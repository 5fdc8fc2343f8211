"""A trial's result and its record in its study: what `src.train.train` returns for one trial
(and `src.fused` for each arm of a fused batch), and the user attributes a job writes into its
Optuna trial from it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig

from src.study import TrialReporter

if TYPE_CHECKING:
    from src.train import FitResult


@dataclass
class TrialResult:
    val_acc: float  # 0.0 for a diverged trial (its weights are NaN: any accuracy would be noise)
    val_loss: float  # inf for a diverged trial
    diverged: bool
    stopped_at_chance: bool  # at chance a full epoch after warmup: stopped, scored as it stood
    epochs_run: int
    seconds: float
    checkpoint: str
    train_loss: list[float] = field(default_factory=list)  # per epoch
    val_acc_curve: list[float] = field(default_factory=list)  # per epoch
    # On the data's test split (None without one): recorded, never the objective, never chosen on.
    test_acc: float | None = None
    val_examples: int = 0  # a score's resolution: 1 / val_examples (src.report)
    fused_arms: int = 1  # trained with this many arms as one model (src.fused); seconds: its share

    @classmethod
    def from_fit(
        cls,
        fitted: FitResult,
        seconds: float,
        checkpoint: str,
        val_examples: int,
        test_acc: float | None = None,
        fused_arms: int = 1,
    ) -> TrialResult:
        """The result of a trial `src.train.fit` (or one arm of `src.fused.fit_arms`) trained:
        a diverged trial scores 0.0."""
        diverged = fitted.stop == "diverged"
        return cls(
            val_acc=0.0 if diverged else fitted.val_acc[-1],
            val_loss=fitted.val_loss,
            diverged=diverged,
            stopped_at_chance=fitted.stop == "chance",
            epochs_run=fitted.epochs_run,
            seconds=seconds,
            checkpoint=checkpoint,
            train_loss=fitted.train_loss,
            val_acc_curve=fitted.val_acc,
            test_acc=test_acc,
            val_examples=val_examples,
            fused_arms=fused_arms,
        )


def resident_mb() -> float | None:
    """This process's resident memory now, in MiB (Linux; None elsewhere): recorded per trial, so a
    leak across a sweep's in-process trials shows in the study."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def record_trial(reporter: TrialReporter, result: TrialResult, started: float) -> None:
    """A trial's record in its study (user attributes), from inside its job: `started` is the Unix
    time its training began."""
    reporter.set_attrs(
        diverged=result.diverged,
        stopped_at_chance=result.stopped_at_chance,
        epochs_run=result.epochs_run,
        train_loss=result.train_loss,
        val_acc=result.val_acc_curve,
        val_examples=result.val_examples,  # a score's resolution: 1 / val_examples (src.report)
        test_acc=result.test_acc,  # None without a test split
        seconds=result.seconds,
        started=started,  # Unix times and process: when and where the job itself ran
        finished=time.time(),
        pid=os.getpid(),
        checkpoint=result.checkpoint,
        output_dir=HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else None,
        rss_mb=resident_mb(),
    )
