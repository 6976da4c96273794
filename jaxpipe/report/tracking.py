"""Experiment tracking: observers that send a run (or each trial of a sweep) to
TensorBoard event files or to MLflow, as the spec's `[logging]` says. Each tracker is
an optional extra, imported only when asked for; a missing one is a clear exit-2 error.

TensorBoard: DIR/tensorboard/ (a sweep: DIR/tensorboard/trial-<k>/), scalar tags named
as metrics.jsonl's columns, step = epoch; hyperparameters through the HParams plugin.
Written with tensorboard's own TF-free event writer, so one package (`tensorboard`)
both writes and reads (`tensorboard --logdir DIR/tensorboard`).

MLflow: a run per run (a sweep: a parent run and a nested run per trial) in the
experiment named by `experiment.name`: the spec's keys as params, every metrics.jsonl
column per epoch, summary.json and curves.png as artifacts."""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from typing import Any

from jaxpipe import settings
from jaxpipe.errors import JaxpipeError
from jaxpipe.events import Observer, RunResult
from jaxpipe.spec.schema import to_dict

__all__ = ["tracking_observers", "TensorBoardObserver", "MlflowObserver", "flat_params"]


def _require(module: str, extra: str, key: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise JaxpipeError(
            f"[logging] {key} needs the optional {extra} package: "
            f"pip install 'jaxpipe[{extra}]' (or remove {key} from [logging])"
        ) from None


def flat_params(spec: Any) -> dict[str, Any]:
    """The spec as dotted keys with scalar values (lists as text): tracker params."""
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(v, key)
            elif isinstance(v, (bool, int, float, str)):
                out[key] = v
            else:
                out[key] = json.dumps(v)

    walk({k: v for k, v in to_dict(spec).items() if k not in ("sweep", "logging")}, "")
    return out


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in row.items()
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class _EventLog:
    """One TensorBoard run directory: scalars and the HParams session of one run."""

    def __init__(self, logdir: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        os.makedirs(logdir, exist_ok=True)
        self.writer = EventFileWriter(logdir)

    def summary(self, pb: Any, step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=pb))

    def scalars(self, row: dict[str, Any]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=v) for k, v in _scalars(row).items()]
        self.summary(Summary(value=values), int(row["epoch"]))

    def hparams(self, params: dict[str, Any], metrics: list[str]) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        self.summary(
            hp.hparams_config_pb([hp.HParam(k) for k in params], [hp.Metric(m) for m in metrics])
        )
        self.summary(hp.hparams_pb(params))

    def close(self) -> None:
        self.writer.close()


class TensorBoardObserver(Observer):
    """Writes DIR/tensorboard/ as the run goes; a sweep's trials as trial-<k>/."""

    def __init__(self) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        self.log: _EventLog | None = None
        self.params: dict[str, Any] = {}
        self.run_dir, self.described = "", False

    def on_start(self, spec: Any, run_dir: str) -> None:
        self.run_dir = run_dir
        if getattr(spec, "sweep", None) is None:
            self.log = _EventLog(os.path.join(run_dir, "tensorboard"))
            self.params = flat_params(spec)

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        if self.log is not None:
            if not self.described:  # the metric names are known from the first row
                self.log.hparams(self.params, list(_scalars(row)))
                self.described = True
            self.log.scalars(row)

    def on_trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        log = _EventLog(os.path.join(self.run_dir, "tensorboard", f"trial-{index}"))
        if history:
            log.hparams(dict(values), list(_scalars(history[0])))
        for row in history:
            log.scalars(row)
        log.close()

    def on_finish(self, result: RunResult) -> None:
        if self.log is not None:
            self.log.close()


class MlflowObserver(Observer):
    """Logs the run to MLflow at `uri` (a file-store path or a tracking-server URI)."""

    def __init__(self, uri: str, base_dir: str = "."):
        self.mlflow = _require("mlflow", "mlflow", "mlflow")
        # Its INFO lines ("Creating a new experiment") would break `run -q`'s one line.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        if "://" not in uri and not uri.startswith("file:"):  # a path: a file store there
            uri = "file://" + os.path.abspath(os.path.join(base_dir, uri))
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; a path
            # in [logging] mlflow is the user asking for exactly that store.
            settings.allow_mlflow_file_store()
        self.uri, self.run_dir, self.active = uri, "", False

    def on_start(self, spec: Any, run_dir: str) -> None:
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(spec.experiment.name)
        self.run_dir, self.active = run_dir, True
        mlflow.start_run(run_name=os.path.basename(os.path.normpath(run_dir)))
        mlflow.log_params(flat_params(spec))

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        self.mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))

    def on_trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        mlflow = self.mlflow
        with mlflow.start_run(run_name=f"trial-{index}", nested=True):
            mlflow.log_params(values)
            for row in history:
                mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))
            self._artifacts(os.path.join(self.run_dir, "trials", str(index)))

    def _artifacts(self, directory: str) -> None:
        for name in ("summary.json", "curves.png", "sweep.png"):
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                self.mlflow.log_artifact(path)

    def on_finish(self, result: RunResult) -> None:
        if self.active:
            self._artifacts(self.run_dir)
            self.mlflow.end_run()
            self.active = False


def tracking_observers(spec: Any) -> list[Observer]:
    """The observers `[logging]` asks for; raises JaxpipeError (exit 2) naming the extra
    when its package is missing, before any work."""
    cfg = getattr(spec, "logging", None)
    if cfg is None:
        return []
    out: list[Observer] = []
    if cfg.tensorboard:
        out.append(TensorBoardObserver())
    if cfg.mlflow:
        out.append(MlflowObserver(cfg.mlflow, spec.base_dir))
    return out
