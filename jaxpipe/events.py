"""How the run talks to whoever listens: the stage record, the result, the observer
interface. The run never imports the console, files or trackers; they subscribe here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "StageRecord",
    "LoadStage",
    "TransferStage",
    "PreprocessStage",
    "CompileStage",
    "TrainStage",
    "EvaluateStage",
    "CheckpointStage",
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
class StageRecord(ABC):
    """One pipeline stage: its `name`, what went in (`input`), what came out (`output`)
    and how long it took. The run records each stage as its numbers and shapes (the
    `*Stage` records below); `input` and `output` word them, here and only here, for
    summary.json's `stages` and the console alike."""

    name: ClassVar[str]
    seconds: float

    @property
    @abstractmethod
    def input(self) -> str: ...

    @property
    @abstractmethod
    def output(self) -> str: ...


def _rows(shape: tuple[int, ...]) -> str:
    """A split's shape in words: `N rows × M columns`, or `N rows` for a vector."""
    return f"{shape[0]} rows × {shape[1]} columns" if len(shape) == 2 else f"{shape[0]} rows"


def _batches(n: int) -> str:
    return f"{n} batch" if n == 1 else f"{n} batches"


@dataclass(frozen=True)
class LoadStage(StageRecord):
    """Rows read (`raw_rows` × `raw_columns` at `origin`) and split on the host; `train`:
    the training split's shape, `on_disk` when it streams from disk instead."""

    name: ClassVar[str] = "load"
    origin: str
    raw_rows: int
    raw_columns: int
    train: tuple[int, ...]
    on_disk: bool
    val_rows: int
    dropped_rows: int

    @property
    def input(self) -> str:
        return f"{self.origin}: {self.raw_rows} rows × {self.raw_columns} columns"

    @property
    def output(self) -> str:
        at = " (on disk, read as it streams)" if self.on_disk else ""
        dropped = self.dropped_rows
        return f"train {_rows(self.train)}{at} + validation {self.val_rows} rows (host)" + (
            f"; {dropped} rows with missing values dropped" if dropped else ""
        )


@dataclass(frozen=True)
class TransferStage(StageRecord):
    """`nbytes` of host arrays put on the devices (`where`) as `rows` rows; `chunk`: steps
    per streamed chunk of training rows (0: resident)."""

    name: ClassVar[str] = "transfer"
    nbytes: int
    rows: int
    where: str
    chunk: int

    @property
    def input(self) -> str:
        return f"{self.nbytes / 2**20:.2f} MiB host arrays"

    @property
    def output(self) -> str:
        streamed = f"; training rows streamed, {_batches(self.chunk)} a chunk" if self.chunk else ""
        return f"{self.rows} rows on {self.where}{streamed}"


@dataclass(frozen=True)
class PreprocessStage(StageRecord):
    """The training split (`train`: its shape) scaled by `normalize`."""

    name: ClassVar[str] = "preprocess"
    normalize: str
    train: tuple[int, ...]
    val_rows: int

    @property
    def input(self) -> str:
        return f"train {_rows(self.train)}"

    @property
    def output(self) -> str:
        scaled = f"{self.normalize}-scaled train {_rows(self.train)}"
        return f"{scaled} + validation {self.val_rows} rows"


@dataclass(frozen=True)
class CompileStage(StageRecord):
    """The MLP (`features` → `hidden` → `outputs`) and its epoch program: `steps` steps of
    `batch` rows, in chunks of `chunk` steps when streamed (0: resident)."""

    name: ClassVar[str] = "compile"
    features: int
    hidden: tuple[int, ...]
    outputs: int
    steps: int
    batch: int
    chunk: int

    @property
    def input(self) -> str:
        widths = " → ".join(map(str, self.hidden))
        return f"MLP {self.features} → {widths}{' → ' if self.hidden else ''}{self.outputs}"

    @property
    def output(self) -> str:
        chunks = f", in chunks of {self.chunk}" if self.chunk else ""
        return f"epoch program ({self.steps} steps of {self.batch}{chunks}) + evaluation"


@dataclass(frozen=True)
class TrainStage(StageRecord):
    """`steps` optimizer steps over `epochs` epochs of the training split (`train`: its
    shape), after the checkpoint of epoch `resumed_from` when resumed."""

    name: ClassVar[str] = "train"
    train: tuple[int, ...]
    steps: int
    epochs: int
    resumed_from: int | None

    @property
    def input(self) -> str:
        return f"train {_rows(self.train)}"

    @property
    def output(self) -> str:
        resumed = f" (resumed after epoch {self.resumed_from})" if self.resumed_from else ""
        return f"{self.steps} steps, {self.epochs} epochs{resumed}"


@dataclass(frozen=True)
class EvaluateStage(StageRecord):
    """The validation split (`val`: its shape) evaluated after each of `epochs` epochs."""

    name: ClassVar[str] = "evaluate"
    val: tuple[int, ...]
    regression: bool
    epochs: int

    @property
    def input(self) -> str:
        return f"validation {_rows(self.val)}"

    @property
    def output(self) -> str:
        return f"loss + {'rmse' if self.regression else 'accuracy'} × {self.epochs} epochs"


@dataclass(frozen=True)
class CheckpointStage(StageRecord):
    """Checkpoints every `every_epochs` epochs ("auto": every `every_minutes` minutes and
    at the end): `saved` made, `epochs` kept in `directory`."""

    name: ClassVar[str] = "checkpoint"
    every_epochs: int | str
    every_minutes: float
    saved: int
    directory: str
    epochs: tuple[int, ...]

    @property
    def input(self) -> str:
        every = (
            f"every {self.every_minutes:g} min and at the end"
            if self.every_epochs == "auto"
            else f"every {self.every_epochs} epoch(s)"
        )
        return f"state + scaler {every}"

    @property
    def output(self) -> str:
        return f"{self.saved} saved, {self.directory}/ holds epochs {list(self.epochs) or 'none'}"


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
