"""The report of a search: every stage's trials, the accuracy-vs-LR curve and the chosen LR.

    python -m src.report [--out DIR] [hydra overrides...]

The overrides are those of the stage-1 sweep: they name the study `<name>`; the report also reads
`<name>-stage2` and `<name>-confirm` when they exist, and writes under `<paths.reports_dir>/<name>/`
(default `outputs/reports/<name>/`, relative to the current directory; or `--out DIR`):

- `trials.csv`: one row per trial of every stage (`diverged`, `stopped_at_chance` flag them);
- `curve.png`: mean +/- std of the metric per LR and stage (log x; "one seed" and no bars with one
  seed), the good range shaded, diverged LRs as red x, LRs with a trial stopped at chance boxed,
  the chosen LR as a vertical line;
- `best.yaml`: the chosen LR (`choose`); its `selection_score` (mean, std, n of the validation
  score that chose it: optimistic, the same split made the choice); its `test_score` on the
  data's test split (`data.test_fraction` > 0: mean, std, n over the trials of the chosen LR in
  the stage that chose it, i.e. the confirm seeds; no choice ever reads it); the good range, the
  interpolated optimum (`lrsweep.stats.fit_optimum`; when there is none, `no_interpolated_optimum`
  says why), the overrides to train with it, stage 2's gain over stage 1, and `edge` when the
  optimum sits at an end of the searched range (`lrsweep.choice.edge_of`).

The choice and stage 2's gain follow `lrsweep.choice`; the curve is `lrsweep.curve`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from lrsweep.choice import (
    GOOD_RANGE_UNKNOWN,
    SELECTION_NOTE,
    Choice,
    Score,
    choose,
    resolution,
    test_score,
)
from lrsweep.curve import plot_curve
from lrsweep.stages import study_names
from lrsweep.stats import aggregate, format_table
from src.checks import check_writable
from src.cli import run_cli
from src.identity import train_overrides_from_study
from src.study import (
    TRIAL_COLUMNS,
    compose_config,
    direction_of,
    experiment_identity,
    load_frames,
    open_study,
    report_dir,
)


@dataclass(frozen=True)
class Report:
    """What `write_report` found and wrote; `best()` is the content of best.yaml."""

    study: str  # stage 1's study name
    stages: dict[str, str]  # stage -> study name, for the stages that exist
    aggs: dict[str, pd.DataFrame]  # stage -> `lrsweep.stats.aggregate`
    choice: Choice
    overrides: list[str]  # to train one model with the chosen LR
    out_dir: Path
    test_score: Score | None = None  # the chosen LR on the test split; None without one

    @property
    def command(self) -> str:
        return "python -m src.train " + " ".join(self.overrides)

    def best(self) -> dict[str, Any]:
        c = self.choice
        best: dict[str, Any] = {
            "study": self.study,
            "stages": dict(self.stages),
            "stage": c.stage,
            "lr": c.lr,
            "selection_score": {
                "mean": c.mean,
                "std": c.std,
                "n": c.n,
                "note": SELECTION_NOTE,
                "rule": c.rule,
            },
        }
        if self.test_score is not None:
            best["test_score"] = dataclasses.asdict(self.test_score)
        best["good_range"] = GOOD_RANGE_UNKNOWN if c.good_range is None else list(c.good_range)
        if c.interpolated_optimum is not None:
            best["interpolated_optimum"] = c.interpolated_optimum
        else:
            best["no_interpolated_optimum"] = c.optimum_note
        best["overrides"] = list(self.overrides)
        best["command"] = self.command
        if c.stage2_gain is not None:
            gain = dataclasses.asdict(c.stage2_gain)
            gain["interval"] = None if gain["interval"] is None else list(gain["interval"])
            best["stage2_gain"] = gain
        if c.edge is not None:
            best["edge"] = {"side": c.edge, "note": c.edge_note}
        return best


def format_summary(report: Report) -> str:
    lines = []
    for stage, agg in report.aggs.items():
        lines += [f"== {stage}: {report.stages[stage]} ({len(agg)} LRs)", format_table(agg), ""]
    c = report.choice
    rows = [
        ("chosen lr", f"{c.lr!r} (from {c.stage}): {c.rule}"),
        ("selection score", f"{c.mean:.4f} ± {c.std:.4f} (n={c.n}; it chose the LR: optimistic)"),
        (
            "test accuracy",
            "no test split (data.test_fraction=0)"
            if report.test_score is None
            else "{:.4f} ± {:.4f} (n={})".format(*dataclasses.astuple(report.test_score)),
        ),
        (
            "good range",
            GOOD_RANGE_UNKNOWN
            if c.good_range is None
            else "[{:.4g}, {:.4g}]".format(*c.good_range),
        ),
        (
            "interpolated optimum",
            f"none ({c.optimum_note})"
            if c.interpolated_optimum is None
            else f"{c.interpolated_optimum:.4g} ({c.optimum_note})",
        ),
        ("stage 2 gain", c.stage2_gain.verdict if c.stage2_gain else "no stage 2"),
        ("train with", report.command),
    ]
    if c.edge is not None:
        rows.append(("warning", c.edge_note))
    width = max(len(k) for k, _ in rows)
    lines += [f"{k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- files


def write_report(
    name: str,
    frames: Mapping[str, pd.DataFrame],
    out_dir: Path,
    overrides: Sequence[str] = (),
    ylabel: str = "validation accuracy",
    recorded: Mapping[str, Any] | None = None,
    direction: str = "maximize",
) -> Report:
    """Writes trials.csv, curve.png and best.yaml under `out_dir`. The command to train with is
    rebuilt from `recorded`, the experiment identity the stage-1 study recorded, when given
    (`src.identity.train_overrides_from_study`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = pd.concat(
        [f.assign(stage=s, study=study_names(name)[s]) for s, f in frames.items()],
        ignore_index=True,
    )
    trials[["stage", "study", *TRIAL_COLUMNS]].to_csv(out_dir / "trials.csv", index=False)
    aggs = {s: aggregate(f) for s, f in frames.items()}
    choice = choose(aggs, resolution(frames), direction)
    title = f"{name}: {ylabel} vs learning rate"
    plot_curve(aggs, choice, title, out_dir / "curve.png", ylabel, direction)
    report = Report(
        study=name,
        stages={s: n for s, n in study_names(name).items() if s in frames},
        aggs=aggs,
        choice=choice,
        overrides=train_overrides_from_study(overrides, choice.lr, recorded),
        out_dir=out_dir,
        test_score=test_score(frames[choice.stage], choice.lr),
    )
    (out_dir / "best.yaml").write_text(yaml.safe_dump(report.best(), sort_keys=False))
    return report


# ---------------------------------------------------------------- entry point


def _main(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.report",
        description="Report a sweep (stage 1, and stage 2 / confirm when they exist). Other "
        "arguments are the stage-1 Hydra overrides.",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: <paths.reports_dir>/<name>"
    )
    args, overrides = parser.parse_known_args(argv)

    cfg = compose_config(overrides)
    name, storage_url = str(cfg.study.name), str(cfg.study.storage)
    out_dir = args.out or report_dir(cfg, name)
    check_writable(out_dir, "--out" if args.out else "paths.reports_dir")
    frames = load_frames(name, storage_url, experiment_identity(cfg))
    stage1 = open_study(name, storage_url)
    recorded, direction = stage1.user_attrs.get("config"), direction_of(stage1)
    metric = str(cfg.get("metric", "val_acc"))
    ylabel = {"val_acc": "validation accuracy", "val_loss": "validation loss"}.get(metric, metric)
    report = write_report(name, frames, out_dir, overrides, ylabel, recorded, direction)
    print(format_summary(report))
    print(f"wrote {out_dir}/trials.csv, curve.png, best.yaml")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
