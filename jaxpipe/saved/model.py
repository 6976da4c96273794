"""The trained model as an object: what `jaxpipe.fit` returns and `jaxpipe.load_model`
loads (from `Model.save`'s directory or any finished run directory). It predicts and
evaluates on DataFrames, pyarrow Tables, arrays or files, encoding them exactly as the
training rows were encoded (the fitted `Preprocessing`)."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from jaxpipe.core.evaluation import classification_metrics, regression_metrics
from jaxpipe.core.model import layer_table, param_count
from jaxpipe.data.encoding import encode_target, missing_mask
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.data.frames import frame_rows, positional_columns
from jaxpipe.errors import DataError, JaxpipeError
from jaxpipe.events import RunResult
from jaxpipe.files import atomic_write, environment_problem, read_json, read_jsonl
from jaxpipe.planner.values import format_bytes
from jaxpipe.rundir import lock_run_dir, refuse_other_run
from jaxpipe.saved.export import export_model
from jaxpipe.saved.predict import (
    encode_rows,
    forward,
    load_predictor,
    network_meta,
    predictor_meta,
    write_model,
)
from jaxpipe.saved.trace import TracedModel, trace_table
from jaxpipe.spec.sections import ModelSpec

__all__ = ["Model", "load_model", "LayerSummary", "RunSummary"]


@dataclass(frozen=True)
class LayerSummary:
    """`Model.summary()`: one row per layer (name, kind, output shape, parameters,
    bytes), the totals, and the input and output. Prints as a table (Keras's
    `model.summary()`); a notebook shows it as HTML."""

    layers: tuple[dict[str, Any], ...]
    inputs: str
    outputs: str

    @property
    def params(self) -> int:
        return sum(r["params"] for r in self.layers)

    @property
    def bytes(self) -> int:
        return sum(r["bytes"] for r in self.layers)

    def _rows(self) -> list[tuple[str, ...]]:
        return [
            (r["name"], r["kind"], r["shape"], f"{r['params']:,}", format_bytes(r["bytes"]))
            for r in self.layers
        ]

    def __repr__(self) -> str:
        head = ("layer", "kind", "in → out", "params", "bytes")
        rows = [head, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"input: {self.inputs}"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.append(f"total: {self.params:,} parameters, {format_bytes(self.bytes)}")
        lines.append(f"output: {self.outputs}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
            for r in self._rows()
        )
        head = "".join(f"<th>{h}</th>" for h in ("layer", "kind", "in → out", "params", "bytes"))
        return (
            f"<p>input: {html.escape(self.inputs)}</p><table><tr>{head}</tr>{cells}</table>"
            f"<p>total: {self.params:,} parameters, {format_bytes(self.bytes)}; "
            f"output: {html.escape(self.outputs)}</p>"
        )


class RunSummary(dict):
    """summary.json's content, a dict (`model.summary["final"]`); called,
    `model.summary()` gives the model's `LayerSummary`."""

    def __init__(self, content: dict[str, Any], model: Model):
        super().__init__(content)
        self._model = model

    def __call__(self) -> LayerSummary:
        return self._model.layer_summary()


@dataclass
class Model:
    """A trained model: parameters, the fitted preprocessing and the network's shape,
    with the run's history (one dict per epoch, as metrics.jsonl) and final metrics."""

    params: Any
    preprocessing: Preprocessing
    network: dict[str, Any]  # hidden, activation, dropout, layer_norm, outputs
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    run_dir: str | None = None
    summary: dict[str, Any] | None = None  # summary.json; `summary()`: the layer table
    sweep: list[dict[str, Any]] | None = None  # a sweep's ranked trials (jaxpipe.fit)

    def __post_init__(self) -> None:
        if not isinstance(self.summary, RunSummary):
            self.summary = RunSummary(self.summary or {}, self)

    def layer_summary(self) -> LayerSummary:
        """The layers in order: Dense (kernel in → out) and LayerNorm, with parameter
        counts and bytes; the input columns → encoded features, and the output."""
        layers = []
        for name, shape, count in layer_table(self.params):
            leaves = jax.tree.leaves(self.params[name])
            kind = "LayerNorm" if name.startswith("norm") else "Dense"
            # The activation follows the hidden layer, or its LayerNorm when there is one.
            norm = bool(self.network.get("layer_norm"))
            act_here = name.startswith("norm") if norm else name.startswith("hidden")
            act = self.network.get("activation") if act_here else None
            layers.append(
                {
                    "name": name,
                    "kind": f"{kind} + {act}" if act else kind,
                    "shape": shape,
                    "params": count,
                    "bytes": int(sum(np.asarray(a).nbytes for a in leaves)),
                }
            )
        enc = self.preprocessing.encoder
        columns = len(enc.input_names) if enc is not None else len(self.preprocessing.features)
        inputs = (
            f"{columns} columns → {len(self.preprocessing.features)} features "
            f"({self.preprocessing.normalize}-scaled)"
        )
        outputs = (
            "1 value (regression)"
            if self.task == "regression"
            else f"{len(self.classes)} class probabilities (softmax)"
        )
        return LayerSummary(tuple(layers), inputs, outputs)

    def __repr__(self) -> str:
        """One line: task, shape, size and how it did (not the weights)."""
        net = self.network
        what = "regression" if self.task == "regression" else f"{len(self.classes)} classes"
        final = self.final or {}
        score = next(
            (f", {k} {final[k]:.4g}" for k in ("val_accuracy", "val_rmse") if k in final), ""
        )
        return (
            f"Model({what}, {len(self.columns)} columns, hidden {list(net.get('hidden', []))} "
            f"{net.get('activation', '')}, {param_count(self.params):,} parameters, "
            f"{len(self.history)} epochs{score}"
            f"{f', run_dir={self.run_dir!r}' if self.run_dir else ''})"
        )

    def _repr_html_(self) -> str:
        """A notebook's view: the one line and the layer table."""
        return f"<p>{html.escape(repr(self))}</p>{self.layer_summary()._repr_html_()}"

    @property
    def task(self) -> str:
        return self.preprocessing.task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.preprocessing.classes

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns, in the order a bare array must give them."""
        enc = self.preprocessing.encoder
        return tuple(enc.input_names) if enc is not None else ()

    def _encode(self, data: Any, what: str) -> tuple[np.ndarray, dict, str]:
        with frame_rows(data):
            columns, origin = positional_columns(data, self.columns, what)
            return encode_rows(self.preprocessing.encoder, columns, origin), columns, origin

    def predict(self, data: Any) -> np.ndarray:
        """Probabilities [rows, classes] (columns in `classes` order), or regression
        values [rows] in the target's units. `data`: a DataFrame, pyarrow Table, array
        (columns in `columns` order) or file path."""
        x, _, _ = self._encode(data, "predict")
        return forward(self.network, self.params, self.preprocessing, x)

    def predict_classes(self, data: Any) -> np.ndarray:
        """The most probable class of each row, by its original name: [rows] (object)."""
        if self.task != "classification":
            raise JaxpipeError("predict_classes: a regression model has no classes; use predict")
        probs = self.predict(data)
        return np.asarray(self.classes, dtype=object)[probs.argmax(axis=1)]

    def trace(self, data: Any, row: int = 0) -> dict[str, Any]:
        """One row of `data` through the layers (see `jaxpipe.saved.trace`): the input, each
        hidden layer, the output's probabilities by class name (or the value), the
        prediction and, when `data` has the label column, the true label."""
        x, columns, origin = self._encode(data, "trace")
        model = TracedModel.from_parts(self.params, self.network, self.preprocessing)
        return trace_table(
            model, x, columns, self.columns, self.preprocessing.label, row=row, origin=origin
        )

    def evaluate(self, data: Any, y: Any = None) -> dict[str, Any]:
        """Metrics on labelled rows: accuracy, loss, per-class precision/recall/F1 and
        the confusion matrix (classification); rmse, mae, r2 and loss (regression). The
        labels are `y`, else the second of `(X, y)`, else the data's label column."""
        x, columns, origin = self._encode(data, "evaluate")
        label = self.preprocessing.label or "y"
        if y is None and isinstance(data, tuple) and len(data) == 2:
            y = data[1]
        if y is None:
            if label not in columns:
                raise DataError(
                    f"evaluate: {origin} has no label column {label!r}; include it or pass y="
                )
            y = columns[label]
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            y = y.astype(object)
        if len(y) != len(x):
            raise DataError(f"evaluate: {len(y)} labels for {len(x)} rows")
        gaps = missing_mask(y)
        if gaps.any():  # no training option helps here: the rows themselves need labels
            raise DataError(
                f"evaluate: {origin}: label column {label!r} has {int(gaps.sum())} rows without "
                f"a label (first at row {int(np.argmax(gaps)) + 1}); evaluate needs a label on "
                "every row: fill them in or remove those rows"
            )
        out = forward(self.network, self.params, self.preprocessing, x)
        with frame_rows(data):
            target, _ = encode_target(y, label, self.task, origin, self.classes or None)
        if self.task == "regression":
            return regression_metrics(out, target, self.preprocessing.target_stats[1])
        return classification_metrics(out, target, self.classes)

    def export(self, path: str | os.PathLike[str], format: str = "stablehlo") -> str:
        """Writes the whole predictor for serving to `path`: x: [rows, len(columns)]
        float32 (the input columns in order; a categorical column as a number, see
        `saved.export`) → [rows, classes] probabilities or [rows] values, rows symbolic.
        `format`: "stablehlo" (`jax.export`'s serialized bytes: run them with
        `jax.export.deserialize(open(path, "rb").read()).call(x)`, no jaxpipe needed) or
        "onnx" (input "x", output "y"; needs `jaxpipe[onnx]`). Returns the path."""
        return export_model(self.network, self.params, self.preprocessing, os.fspath(path), format)

    def save(self, directory: str | os.PathLike[str]) -> str:
        """Writes the model as a directory `jaxpipe.load_model` and `jaxpipe predict`
        read (model.msgpack, predictor.json, summary.json, metrics.jsonl), holding the
        run directory's lock while it writes (RunDirectoryBusy if a run is using it).
        Refuses a directory that holds another run or its checkpoints, a path that is a
        file, and one that cannot be written (JaxpipeError, one line). Returns the
        directory."""
        directory = os.fspath(directory)
        what = f"Model.save({directory!r})"
        same = self.run_dir is not None and os.path.realpath(self.run_dir) == os.path.realpath(
            directory
        )
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise JaxpipeError(f"{what}: exists and is not a directory; choose another path")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as e:
            raise environment_problem(directory, e) or JaxpipeError(
                f"{what}: cannot create the directory ({e.strerror}); choose a writable path"
            ) from None
        with lock_run_dir(directory, what):
            if not same:  # its own run directory (fit(out=...)) holds its own run
                refuse_other_run(directory, what, "choose another path")
            self._write(directory)
        return directory

    def _write(self, directory: str) -> None:
        meta = predictor_meta(self.network, self.preprocessing)
        write_model(directory, self.params, meta, resume=False)
        summary = dict(self.summary or {}) or {
            "status": "completed",
            "task": self.task,
            "classes": list(self.classes),
        }
        summary = summary | {"final": self.final}
        lines = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write(os.path.join(directory, "metrics.jsonl"), lines, resume=False)
        # Last: a directory without summary.json is not a finished model.
        text = json.dumps(summary, indent=2) + "\n"
        atomic_write(os.path.join(directory, "summary.json"), text, resume=False)

    @classmethod
    def from_run(cls, result: RunResult, model: ModelSpec, outputs: int) -> Model:
        """The model of a finished run (`run_experiment`'s result)."""
        network = network_meta(model, outputs)
        return cls(
            params=result.params,
            preprocessing=result.preprocessing,
            network=network,
            history=list(result.history),
            final=result.final,
            run_dir=result.run_dir,
            summary=result.summary,
        )


def load_model(directory: str | os.PathLike[str]) -> Model:
    """A model saved by `Model.save`, or the model of a finished run directory. Damaged
    files are a JaxpipeError naming the file (exit 2)."""
    directory = os.fspath(directory)
    pred = load_predictor(directory)
    summary = read_json(os.path.join(directory, "summary.json"))
    metrics = os.path.join(directory, "metrics.jsonl")
    history = read_jsonl(metrics) if os.path.isfile(metrics) else []
    final = summary.get("final")
    return Model(
        params=pred.params,
        preprocessing=Preprocessing.from_json(pred.meta),
        network=dict(pred.meta["model"]),
        history=history,
        final=final if isinstance(final, dict) else None,
        run_dir=directory,
        summary=summary,
    )
