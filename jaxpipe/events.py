"""How the run talks to whoever listens: the stage record, the result, the observer
interface. The run never imports the console, files or trackers; they subscribe here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "StageRecord",
    "RunResult",
    "Observer",
    "Observers",
    "OBSERVER_EVENTS",
    "StopTraining",
]


class StopTraining(Exception):  # noqa: N818 - Keras's name for the same request
    """Raised by an observer's `on_epoch_end` (or `on_epoch`) to end training after the
    epoch just run; the message is the stop reason summary.json records."""


@dataclass(frozen=True)
class StageRecord:
    """One pipeline stage: what went in, what came out, how long it took."""

    name: str
    input: str
    output: str
    seconds: float


@dataclass
class RunResult:
    """What `jaxpipe.runner.shell` returns."""

    history: list[dict[str, Any]]
    final: dict[str, Any]
    params: Any
    run_dir: str
    summary: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)
    preprocessing: Any = None  # the fitted fitted.Preprocessing (host arrays)


class Observer:
    """Receives the run's events; the default ignores them (see report.ConsoleReporter).

    Order: on_start, on_plan, on_stage for each stage as it ends (load, transfer,
    preprocess, compile; then train, evaluate, checkpoint after the epochs), on_model,
    on_epoch per epoch, on_note any time, on_artifacts, on_finish. A sweep sends
    on_start, on_trial and on_trial_artifacts per trial, on_artifacts (its best trial's),
    on_sweep (the leaderboard) and on_finish (its best trial's). A cross-validation
    sends on_start, on_trial and on_trial_artifacts per fold, on_artifacts (the folds'
    mean) and on_cv."""

    def on_start(self, spec: Any, run_dir: str) -> None: ...
    def on_stage(self, stage: StageRecord) -> None: ...
    def on_plan(self, plan: Any) -> None: ...
    def on_model(self, params: Any) -> None: ...
    def on_epoch(self, row: dict[str, Any], epochs: int) -> None: ...

    def on_epoch_end(self, row: dict[str, Any], epochs: int) -> bool | str | None:
        """After each epoch (metrics `row`, as metrics.jsonl's), before its checkpoint:
        return True or a reason (str), or raise `StopTraining(reason)`, to end training
        there, as Keras's `model.stop_training`; the run then completes normally with
        `stop.reason` saying so. None / False: go on."""
        return None

    def on_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None: ...
    def on_finish(self, result: RunResult) -> None: ...
    def on_note(self, text: str) -> None: ...
    def on_progress(self, step: int) -> None: ...

    def progress_interval(self, steps_per_epoch: int) -> int | None:
        """Steps between on_progress calls from inside the compiled epoch (a live bar);
        None for none, which keeps the epoch program free of host callbacks."""
        return None

    def on_trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """A sweep's trial `index` ended (its run directory is `DIR/trials/<index>/`)."""

    def on_trial_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None:
        """A sweep trial's run directory is written; pictures of its `history` may go in."""

    def on_sweep(
        self, run_dir: str, table: list[dict[str, Any]], keys: list[str], metric: str
    ) -> None:
        """A sweep ended: its leaderboard `table` (best first), the swept `keys` and the
        `metric` ranked by; DIR/summary.json is written."""

    def on_cv(self, run_dir: str, cv: dict[str, Any]) -> None:
        """A cross-validation ended: summary.json's `cv` record ({"folds", "metrics" per
        fold, "mean", "std"}); DIR/summary.json is written. It is the last event of a
        cross-validation (no on_finish: there is no one model)."""


OBSERVER_EVENTS = tuple(n for n in vars(Observer) if n.startswith("on_"))


class Observers(Observer):
    """Fans every event out to several listeners, in order. A listener need not subclass
    Observer: any object with some of the `on_*` methods will do (a notebook callback)."""

    def __init__(self, listeners: Iterable[Any]):
        self.listeners = [x for x in listeners if x is not None]
        for name in OBSERVER_EVENTS:
            if name != "on_epoch_end":  # it answers: see below
                setattr(self, name, self._fan_out(name))

    def on_epoch_end(self, row: dict[str, Any], epochs: int) -> str | None:
        """The first listener's request to stop (its reason), asking every listener."""
        reason = None
        for x in self.listeners:
            ask = getattr(x, "on_epoch_end", None)
            if not callable(ask):
                continue
            try:
                answer = ask(row, epochs)
            except StopTraining as e:
                answer = str(e) or True
            if answer and reason is None:
                name = type(x).__name__
                reason = answer if isinstance(answer, str) else f"{name}.on_epoch_end asked"
        return reason

    def progress_interval(self, steps_per_epoch: int) -> int | None:
        """The most frequent interval any listener asks for."""
        asks = [
            x.progress_interval(steps_per_epoch)
            for x in self.listeners
            if callable(getattr(x, "progress_interval", None))
        ]
        return min((a for a in asks if a), default=None)

    def _fan_out(self, name: str):
        targets = [getattr(x, name) for x in self.listeners if callable(getattr(x, name, None))]

        def call(*args: Any) -> None:
            stop = None
            for target in targets:
                try:
                    target(*args)
                except StopTraining as e:  # the others still hear of the epoch
                    stop = stop or e
            if stop is not None:
                raise stop

        return call
