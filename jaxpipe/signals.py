"""The signal contract, for every command that runs a compiled program (run, sweep,
predict, evaluate, trace, check): SIGINT and SIGTERM are only recorded, never raised
inside an import, an XLA compile, a garbage-collection callback or a file write, and
the work stops at its next safe point with exit status 130 / 143 (RunInterrupted),
having written what is done and nothing that looks finished. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from jaxpipe.errors import RunInterrupted

__all__ = ["SIGNAL_EXIT", "SignalCatcher", "catch_signals"]

# Exit status of work stopped by a signal: 128 + the signal number, as shells report it.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class SignalCatcher:
    """Which of SIGINT / SIGTERM arrived (the first one), if any.

    The handler only records: a signal never raises inside an import, an XLA compile or
    a checkpoint write (a KeyboardInterrupt there printed tracebacks, was swallowed by
    callbacks, or left threads that segfaulted at exit). The run asks at safe points:
    `check` between stages, `caught` after each epoch."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def caught(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # asked twice: stop now, as the user evidently wants
            raise KeyboardInterrupt
        self.signum = signum

    def stop(self, what: str) -> None:
        """Raises RunInterrupted (exit 130 / 143) if a signal came during `what` ("while
        predicting"): for work that writes its output only at its end, so nothing of it
        was written."""
        if self.signum is None:
            return
        raise RunInterrupted(
            f"interrupted by {self.name} {what}; nothing was written: run the command again",
            SIGNAL_EXIT[self.signum],
        )

    def check(self, when: str) -> None:
        """Raises RunInterrupted (exit 130 / 143) if a signal came before training
        started (`when`, e.g. "while compiling"): nothing was trained, so nothing is
        saved, and the run directory (if made) holds no checkpoint or summary."""
        if self.signum is None:
            return
        raise RunInterrupted(
            f"interrupted by {self.name} {when}, before any epoch was trained; nothing "
            "was saved: run the same command again",
            SIGNAL_EXIT[self.signum],
        )


@contextlib.contextmanager
def catch_signals() -> Iterator[SignalCatcher]:
    """Within the block, SIGINT and SIGTERM only set a flag (a second one raises
    KeyboardInterrupt); the previous handlers come back afterwards. Nested blocks share
    the outer catcher. A signal recorded by the handler this one replaces (any handler
    object with a `signum` attribute, as `jaxpipe run` installs on its first line) is
    taken over, so none is lost between process start and the run. Outside the main
    thread Python cannot install handlers, so the catcher stays empty there."""
    if threading.current_thread() is not threading.main_thread():
        yield SignalCatcher()
        return
    current = signal.getsignal(signal.SIGINT)
    outer = getattr(current, "__self__", None)
    if isinstance(outer, SignalCatcher):
        yield outer
        return
    catcher = SignalCatcher()
    old = {s: signal.signal(s, catcher._handle) for s in SIGNAL_EXIT}
    earlier = getattr(current, "signum", None)
    if earlier in SIGNAL_EXIT and catcher.signum is None:
        catcher.signum = earlier
    try:
        yield catcher
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
