"""Search quality at equal budget: lrsweep's search against Optuna's own samplers.

    python benchmarks/bench_samplers.py [--quick] [--data digits,mnist1d,synth,cancer]
                                        [--reps 10] [--budget 35] [--settings all] [--jobs 2]

On each data set (the built-in trial's default model and optimizer, MLP 128x2 and SGD momentum
0.9, 5 epochs with 1 warmup epoch; `benchmarks/sampler_data.py` holds the two extra sets; the
held-out `digits-adam`, digits with Adam, runs only when named in `--data`), every
training run is the built-in trial itself (`src.train.train`, in this process: no process per
trial), scored by validation accuracy:

1. Reference: a dense grid, `DENSE_POINTS` LRs log-uniform in [1e-5, 1] x `DENSE_SEEDS` seeds,
   `NEAR_SEEDS` seeds within `NEAR_STEPS` grid steps of its best (`reference`);
   each LR's mean averaged with its two neighbours (against the max-of-noise bias); its best is
   the reference, and the regret of a chosen LR is `best - curve(lr)` in accuracy points, the
   curve interpolated linearly in log10(lr) (`bench_quality.curve_at`).
2. lrsweep at each of `--settings` (of `LRSWEEP_SETTINGS`; lrsweep's default search always): the
   whole search (`lrsweep.search`, the same stage 2, confirm step and choice as
   `scripts/two_stage_sweep.py`), run `--reps` times, stage 1 on seed r (r = 0..reps-1). Its
   budget is what it ran (printed as `trials`).
3. Optuna 5's TPESampler, GPSampler and RandomSampler over lr in [1e-5, 1] (log), sampler seed
   r, every trial on a fresh data seed, `--budget` runs each: "best" keeps the best trial;
   "confirm" spends `CONFIRM_TOP` x `CONFIRM_SEEDS` of the budget on re-running its top LRs on
   fresh seeds and keeps the best mean (the shape of lrsweep's confirm step).

Prints the table (mean regret over the reps, the worst in brackets; the reference's standard
error at its best beside the seed std), under it, per data set, the default against the peer with
the lowest mean regret there (the difference of the mean regrets with its 95% Welch t interval),
and, as its last line,
`lrsweep_regret=<mean> best_peer=<name>:<mean> budget=<N>`: lrsweep's default setting (its
default stage 2 method, `lrsweep.stage2_model.DEFAULT_METHOD`) and the peer with the lowest mean
regret, each averaged over every data set and rep. Every run's accuracy
is cached by (data, lr, seed) under `outputs/bench_samplers/` (a CPU run is deterministic), so a
rerun after a change to lrsweep trains only the runs it has not seen. `--quick` (for development)
uses 2 reps and a 16 x 2 reference grid; `--report` prints the last run's table again
(`outputs/bench_samplers/results.json`) without training. One torch thread per process, `--jobs`
data sets at once (a process each): run it under `nice` on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import numpy as np  # noqa: E402
from bench_quality import curve_at, smooth_neighbours  # noqa: E402

DATASETS = {
    "digits": ["data=digits"],
    "mnist1d": ["data=mnist1d"],
    "synth": ["~data", "+data._target_=sampler_data.synth"],
    "cancer": ["~data", "+data._target_=sampler_data.cancer"],
    # Held out: not among the default sets, never used to design lrsweep's choice; run it with
    # --data digits-adam to check a rule on a setting it was not tuned on.
    "digits-adam": ["data=digits", "optimizer=adam"],
}
HELD_OUT = ("digits-adam",)
OUT = ROOT / "outputs" / "bench_samplers"
LOW, HIGH = 1e-5, 1.0
DENSE_POINTS, DENSE_SEEDS = 40, 5
# Where the regrets are read, the reference's curve gets more seeds: every LR within NEAR_STEPS
# grid steps of its best (about 0.8 decades on each side) runs on NEAR_SEEDS seeds.
NEAR_SEEDS, NEAR_STEPS = 20, 6
CONFIRM_TOP, CONFIRM_SEEDS = 5, 3
# Seed ranges that never meet: lrsweep uses 0.. (stage 1 on r, confirm above); the samplers'
# trials 1000 + 100 r + i, their confirm runs 5000 + 100 r + j; the reference 9000 + j.
SAMPLER_SEED, SAMPLER_CONFIRM_SEED, DENSE_SEED = 1000, 5000, 9000
# lrsweep's settings: keyword arguments of lrsweep.search (10 stage-1 LRs, 10 in stage 2, the
# confirm step's top 3 + interpolated optimum + stage 1's best on 3 fresh seeds).
LRSWEEP_SETTINGS: dict[str, dict] = {
    "lrsweep grid": {"points": 10},  # the grid: also what an lrsweep without stage2_method ran
    "lrsweep tpe": {"points": 10, "stage2_method": "tpe"},
    "lrsweep gp": {"points": 10, "stage2_method": "gp"},
    "lrsweep tpe 6+14": {"points": 6, "stage2_points": 14, "stage2_method": "tpe"},
}


def default_setting() -> str:
    """The setting that is lrsweep's default search (its default stage 2 method, 10 + 10)."""
    try:
        from lrsweep.stage2_model import DEFAULT_METHOD
    except ImportError:  # an lrsweep from before stage 2 had methods: the grid
        return "lrsweep grid"
    return f"lrsweep {DEFAULT_METHOD}"


class Runs:
    """The built-in trial on one data set, `(lr, seed) -> validation accuracy`, cached on disk."""

    def __init__(self, data: str):
        from src.study import compose_config

        self.data = data
        self.cfg = compose_config(
            [*DATASETS[data], "threads=1", "device=cpu", f"paths.output_dir={OUT / 'work'}"]
        )
        self.path = OUT / f"cache-{data}.json"
        self.cache: dict[str, float] = (
            json.loads(self.path.read_text()) if self.path.exists() else {}
        )
        self.trained = 0

    def __call__(self, lr: float, seed: int) -> float:
        from omegaconf import open_dict

        from src.train import train

        key = f"{float(lr)!r}|{int(seed)}"
        if key not in self.cache:
            with open_dict(self.cfg):
                self.cfg.lr, self.cfg.seed = float(lr), int(seed)
            self.cache[key] = float(train(self.cfg).val_acc)  # a diverged run scores 0.0
            self.trained += 1
        return self.cache[key]

    def save(self) -> None:
        OUT.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.cache))


@dataclass(frozen=True)
class Reference:
    lrs: np.ndarray
    curve: np.ndarray  # the smoothed mean accuracy per LR
    best: float
    seed_std: float  # the std over seeds at the best LR
    best_se: float  # the standard error of the curve at its best (the mean of 3 LRs' means)

    def regret(self, lr: float) -> float:
        """Accuracy points below the reference's best."""
        return 100.0 * (self.best - curve_at(self.lrs, self.curve, lr))


def reference(runs: Runs, points: int, seeds: int, near_seeds: int = NEAR_SEEDS) -> Reference:
    """`points` LRs on `seeds` seeds, then `near_seeds` seeds at every LR within `NEAR_STEPS`
    grid steps of the smoothed curve's best, until that best (found again on the added seeds)
    has its whole neighbourhood on `near_seeds` seeds: the precision goes where the regrets are
    read, at less than half the runs of `near_seeds` seeds everywhere."""
    lrs = np.logspace(math.log10(LOW), math.log10(HIGH), points)
    acc = {i: [runs(float(lr), DENSE_SEED + j) for j in range(seeds)] for i, lr in enumerate(lrs)}

    def curve_now() -> np.ndarray:
        return smooth_neighbours(np.array([np.mean(acc[i]) for i in range(points)]))

    best = int(np.argmax(curve_now()))
    while True:
        near = range(max(best - NEAR_STEPS, 0), min(best + NEAR_STEPS + 1, points))
        missing = [i for i in near if len(acc[i]) < near_seeds]
        if not missing:
            break
        for i in missing:
            acc[i] += [runs(float(lrs[i]), DENSE_SEED + j) for j in range(len(acc[i]), near_seeds)]
        best = int(np.argmax(curve_now()))
    curve = curve_now()
    around = [np.asarray(acc[i]) for i in range(max(best - 1, 0), min(best + 2, points))]
    # The smoothed best is the mean of these LRs' means: its standard error.
    se = float(np.sqrt(sum(x.var(ddof=1) / len(x) for x in around)) / len(around))
    return Reference(lrs, curve, float(curve[best]), float(np.std(acc[best], ddof=1)), se)


def lrsweep_choice(runs: Runs, rep: int, setting: dict, log) -> tuple[float, int]:
    """(the LR lrsweep's whole search chooses, its number of runs), stage 1 on seed `rep`."""
    import lrsweep

    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(log):
        result = lrsweep.search(
            runs,
            low=LOW,
            high=HIGH,
            seeds=[rep],
            study=f"{runs.data}-{rep}",
            storage=f"sqlite:///{tmp}/s.db",
            report_dir=f"{tmp}/report",
            **setting,
        )
        trials = int((result.trials["state"] == "COMPLETE").sum())
    return result.lr, trials


def make_sampler(name: str, seed: int):
    import optuna

    return {
        "TPE": lambda: optuna.samplers.TPESampler(seed=seed),
        "GP": lambda: optuna.samplers.GPSampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[name]()


def sampler_choices(runs: Runs, name: str, rep: int, budget: int) -> dict[str, float]:
    """{"best": LR, "confirm": LR} of sampler `name` (seed `rep`) at `budget` runs each."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(name, rep))
    explore = budget - CONFIRM_TOP * CONFIRM_SEEDS
    chosen = {}
    for i in range(budget):
        trial = study.ask()
        lr = trial.suggest_float("lr", LOW, HIGH, log=True)
        study.tell(trial, runs(lr, SAMPLER_SEED + 100 * rep + i))
        if i + 1 == explore:  # the "confirm" variant stops exploring here (same trials so far)
            done = sorted(study.trials, key=lambda t: (-t.value, t.number))
            top = list(dict.fromkeys(t.params["lr"] for t in done))[:CONFIRM_TOP]
            seeds = [SAMPLER_CONFIRM_SEED + 100 * rep + j for j in range(CONFIRM_SEEDS)]
            means = [np.mean([runs(lr, s) for s in seeds]) for lr in top]
            chosen["confirm"] = top[int(np.argmax(means))]
    return {"best": study.best_trial.params["lr"], "confirm": chosen["confirm"]}


class Choices:
    """The samplers' choices on one data set, cached on disk: they do not depend on lrsweep's
    code, so a rerun after a change to lrsweep does not search with them again."""

    def __init__(self, data: str):
        self.path = OUT / f"choices-{data}.json"
        self.saved = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, runs: Runs, name: str, rep: int, budget: int) -> dict[str, float]:
        key = f"{name}|{rep}|{budget}"
        if key not in self.saved:
            self.saved[key] = sampler_choices(runs, name, rep, budget)
            self.path.write_text(json.dumps(self.saved))
        return self.saved[key]


def measure(
    data: str, reps: int, budget: int, dense: tuple[int, int, int], settings: list[str]
) -> dict:
    """Every method's regret per rep on `data`, and lrsweep's budgets. lrsweep's output goes to
    `search-<data>.log`."""
    with (OUT / f"search-{data}.log").open("w") as log:
        return _measure(data, reps, budget, dense, settings, log)


def _measure(
    data: str, reps: int, budget: int, dense: tuple[int, int, int], settings: list[str], log
) -> dict:
    runs, choices = Runs(data), Choices(data)
    started = time.perf_counter()
    ref = reference(runs, *dense)
    regrets: dict[str, list[float]] = {}
    budgets: dict[str, list[int]] = {}
    for label in settings:
        for rep in range(reps):
            lr, trials = lrsweep_choice(runs, rep, LRSWEEP_SETTINGS[label], log)
            regrets.setdefault(label, []).append(ref.regret(lr))
            budgets.setdefault(label, []).append(trials)
        runs.save()
    for name in ("TPE", "GP", "random"):
        for rep in range(reps):
            for variant, lr in choices.get(runs, name, rep, budget).items():
                regrets.setdefault(f"{name} {variant}", []).append(ref.regret(lr))
        runs.save()
    seconds = time.perf_counter() - started
    print(f"[{data}] {runs.trained} runs trained ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return {
        "data": data,
        "seed_std": 100 * ref.seed_std,
        "reference_se": 100 * ref.best_se,
        "regrets": regrets,
        "budgets": budgets,
    }


def format_table(results: list[dict], budget: int) -> str:
    methods = list(results[0]["regrets"])
    head = ["data", "seed std at best", "reference se", *methods]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        se = r.get("reference_se")  # results saved before it was recorded have none
        cells = [r["data"], f"{r['seed_std']:.2f}", "?" if se is None else f"{se:.2f}"]
        cells += [f"{np.mean(r['regrets'][m]):.2f} ({max(r['regrets'][m]):.2f})" for m in methods]
        lines.append("| " + " | ".join(cells) + " |")
    runs = ", ".join(
        f"{label} {np.mean([b for r in results for b in r['budgets'][label]]):.1f}"
        for label in results[0]["budgets"]
    )
    lines.append(
        f"\nregret: accuracy points below the reference's best, mean over the reps (worst); "
        f"the samplers ran {budget} runs each; lrsweep's mean runs: {runs}"
    )
    return "\n".join(lines)


def peers(result: dict) -> list[str]:
    """The methods of a data set's result that are Optuna's samplers, not lrsweep settings."""
    return [m for m in result["regrets"] if m not in result["budgets"]]


def _regret_row(regrets: list[float]) -> dict:
    """A method's regrets on one data set as a `welch_difference` row (mean, std, n)."""
    x = np.asarray(regrets, float)
    return {"mean": x.mean(), "std": x.std(ddof=1) if len(x) > 1 else 0.0, "n": len(x)}


def per_data_comparison(results: list[dict]) -> str:
    """Per data set, lrsweep's default against the peer with the lowest mean regret there: the
    difference of the mean regrets (positive: lrsweep's is higher) with its 95% Welch t interval
    (the reps of the two are independent searches), degrees of freedom by Welch-Satterthwaite."""
    from lrsweep.stats import welch_difference

    default, lines = default_setting(), []
    for r in results:
        best = min(peers(r), key=lambda m: float(np.mean(r["regrets"][m])))
        ours, theirs = (_regret_row(r["regrets"][m]) for m in (default, best))
        diff = welch_difference(theirs, ours, floor=None)
        interval = (
            "interval unknown (fewer than 2 reps or no spread)"
            if diff is None
            else f"95% Welch interval [{diff.diff - diff.half_width:+.2f}, "
            f"{diff.diff + diff.half_width:+.2f}] (df {diff.df:.1f})"
        )
        lines.append(
            f"{r['data']}: {default} {ours['mean']:.2f} vs {best} {theirs['mean']:.2f}: "
            f"difference {ours['mean'] - theirs['mean']:+.2f}, {interval}"
        )
    return "\n".join(lines)


def summary_line(results: list[dict], budget: int) -> str:
    def mean_of(method: str) -> float:
        return float(np.mean([x for r in results for x in r["regrets"][method]]))

    default = default_setting()
    best_peer = min(peers(results[0]), key=mean_of)
    return (
        f"lrsweep_regret={mean_of(default):.3f} "
        f"best_peer={best_peer.replace(' ', '_')}:{mean_of(best_peer):.3f} budget={budget}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 reps, a 16 x 2 reference grid")
    parser.add_argument(
        "--data",
        default=",".join(d for d in DATASETS if d not in HELD_OUT),
        help=f"comma-separated data sets of {list(DATASETS)} (default: all but {HELD_OUT})",
    )
    parser.add_argument("--reps", type=int, default=None, help="default 10 (--quick: 2)")
    parser.add_argument("--budget", type=int, default=35, help="runs per sampler search")
    parser.add_argument(
        "--settings",
        default=default_setting(),
        help=f"comma-separated lrsweep settings of {list(LRSWEEP_SETTINGS)}, or all (default: "
        "lrsweep's default search)",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="data sets measured at once, a process each"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the last run's table again, train nothing"
    )
    args = parser.parse_args(argv)
    saved = OUT / "results.json"
    if args.report:
        results = json.loads(saved.read_text())
        print(format_table(results, args.budget))
        print(per_data_comparison(results))
        print(summary_line(results, args.budget))
        return 0
    datasets = args.data.split(",")
    settings = list(LRSWEEP_SETTINGS) if args.settings == "all" else args.settings.split(",")
    if default_setting() not in settings:  # the summary line compares it
        settings.insert(0, default_setting())
    unknown = [d for d in datasets if d not in DATASETS]
    unknown += [s for s in settings if s not in LRSWEEP_SETTINGS]
    if unknown or args.budget <= CONFIRM_TOP * CONFIRM_SEEDS or args.jobs < 1:
        print(
            f"error: {unknown}: --data takes {list(DATASETS)}, --settings "
            f"{list(LRSWEEP_SETTINGS)} or all; --budget must exceed "
            f"{CONFIRM_TOP * CONFIRM_SEEDS}; --jobs must be at least 1",
            file=sys.stderr,
        )
        return 2
    reps = args.reps or (2 if args.quick else 10)
    dense = (16, 2, 2) if args.quick else (DENSE_POINTS, DENSE_SEEDS, NEAR_SEEDS)
    OUT.mkdir(parents=True, exist_ok=True)
    jobs = [(d, reps, args.budget, dense, settings) for d in datasets]
    if args.jobs == 1 or len(datasets) == 1:
        results = [measure(*job) for job in jobs]
    else:  # one process per data set at a time; each has its own cache files
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(args.jobs, len(jobs)), mp_context=spawn) as pool:
            results = list(pool.map(measure, *zip(*jobs, strict=True)))
    saved.write_text(json.dumps(results))
    print(format_table(results, args.budget))
    print(per_data_comparison(results))
    print(summary_line(results, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
