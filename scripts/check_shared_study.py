"""Check that a shared storage keeps every grid point to one run under concurrent sweeps.

    python scripts/check_shared_study.py --storage postgresql+psycopg2://user@host/db \\
        [--processes 4] [--rounds 3] [hydra overrides...]

Each round starts `--processes` stage-1 sweeps on one new study at the same moment (as several
machines of a cluster would), waits for them, and checks the study: every grid point COMPLETE
exactly once, nothing left RUNNING or WAITING, every other trial a dropped duplicate (FAIL with
user attr `duplicate_of`). Prints one line per round and exits non-zero on any violation. Use it
to vet a database before a cluster sweep; on SQLite the sweeps also share a file lock.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lrsweep.study_protocol import POINT_ATTR  # noqa: E402

TINY = ["epochs=2", "model.width=32", "sweep.points=8", "sweep.seeds=[0,1]"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="SQLAlchemy URL of the shared database")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args, overrides = parser.parse_known_args()
    overrides = overrides or TINY
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    typed = args.storage
    password = make_url(args.storage).password
    if password:  # the sweeps refuse a password typed into the URL: hand it over by environment
        env["LRSWEEP_DB_PASSWORD"] = str(password)
        typed = make_url(args.storage).set(password="PW").render_as_string(hide_password=False)
        typed = typed.replace(":PW@", ":${oc.env:LRSWEEP_DB_PASSWORD}@")
    failures = 0
    for round_ in range(args.rounds):
        name = f"shared-check-{int(time.time())}-{round_}"
        command = [
            sys.executable, "-m", "src.train", "-m", *overrides,
            f"study.name={name}", f"study.storage={typed}",
        ]  # fmt: skip
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for _ in range(args.processes)
        ]
        errors = [p.communicate()[1].decode() for p in procs]
        codes = [p.returncode for p in procs]
        study = optuna.load_study(study_name=name, storage=args.storage)
        states = collections.Counter(t.state.name for t in study.trials)
        runs = collections.Counter(
            t.user_attrs[POINT_ATTR] for t in study.trials if t.state.name == "COMPLETE"
        )
        points = len(study.user_attrs["grid"]["lr"]) * len(study.user_attrs["grid"]["seed"])
        dropped = sum("duplicate_of" in t.user_attrs for t in study.trials)
        ok = (
            codes == [0] * args.processes
            and len(runs) == points
            and set(runs.values()) == {1}
            and states.get("FAIL", 0) == dropped
            and not states.get("RUNNING")
            and not states.get("WAITING")
        )
        failures += not ok
        print(
            f"round {round_}: {'ok' if ok else 'VIOLATION'}: exit codes {codes}, {len(runs)} of "
            f"{points} points COMPLETE, runs per point {sorted(set(runs.values()))}, "
            f"{dropped} duplicate(s) dropped, states {dict(states)}",
            flush=True,
        )
        for code, error in zip(codes, errors, strict=True):
            if code:
                print(error.strip().splitlines()[-1] if error.strip() else f"exit {code}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
