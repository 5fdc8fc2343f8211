"""What a sweep prints: a header, one line per trial with an ETA, the waiting note, a table per
value of the first axis with the best one (one per combination of the other swept keys), and
one-line errors (`error: ...`, exit status 2)."""

import math
import os
import statistics
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from lrsweep.grid import Axis


def fail(err: BaseException) -> NoReturn:
    """Bad input: one line and exit status 2 (the traceback with HYDRA_FULL_ERROR=1)."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
    raise SystemExit(2) from None


EXIT_STORAGE_FAILED = 1


def storage_failed(shown_url: str, reason: str, grace_period: float) -> str:
    """The one line for a storage that failed in the middle of a sweep (a full disk, a read-only
    file, a server gone); adapters print it (the Hydra sweeper: exit status
    `EXIT_STORAGE_FAILED`). Every write is one transaction, so the study holds no half-written
    trial."""
    return (
        f"storage {shown_url!r} failed during the sweep ({reason}); the study is "
        "consistent: finished trials are kept and the trials this sweep held are failed "
        f"(now, or by the next run once they stayed {grace_period:g} s without a heartbeat). "
        "Fix the storage (free disk space, permissions, the server) and run the same command "
        "again to resume"
    )


def header(study_name: str, shown_url: str, points: int, done_before: int) -> None:
    print(
        f"[lrsweep] study '{study_name}' ({shown_url}): {points} grid points, "
        f"{done_before} done before this run",
        flush=True,
    )


def trial_failed(number: int, error: str) -> None:
    print(f"[lrsweep] trial {number} FAILED: {error}", file=sys.stderr, flush=True)


def point_text(params: dict[str, Any], float_format: str) -> str:
    """A grid point as `key=value` pairs, its floats in `float_format` (`lr=1.00e-05 seed=0`)."""
    return " ".join(
        f"{k}={v:{float_format}}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def job_lost(number: int, params: dict[str, Any], lost: str, attempt: int, retries: int) -> None:
    """One line for a job that ended without a result and is launched again."""
    point = point_text(params, ".4g")
    print(
        f"[lrsweep] trial {number} ({point}): {lost}; launching it again ({attempt} of {retries})",
        file=sys.stderr,
        flush=True,
    )


# The trial user attributes the progress line shows, when the job wrote them.
PROGRESS_ATTRS = ("seconds", "diverged", "stopped_at_chance", "epochs_run", "fused_arms")


def progress(
    value: float | None,
    attrs: dict[str, Any],
    params: dict[str, Any],
    done: int,
    total: int,
    remaining: int,
    ended: int,
    elapsed: float,
    metric: str,
) -> None:
    """`[done/total] lr=... seed=... val_acc=... 1.2s ETA 10s` for a finished trial: its told
    `value` (None: it failed) and its `PROGRESS_ATTRS` in `attrs`; the ETA is `remaining` jobs at
    this run's pace so far (`ended` jobs in `elapsed` seconds)."""
    eta = elapsed / ended * remaining
    shown = point_text(params, ".2e")
    if value is None:
        outcome = "FAILED"
    else:
        outcome = f"{metric}={value:.4f}" + (" DIVERGED" if attrs.get("diverged") else "")
        if attrs.get("stopped_at_chance"):
            outcome += f" STOPPED at chance after epoch {attrs.get('epochs_run', '?')}"
    seconds, arms = attrs.get("seconds"), attrs.get("fused_arms")
    took = f" {seconds:.1f}s" if isinstance(seconds, int | float) else ""
    if took and isinstance(arms, int) and arms > 1:  # its share of a batch trained together
        share = f"{seconds:.2g}" if seconds < 1 else f"{seconds:.1f}"  # 0.012s, never 1.2e+02s
        took = f" {share}s (1/{arms} of a fused batch)"
    print(f"[{done}/{total}] {shown} {outcome}{took} ETA {eta:.0f}s", flush=True)


def summary(
    trials: Sequence[Any],
    axes: Sequence[Axis],
    grid: dict[str, dict[str, Any]],
    point_attr: str,
    metric: str,
    direction: str,
    shown_url: str,
    pooled: Sequence[str] = (),
) -> None:
    """Per value of the first axis (the LR): mean and std of the metric over the `pooled` axes
    (the seed; diverged trials included, with the value they returned; how many diverged and how
    many were stopped at chance before their last epoch), then the best value. One table per
    combination of the other axes' values, headed by it: the runs of one LR at two model sizes
    are not two seeds of one experiment."""
    kept = [axis.name for axis in axes[1:] if axis.name not in pooled and len(axis.values) > 1]
    groups: dict[tuple, list[Any]] = {
        combo: [] for combo in dict.fromkeys(tuple(p[k] for k in kept) for p in grid.values())
    }
    for t in trials:  # COMPLETE trials
        point = grid.get(t.user_attrs.get(point_attr))
        if point is not None:
            groups[tuple(point[k] for k in kept)].append(t)
    for combo, members in groups.items():
        if kept:
            print("\n" + " ".join(f"{k}={v}" for k, v in zip(kept, combo, strict=True)))
        _table(members, axes[0], grid, point_attr, metric, direction)
    dashboard(shown_url)


def _table(
    trials: Sequence[Any],
    axis: Axis,
    grid: dict[str, dict[str, Any]],
    point_attr: str,
    metric: str,
    direction: str,
) -> None:
    """`summary`'s table of `trials` (COMPLETE, of the grid) per value of `axis`, and its best."""
    first = axis.name
    rows: dict[Any, dict[str, list]] = {
        v: {"values": [], "diverged": [], "stopped": [], "seconds": []} for v in axis.values
    }
    for t in trials:
        row = rows[grid[t.user_attrs[point_attr]][first]]
        # A diverged trial counts with the value it returned: diverging must cost the LR.
        row["values"].append(t.value)
        if t.user_attrs.get("diverged"):
            row["diverged"].append(1)
        if t.user_attrs.get("stopped_at_chance"):
            row["stopped"].append(1)
        if isinstance(t.user_attrs.get("seconds"), int | float):
            row["seconds"].append(t.user_attrs["seconds"])
    print(
        f"\n{first:>10}  {'mean ' + metric:>14}  {'std':>7}  {'n':>3}  {'diverged':>8}  "
        f"{'stopped':>7}  {'seconds':>7}"
    )
    best, sign = None, 1 if direction == "maximize" else -1
    for value, row in rows.items():
        n = len(row["values"])
        mean = statistics.fmean(row["values"]) if n else math.nan
        std = statistics.stdev(row["values"]) if n > 1 else 0.0
        secs = statistics.fmean(row["seconds"]) if row["seconds"] else math.nan
        shown = f"{value:.3e}" if isinstance(value, float) else str(value)
        print(
            f"{shown:>10}  {mean:>14.4f}  {std:>7.4f}  {n:>3}  {len(row['diverged']):>8}  "
            f"{len(row['stopped']):>7}  {secs:>7.2f}"
        )
        if n and (best is None or sign * mean > sign * best[1]):
            best = (value, mean, std, n)
    if best is None:
        print("\nno finished trial: no best value")
    else:
        value, mean, std, n = best
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"\nbest {first}={shown}: {metric} {mean:.4f} ± {std:.4f} over {n} run(s)")


def dashboard(shown_url: str) -> None:
    print(f"dashboard: optuna-dashboard {shown_url}\n", flush=True)
