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
import functools
import io
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe.core.aot import cached_compile
from jaxpipe.core.model import ACTIVATION_FNS, make_model, param_shapes
from jaxpipe.core.scaling import Scaler, apply_scaler
from jaxpipe.data.encoding import Columns, FeatureEncoder, missing_mask, row_name
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.data.frames import frame_rows, positional_columns
from jaxpipe.data.load import prepare_features
from jaxpipe.data.readers import read_table
from jaxpipe.errors import DataError, JaxpipeError
from jaxpipe.files import atomic_write, read_json
from jaxpipe.saved.weights import pack_params, unpack_params
from jaxpipe.signals import catch_signals
from jaxpipe.spec.sections import ModelSpec, source_of

__all__ = [
    "PREDICT_BLOCK",
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
    "check_predictor",
]

MODEL_FILE = "model.msgpack"
PREDICTOR_FILE = "predictor.json"
_FORMAT = 1


def save_predictor(
    run_dir: str, params: Any, model: ModelSpec, prep: Preprocessing, outputs: int
) -> None:
    """Writes model.msgpack and predictor.json: the parameters, the fitted `prep` and the
    model's shape (`outputs` wide)."""
    write_model(run_dir, params, predictor_meta(network_meta(model, outputs), prep))


def write_model(directory: str, params: Any, meta: dict[str, Any], resume: bool = True) -> None:
    """model.msgpack (the parameters) and predictor.json (`meta`), each atomically.
    `resume`: a run's files (a full disk's fix is --resume), else `Model.save`'s."""
    params = jax.device_get(params)
    raw = pack_params(params)
    atomic_write(os.path.join(directory, MODEL_FILE), raw, resume=resume)
    text = json.dumps(meta, indent=2) + "\n"
    atomic_write(os.path.join(directory, PREDICTOR_FILE), text.encode(), resume=resume)


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
    """Loads model.msgpack and predictor.json from a finished run directory (or a saved
    model); a damaged or tampered file is a JaxpipeError naming it (exit 2)."""
    if not os.path.isdir(run_dir):
        raise JaxpipeError(f"{run_dir}: run directory not found")
    paths = [os.path.join(run_dir, n) for n in ("summary.json", PREDICTOR_FILE, MODEL_FILE)]
    unfinished = _unfinished(run_dir, paths[0])
    if unfinished:
        raise JaxpipeError(f"{run_dir}: {unfinished}")
    for path in paths:
        if not os.path.isfile(path):
            raise JaxpipeError(
                f"{path}: not found; {run_dir} is not a finished run of this jaxpipe "
                "version (run `jaxpipe run` again)"
            )
    meta = read_json(paths[1])
    if meta.get("format") != _FORMAT:
        raise JaxpipeError(f"{paths[1]}: unknown format {meta.get('format')!r}")
    try:
        with open(paths[2], "rb") as f:
            params = unpack_params(f.read())
    except (OSError, ValueError, TypeError) as e:
        raise JaxpipeError(
            f"{paths[2]}: cannot load the saved parameters ({type(e).__name__}: {e}); "
            "the file was cut short or changed: run again"
        ) from None
    check_predictor(meta, params, paths[1])
    try:
        encoder = FeatureEncoder.from_json(meta["encoder"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise JaxpipeError(
            f"{paths[1]}: key 'encoder' is missing or damaged ({type(e).__name__}: {e}); "
            "run `jaxpipe run` again"
        ) from None
    if list(encoder.feature_names) != meta["features"]:
        raise JaxpipeError(f"{paths[1]}: encoder and features disagree; run `jaxpipe run` again")
    return Predictor(meta, params, encoder)


def _unfinished(run_dir: str, summary_path: str) -> str | None:
    """Why the run in `run_dir` left no model (interrupted, diverged, still running or
    killed), from its summary.json, or None if it says nothing of the kind."""
    again = f"`jaxpipe run SPEC --out {run_dir} --resume`"
    try:
        summary = read_json(summary_path)
    except FileNotFoundError:
        if os.path.isdir(os.path.join(run_dir, "checkpoints")):
            return (
                "holds an unfinished run (checkpoints, no summary.json: still running, or "
                f"killed), which has no model yet; let it finish, or continue it with {again}"
            )
        return None
    status = summary.get("status")
    epoch = (
        (summary.get("stop") or {}).get("epoch") if isinstance(summary.get("stop"), dict) else None
    )
    if summary.get("kind") == "sweep" and status == "interrupted":
        return (
            f"holds an interrupted sweep (stopped after epoch {epoch}), which ranks no best "
            f"model; use a finished trial's directory ({run_dir}/trials/<k>), or run the "
            "sweep again into a new --out"
        )
    if status == "interrupted":
        return (
            f"holds an interrupted run (stopped after epoch {epoch}), which saves no model; "
            f"continue it with {again} to finish it"
        )
    if status == "diverged":
        what = (
            "every trial of the sweep diverged"
            if summary.get("kind") == "sweep"
            else (f"training diverged (at epoch {epoch})")
        )
        return f"{what}, so no model was saved; fix and rerun"
    return None


def _number_list(value: Any, n: int, key: str, path: str, nonzero: bool = False) -> None:
    ok = isinstance(value, list) and len(value) == n
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise JaxpipeError(f"{path}: {key} must be a list of {n} numbers (one per feature)")
    arr = np.asarray(value, np.float64)
    if not np.all(np.isfinite(arr)) or (nonzero and np.any(arr == 0)):
        what = "finite and non-zero" if nonzero else "finite"
        raise JaxpipeError(f"{path}: {key} holds {value}; every entry must be {what}")


def check_predictor(meta: dict[str, Any], params: Any, path: str) -> None:
    """Refuses a predictor.json (and model.msgpack) that does not describe a model this
    code can run: every key present with the right type, one scaler entry per feature,
    non-zero finite scales (a zero one made NaN predictions), and parameters whose
    shapes are the model's. Raises JaxpipeError naming the key (exit 2)."""
    spec = {"task": str, "classes": list, "features": list, "scaler": dict, "model": dict}
    for key, kind in spec.items():
        if not isinstance(meta.get(key), kind):
            what = {"str": "a string", "list": "a list", "dict": "an object"}[kind.__name__]
            raise JaxpipeError(f"{path}: key {key!r} is missing or not {what}")
    if meta["task"] not in ("classification", "regression"):
        raise JaxpipeError(f"{path}: task {meta['task']!r} is not classification or regression")
    n = len(meta["features"])
    _number_list(meta["scaler"].get("offset"), n, "scaler.offset", path)
    _number_list(meta["scaler"].get("scale"), n, "scaler.scale", path, nonzero=True)
    m = meta["model"]
    try:
        model_spec = ModelSpec(
            hidden=tuple(int(h) for h in m["hidden"]),
            activation=str(m["activation"]),
            dropout=float(m["dropout"]),
            layer_norm=bool(m["layer_norm"]),
            task=meta["task"],
        )
        outputs = int(m["outputs"])
    except (KeyError, TypeError, ValueError) as e:
        raise JaxpipeError(f"{path}: model section is incomplete or mistyped ({e})") from None
    want = 1 if meta["task"] == "regression" else len(meta["classes"])
    if outputs != want or any(h < 1 for h in model_spec.hidden):
        raise JaxpipeError(f"{path}: model.outputs = {outputs}, but the task needs {want}")
    if meta["task"] == "regression":
        t = meta.get("target")
        ok = isinstance(t, dict) and all(
            isinstance(t.get(k), (int, float)) and math.isfinite(t[k]) for k in ("mean", "scale")
        )
        if not ok or t["scale"] == 0:
            raise JaxpipeError(f"{path}: target must hold a finite mean and non-zero scale")
    if model_spec.activation not in ACTIVATION_FNS:
        raise JaxpipeError(
            f"{path}: model section cannot be built (unknown activation "
            f"{model_spec.activation!r}; one of {sorted(ACTIVATION_FNS)})"
        )
    shapes = param_shapes(tuple(model_spec.hidden), n, outputs, model_spec.layer_norm)
    expected = jax.tree.map(lambda a: tuple(a.shape), shapes)
    try:
        found = jax.tree.map(lambda a: tuple(np.shape(a)), params)
    except Exception:
        found = None
    if found != expected:
        raise JaxpipeError(
            f"{path}: {MODEL_FILE} does not hold the parameters of the model described "
            f"here ({n} features → {list(model_spec.hidden)} → {outputs}); the run "
            "directory was changed after training: run `jaxpipe run` again"
        )


def predict_rows(pred: Predictor, x: np.ndarray) -> np.ndarray:
    """x: [rows, features] encoded → [rows, classes] probabilities, or [rows] values in
    the target's units."""
    return forward(pred.meta["model"], pred.params, Preprocessing.from_json(pred.meta), x)


# Predictions run in blocks of PREDICT_BLOCK rows, _BLOCKS_MAX blocks (a power of two) a call:
# every row goes through the same [PREDICT_BLOCK, features] program, so its output does not
# depend on the other rows given with it (a float32 XLA:CPU matmul rounds a row
# differently with the batch's size; scikit-learn's checks hold predictions on subsets
# to 1e-7), and a model compiles at most log2(_BLOCKS_MAX) + 1 programs for any row count.
PREDICT_BLOCK = 64
_BLOCKS_MAX = 256


@functools.lru_cache(maxsize=32)
def _network_fn(
    hidden: tuple[int, ...], activation: str, layer_norm: bool, outputs: int, softmax: bool
):
    """jit(scaler, MLP and softmax, block by block)(params, scaler, x: [blocks, PREDICT_BLOCK,
    features]) -> [blocks, PREDICT_BLOCK, outputs]."""
    spec = ModelSpec(hidden=hidden, activation=activation, layer_norm=layer_norm)
    model = make_model(spec, outputs)

    def block(params: Any, scaler: Scaler, x: jax.Array) -> jax.Array:
        out = model.apply(params, apply_scaler(scaler, x))
        return jax.nn.softmax(out, axis=-1) if softmax else out

    def run(params: Any, scaler: Scaler, x: jax.Array) -> jax.Array:
        return jax.lax.map(lambda b: block(params, scaler, b), x)

    return jax.jit(run)


def _blocks(rows: int) -> int:
    """Blocks per call: the fewest power of two holding `rows`, at most _BLOCKS_MAX."""
    need = min(-(-rows // PREDICT_BLOCK), _BLOCKS_MAX)
    return 1 << max(need - 1, 0).bit_length()


def forward(network: dict[str, Any], params: Any, prep: Preprocessing, x: np.ndarray):
    """The saved network (`network`: predictor.json's "model") on encoded rows x:
    [rows, features] → [rows, classes] probabilities, or [rows] target values."""
    shape = (
        tuple(network["hidden"]), network["activation"], bool(network["layer_norm"]),
        int(network["outputs"]), not prep.regression,
    )  # fmt: skip
    fn = _network_fn(*shape)
    scaler = Scaler(*(np.asarray(a, np.float32) for a in prep.scaler))  # host: no program
    x = np.asarray(x, np.float32)
    k = _blocks(len(x))
    blocks = jax.ShapeDtypeStruct((k, PREDICT_BLOCK, x.shape[1]), jnp.float32)
    # Loaded from the stored programs where a run or an earlier call kept it (aot.py):
    # a fresh process neither traces nor lowers the network again.
    program = cached_compile("predict", fn.lower, (params, scaler, blocks), {}, f"{shape}")
    parts = []
    for start in range(0, max(len(x), 1), k * PREDICT_BLOCK):
        part = x[start : start + k * PREDICT_BLOCK]
        padded = np.zeros((k * PREDICT_BLOCK, x.shape[1]), np.float32)
        padded[: len(part)] = part
        out = program(params, scaler, padded.reshape(k, PREDICT_BLOCK, x.shape[1]))
        parts.append(np.asarray(out).reshape(k * PREDICT_BLOCK, -1)[: len(part)])
    out = np.concatenate(parts)
    if prep.regression:
        mean, scale = prep.target_stats
        return out[:, 0].astype(np.float64) * scale + mean
    return out


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
                    f"{row_name(int(np.argmax(miss)))}); the model was trained without "
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
    row count. SIGINT / SIGTERM: RunInterrupted (exit 130 / 143), nothing written."""
    with catch_signals() as signals:
        header, rows = _predict_table(run_dir, data, probabilities, keep)
        signals.stop("while predicting")
        if out is not None:
            text = io.StringIO(newline="")
            _write_csv(text, header, rows)
            atomic_write(out, text.getvalue(), what=f"--out {out}", resume=False)
        else:
            _write_csv(stream or sys.stdout, header, rows)
    return len(rows)


def _predict_table(run_dir: str, data: Any, probabilities: bool, keep: tuple[str, ...]):
    pred = load_predictor(run_dir)
    with frame_rows(data):
        columns, origin = positional_columns(data, pred.encoder.input_names, "predict")
        x = encode_rows(pred.encoder, columns, origin)
    absent = [k for k in keep if k not in columns]
    if absent:
        raise DataError(
            f"--keep {absent[0]}: no such column in {origin} (columns: {', '.join(columns)})"
        )
    result = predict_rows(pred, x)
    return prediction_table(
        result, pred.task, pred.classes, probabilities, {k: columns[k] for k in keep}
    )


def _write_csv(f: TextIO, header: list[str], rows: list[list[str]]) -> None:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
