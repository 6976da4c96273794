"""When a run stops before its last epoch: early stopping on a plateau, and SIGINT /
SIGTERM caught so that the current epoch finishes and is checkpointed. Host-side Python
only; the loop consults these once per epoch."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from jaxpipe import settings
from jaxpipe.errors import RunInterrupted, SpecError
from jaxpipe.spec.experiment import Spec
from jaxpipe.spec.sections import EarlyStoppingSpec, metric_mode

__all__ = [
    "EarlyStopper",
    "SignalCatcher",
    "catch_signals",
    "check_metric_names",
    "outcome",
    "fault_hook",
    "SIGNAL_EXIT",
]

# Exit status of a run stopped by a signal: 128 + the signal number, as shells report it.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class EarlyStopper:
    """Tracks the best value of one metric; `update` once per epoch.

    An epoch improves on the best when it is better by more than `min_delta`; after
    `patience` epochs without improvement the run should stop. The bookkeeping (`best`,
    `best_epoch`, `wait`) round-trips through `to_dict` / `from_dict` for checkpoints.
    """

    metric: str
    mode: str  # "min" or "max"
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0

    @classmethod
    def from_spec(cls, spec: EarlyStoppingSpec, saved: dict[str, Any] | None = None):
        mode = metric_mode(spec.metric, spec.mode, "training.early_stopping.mode")
        stopper = cls(spec.metric, mode, spec.patience, spec.min_delta)
        if saved and saved.get("metric") == spec.metric and saved.get("mode") == mode:
            stopper.best, stopper.best_epoch = saved["best"], saved["best_epoch"]
            stopper.wait = saved["wait"]
        return stopper

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def update(self, epoch: int, row: dict[str, Any]) -> bool:
        """Records epoch `epoch`'s metrics; True if it is the new best."""
        value = float(row[self.metric])
        if self.best is None:
            better = math.isfinite(value)
        elif self.mode == "min":
            better = value < self.best - self.min_delta
        else:
            better = value > self.best + self.min_delta
        if better:
            self.best, self.best_epoch, self.wait = value, epoch, 0
        else:
            self.wait += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.wait >= self.patience

    def reason(self) -> str:
        best = "none" if self.best is None else f"{self.best:.6g} at epoch {self.best_epoch}"
        return (
            f"early stopping: {self.metric} did not improve by more than {self.min_delta:g} "
            f"for {self.wait} epochs (best {best})"
        )


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


def check_metric_names(spec: Spec, names: list[str]) -> None:
    """The metrics that early stopping and checkpointing watch must be among `names`, the
    columns of metrics.jsonl; checked before any work."""
    wanted = []
    if spec.training.early_stopping is not None:
        wanted.append(("training.early_stopping.metric", spec.training.early_stopping.metric))
    if spec.checkpoint.best_metric is not None:
        wanted.append(("checkpoint.best_metric", spec.checkpoint.best_metric))
    for key, name in wanted:
        if name not in names:
            raise SpecError(
                f"unknown metric {name!r}; this run records {', '.join(names)}", key=key
            )


def outcome(
    diverged: dict[str, Any] | None,
    signals: SignalCatcher,
    stopper: EarlyStopper | None,
    epoch: int,
    epochs: int,
    requested: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """The run's status ("completed", "diverged", "interrupted") and why it stopped after
    `epoch` of `epochs` epochs. A signal that came during the last epoch interrupts
    nothing: the run is complete. `requested`: an observer's reason to stop there."""
    if diverged:
        what = "loss" if diverged["metric"] == "train_loss" else "validation loss"
        reason = f"{what} is {diverged['value']} at epoch {diverged['epoch']}"
        return "diverged", {"epoch": diverged["epoch"], "reason": reason}
    if stopper is not None and stopper.should_stop:
        return "completed", {"epoch": epoch, "reason": stopper.reason()}
    if requested and epoch < epochs:
        return "completed", {"epoch": epoch, "reason": f"callback: {requested}"}
    if epoch >= epochs:
        return "completed", {"epoch": epoch, "reason": f"all {epochs} epochs run"}
    if signals.caught:
        return "interrupted", {"epoch": epoch, "reason": f"{signals.name} received"}
    raise AssertionError(f"the loop ended after epoch {epoch} of {epochs} without a reason")


def fault_hook(point: str, epoch: int) -> None:
    """Fault injection for the tests: JAXPIPE_TEST_HOOK=<kill|term|int>-<point>:<epoch>
    sends this process SIGKILL / SIGTERM / SIGINT at `point` ("epoch": the epoch has run,
    nothing of it is written; "save": its checkpoint is being written) of that epoch;
    slow-<point>:<seconds> sleeps there at every epoch (so a test can signal the process
    at a time of its choosing within a run of tiny epochs)."""
    hook = settings.test_hook()
    if not hook:
        return
    what, _, at = hook.partition(":")
    action, _, where = what.partition("-")
    if where != point:
        return
    if action == "slow":
        time.sleep(float(at))
    elif at == str(epoch):
        sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}[action]
        os.kill(os.getpid(), sig)
