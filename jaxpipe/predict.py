"""Saved models and prediction: what a run directory keeps so that `jaxpipe predict`
can apply it to new rows, and the prediction itself.

A run directory holds `model.msgpack` (the final parameters, flax msgpack) and
`predictor.json` (task, class names, the fitted feature encoder, the scaler, the target
standardisation and the model's shape): everything predict needs, without the data or
the spec's paths. `Model` is the same thing in memory: what `jaxpipe.fit` returns and
`jaxpipe.load_model` loads (trained.py).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxpipe.data import prepare_features, read_table
from jaxpipe.encoding import Columns, FeatureEncoder, missing_mask
from jaxpipe.errors import DataError, JaxpipeError
from jaxpipe.fitted import Preprocessing
from jaxpipe.frames import positional_columns, source_of
from jaxpipe.model import make_model
from jaxpipe.preprocess import Scaler, apply_scaler
from jaxpipe.spec import ModelSpec

__all__ = [
    "MODEL_FILE",
    "PREDICTOR_FILE",
    "Predictor",
    "save_predictor",
    "load_predictor",
    "predict_rows",
    "predict_file",
    "encode_rows",
    "encode_file",
    "forward",
    "prediction_table",
    "predictor_meta",
    "network_meta",
    "write_model",
]

MODEL_FILE = "model.msgpack"
PREDICTOR_FILE = "predictor.json"
_FORMAT = 1


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def save_predictor(
    run_dir: str, params: Any, model: ModelSpec, prep: Preprocessing, outputs: int
) -> None:
    """Writes model.msgpack and predictor.json: the parameters, the fitted `prep` and the
    model's shape (`outputs` wide)."""
    write_model(run_dir, params, predictor_meta(network_meta(model, outputs), prep))


def write_model(directory: str, params: Any, meta: dict[str, Any]) -> None:
    """model.msgpack (the parameters) and predictor.json (`meta`), each atomically."""
    params = jax.device_get(params)
    _atomic_write(os.path.join(directory, MODEL_FILE), serialization.msgpack_serialize(params))
    text = json.dumps(meta, indent=2) + "\n"
    _atomic_write(os.path.join(directory, PREDICTOR_FILE), text.encode())


def network_meta(model: ModelSpec, outputs: int) -> dict[str, Any]:
    """predictor.json's "model": the network's shape, `outputs` wide."""
    return {
        "hidden": list(model.hidden),
        "activation": model.activation,
        "dropout": model.dropout,
        "layer_norm": model.layer_norm,
        "outputs": outputs,
    }


def predictor_meta(network: dict[str, Any], prep: Preprocessing) -> dict[str, Any]:
    """predictor.json's content."""
    target = prep.target_stats
    return {
        "format": _FORMAT,
        "task": prep.task,
        "label": prep.label,
        "classes": list(prep.classes),
        "features": list(prep.features),
        "encoder": prep.encoder.to_json() if prep.encoder is not None else None,
        "scaler": prep.scaler_json(np.float64),
        "target": None if target is None else {"mean": target[0], "scale": target[1]},
        "model": dict(network),
    }


@dataclass(frozen=True)
class Predictor:
    """A trained model loaded from a run directory."""

    meta: dict[str, Any]
    params: Any
    encoder: FeatureEncoder

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])


def load_predictor(run_dir: str) -> Predictor:
    """Loads model.msgpack and predictor.json from a finished run directory."""
    if not os.path.isdir(run_dir):
        raise JaxpipeError(f"{run_dir}: run directory not found")
    paths = [os.path.join(run_dir, n) for n in ("summary.json", PREDICTOR_FILE, MODEL_FILE)]
    for path in paths:
        if not os.path.isfile(path):
            raise JaxpipeError(
                f"{path}: not found; {run_dir} is not a finished run of this jaxpipe "
                "version (run `jaxpipe run` again)"
            )
    try:
        with open(paths[1]) as f:
            meta = json.load(f)
        with open(paths[2], "rb") as f:
            params = serialization.msgpack_restore(f.read())
        encoder = FeatureEncoder.from_json(meta["encoder"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise JaxpipeError(f"{run_dir}: cannot load the saved model ({e})") from None
    if meta.get("format") != _FORMAT:
        raise JaxpipeError(f"{paths[1]}: unknown format {meta.get('format')!r}")
    return Predictor(meta, params, encoder)


def predict_rows(pred: Predictor, x: np.ndarray) -> np.ndarray:
    """x: [rows, features] encoded → [rows, classes] probabilities, or [rows] values in
    the target's units."""
    return forward(pred.meta["model"], pred.params, Preprocessing.from_json(pred.meta), x)


def forward(network: dict[str, Any], params: Any, prep: Preprocessing, x: np.ndarray):
    """The saved network (`network`: predictor.json's "model") on encoded rows x:
    [rows, features] → [rows, classes] probabilities, or [rows] target values."""
    spec = ModelSpec(
        hidden=tuple(network["hidden"]),
        activation=network["activation"],
        dropout=network["dropout"],
        layer_norm=network["layer_norm"],
        task=prep.task,
    )
    model = make_model(spec, network["outputs"])
    scaler = Scaler(*(jnp.asarray(a, jnp.float32) for a in prep.scaler))
    out = np.asarray(model.apply(params, apply_scaler(scaler, jnp.asarray(x))))
    if prep.regression:
        mean, scale = prep.target_stats
        return out[:, 0].astype(np.float64) * scale + mean
    return np.asarray(jax.nn.softmax(out, axis=-1))


def encode_rows(encoder: FeatureEncoder, columns: Columns, origin: str) -> np.ndarray:
    """Raw columns → x: [rows, features], encoded as the model's training rows were: the
    same kinds, vocabularies and imputation. Names a missing column or missing values."""
    names = list(encoder.input_names)
    absent = [n for n in names if n not in columns]
    if absent:
        raise DataError(
            f"{origin}: column {absent[0]!r}, which the model was trained on, is missing "
            f"(it needs {', '.join(names)})"
        )
    feats, _ = prepare_features(columns, names, origin, kinds=encoder.kinds)
    if not encoder.impute:
        for name, col in feats.items():
            miss = missing_mask(col)
            if miss.any():
                raise DataError(
                    f"{origin}: column {name!r} has {int(miss.sum())} missing values (first at "
                    f"row {int(np.argmax(miss)) + 1}); the model was trained without "
                    'imputation (missing = "mean" would fill them), so fill them in'
                )
    return encoder.transform(feats)


def encode_file(pred: Predictor, data: str) -> tuple[np.ndarray, Columns]:
    """Reads `data` (csv, parquet or npz) and encodes it as the model was trained:
    x: [rows, features] before scaling, and the file's columns as read."""
    columns = read_table(data, source_of(data))
    return encode_rows(pred.encoder, columns, data), columns


def _cell(v: Any) -> str:
    """A passthrough value as CSV text: 17 (not 17.0) for an integer read as a float."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def prediction_table(
    result: np.ndarray,
    task: str,
    classes: tuple[str, ...],
    probabilities: bool = False,
    keep: dict[str, np.ndarray] | None = None,
) -> tuple[list[str], list[list[str]]]:
    """The CSV of `predict`: kept columns, then `prediction` and its `probability` (or,
    with `probabilities`, one column per class named by the class); regression: the
    value."""
    keep = keep or {}
    header = list(keep)
    if task == "regression":
        header.append("prediction")
        body = [[f"{v:.6g}"] for v in result]
    else:
        best = result.argmax(axis=1)
        if probabilities:
            header += ["prediction", *classes]
            body = [[classes[b], *(f"{q:.6f}" for q in p)] for b, p in zip(best, result)]
        else:
            header += ["prediction", "probability"]
            body = [[classes[b], f"{p[b]:.6f}"] for b, p in zip(best, result)]
    kept = [[_cell(v) for v in row] for row in zip(*keep.values())] if keep else None
    rows = [k + b for k, b in zip(kept, body)] if kept else body
    return header, rows


def predict_file(
    run_dir: str,
    data: Any,
    out: str | None = None,
    stream: TextIO | None = None,
    *,
    probabilities: bool = False,
    keep: tuple[str, ...] = (),
) -> int:
    """Predicts every row of `data` (a csv, parquet or npz path; or rows in memory, as
    `Model.predict` takes them) with the run's saved model and
    writes a CSV (to `out`, else `stream`/stdout): the `keep` columns as they are, then
    `prediction,probability` per row for classification (the class name; with
    `probabilities`, one column per class), `prediction` for regression. Returns the
    row count."""
    pred = load_predictor(run_dir)
    columns, origin = positional_columns(data, pred.encoder.input_names, "predict")
    x = encode_rows(pred.encoder, columns, origin)
    absent = [k for k in keep if k not in columns]
    if absent:
        raise DataError(
            f"--keep {absent[0]}: no such column in {origin} (columns: {', '.join(columns)})"
        )
    result = predict_rows(pred, x)
    header, rows = prediction_table(
        result, pred.task, pred.classes, probabilities, {k: columns[k] for k in keep}
    )
    if out is not None:
        tmp = out + ".tmp"
        try:
            with open(tmp, "w", newline="") as f:
                _write_csv(f, header, rows)
            os.replace(tmp, out)
        except OSError as e:
            raise JaxpipeError(f"--out {out}: cannot write there ({e.strerror})") from None
    else:
        _write_csv(stream or sys.stdout, header, rows)
    return len(rows)


def _write_csv(f: TextIO, header: list[str], rows: list[list[str]]) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
