"""Experiment tracking: observers that send a run (or each trial of a sweep) to
TensorBoard event files or to MLflow, as the spec's `[logging]` says. Each tracker is
an optional extra, imported only when asked for; a missing one is a clear exit-2 error.

TensorBoard: DIR/tensorboard/ (a sweep: DIR/tensorboard/trial-<k>/), scalar tags named
as metrics.jsonl's columns, step = epoch; hyperparameters through the HParams plugin.
Written with tensorboard's own TF-free event writer, so one package (`tensorboard`)
both writes and reads (`tensorboard --logdir DIR/tensorboard`).

MLflow: a run per run (a sweep: a parent run and a nested run per trial) in the
experiment named by `experiment.name`: every key of the spec, defaults included, as
params (a trial: the sweep's spec with its own values), the plan's choices as `plan.*`
params, every metrics.jsonl column per epoch, summary.json and the pictures as artifacts
and the model (the files `jaxpipe.load_model` reads) under `model/`.

Each tracker says where it logged in one line, through `tell` (the console's note)."""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from jaxpipe import settings
from jaxpipe.errors import JaxpipeError
from jaxpipe.events import Observer, RunResult
from jaxpipe.spec.schema import to_dict
from jaxpipe.spec.sweep import LoggingSpec

__all__ = [
    "tracking_observers",
    "TensorBoardObserver",
    "MlflowObserver",
    "flat_params",
    "trial_params",
    "MODEL_FILES",
]


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
            else:
                out[key] = _param(v)

    walk({k: v for k, v in to_dict(spec).items() if k not in ("sweep", "logging")}, "")
    return out


def _param(value: Any) -> Any:
    """A tracker's param value: scalars as they are, anything else as JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def trial_params(params: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A sweep trial's params: the sweep's spec's (`params`: its `flat_params`) with the
    trial's values."""
    return params | {k: _param(v) for k, v in values.items()}


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


Tell = Callable[[str], None]


class TensorBoardObserver(Observer):
    """Writes DIR/tensorboard/ as the run goes; a sweep's trials as trial-<k>/. Every
    run's (and trial's) HParams are the whole spec's keys, as MLflow's params."""

    def __init__(self, tell: Tell | None = None) -> None:
        _require("tensorboard", "tensorboard", "tensorboard")
        self.log: _EventLog | None = None
        self.params: dict[str, Any] = {}
        self.run_dir, self.described, self.tell = "", False, tell

    def on_start(self, spec: Any, run_dir: str) -> None:
        self.run_dir = run_dir
        self.params = flat_params(spec)
        if getattr(spec, "sweep", None) is None:
            self.log = _EventLog(os.path.join(run_dir, "tensorboard"))

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        if self.log is not None:
            if not self.described:  # the metric names are known from the first row
                self.log.hparams(self.params, list(_scalars(row)))
                self.described = True
            self.log.scalars(row)

    def on_trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        log = _EventLog(os.path.join(self.run_dir, "tensorboard", f"trial-{index}"))
        if history:
            log.hparams(trial_params(self.params, values), list(_scalars(history[0])))
        for row in history:
            log.scalars(row)
        log.close()

    def on_finish(self, result: RunResult) -> None:
        if self.log is not None:
            self.log.close()
        if self.tell is not None:
            logdir = os.path.join(self.run_dir, "tensorboard")
            self.tell(f"Logged to TensorBoard: {logdir} (view: tensorboard --logdir {logdir})")

    def on_cv(self, run_dir: str, cv: dict[str, Any]) -> None:
        self.on_finish(None)  # type: ignore[arg-type]  # the last event: the log closes


# How long the up-front check waits for a tracking server to answer.
_REACH_SECONDS = 5.0


class MlflowObserver(Observer):
    """Logs the run to MLflow at `uri` (a file-store path or a tracking-server URI).

    The URI is checked when the observer is made, before any work (`check`): a scheme
    MLflow cannot use, a file store that is a file or cannot be written, a server that
    does not answer within seconds are one JaxpipeError line (exit 2). A failure during
    the run (the server went away) is one warning line on stderr, bounded in time
    (settings.bound_mlflow_requests), and the run goes on untracked."""

    def __init__(self, uri: str, base_dir: str = ".", tell: Tell | None = None):
        self.mlflow = _require("mlflow", "mlflow", "mlflow")
        # Its INFO lines ("Creating a new experiment") would break `run -q`'s one line.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.given = uri
        if "://" not in uri and not uri.startswith("file:"):  # a path: a file store there
            uri = "file://" + os.path.abspath(os.path.join(base_dir, uri))
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode behind this opt-in; a path
            # in [logging] mlflow is the user asking for exactly that store.
            settings.allow_mlflow_file_store()
        settings.bound_mlflow_requests()
        self.uri, self.run_dir, self.active, self.failed = uri, "", False, False
        self.tell, self.run_id, self.trials = tell, "", 0
        self.experiment: str | None = None  # `[experiment] name`, once started
        self.params: dict[str, Any] = {}
        self.check()

    def _refuse(self, why: str, fix: str) -> JaxpipeError:
        return JaxpipeError(f"[logging] mlflow = {self.given!r}: {why}; {fix}")

    def check(self) -> None:
        """Refuses, before any work, a URI the run could not log to (see the class)."""
        fix = "fix [logging] mlflow (a file-store path, or http://host:port of a server)"
        if self.uri.startswith("file:"):
            self._check_file_store(self.uri.split(":", 1)[1].removeprefix("//"), fix)
            return
        if self.uri.startswith("sqlite:"):
            self._check_sqlite(fix)
            return
        try:
            from mlflow.tracking._tracking_service.utils import _get_store

            _get_store(self.uri)
        except Exception as e:  # MLflow's own words for an unusable URI, on one line
            why = (str(e).strip().splitlines() or [type(e).__name__])[0].split(". ")[0][:160]
            raise self._refuse(f"not a tracking URI MLflow can use ({why})", fix) from None
        if self.uri.split(":", 1)[0] in ("http", "https"):
            self._check_server(fix)

    def _check_file_store(self, path: str, fix: str) -> None:
        if os.path.exists(path) and not os.path.isdir(path):
            raise self._refuse(f"{path} exists and is not a directory", fix)
        existing = path
        while existing and not os.path.exists(existing):
            existing = os.path.dirname(existing)
        try:  # a probe, not os.access: root passes that for read-only mounts and /proc
            os.rmdir(tempfile.mkdtemp(prefix=".jaxpipe-probe-", dir=existing or "."))
        except OSError as e:
            raise self._refuse(
                f"cannot write the file store in {existing or '.'} ({e.strerror})", fix
            ) from None

    def _check_sqlite(self, fix: str) -> None:
        """MLflow's default store: its packages present and the database's folder
        writable, checked without creating the database (`jaxpipe validate` writes
        nothing)."""
        for module in ("sqlalchemy", "alembic"):
            try:
                importlib.import_module(module)
            except ImportError:
                raise self._refuse(
                    f"MLflow's SQLite store needs {module}, which is not installed",
                    "pip install 'jaxpipe[mlflow]' (it brings sqlalchemy and alembic)",
                ) from None
        path = self.uri.split(":", 1)[1].removeprefix("///")
        if not path or path.startswith(":memory:"):
            raise self._refuse("an in-memory database keeps nothing", fix)
        if os.path.isdir(path):
            raise self._refuse(f"{path} is a directory, not a database file", fix)
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise self._refuse(f"the folder {folder} does not exist", "create it, or " + fix)
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".jaxpipe-probe-", dir=folder))
        except OSError as e:
            raise self._refuse(f"cannot write in {folder} ({e.strerror})", fix) from None

    def _check_server(self, fix: str) -> None:
        import urllib.error
        import urllib.request

        url = self.uri.rstrip("/") + "/health"
        try:
            urllib.request.urlopen(url, timeout=_REACH_SECONDS).close()
        except urllib.error.HTTPError:
            return  # it answered: a server is there (its API decides the rest)
        except (urllib.error.URLError, OSError, ValueError) as e:
            why = getattr(e, "reason", e)
            raise self._refuse(
                f"the tracking server does not answer ({why})", "start it, or " + fix
            ) from None

    def _guard(self, what: str, call: Any, *args: Any, **kw: Any) -> None:
        """`call(*args)`, or after a tracker failure one warning line and no more
        tracking: the run is not lost for its tracker."""
        if self.failed:
            return
        try:
            call(*args, **kw)
        except Exception as e:
            self.failed, self.active = True, False
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            print(
                f"warning: [logging] mlflow: {what} failed ({why}); the run goes on untracked",
                file=sys.stderr,
            )

    def on_start(self, spec: Any, run_dir: str) -> None:
        self.run_dir = run_dir
        sweep = getattr(spec, "sweep", None)
        self._guard(
            "starting the MLflow run", self._start, spec.experiment.name, flat_params(spec), sweep
        )

    def _start(self, experiment: str, params: dict[str, Any], sweep: Any) -> None:
        """`sweep`: the `[sweep]` section of a sweep's parent run, else None."""
        mlflow = self.mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=os.path.basename(os.path.normpath(self.run_dir)))
        self.active, self.run_id = True, run.info.run_id
        self.experiment, self.params = experiment, params
        mlflow.log_params(params)
        if sweep is not None:  # the parent run: what was swept
            swept = {f"sweep.values.{k}": _param(v) for k, v in sweep.values.items()}
            mlflow.log_params(swept | {"sweep.metric": sweep.metric})

    def on_plan(self, plan: Any) -> None:
        if self.active:  # what "auto" became: the spec's keys keep the words it said
            self._guard("logging the plan", self.mlflow.log_params, _plan_params(plan))

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        step = int(row["epoch"])
        self._guard("logging an epoch", self.mlflow.log_metrics, _scalars(row), step=step)

    def on_trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._guard("logging a trial", self._trial, index, values, history)

    def _trial(self, index: int, values: dict[str, Any], history: list[dict[str, Any]]) -> None:
        mlflow = self.mlflow
        with mlflow.start_run(run_name=f"trial-{index}", nested=True):
            mlflow.log_params(trial_params(self.params, values) | {"sweep.trial": index})
            for row in history:
                mlflow.log_metrics(_scalars(row), step=int(row["epoch"]))
            folder = "folds" if "data.fold" in values else "trials"
            self._artifacts(os.path.join(self.run_dir, folder, str(index)))
        self.trials += 1

    def _artifacts(self, directory: str) -> None:
        for name in _ARTIFACTS:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                self.mlflow.log_artifact(path)

    def _model(self, directory: str) -> None:
        for name in MODEL_FILES:
            path = os.path.join(directory, name)
            if os.path.isfile(path):
                self.mlflow.log_artifact(path, artifact_path="model")

    def on_finish(self, result: RunResult) -> None:
        if not self.active:
            return
        self._guard("logging the artifacts", self._artifacts, self.run_dir)
        self._guard("logging the model", self._model, self.run_dir)
        self._guard("ending the MLflow run", self.mlflow.end_run)
        self.active = False
        if self.tell is not None and not self.failed:
            self.tell(self.where())

    def where(self) -> str:
        """One line: the run, its experiment and the store it was logged to."""
        name = os.path.basename(os.path.normpath(self.run_dir))
        trials = f" and {self.trials} trial runs under it" if self.trials else ""
        experiment = self.experiment if self.experiment is not None else "?"
        return (
            f"Logged to MLflow: run {self.run_id} ({name}){trials} in experiment "
            f"{experiment!r} at {self.given}"
        )

    def on_cv(self, run_dir: str, cv: dict[str, Any]) -> None:
        """The folds' mean and std as the run's metrics (cv_mean_val_loss, ...); it ends."""
        flat = {f"cv_{stat}_{k}": v for stat in ("mean", "std") for k, v in cv[stat].items()}
        self._guard("logging the cross-validation", self.mlflow.log_metrics, flat)
        self.on_finish(None)  # type: ignore[arg-type]


# A run directory's pictures and summary, logged at the artifacts' root; the model's files
# (what `jaxpipe.load_model` reads, and the spec it was trained from) under model/.
_ARTIFACTS = ("summary.json", "curves.png", "trace.png", "sweep.png")
MODEL_FILES = ("model.msgpack", "predictor.json", "spec.toml", "summary.json", "metrics.jsonl")


def _plan_params(plan: Any) -> dict[str, Any]:
    """The planner's choices as `plan.*` params."""
    mesh = " x ".join(f"{k}={v}" for k, v in plan.mesh.items())
    return {
        "plan.strategy": str(plan.strategy),
        "plan.devices": int(plan.devices),
        "plan.device": str(plan.device),
        "plan.mesh": mesh,
    }


def tracking_observers(
    cfg: LoggingSpec | None, base_dir: str, tell: Tell | None = None
) -> list[Observer]:
    """The observers `[logging]` (`cfg`) asks for; raises JaxpipeError (exit 2) naming the
    extra when its package is missing, or the MLflow URI when it cannot be logged to,
    before any work (`jaxpipe validate` asks this too). `base_dir`: the spec's folder, for
    a relative MLflow file store. `tell`: where each says, in one line at the end, where
    it logged (the console's `on_note`)."""
    if cfg is None:
        return []
    out: list[Observer] = []
    if cfg.tensorboard:
        out.append(TensorBoardObserver(tell))
    if cfg.mlflow:
        out.append(MlflowObserver(cfg.mlflow, base_dir, tell))
    return out
