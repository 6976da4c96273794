"""The prediction trace: one row through the model, layer by layer.

Input (raw values and the scaled values the model sees) → each hidden layer (its
activation, pre-activation summary, active units, strongest units) → the output layer
(logits and softmax probabilities by class name, or the regression value) → the
prediction. `trace_features` is a function of values (the saved model and one encoded
row); `trace_run` finds the row (the run's saved validation rows, or a data file).

The record is a JSON contract (`jaxpipe trace --json`):
`{"layers": [{"name", "kind", "activation", ...}, ...], "prediction": {"class",
"probability", "label"}}`; the first layer's kind is "input", hidden layers carry the
spec's activation, the output layer's `probabilities` sum to 1 and the prediction's class
is what `jaxpipe predict` writes for the same row.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe.core.aot import cached_compile
from jaxpipe.core.model import ACTIVATION_FNS, flax_module
from jaxpipe.core.scaling import Scaler, apply_scaler
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.errors import JaxpipeError
from jaxpipe.files import atomic_write
from jaxpipe.saved.predict import PREDICT_BLOCK, Predictor, encode_file, load_predictor
from jaxpipe.signals import catch_signals

__all__ = [
    "TRACE_ROWS_FILE",
    "TracedModel",
    "save_trace_rows",
    "trace_features",
    "trace_run",
    "run_trace",
    "trace_table",
    "STRONGEST",
]

TRACE_ROWS_FILE = "trace_rows.npz"
KEPT_ROWS = 256  # validation rows kept in the run directory for `jaxpipe trace RUN_DIR`
STRONGEST = 3  # units listed per hidden layer


class TracedModel(NamedTuple):
    """What a trace needs of a trained model, as plain values: the parameters, the
    network's shape (predictor.json's "model": hidden, activation, dropout, layer_norm,
    outputs), the fitted scaler (offset, scale: [features]), the task, class names,
    encoded feature names, the regression target's (mean, scale) and the normaliser."""

    params: Any
    network: Mapping[str, Any]
    offset: Any
    scale: Any
    task: str
    classes: Sequence[str]
    features: Sequence[str]
    target: tuple[float, float] | None = None
    normalize: str = "minmax"

    @classmethod
    def from_parts(
        cls, params: Any, network: Mapping[str, Any], prep: Preprocessing
    ) -> TracedModel:
        """From a trained model's parameters, network shape and fitted `Preprocessing`
        (what `jaxpipe.Model` holds): `Model.trace` is trace_features(this, row)."""
        return cls(
            params=params,
            network=network,
            offset=np.asarray(prep.scaler.offset),
            scale=np.asarray(prep.scaler.scale),
            task=prep.task,
            classes=tuple(prep.classes),
            features=tuple(prep.features),
            target=prep.target_stats,
            normalize=prep.normalize,
        )

    @classmethod
    def from_predictor(cls, pred: Predictor) -> TracedModel:
        meta = pred.meta
        t = meta.get("target")
        return cls(
            params=pred.params,
            network=meta["model"],
            offset=meta["scaler"]["offset"],
            scale=meta["scaler"]["scale"],
            task=meta["task"],
            classes=tuple(meta["classes"]),
            features=tuple(meta["features"]),
            target=None if t is None else (t["mean"], t["scale"]),
            normalize=meta["scaler"]["kind"],
        )


def save_trace_rows(run_dir: str, x_val: np.ndarray, y_val: np.ndarray) -> None:
    """Keeps the first validation rows (encoded, before scaling; x: [rows, features],
    y: [rows]) so that `jaxpipe trace RUN_DIR` works without the data file."""
    path = os.path.join(run_dir, TRACE_ROWS_FILE)
    npz = io.BytesIO()
    np.savez(npz, x=np.asarray(x_val[:KEPT_ROWS]), y=np.asarray(y_val[:KEPT_ROWS]))
    atomic_write(path, npz.getvalue())  # the one safe writer (jaxpipe/files.py)


def _values(model: TracedModel, x: np.ndarray) -> dict[str, Any]:
    """x: [features] before scaling → the trace's numbers as host arrays: "scaled"
    [features], "pre" and "post" (each hidden layer's activation input and output
    [units]), "out" [outputs] and, for classification, "probs" [outputs]; through the
    same module and float32 ops as `predict_rows`, as one program (kept beside the
    compilation cache, aot.py: a run's trace.png costs no tracing on a warm cache)."""
    m = model.network
    names = [f"norm_{i}" if m["layer_norm"] else f"hidden_{i}" for i in range(len(m["hidden"]))]
    act, classify = ACTIVATION_FNS[m["activation"]], model.task != "regression"

    def block(params: Any, offset: jax.Array, scale: jax.Array, xb: jax.Array) -> dict:
        module = flax_module(  # flax: traced on a cache miss only
            m["hidden"], m["outputs"], m["activation"], m["dropout"], m["layer_norm"]
        )
        z = apply_scaler(Scaler(offset, scale), xb)
        out, state = module.apply(
            {"params": params}, z, capture_intermediates=True, mutable=["intermediates"]
        )
        seen = state["intermediates"]
        # The activation's input: the Dense output, or the LayerNorm after it.
        pre = [seen[n]["__call__"][0][0].astype(jnp.float32) for n in names]
        got = {"scaled": z[0], "pre": pre, "post": [act(p) for p in pre], "out": out[0]}
        return got | ({"probs": jax.nn.softmax(out, axis=-1)[0]} if classify else {})

    def compute(params: Any, offset: jax.Array, scale: jax.Array, x: jax.Array) -> dict:
        # The row as the first of a block of PREDICT_BLOCK, through lax.map as `predict`
        # runs it: the same program shape, so the same bits as `jaxpipe predict` gives.
        xb = jnp.zeros((1, PREDICT_BLOCK, x.shape[0]), jnp.float32).at[0, 0].set(x)
        got = jax.lax.map(lambda b: block(params, offset, scale, b), xb)
        return jax.tree.map(lambda a: a[0], got)

    args = (  # host arrays: converting them with jnp would compile a program each
        model.params,
        np.asarray(model.offset, np.float32),
        np.asarray(model.scale, np.float32),
        np.asarray(x, np.float32),
    )
    describe = f"trace {sorted(m.items())} {model.task}"
    program = cached_compile("trace", lambda *a: jax.jit(compute).lower(*a), args, {}, describe)
    return jax.tree.map(np.asarray, program(*args))


def _input_layer(model: TracedModel, x: np.ndarray, scaled: np.ndarray, raw: Mapping | None):
    names = list(model.features)
    return {
        "name": "input",
        "kind": "input",
        "activation": None,
        "features": names,
        "raw": dict(raw) if raw is not None else dict(zip(names, map(float, x))),
        "values": [float(v) for v in x],
        "scaled": [float(v) for v in scaled],
        "normalize": model.normalize,
    }


def _hidden_layer(name: str, activation: str, pre: np.ndarray, post: np.ndarray) -> dict:
    top = np.argsort(-post, kind="stable")[:STRONGEST]
    return {
        "name": name,
        "kind": "hidden",
        "activation": activation,
        "units": int(pre.shape[0]),
        # "Active": the unit's input is positive (for relu, exactly the units that pass on
        # a value); the same reading for every activation.
        "active": int((pre > 0).sum()),
        "pre_activation": {
            "min": float(pre.min()),
            "mean": float(pre.mean()),
            "max": float(pre.max()),
        },
        "strongest": [{"unit": int(u), "value": float(post[u])} for u in top],
        "values": [float(v) for v in post],
    }


def trace_features(
    model: TracedModel | Predictor,
    x: np.ndarray,
    *,
    label: Any = None,
    raw: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The trace record of one row. x: [features], encoded as the model was trained
    (before scaling); `label`: the true class name or target value, if known; `raw`: the
    row's values by input column, as read (default: the encoded values)."""
    if isinstance(model, Predictor):
        model = TracedModel.from_predictor(model)
    x = np.asarray(x, np.float32).reshape(-1)
    if x.shape[0] != len(model.features):
        raise JaxpipeError(
            f"the row has {x.shape[0]} features; the model takes {len(model.features)}"
        )
    got = _values(model, x)
    out, act = got["out"], model.network["activation"]
    layers = [_input_layer(model, x, got["scaled"], raw)]
    layers += [
        _hidden_layer(f"hidden_{i}", act, pre, post)
        for i, (pre, post) in enumerate(zip(got["pre"], got["post"]))
    ]
    if model.task == "regression":
        mean, scale = model.target
        value = float(out[0]) * scale + mean  # as predict_rows: target units
        layers.append(
            {"name": "output", "kind": "output", "activation": "identity", "value": float(out[0])}
        )
        prediction = {"class": None, "probability": None, "value": value, "label": label}
    else:
        probs = got["probs"]
        classes = tuple(model.classes)
        best = int(probs.argmax())
        layers.append(
            {
                "name": "output",
                "kind": "output",
                "activation": "softmax",
                "logits": {c: float(v) for c, v in zip(classes, out)},
                "probabilities": {c: float(p) for c, p in zip(classes, probs)},
            }
        )
        prediction = {"class": classes[best], "probability": float(probs[best]), "label": label}
    return {"task": model.task, "layers": layers, "prediction": prediction}


def _label_name(value: Any, task: str) -> Any:
    if value is None:
        return None
    if task == "regression":
        v = float(value)
        return None if np.isnan(v) else v
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _pick(n: int, row: int | None, where: str) -> int:
    row = 0 if row is None else row
    if not 0 <= row < n:
        raise JaxpipeError(f"--row {row}: {where} has {n} rows; choose 0..{n - 1}")
    return row


def trace_table(
    model: TracedModel,
    x: np.ndarray,
    columns: Mapping[str, np.ndarray],
    names: Sequence[str],
    label: str | None,
    *,
    row: int | None = None,
    origin: str = "data",
) -> dict[str, Any]:
    """The trace of row `row` (from 0; default 0) of a table: x: [rows, features]
    encoded, `columns` the raw columns as read (the input columns `names`, and the label
    column `label` when present, for the true value)."""
    i = _pick(x.shape[0], row, origin)
    raw = {n: _json_value(columns[n][i]) for n in names}
    truth = columns[label][i] if label is not None and label in columns else None
    record = trace_features(model, x[i], label=_label_name(truth, model.task), raw=raw)
    return record | {"source": origin, "row": i}


def trace_run(run_dir: str, data: str | None = None, *, row: int | None = None) -> dict:
    """The trace of one row with the model of the finished run in `run_dir`: row `row`
    (from 0) of `data` (csv, parquet or npz), or of the run's validation rows when `data`
    is None (default: the first). SIGINT / SIGTERM: RunInterrupted (exit 130 / 143)."""
    with catch_signals() as signals:
        record = run_trace(run_dir, data, row)
        signals.stop("while tracing")
    return record


def run_trace(run_dir: str, data: str | None = None, row: int | None = None) -> dict:
    """`trace_run` without a signal contract of its own: for a caller that holds one (a
    finished run's report, under the run's: a signal there ends nothing half-done)."""
    pred = load_predictor(run_dir)
    if data is not None:
        x, columns = encode_file(pred, data)
        model = TracedModel.from_predictor(pred)
        names, label = pred.encoder.input_names, pred.meta.get("label")
        return trace_table(model, x, columns, names, label, row=row, origin=data)
    path = os.path.join(run_dir, TRACE_ROWS_FILE)
    if not os.path.isfile(path):
        raise JaxpipeError(
            f"{path}: not found (a run of an older jaxpipe); pass the data file: "
            f"jaxpipe trace {run_dir} DATA"
        )
    try:
        with np.load(path, allow_pickle=False) as kept:
            x, y = kept["x"], kept["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise JaxpipeError(
            f"{path}: damaged ({type(e).__name__}: {e}); pass the data file: "
            f"jaxpipe trace {run_dir} DATA"
        ) from None
    i = _pick(x.shape[0], row, f"{run_dir} (its first validation rows; pass DATA for others)")
    label = pred.classes[int(y[i])] if pred.task == "classification" else float(y[i])
    return trace_features(pred, x[i], label=label) | {"source": "validation", "row": i}


def _json_value(v: Any) -> Any:
    if isinstance(v, (np.floating, float)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return None if v is None else str(v)
