"""The LR range test (Smith 2017): stage 1's bounds from one short run, in about 100 batches.

    python -m src.range_test [hydra overrides...]      # the same overrides as python -m src.train

Protocol (`conf/range_test.yaml` = `conf/train.yaml` plus a `range_test:` section):
1. Start: the shared initial weights of `src.checkpoint` (the same file every trial restores; an
   existing file is only read, never rewritten) and a fresh optimizer, batches of `batch_size` in
   the order of `seed`, cycling through epochs when the ramp outlasts one.
2. Ramp: batch i of n (0-based) trains at `lr_i = start_lr * (end_lr / start_lr) ** (i / (n - 1))`
   (`ramp_lrs`; the schedule of torch-lr-finder's `ExponentialLR`), no warmup. The loss of a batch
   is its training loss before the step, as in torch-lr-finder.
3. Smoothing: an exponential moving average with bias correction (fastai, Lightning):
   `avg_i = beta * avg_{i-1} + (1 - beta) * loss_i`, `smoothed_i = avg_i / (1 - beta ** (i + 1))`.
4. Stop (`stop_reason`): a non-finite loss, or a smoothed loss above `diverge_factor` times the
   smallest smoothed loss so far. Divergence is how a ramp normally ends, not an error.
5. Suggestions (`suggest`), on the finite smoothed curve: `steepest` (the most negative slope
   against log10(lr), before the minimum), `valley` (fastai: the middle of the longest descending
   stretch), `min/10` (the LR of the minimum, divided by 10).
6. Bounds (`propose_bounds`): `high = high_factor * lr_min`, `low = high / 10 ** decades`, where
   `lr_min` is the LR of the smallest smoothed loss. The defaults (high_factor 1, decades 3) come
   from measuring where the dense-grid accuracy optimum lies relative to `lr_min` on
   digits/mnist1d x mlp/cnn x sgd/adamw (docs/range_test.md, benchmarks/bench_quality.py).

Output: a progress line every tenth of the ramp, the suggestions, and as the last line
`sweep.low=<x> sweep.high=<y>` (overrides for stage 1); files `range_test.png` (smoothed loss vs LR,
log x, suggestions and bounds marked) and `range_test.yaml` (history, suggestions, bounds) in
`<paths.reports_dir>/<study.name>/` (default `outputs/reports/<study.name>/`). `run(cfg)` is the
command without its interpreter: it returns those bounds (the two-stage script's --auto-bounds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from omegaconf import DictConfig

from src.base_lr import lr_scales, set_base_lr
from src.batches import Batches
from src.checks import check_writable
from src.cli import exit_on_user_error
from src.errors import ConfigError
from src.study import CONF_DIR, report_dir
from src.train import check_config, initial_state, load_data, resolve_device

# ---------------------------------------------------------------- pure parts


def ramp_lrs(start_lr: float, end_lr: float, num_batches: int) -> np.ndarray:
    """The LR of each batch: exponential from `start_lr` (batch 0) to `end_lr` (the last)."""
    i = np.arange(num_batches, dtype=float)
    return start_lr * (end_lr / start_lr) ** (i / (num_batches - 1))


class DebiasedEMA:
    """Exponential moving average with bias correction: the average of the values seen so far,
    weighted `beta ** age`; its first value is the first input, not `(1 - beta) *` it."""

    def __init__(self, beta: float) -> None:
        self.beta, self.avg, self.count = beta, 0.0, 0

    def update(self, value: float) -> float:
        self.count += 1
        self.avg = self.beta * self.avg + (1.0 - self.beta) * value
        return self.avg / (1.0 - self.beta**self.count)


def ema_debiased(values: Sequence[float], beta: float) -> np.ndarray:
    ema = DebiasedEMA(beta)
    return np.array([ema.update(float(v)) for v in values])


def stop_reason(loss: float, smoothed: float, best: float, diverge_factor: float) -> str | None:
    """Why the ramp stops at this batch (None: it goes on). `best`: the smallest smoothed loss so
    far, this batch's included."""
    if not (math.isfinite(loss) and math.isfinite(smoothed)):
        return "the loss is not finite"
    if smoothed > diverge_factor * best:
        return f"the smoothed loss exceeds {diverge_factor:g}x its minimum"
    return None


@dataclass(frozen=True)
class Suggestions:
    lr_min: float  # the LR of the smallest smoothed loss
    steepest: float
    valley: float
    min_over_10: float


def _valley_index(losses: np.ndarray) -> int:
    """fastai's `valley`: the longest strictly descending subsequence of the curve, ending at
    `end` with length L, spans [end - L, end]; the answer lies halfway along it."""
    n = len(losses)
    length = np.ones(n, dtype=int)
    for i in range(1, n):
        below = losses[:i] > losses[i]
        if below.any():
            length[i] = length[:i][below].max() + 1
    end = int(np.argmax(length))  # the first of the longest
    start = max(0, end - int(length[end]))
    span = end - start
    return start + span // 3 + span // 6


def suggest(lrs: Sequence[float], smoothed: Sequence[float], skip_start: int = 10) -> Suggestions:
    """The classic single-LR suggestions of a range test, from its finite points. `steepest`
    ignores the first `skip_start` points (as torch-lr-finder does): there the average holds few
    losses, and their noise can look like the steepest descent."""
    lrs, smoothed = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    finite = np.isfinite(smoothed)
    lrs, smoothed = lrs[finite], smoothed[finite]
    if len(lrs) < 3:
        raise ValueError(f"a range test needs at least 3 finite points to suggest, got {len(lrs)}")
    i_min = int(np.argmin(smoothed))
    first = max(0, min(skip_start, i_min - 1))
    descent = smoothed[first : i_min + 1]
    if len(descent) >= 2:
        slope = np.gradient(descent, np.log10(lrs[first : i_min + 1]))
        i_steep = first + int(np.argmin(slope))
    else:
        i_steep = i_min
    return Suggestions(
        lr_min=float(lrs[i_min]),
        steepest=float(lrs[i_steep]),
        valley=float(lrs[_valley_index(smoothed)]),
        min_over_10=float(lrs[i_min] / 10.0),
    )


def propose_bounds(lr_min: float, high_factor: float, decades: float) -> tuple[float, float]:
    """Stage 1's `(low, high)`: `high = high_factor * lr_min`, `decades` decades wide."""
    high = high_factor * lr_min
    return high / 10.0**decades, high


# ---------------------------------------------------------------- the ramp


@dataclass
class RangeTestResult:
    lrs: list[float]  # of the batches that ran
    losses: list[float]  # raw training loss per batch
    smoothed: list[float]
    stop: str | None  # None: every batch of the ramp ran
    suggestions: Suggestions
    low: float
    high: float
    seconds: float  # all of it: data, model, ramp
    ramp_seconds: float  # the batches alone
    checkpoint: str


def check_range_config(cfg: DictConfig) -> None:
    """The checks of `src.train.check_config` plus the `range_test:` section's."""
    check_config(cfg)
    rt = cfg.range_test

    def need(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"range_test.{key}={rt.get(key)!r} is invalid: {allowed}")

    def number(key: str) -> bool:
        value = rt.get(key)
        return isinstance(value, int | float) and not isinstance(value, bool)

    need(number("start_lr") and rt.start_lr > 0, "start_lr", "a number > 0")
    need(number("end_lr") and rt.end_lr > rt.start_lr, "end_lr", "a number > start_lr")
    need(
        isinstance(rt.num_batches, int) and rt.num_batches >= 10,
        "num_batches",
        "an integer >= 10",
    )
    need(number("beta") and 0 <= rt.beta < 1, "beta", "a number in [0, 1)")
    need(number("diverge_factor") and rt.diverge_factor > 1, "diverge_factor", "a number > 1")
    need(number("high_factor") and rt.high_factor > 0, "high_factor", "a number > 0")
    need(number("decades") and 0 < rt.decades <= 3, "decades", "a number in (0, 3]")


def _cycle(batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def range_test(cfg: DictConfig, verbose: bool = False) -> RangeTestResult:
    """Runs the ramp of `cfg.range_test` from the shared initial weights (protocol: module doc)."""
    check_range_config(cfg)
    rt = cfg.range_test
    start = time.perf_counter()
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    splits = load_data(cfg)
    lrs = ramp_lrs(float(rt.start_lr), float(rt.end_lr), int(rt.num_batches))
    model, optimizer, key = initial_state(cfg, splits, device, lr=float(lrs[0]))
    scales = lr_scales(optimizer, float(lrs[0]))
    batches = Batches(
        splits.train,
        cfg.batch_size,
        shuffle=True,
        seed=cfg.seed,
        device=device,
        num_workers=splits.num_workers,
    )
    torch.manual_seed(cfg.seed)
    beta, factor = float(rt.beta), float(rt.diverge_factor)
    ema, best, every = DebiasedEMA(beta), math.inf, max(1, len(lrs) // 10)
    ran, losses, smoothed, stop = [], [], [], None
    model.train()
    stream = _cycle(batches)
    ramp_start = time.perf_counter()
    for i, lr in enumerate(lrs):
        x, y = next(stream)
        set_base_lr(optimizer, float(lr), scales)  # a muP optimizer keeps its per-layer ratios
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = loss.item()  # one sync per batch: the stop rule reads every loss
        smooth = ema.update(value)
        best = min(best, smooth) if math.isfinite(smooth) else best
        ran.append(float(lr))
        losses.append(value)
        smoothed.append(smooth)
        stop = stop_reason(value, smooth, best, factor)
        if verbose and (stop or (i + 1) % every == 0):
            print(
                f"[range test] {i + 1}/{len(lrs)} lr={lr:.3g} loss={value:.4g} "
                f"smoothed={smooth:.4g}",
                flush=True,
            )
        if stop:
            break
    ramp_seconds = time.perf_counter() - ramp_start
    if sum(math.isfinite(s) for s in smoothed) < 3:
        raise ConfigError(
            f"range test: the loss was not finite within {len(ran)} batches from "
            f"range_test.start_lr={rt.start_lr:g}; lower start_lr"
        )
    suggestions = suggest(ran, smoothed)
    low, high = propose_bounds(suggestions.lr_min, float(rt.high_factor), float(rt.decades))
    return RangeTestResult(
        lrs=ran,
        losses=losses,
        smoothed=smoothed,
        stop=stop,
        suggestions=suggestions,
        low=low,
        high=high,
        seconds=time.perf_counter() - start,
        ramp_seconds=ramp_seconds,
        checkpoint=key,
    )


# ---------------------------------------------------------------- outputs


def bounds_line(low: float, high: float) -> str:
    """The CLI's last line: stage 1's bounds as Hydra overrides."""
    return f"sweep.low={low:.3g} sweep.high={high:.3g}"


def printed_bounds(low: float, high: float) -> tuple[float, float]:
    """The bounds as `bounds_line` prints them (3 significant digits): what a user copying the line
    sweeps, and what `run` hands to the two-stage script."""
    return float(f"{low:.3g}"), float(f"{high:.3g}")


def compose_range_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python -m src.range_test <overrides>` runs with (for scripts and benchmarks)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="range_test", overrides=list(overrides))


def plot_range_test(result: RangeTestResult, path: Path, title: str) -> None:
    """Smoothed (and raw) loss against LR, log x; suggestions as vertical lines; bounds shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lrs, raw, smooth = (
        np.asarray(v, dtype=float) for v in (result.lrs, result.losses, result.smoothed)
    )
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.axvspan(
        result.low,
        result.high,
        color="tab:green",
        alpha=0.12,
        label=f"bounds [{result.low:.2g}, {result.high:.2g}]",
    )
    ax.plot(lrs, raw, color="0.75", lw=0.8, label="loss per batch")
    ax.plot(lrs, smooth, color="tab:blue", lw=2, label="smoothed loss")
    s = result.suggestions
    for lr, name, colour in (
        (s.steepest, "steepest", "tab:red"),
        (s.valley, "valley", "tab:purple"),
        (s.min_over_10, "min/10", "tab:orange"),
        (s.lr_min, "minimum", "black"),
    ):
        ax.axvline(lr, color=colour, ls="--", lw=1, label=f"{name} {lr:.2g}")
    finite = smooth[np.isfinite(smooth)]
    bottom = min(finite.min(), np.nanmin(np.where(np.isfinite(raw), raw, np.nan)))
    ax.set_ylim(max(0.0, bottom * 0.9), max(finite[0], np.median(finite)) * 1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: RangeTestResult, out_dir: Path, title: str) -> None:
    plot_range_test(result, out_dir / "range_test.png", title)
    record = {
        "bounds": {"low": result.low, "high": result.high},
        "suggestions": asdict(result.suggestions),
        "stop": result.stop,
        "batches": len(result.lrs),
        "seconds": round(result.seconds, 3),
        "ramp_seconds": round(result.ramp_seconds, 3),
        "checkpoint": result.checkpoint,
        "history": {"lr": result.lrs, "loss": result.losses, "smoothed": result.smoothed},
    }
    (out_dir / "range_test.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def lr_finder_batches(batches: Batches):
    """`batches` as torch-lr-finder's training iterator (epoch after epoch, never exhausted): for
    running its range test, the reference ours is checked against (tests, bench_quality.py), on
    the same batches. torch-lr-finder is a dev dependency, imported here only."""
    from torch_lr_finder import TrainDataLoaderIter

    class Cycle(TrainDataLoaderIter):
        def __init__(self) -> None:
            self.epoch, self.it = 0, batches.epoch(0)

        def __next__(self):
            try:
                return next(self.it)
            except StopIteration:
                self.epoch += 1
                self.it = batches.epoch(self.epoch)
                return next(self.it)

    return Cycle()


def run(cfg: DictConfig) -> tuple[float, float]:
    """The command's work: the ramp, its files, its lines; returns stage 1's bounds as its last
    line prints them (`printed_bounds`). Bad input raises ConfigError before anything is written."""
    out_dir = report_dir(cfg, str(cfg.study.name))
    check_range_config(cfg)
    check_writable(out_dir, "paths.reports_dir")
    check_writable(cfg.checkpoint_dir, "checkpoint_dir")
    result = range_test(cfg, verbose=True)
    write_outputs(result, out_dir, f"range test: {cfg.study.name}")
    s = result.suggestions
    end = f"stopped: {result.stop}" if result.stop else "no divergence within the ramp"
    print(
        f"range test: {len(result.lrs)} batches in {result.ramp_seconds:.1f}s "
        f"({result.seconds:.1f}s with data and model), {end}"
    )
    if not result.stop or s.lr_min == result.lrs[-1]:
        print(
            "warning: the loss kept falling to the end of the ramp; the optimum may lie above "
            "sweep.high (raise range_test.end_lr)"
        )
    print(
        f"suggestions: steepest={s.steepest:.3g} valley={s.valley:.3g} min/10={s.min_over_10:.3g} "
        f"(loss minimum at lr={s.lr_min:.3g})"
    )
    print(f"wrote {out_dir}/range_test.png, range_test.yaml")
    print(bounds_line(result.low, result.high), flush=True)
    return printed_bounds(result.low, result.high)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="range_test")
def main(cfg: DictConfig) -> None:
    with exit_on_user_error():  # bad input: one line, exit 2
        run(cfg)


if __name__ == "__main__":
    import sys

    from src.key_typos import check_override_keys
    from src.range_test import main as importable_main

    with exit_on_user_error():  # a mistyped key: one line naming the close key
        check_override_keys(sys.argv[1:], "range_test")
    importable_main()
