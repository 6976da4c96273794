"""A model for serving: the whole predictor as one function of a raw float32 matrix,
exported as StableHLO (`jax.export`) or ONNX (jax2onnx).

The function takes x: [rows, columns] float32, the model's input columns in order
(`Model.columns`), and returns [rows, classes] probabilities (columns in `Model.classes`
order, as `jaxpipe predict --probabilities`) or [rows] regression values in the target's
units. Inside: the encoder's numeric part (a numeric column's NaN becomes the training
mean when the model imputes; a categorical column is one-hot encoded in the graph), the
fitted scaler and the MLP. The row count is symbolic. A categorical column goes in as a
number: an integer-coded column (`data.categorical`, vocabulary of numbers) as its code;
a text column as the position of its category in the vocabulary (`categories(model)`);
NaN is missing (imputed when the model imputes, else all zeros), any other value
unseen (all zeros), exactly as `predict` encodes them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe.core.model import make_model
from jaxpipe.core.scaling import Scaler, apply_scaler
from jaxpipe.data.encoding import ColumnCode, FeatureEncoder
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.errors import JaxpipeError
from jaxpipe.files import atomic_write
from jaxpipe.spec.sections import ModelSpec

__all__ = ["FORMATS", "serving_function", "export_model", "categories", "column_codes"]

FORMATS = ("stablehlo", "onnx")


def _numbers(categories: tuple[str, ...]) -> list[float] | None:
    """The vocabulary as numbers when every entry is one (an integer-coded column)."""
    try:
        values = [float(c) for c in categories]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def column_codes(code: ColumnCode) -> np.ndarray:
    """[categories] float32: the number a categorical column's input holds for each of its
    categories (its code when the vocabulary is numbers, else its position)."""
    values = _numbers(code.categories)
    return np.asarray(values if values is not None else range(len(code.categories)), np.float32)


def categories(encoder: FeatureEncoder) -> dict[str, dict[str, float]]:
    """Per categorical input column, category -> the number the exported model takes."""
    return {
        c.name: dict(zip(c.categories, column_codes(c).tolist()))
        for c in encoder.columns
        if c.kind == "categorical"
    }


def _encode(encoder: FeatureEncoder, x: jax.Array) -> jax.Array:
    """x: [rows, columns] raw → [rows, features], as `FeatureEncoder.transform`."""
    parts = []
    for j, code in enumerate(encoder.columns):
        col = x[:, j]
        if code.kind == "numeric":
            if encoder.impute:
                col = jnp.where(jnp.isnan(col), jnp.float32(code.fill[0]), col)
            parts.append(col[:, None])
            continue
        onehot = (col[:, None] == jnp.asarray(column_codes(code))[None, :]).astype(jnp.float32)
        if encoder.impute:
            fill = jnp.asarray(code.fill, jnp.float32)[None, :]
            onehot = jnp.where(jnp.isnan(col)[:, None], fill, onehot)
        parts.append(onehot)
    return jnp.concatenate(parts, axis=1)


def serving_function(
    network: dict[str, Any], params: Any, prep: Preprocessing
) -> Callable[[jax.Array], jax.Array]:
    """predict(x: [rows, columns] float32) -> [rows, classes] probabilities or [rows]
    values: encoder, scaler and MLP with the parameters as constants."""
    if prep.encoder is None:
        raise JaxpipeError("this model has no input encoder to export (an old run directory)")
    spec = ModelSpec(
        hidden=tuple(network["hidden"]),
        activation=network["activation"],
        layer_norm=network["layer_norm"],
        task=prep.task,
    )
    model = make_model(spec, network["outputs"])
    params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float32), params)
    scaler = Scaler(*(jnp.asarray(np.asarray(a), jnp.float32) for a in prep.scaler))
    stats = prep.target_stats
    encoder = prep.encoder

    def predict(x: jax.Array) -> jax.Array:
        out = model.apply(params, apply_scaler(scaler, _encode(encoder, x)))
        if stats is not None:
            return out[:, 0] * jnp.float32(stats[1]) + jnp.float32(stats[0])
        return jax.nn.softmax(out, axis=-1)

    return predict


def _stablehlo(fn: Callable, columns: int) -> bytes:
    (rows,) = jax.export.symbolic_shape("rows")
    spec = jax.ShapeDtypeStruct((rows, columns), jnp.float32)
    return jax.export.export(jax.jit(fn))(spec).serialize()


def _onnx(fn: Callable, columns: int) -> bytes:
    try:
        from jax2onnx import to_onnx
    except ImportError as e:
        raise JaxpipeError(
            "ONNX export needs jax2onnx (and onnxruntime to run it): pip install 'jaxpipe[onnx]'"
        ) from e
    # onnx_ir warns that the symbolic row count's intermediate shapes have no type: noise.
    log = logging.getLogger("onnx_ir")
    level, log.level = log.level, logging.ERROR
    try:
        proto = to_onnx(
            fn,
            inputs=[("rows", columns)],
            model_name="jaxpipe_predictor",
            input_names=["x"],
            output_names=["y"],
        )
    finally:
        log.setLevel(level)
    return proto.SerializeToString()


def export_model(
    network: dict[str, Any], params: Any, prep: Preprocessing, path: str, fmt: str
) -> str:
    """Writes the serving function to `path` in `fmt` ("stablehlo": the bytes of
    `jax.export.Exported.serialize()`, run with `jax.export.deserialize(b).call(x)`;
    "onnx": an ONNX model with input "x" and output "y"). Returns `path`."""
    if fmt not in FORMATS:
        raise JaxpipeError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    fn = serving_function(network, params, prep)
    columns = len(prep.encoder.columns)
    blob = _stablehlo(fn, columns) if fmt == "stablehlo" else _onnx(fn, columns)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    atomic_write(path, blob)
    return path
