"""The heartbeat thread: Optuna records heartbeats only inside `optimize`, so the sweeper keeps
one going for every trial it holds. A trial whose heartbeat stops (its sweeper was killed) goes
stale after the storage's grace period; see `study_protocol.StaleTrials`."""

import contextlib
import threading
from collections.abc import Sequence
from typing import Any


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
