"""The heartbeat thread: Optuna records heartbeats only inside `optimize`, so the sweeper keeps
one going for every trial it holds. A trial whose heartbeat stops (its sweeper was killed) goes
stale after the storage's grace period; see `study_protocol.StaleTrials`."""

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

# A grace period must cover at least this many heartbeat intervals: a beat that lands a little
# late (a busy machine, a slow commit) must not make a live trial look dead to another sweep,
# which would fail it and run its point a second time.
MIN_GRACE_INTERVALS = 2


def check_timing(interval: float, grace_period: float) -> None:
    """Refuse (ValueError, one line) a heartbeat interval below 1 s or a grace period shorter
    than `MIN_GRACE_INTERVALS` heartbeat intervals."""
    if not isinstance(interval, int | float) or isinstance(interval, bool) or interval < 1:
        raise ValueError(
            f"hydra.sweeper.heartbeat_interval={interval!r} is invalid: a number of seconds >= 1"
        )
    if grace_period < MIN_GRACE_INTERVALS * interval:
        raise ValueError(
            f"hydra.sweeper.grace_period={grace_period!r} is invalid: it must be at least "
            f"{MIN_GRACE_INTERVALS}x hydra.sweeper.heartbeat_interval ({interval!r} s), i.e. >= "
            f"{MIN_GRACE_INTERVALS * interval:g} s, or live sweeps sharing the study fail each "
            "other's trials and run their points twice"
        )


class Heartbeat:
    """Records a heartbeat every `interval` seconds for each trial added, until discarded."""

    def __init__(self, storage: Any, interval: float) -> None:
        self._storage, self._interval = storage, interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lrsweep-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self, trial_ids: Sequence[int]) -> None:
        with self._lock:
            ids = list(trial_ids)
        for trial_id in ids:
            with contextlib.suppress(Exception):  # a beat lost is retried next interval
                self._storage.record_heartbeat(trial_id)

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)
        self.beat([trial_id])

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                ids = list(self._trial_ids)
            self.beat(ids)
