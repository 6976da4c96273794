"""Stage 6, train: the imperative shell around the compiled epoch. One compiled epoch
at a time, metrics fetched once per epoch, NaN checks, early stopping, checkpoints and
signals, all outside `jit`. Everything jitted lives in `step.py` and `programs.py`."""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

import jax
import numpy as np

from jaxpipe.core.evaluation import epoch_scores
from jaxpipe.core.metrics import epoch_row, finalize
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.events import Observer, StopTraining
from jaxpipe.files import append_line
from jaxpipe.runner import checkpoint as ckpt
from jaxpipe.runner.cadence import make_cadence
from jaxpipe.runner.place import Placed
from jaxpipe.runner.programs import Programs
from jaxpipe.runner.resume import RunProgress, checkpoint_arrays
from jaxpipe.signals import SignalCatcher, catch_signals
from jaxpipe.spec.sections import CheckpointSpec, EarlyStoppingSpec

# Observer, RunResult and StageRecord live in events.py; re-exported for older imports.
__all__ = ["TrainTimes", "train"]


@dataclass
class TrainTimes:
    """Seconds spent training, evaluating and waiting for checkpoints; saves made."""

    train: float = 0.0
    evaluate: float = 0.0
    save: float = 0.0
    saves: int = 0


# The longest the loop waits for the GIL after each device wait while another thread
# (orbax's or matplotlib's import, started to overlap the compile) holds it. CPython's
# default, 5 ms, is a quarter of the seed epoch, paid two or three times an epoch.
_HANDOFF_S = 1e-4


@contextlib.contextmanager
def _prompt_handoffs() -> Iterator[None]:
    """CPython's thread switch interval at most _HANDOFF_S while the epochs run, as it was
    after. A thread holding the GIL is asked to drop it only when another waits for it, so
    a short interval costs nothing while the loop alone runs Python."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, _HANDOFF_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _save(
    store, run: RunProgress, state, prep: Preprocessing, meta_base, row, times, *, write, copy
) -> None:
    """Checkpoints this epoch: a snapshot in memory, written now when `write`."""
    meta = meta_base | {
        "epoch": run.epoch,
        "history": run.history,
        "has_best_params": run.best_params is not None,
    }
    if run.stopper is not None:
        meta["early_stopping"] = run.stopper.to_dict()
    t0 = time.perf_counter()
    arrays = checkpoint_arrays(state, prep.scaler, prep.target, run.best_params)
    store.snapshot(run.epoch, arrays, meta, row, copy=copy)  # no copy: nothing donated
    if write:
        store.flush(every=False)
        run.saved = run.epoch
        times.saves += 1
    times.save += time.perf_counter() - t0


def _epoch(programs: Programs, placed: Placed, prep: Preprocessing, state, epoch: int, times):
    """One epoch and its validation: (state, metrics row, None), or a divergence record
    when a loss is not finite."""
    x_tr, y_tr, x_va, y_va = placed.arrays
    t0 = time.perf_counter()
    # A host scalar: jnp.asarray would compile a conversion program on its first call.
    state, train_sums = programs.epoch(state, x_tr, y_tr, np.int32(epoch))
    train_metrics = finalize(train_sums)  # the once-per-epoch host sync
    if not math.isfinite(train_metrics["loss"]):
        return state, None, {"epoch": epoch, "metric": "train_loss", "value": train_metrics["loss"]}
    t1 = time.perf_counter()
    val_sums, scores = programs.evaluate(state.params, x_va, y_va), None
    if programs.scored:  # the optional metrics, scored on the host from every row
        val_sums, probs = val_sums
        scores = epoch_scores(jax.device_get(probs), programs.y_val, programs.scored)
    t2 = time.perf_counter()
    times.train, times.evaluate = times.train + t1 - t0, times.evaluate + t2 - t1
    scale = prep.target_stats[1] if prep.regression else None
    row = epoch_row(epoch, train_metrics, val_sums, scale, scores)
    val_loss = row["val_loss"]
    if not math.isfinite(val_loss):
        return state, None, {"epoch": epoch, "metric": "val_loss", "value": val_loss}
    row["epoch_seconds"] = t2 - t0
    return state, row, None


def _listen(observer: Observer, row: dict[str, Any], epochs: int) -> str | None:
    """Asks the observers whether to stop after this epoch (`on_epoch_end`, before its
    checkpoint is decided); returns a listener's request (a reason), if any."""
    try:
        answer = observer.on_epoch_end(row, epochs)
    except StopTraining as e:
        return str(e) or "StopTraining raised"
    if not answer:
        return None
    return answer if isinstance(answer, str) else "on_epoch_end asked"


def _record(
    run: RunProgress, row: dict[str, Any], epoch: int, metrics_file: TextIO, restore_best: bool
) -> None:
    """An epoch that trained: its row in the history and metrics.jsonl, the early
    stopper told, and the best parameters copied to host memory when it improved."""
    run.history.append(row)
    run.epoch = epoch
    append_line(metrics_file, metrics_file.name, json.dumps(row) + "\n")
    if run.stopper is not None and run.stopper.update(epoch, row) and restore_best:
        run.best_params = ckpt.host_copy(run.state.params)  # survives donation, off device


def train(
    programs: Programs,
    placed: Placed,
    prep: Preprocessing,
    run: RunProgress,
    *,
    epochs: int,
    checkpoint: CheckpointSpec,
    early_stopping: EarlyStoppingSpec | None,
    store: ckpt.CheckpointStore,
    meta_base: dict[str, Any],
    metrics_file: TextIO,
    observer: Observer,
) -> tuple[RunProgress, SignalCatcher, TrainTimes]:
    """Runs epochs `run.epoch + 1 … epochs` from `run.state`, appending each epoch's row
    to `run.history` and `metrics_file`, checkpointing as `checkpoint` says (every N
    epochs, or by wall time; and at the last, an early stop or a signal). Stops at a non-finite loss (recorded in
    `run.diverged`; that state is never saved), an early stop, or SIGINT / SIGTERM."""
    times = TrainTimes()
    state = run.state
    restore_best = early_stopping is not None and early_stopping.restore_best
    cadence = make_cadence(checkpoint.every_epochs, checkpoint.every_minutes)
    copy = programs.donates  # a donated state is gone after the next epoch
    if run.best_params is not None:  # restored onto the device: kept in host memory
        run.best_params = ckpt.host_copy(run.best_params)
    last_save = time.monotonic()
    with catch_signals() as signals, _prompt_handoffs():
        for epoch in range(run.epoch + 1, epochs + 1):
            if run.stopper is not None and run.stopper.should_stop:
                break  # a resumed run that had already stopped early
            state, row, diverged = _epoch(programs, placed, prep, state, epoch, times)
            run.state = state  # the only reference to the new state: none to an old one
            if diverged:
                run.diverged = diverged
                break  # the state is not saved: no NaN parameters reach a checkpoint
            _record(run, row, epoch, metrics_file, restore_best)
            run.requested = _listen(observer, row, epochs)
            stopping = (run.stopper is not None and run.stopper.should_stop) or bool(run.requested)
            due = cadence.due(epoch, time.monotonic() - last_save)
            wrote = due or epoch == epochs or stopping or signals.caught
            if wrote:
                _save(store, run, state, prep, meta_base, row, times, write=True, copy=copy)
                last_save = time.monotonic()
            elif cadence.every_epochs is None:  # "auto": the newest epochs in memory
                _save(store, run, state, prep, meta_base, row, times, write=False, copy=copy)
            observer.on_epoch(row, epochs)  # the epoch as saved (snapshots in place)
            if signals.caught and not wrote:  # it came while the observers ran: save it
                _save(store, run, state, prep, meta_base, row, times, write=True, copy=copy)
            if stopping or signals.caught:
                break
    if run.diverged:  # the last good epochs kept in memory, for a look or a restart
        t0 = time.perf_counter()
        store.flush(every=True)
        times.save += time.perf_counter() - t0
    # The last save is still being written: run.py waits for it (store.wait) after the
    # model and the PNG are written, before summary.json.
    run.state = state
    return run, signals, times
