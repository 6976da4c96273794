"""Cross-validation (`[data] folds = K`): the K folds (data/folds.py) trained as one
vmapped program, as a sweep's trials are (train.py, trials.py): each fold a trial with
its own rows, its own scaler fitted on its own training part, and the spec's seed, so
fold k computes what a single run on fold k's split computes. The directory:

    DIR/spec.toml       the spec
    DIR/folds/<k>/      metrics.jsonl, curves.png and summary.json of fold k
    DIR/metrics.jsonl   the folds' mean per epoch (the epochs every fold reached)
    DIR/summary.json    "kind": "cv" and "cv": {"folds", "metrics" (each fold's final
                        row), "mean", "std"}
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxpipe.core.aot import enable_compilation_cache
from jaxpipe.core.evaluation import metric_names
from jaxpipe.data.encoding import Columns
from jaxpipe.data.folds import load_folds
from jaxpipe.data.load import LoadRequest
from jaxpipe.errors import DivergedError, JaxpipeError, RunInterrupted, SpecError
from jaxpipe.events import Observer
from jaxpipe.files import atomic_write
from jaxpipe.runner.outdir import prepare_out_dir, write_json, write_lines
from jaxpipe.runner.stopping import check_metric_names
from jaxpipe.runner.summary import device_info
from jaxpipe.signals import SIGNAL_EXIT, SignalCatcher, catch_signals
from jaxpipe.spec.experiment import Spec, dump_spec
from jaxpipe.spec.sections import ExperimentSpec
from jaxpipe.sweep.train import GroupRun, TrialRun, train_group

__all__ = ["CVResult", "run_cv", "cv_record"]

# Row keys that are not metrics: the epoch, its time, a note.
_NOT_METRICS = ("epoch", "epoch_seconds", "note")


@dataclass
class CVResult:
    """What `run_cv` returns: the run directory, each fold (a TrialRun: its history,
    status, kept parameters, fitted preprocessing), the `cv` record and summary.json."""

    run_dir: str
    folds: list[TrialRun]
    cv: dict[str, Any]
    summary: dict[str, Any]


def _metrics(row: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k not in _NOT_METRICS and isinstance(v, float)}


def _kept_row(t: TrialRun) -> dict[str, Any] | None:
    """The row of the epoch whose parameters the fold keeps (the last; the best with
    early_stopping.restore_best)."""
    if not t.history:
        return None
    return next((r for r in t.history if r["epoch"] == t.params_epoch), t.history[-1])


def cv_record(folds: Sequence[TrialRun]) -> dict[str, Any]:
    """summary.json's `cv`: each fold's final metrics (its kept epoch's row), and their
    mean and standard deviation over the folds (population, ddof = 0, as numpy's and
    scikit-learn's `scores.std()`), over the folds that finished."""
    rows = [_kept_row(t) for t in folds]
    done = [_metrics(r) for r, t in zip(rows, folds, strict=True) if r and t.status == "completed"]
    names = [k for k in (done[0] if done else {}) if all(k in d for d in done)]
    return {
        "folds": len(folds),
        "metrics": [None if r is None else _metrics(r) | {"epoch": r["epoch"]} for r in rows],
        "status": [t.status for t in folds],
        "mean": {k: float(np.mean([d[k] for d in done])) for k in names},
        "std": {k: float(np.std([d[k] for d in done])) for k in names},
    }


def _mean_history(folds: Sequence[TrialRun]) -> list[dict[str, Any]]:
    """metrics.jsonl of the directory: per epoch every fold reached, the folds' mean."""
    reached = min((len(t.history) for t in folds), default=0)
    out = []
    for e in range(reached):
        rows = [t.history[e] for t in folds]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in _metrics(rows[0])}
        out.append({"epoch": rows[0]["epoch"], **mean, "epoch_seconds": rows[0]["epoch_seconds"]})
    return out


def _fold_summary(t: TrialRun, k: int, group: GroupRun) -> dict[str, Any]:
    ds = t.dataset
    return {
        "status": t.status,
        "kind": "cv-fold",
        "fold": k,
        "final": _kept_row(t),
        "stop": t.stop,
        "params_epoch": t.params_epoch,
        "diverged": t.diverged and t.diverged | {"value": str(t.diverged["value"])},
        "rows": {"train": int(ds.x_train.shape[0]), "validation": int(ds.x_val.shape[0])},
        "scaler": t.prep.scaler_json(),
        "cv": {"folds_in_program": len(group.trials), "devices": group.devices},
    }


def run_cv(
    spec: Spec,
    out: str | None = None,
    observer: Observer | None = None,
    *,
    columns: Columns | None = None,
    origin: str = "<memory>",
) -> CVResult:
    """Cross-validates `spec` (`[data] folds = K`) and writes its directory (see the module
    docstring). `columns`: rows in memory, as load_dataset takes them. A bad fold count
    (more than the rows of a class) is a DataError before any compile; SIGINT / SIGTERM
    stop after the epoch (summary.json "interrupted", RunInterrupted); every fold
    diverged: DivergedError."""
    with catch_signals() as signals, contextlib.ExitStack() as stack:
        return _cv(spec, out, observer or Observer(), signals, stack, columns, origin)


def _cv(spec: Spec, out, obs: Observer, signals: SignalCatcher, stack, columns, origin):
    t0 = time.perf_counter()
    if spec.data.folds is None:
        raise JaxpipeError("run_cv needs a spec with [data] folds = K (K ≥ 2)")
    try:  # a metric this task records (val_rmse: regression only)
        check_metric_names(
            spec.training,
            spec.checkpoint,
            spec.sweep,
            metric_names(spec.model.task == "regression"),
        )
    except SpecError as e:
        raise spec.origin.place(e) from None
    datasets = load_folds(LoadRequest.of(spec), columns, origin)
    enable_compilation_cache(spec.runtime)
    signals.check("while loading the folds")
    run_dir = prepare_out_dir(spec.experiment.name, out, stack=stack, sweep=True)
    atomic_write(os.path.join(run_dir, "spec.toml"), dump_spec(spec.resolved()))
    folds = [TrialRun(k, spec, {"data.fold": k}, dataset=ds) for k, ds in enumerate(datasets)]
    k = len(folds)
    obs.on_start(spec, run_dir)
    held = datasets[0].x_val.shape[0]
    obs.on_note(f"Cross-validation: {k} folds of {held} held-out rows in one program → {run_dir}")

    def on_epoch(epoch: int, epochs: int, active: Sequence[TrialRun]) -> None:
        obs.on_note(f"  epoch {epoch}/{epochs}: {len(active)} of {k} folds still training")

    _, runs = train_group(folds, set(), on_epoch, None, signals)
    if signals.caught and not any(t.history for g in runs for t in g.trials):
        signals.check("before the first epoch of the cross-validation")  # nothing to write
    for run in runs:
        for t in run.trials:
            fold_dir = os.path.join(run_dir, "folds", str(t.index))
            os.makedirs(fold_dir, exist_ok=True)
            write_lines(os.path.join(fold_dir, "metrics.jsonl"), t.history)
            write_json(os.path.join(fold_dir, "summary.json"), _fold_summary(t, t.index, run))
            obs.on_trial(t.index, t.values, t.history)
            if t.history:
                obs.on_trial_artifacts(fold_dir, t.history)
    return _finish(
        spec.experiment,
        spec.model.task,
        run_dir,
        folds,
        runs,
        time.perf_counter() - t0,
        obs,
        signals,
    )


def _finish(
    experiment: ExperimentSpec, task: str, run_dir, folds, runs, seconds, obs: Observer, signals
):
    """The folds' end: mean history, summary.json (`task`: `[model] task`)."""
    ran = {t.index for g in runs for t in g.trials}
    for t in folds:
        if t.index not in ran:  # its chunk never started: a signal came first
            t.status, t.stop = "interrupted", {"epoch": 0, "reason": f"{signals.name} received"}
    cv = cv_record(folds)
    history = _mean_history(folds)
    write_lines(os.path.join(run_dir, "metrics.jsonl"), history)
    statuses = {t.status for t in folds}
    status = (
        "interrupted"
        if "interrupted" in statuses
        else "diverged"
        if statuses == {"diverged"}
        else "completed"
    )
    prep = folds[0].prep
    summary = {
        "status": status,
        "kind": "cv",
        "name": experiment.name,
        "seed": experiment.seed,
        "task": task,
        "classes": list(prep.classes) if prep else [],
        "features": list(prep.features) if prep else [],
        "final": history[-1] if history else None,
        "cv": cv,
        "programs": [g.record("folds") for g in runs],
        "seconds": seconds,
        "device": device_info(),
    }
    write_json(os.path.join(run_dir, "summary.json"), summary)
    if history:
        obs.on_artifacts(run_dir, history)  # curves.png of the folds' mean
    obs.on_cv(run_dir, cv)
    if status == "interrupted":
        raise RunInterrupted(
            f"interrupted by {signals.name}: the folds' epochs so far are written to "
            f"{run_dir} (summary.json status interrupted); run it again with another --out",
            SIGNAL_EXIT[signals.signum],
        )
    if status == "diverged":
        raise DivergedError(
            f"every fold diverged (see {run_dir}/summary.json); lower the learning rate "
            "or check the data"
        )
    return CVResult(run_dir, folds, cv, summary)
