"""Ctrl-C (SIGINT) and SIGTERM in a sweep: both stop it the same way.

SIGTERM is how a sweep is usually stopped by something other than a person: SLURM's preemption
and time limit, `timeout`, `docker stop`, `kill`. Left to its default action it ends the process
at once, and the trials it held stay RUNNING until another run's grace period fails them. Here
it is handled as a Ctrl-C: it raises KeyboardInterrupt in the main thread, the sweeper fails the
trials in flight at once, and the process exits with the conventional status 128 + the signal's
number (130 for SIGINT, 143 for SIGTERM).

A signal that is ignored (SIG_IGN, e.g. SIGINT in a background job of a non-interactive shell)
stays ignored.
"""

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

# The signals that stop a sweep, in the order they are looked at.
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupt(threading.Event):
    """Set when an interrupting signal arrived; `signum` says which."""

    signum: int | None = None

    @property
    def exit_status(self) -> int:
        """The conventional status of a process stopped by the signal: 128 + its number (130
        when no signal was noted: a KeyboardInterrupt raised some other way)."""
        return 128 + int(self.signum or signal.SIGINT)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name


def _take(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    """Install `handler` for each of `SIGNALS` that is not ignored; their previous handlers.
    Nothing outside the main thread (only it may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if current in (signal.SIG_IGN, None):  # ignored, or set outside Python: left alone
            continue
        previous[sig] = current
        signal.signal(sig, handler)
    return previous


def _restore(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextlib.contextmanager
def interrupt_noted() -> Iterator[Interrupt]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, and set the `Interrupt`
    yielded (with the signal's number): whatever error it turns into on its way up, the caller
    knows it was an interrupt, and which."""
    noted = Interrupt()

    def on_signal(signum: int, frame: Any) -> None:
        noted.signum = signum
        noted.set()
        raise KeyboardInterrupt

    previous = _take(on_signal)
    try:
        yield noted
    finally:
        _restore(previous)


@contextlib.contextmanager
def interrupt_deferred() -> Iterator[None]:
    """Holds SIGINT and SIGTERM back until the block ends, then delivers the first one received
    to the handler it was held from (SIG_DFL: its default action).

    Around a claim and the bookkeeping of its result: an interrupt in between would leave a
    trial RUNNING that no one knows is ours. Deferred, it arrives when the trial is registered
    as in flight, and the sweeper's handler fails it at once."""
    received: list[int] = []
    previous = _take(lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        _restore(previous)
    if received:
        handler = previous[received[0]]
        if callable(handler):
            handler(received[0], None)
        else:
            signal.raise_signal(received[0])
