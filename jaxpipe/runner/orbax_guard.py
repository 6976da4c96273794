"""Guards around orbax calls: its absl logs captured for the duration of a call (never
configured globally), the "Event loop is closed" tracebacks of tensorstore's late
callbacks dropped, and a full disk recognised in whatever form tensorstore reports it."""

from __future__ import annotations

import contextlib
import errno
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = [
    "Captured",
    "captured_logs",
    "LoopClosedFilter",
    "drop_loop_closed_tracebacks",
    "is_disk_full",
    "disk_problem",
    "InlineExecutor",
    "KeepEpochs",
]


class Captured(logging.Handler):
    """Keeps the library's log records of one operation (for the error message),
    instead of printing orbax's tracebacks to the terminal."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_lock = threading.Lock()
_active: list[Captured] = []  # the open captures (main thread and checkpoint writer)
_saved_propagate = True


@contextlib.contextmanager
def captured_logs() -> Iterator[Captured]:
    """Orbax's absl logger, captured for the block and restored after: no global change.
    Orbax logs a failed read or write as ERROR tracebacks (hundreds of lines); the caller
    reports one line instead. Records below the logger's effective level (WARNING unless
    the application says otherwise) are not even created. Captures may overlap across
    threads: the first one in stops propagation, the last one out restores it."""
    global _saved_propagate
    logger = logging.getLogger("absl")
    handler = Captured()
    with _lock:
        if not _active:
            _saved_propagate = logger.propagate
            logger.propagate = False
        _active.append(handler)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        with _lock:
            logger.removeHandler(handler)
            _active.remove(handler)
            if not _active:
                logger.propagate = _saved_propagate


class LoopClosedFilter:
    """sys.unraisablehook while a store is open: after a failed read, tensorstore's
    remaining reads complete on orbax's already-closed asyncio loop and each raises
    "Event loop is closed" in a callback, printed as a traceback (a hundred lines per
    damaged checkpoint). Those alone are dropped; anything else reaches the previous hook."""

    def __init__(self) -> None:
        self.previous = sys.unraisablehook

    def __call__(self, unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        self.previous(unraisable)

    def remove(self) -> None:
        if sys.unraisablehook is self:
            sys.unraisablehook = self.previous


# What tensorstore writes for the OS errors of a save it could not finish (its errors
# carry the OS error only in their text: "... No space left on device [os_error_code='28']").
_FULL_TEXT = ("No space left on device", "Disk quota exceeded")
_TOO_LARGE_TEXT = ("File too large", "os_error_code='27'")


class UnretrievedReadFilter(logging.Filter):
    """On the `asyncio` logger: orbax's reads of a damaged checkpoint that failed after the
    restore gave up are asyncio tasks and futures nobody awaits; when one is
    garbage-collected asyncio logs "Task (or Future) exception was never retrieved" with
    its traceback (dozens of lines, at a moment that depends on the collector), although
    the run has already said in one line that the checkpoint is unreadable; and a save
    that hit a full disk may leave write tasks that `asyncio.run()` reports as it shuts
    its loop down. Only those (orbax's coroutines, tensorstore's errors, a full disk) are
    dropped."""

    MARKERS = ("orbax", "tensorstore", "OCDBT database", *_FULL_TEXT, *_TOO_LARGE_TEXT)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        unretrieved = msg.startswith(
            (
                "Task exception was never",
                "Future exception was never",
                # asyncio.run() cancelling orbax's write tasks as it closes its loop after a
                # save failed (a full disk): the same failure, already one line.
                "unhandled exception during asyncio.run() shutdown",
            )
        )
        if not unretrieved:
            return True
        # The failure may be named only in the traceback (a write that hit a full disk).
        exc = record.exc_info[1] if record.exc_info else None
        text = msg + (f" {type(exc).__module__} {exc}" if exc is not None else "")
        return not any(m in text for m in self.MARKERS)


def drop_loop_closed_tracebacks() -> None:
    """Installs one LoopClosedFilter (and one UnretrievedReadFilter) for the rest of the
    process, when a run first opens a checkpoint store: tensorstore's late callbacks can
    fire after the store is closed, even at interpreter exit, so a filter removed at
    close lets some through."""
    if not isinstance(sys.unraisablehook, LoopClosedFilter):
        sys.unraisablehook = LoopClosedFilter()
    aio = logging.getLogger("asyncio")
    if not any(isinstance(f, UnretrievedReadFilter) for f in aio.filters):
        aio.addFilter(UnretrievedReadFilter())


def disk_problem(exc: BaseException) -> str | None:
    """ "full" for ENOSPC / EDQUOT, "too large" for EFBIG (a file-size limit: `ulimit -f`)
    anywhere in the chain, as an OSError or as tensorstore's ValueError; else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return "full"
        if isinstance(e, OSError) and e.errno == errno.EFBIG:
            return "too large"
        text = str(e)
        # Not RESOURCE_EXHAUSTED alone: a device out of memory says that too.
        if any(t in text for t in _FULL_TEXT):
            return "full"
        if any(t in text for t in _TOO_LARGE_TEXT):
            return "too large"
        e = e.__cause__ or e.__context__
    return None


def is_disk_full(exc: BaseException) -> bool:
    """A full disk or quota, or a file-size limit, anywhere in `exc`'s chain."""
    return disk_problem(exc) is not None


class InlineExecutor:
    """An executor that runs each call at once, on the caller's thread."""

    def submit(self, fn: Any, *args: Any) -> Future:
        done: Future = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as e:  # re-raised by `wait`, as a writer thread's would be
            done.set_exception(e)
        return done

    def shutdown(self, wait: bool = True) -> None:
        pass


class KeepEpochs:
    """An orbax preservation policy: keep the checkpoints of these epochs."""

    def __init__(self) -> None:
        self.epochs: set[int] = set()

    def should_preserve(self, checkpoints: Sequence[Any], *, context: Any) -> Sequence[bool]:
        return [c.step in self.epochs for c in checkpoints]
