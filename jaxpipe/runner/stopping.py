"""When a run stops before its last epoch: early stopping on a plateau, or a SIGINT /
SIGTERM (caught by jaxpipe/signals.py) after the current epoch is checkpointed.
Host-side Python only; the loop consults these once per epoch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from jaxpipe.errors import SpecError
from jaxpipe.signals import SignalCatcher
from jaxpipe.spec.sections import (
    OPTIONAL_METRICS,
    CheckpointSpec,
    EarlyStoppingSpec,
    TrainingSpec,
    metric_mode,
)
from jaxpipe.spec.sweep import SweepSpec

__all__ = [
    "EarlyStopper",
    "check_metric_names",
    "requested_metrics",
    "outcome",
]


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


def _watched(
    training: TrainingSpec, checkpoint: CheckpointSpec, sweep: SweepSpec | None
) -> list[tuple[str, str]]:
    """(key, metric) of each metric the spec watches: early stopping, the best
    checkpoint, the sweep's ranking."""
    wanted = []
    if training.early_stopping is not None:
        wanted.append(("training.early_stopping.metric", training.early_stopping.metric))
    if checkpoint.best_metric is not None:
        wanted.append(("checkpoint.best_metric", checkpoint.best_metric))
    if sweep is not None:  # the metric that ranks the trials
        wanted.append(("sweep.metric", sweep.metric))
    return wanted


def requested_metrics(
    task: str, training: TrainingSpec, checkpoint: CheckpointSpec, sweep: SweepSpec | None
) -> tuple[str, ...]:
    """The optional validation metrics (spec.sections.OPTIONAL_METRICS) a run records:
    those `[training] metrics` lists and any watched one, in the table's order. Empty
    for the default run, which then fetches no probabilities. `task`: `[model] task`."""
    if task != "classification":
        return ()
    asked = set(training.metrics) | {m for _, m in _watched(training, checkpoint, sweep)}
    return tuple(m for m in OPTIONAL_METRICS["classification"] if m in asked)


def check_metric_names(
    training: TrainingSpec,
    checkpoint: CheckpointSpec,
    sweep: SweepSpec | None,
    names: list[str],
) -> None:
    """The metrics that early stopping, checkpointing and a sweep's ranking watch, and
    those `[training] metrics` asks for, must be among `names`, the columns metrics.jsonl
    can have for the task; checked before any work."""
    listed = [(f"training.metrics[{i}]", m) for i, m in enumerate(training.metrics)]
    for key, name in _watched(training, checkpoint, sweep) + listed:
        if name not in names:
            raise SpecError(
                f"unknown metric {name!r}; this run can record {', '.join(names)}", key=key
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
