"""Stage 8, save: summary.json, the record of what ran (status, metrics, stages, the
fitted preprocessing, the plan and what executed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxpipe.data.diskrows import DiskLabels, DiskRows
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.data.load import Dataset
from jaxpipe.events import StageRecord
from jaxpipe.rundir import CHECKPOINTS
from jaxpipe.runner import checkpoint as ckpt
from jaxpipe.runner.plan import RunPlan
from jaxpipe.runner.programs import Programs
from jaxpipe.runner.resume import RunProgress
from jaxpipe.spec.sections import ExperimentSpec

__all__ = ["Finished", "build_summary", "device_info", "regression_summary"]


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
    }


def regression_summary(ds: Dataset, target: tuple[float, float] | None) -> dict[str, Any]:
    """The predict-the-training-mean baseline on the validation split, in the target's
    units (float64 on the host, so it is exact), for comparison with val_rmse."""
    if target is None:
        return {}
    on_disk = isinstance(ds.y_train, DiskLabels)  # its mean came from the one pass
    mean = target[0] if on_disk else float(np.mean(ds.y_train.astype(np.float64)))
    rmse = float(np.sqrt(np.mean(np.square(ds.y_val.astype(np.float64) - mean))))
    return {
        "baseline": {"predicts": "the training-split mean", "val_rmse": rmse},
        "target": {"column": ds.label, "mean": target[0], "scale": target[1]},
    }


def _rows(ds: Dataset) -> dict[str, int]:
    return {
        "train": int(ds.x_train.shape[0]),
        "validation": int(ds.x_val.shape[0]),
        "dropped_missing": ds.dropped_rows,
    }


def data_record(ds: Dataset) -> dict[str, Any]:
    """summary.json's `data`: whether the training split streamed from disk, the host
    budget, and the bytes each process read for training (a collective: every process
    of a multi-process run calls it)."""
    x = ds.x_train
    if not isinstance(x, DiskRows):
        return {"streamed_from_disk": False}
    mine = np.array([x.bytes_read], np.int64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        mine = multihost_utils.process_allgather(mine, tiled=True)
    return {
        "streamed_from_disk": True,
        "files": len(x.rs.fs.files),
        "row_groups": len(x.rs.fs.groups),
        "host_memory_bytes": x.rs.budget,
        "bytes_read_per_process": [int(b) for b in np.ravel(mine)],
    }


@dataclass(frozen=True)
class Finished:
    """How the epochs ended: status ("completed", "diverged", "interrupted"), why, and
    the epoch whose parameters the run keeps."""

    status: str
    stop: dict[str, Any]
    params_epoch: int
    best_params: bool = False  # the kept parameters are the best epoch's, not the last


def _best_info(store: ckpt.CheckpointStore, metric: str | None) -> dict[str, Any] | None:
    if metric is None or store.best is None:
        return None
    return {"metric": metric, "value": store.best[0], "epoch": store.best[1]}


def _class_weights(prep: Preprocessing) -> dict[str, Any]:
    """summary.json's `class_weights` (class name -> weight), when the loss was weighted."""
    if prep.class_weights is None:
        return {}
    return {"class_weights": dict(zip(prep.classes, prep.class_weights))}


def build_summary(
    experiment: ExperimentSpec,
    ds: Dataset,
    prep: Preprocessing,
    programs: Programs,
    run: RunProgress,
    finished: Finished,
    *,
    store: ckpt.CheckpointStore,
    stages: list[StageRecord],
    rp: RunPlan,
    plan: dict[str, Any],
    cache_dir: str | None,
    best_metric: str | None,
    restore_best: bool,
) -> dict[str, Any]:
    """summary.json's content (see README "The run directory"); `best_metric` and
    `restore_best` are `[checkpoint]`'s and `[training.early_stopping]`'s."""
    summary = {
        "status": finished.status,
        "name": experiment.name,
        "seed": experiment.seed,
        "final": run.history[-1] if run.history else None,
        "stop": finished.stop,
        "params_epoch": finished.params_epoch,
        "resumed_from": run.resumed_from,
        "checkpoints": {
            "directory": CHECKPOINTS,
            "epochs": store.epochs(),
            "best": _best_info(store, best_metric),
        },
        "stages": [
            {"name": s.name, "input": s.input, "output": s.output, "seconds": s.seconds}
            for s in stages
        ],
        "compile_seconds": programs.seconds,
        "xla_options": programs.options,
        "chunk_steps": rp.chunk or None,
        "compilation_cache": cache_dir,
        "task": prep.task,
        "classes": list(prep.classes),
        "features": list(prep.features),
        "rows": _rows(ds),
        "data": data_record(ds),
        "scaler": prep.scaler_json(),
        **_class_weights(prep),
        **regression_summary(ds, prep.target_stats),
        "device": device_info(),
        "plan": plan,
        "jax_version": jax.__version__,
    }
    if run.stopper is not None:
        best = next((r for r in run.history if r["epoch"] == run.stopper.best_epoch), None)
        summary["early_stopping"] = run.stopper.to_dict() | {
            "restore_best": restore_best,
            "best_row": best,
        }
    if run.diverged:
        summary["diverged"] = run.diverged | {"value": str(run.diverged["value"])}
    return summary
