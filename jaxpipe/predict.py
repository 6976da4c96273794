"""Saved models and prediction: what a run directory keeps so that `jaxpipe predict`
can apply it to new rows, and the prediction itself.

A run directory holds `model.msgpack` (the final parameters, flax msgpack) and
`predictor.json` (task, class names, the fitted feature encoder, the scaler, the target
standardisation and the model's shape): everything predict needs, without the data or
the spec's paths.
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
from jaxpipe.encoding import FeatureEncoder, missing_mask
from jaxpipe.errors import DataError, JaxpipeError
from jaxpipe.fitted import Preprocessing
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
    "encode_file",
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
    params = jax.device_get(params)
    _atomic_write(os.path.join(run_dir, MODEL_FILE), serialization.msgpack_serialize(params))
    text = json.dumps(predictor_meta(model, prep, outputs), indent=2) + "\n"
    _atomic_write(os.path.join(run_dir, PREDICTOR_FILE), text.encode())


def predictor_meta(model: ModelSpec, prep: Preprocessing, outputs: int) -> dict[str, Any]:
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
        "model": {
            "hidden": list(model.hidden),
            "activation": model.activation,
            "dropout": model.dropout,
            "layer_norm": model.layer_norm,
            "outputs": outputs,
        },
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
    meta = pred.meta
    m = meta["model"]
    spec = ModelSpec(
        hidden=tuple(m["hidden"]),
        activation=m["activation"],
        dropout=m["dropout"],
        layer_norm=m["layer_norm"],
        task=meta["task"],
    )
    model = make_model(spec, m["outputs"])
    scaler = Scaler(
        jnp.asarray(meta["scaler"]["offset"], jnp.float32),
        jnp.asarray(meta["scaler"]["scale"], jnp.float32),
    )
    out = np.asarray(model.apply(pred.params, apply_scaler(scaler, jnp.asarray(x))))
    if meta["task"] == "regression":
        t = meta["target"]
        return out[:, 0].astype(np.float64) * t["scale"] + t["mean"]
    return np.asarray(jax.nn.softmax(out, axis=-1))


def _source_of(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    return {".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}.get(ext, "csv")


def encode_file(pred: Predictor, data: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reads `data` (csv, parquet or npz) and encodes it as the model was trained:
    x: [rows, features] before scaling, and the file's columns as read."""
    columns = read_table(data, _source_of(data))
    names = list(pred.encoder.input_names)
    absent = [n for n in names if n not in columns]
    if absent:
        raise DataError(
            f"{data}: column {absent[0]!r}, which the model was trained on, is missing "
            f"(it needs {', '.join(names)})"
        )
    feats, _ = prepare_features(columns, names, data, kinds=pred.encoder.kinds)
    if not pred.encoder.impute:
        for name, col in feats.items():
            miss = missing_mask(col)
            if miss.any():
                raise DataError(
                    f"{data}: column {name!r} has {int(miss.sum())} missing values (first at "
                    f"row {int(np.argmax(miss)) + 1}); the model was trained without "
                    'imputation (missing = "mean" would fill them), so fill them in'
                )
    return pred.encoder.transform(feats), columns


def predict_file(
    run_dir: str, data: str, out: str | None = None, stream: TextIO | None = None
) -> int:
    """Predicts every row of `data` (csv, parquet or npz) with the run's saved model and
    writes a CSV (to `out`, else `stream`/stdout): `prediction,probability` per row for
    classification (the class name), `prediction` for regression. Returns the row count."""
    pred = load_predictor(run_dir)
    x, _ = encode_file(pred, data)
    result = predict_rows(pred, x)
    if pred.task == "regression":
        header = ["prediction"]
        rows = [[f"{v:.6g}"] for v in result]
    else:
        best = result.argmax(axis=1)
        header = ["prediction", "probability"]
        rows = [[pred.classes[b], f"{p[b]:.6f}"] for b, p in zip(best, result)]
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
