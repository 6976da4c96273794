"""The MLP: a flax module (layers.py) used only through a pure `init(key, x) -> params`
and `apply(params, x) -> outputs`, with params a plain nested dict of arrays; its
parameters' shapes, counts and layer table, known without building it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxpipe.imports import import_heavy
from jaxpipe.spec.sections import ModelSpec

__all__ = [
    "Model",
    "make_model",
    "flax_module",
    "compute_dtype",
    "param_count",
    "layer_table",
    "param_shapes",
    "ACTIVATION_FNS",
]

# jax.nn's functions, the very objects flax.linen re-exports under the same names.
ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
}


def compute_dtype(precision: str) -> Any:
    """The matmuls' dtype for `[training] precision`: bfloat16 or float32."""
    return jnp.bfloat16 if precision == "bfloat16" else jnp.float32


class Model(NamedTuple):
    """Pure functions: init(key, x: [batch, features]) -> params; apply(params, x) ->
    [batch, outputs] (inference: no dropout); train_apply(params, x, key) -> [batch,
    outputs] with dropout drawn from `key`."""

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    train_apply: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None


def flax_module(
    hidden: Sequence[int],
    outputs: int,
    activation: str,
    dropout: Any,
    layer_norm: bool,
    dtype: Any = jnp.float32,
    hooks: Any = None,
) -> Any:
    """The MLP as a flax module (layers.MLP), for `make_model` and for the prediction
    trace, which reads its intermediates. Imports flax: called only where a program is
    traced (a run whose programs all come from the stored executables never calls it)."""
    MLP = import_heavy("jaxpipe.core.layers").MLP
    return MLP(
        hidden=tuple(hidden),
        outputs=outputs,
        activation=ACTIVATION_FNS[activation],
        dtype=dtype,
        dropout=dropout,
        layer_norm=layer_norm,
        hooks=hooks,
    )


def make_model(cfg: ModelSpec, outputs: int, dtype: Any = jnp.float32, hooks: Any = None) -> Model:
    """Builds the spec's MLP with `outputs` logits (1 for regression). `hooks`: a sharded
    layout's `model_hooks` (same parameters, same numbers; only where XLA puts them). The
    flax module is built on the first call of `init` or `apply`: a run whose programs
    all come from the stored executables (aot.py) never traces it."""

    module = functools.cache(
        lambda: flax_module(
            cfg.hidden, outputs, cfg.activation, cfg.dropout, cfg.layer_norm, dtype, hooks
        )
    )

    def init(key: jax.Array, x: jax.Array) -> Any:
        return module().init(key, x)["params"]

    def apply(params: Any, x: jax.Array) -> jax.Array:
        return module().apply({"params": params}, x)

    def train_apply(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        return module().apply({"params": params}, x, train=True, rngs={"dropout": key})

    return Model(init, apply, train_apply)


def param_shapes(hidden: tuple[int, ...], features: int, outputs: int, layer_norm: bool) -> Any:
    """The MLP's parameters as `jax.ShapeDtypeStruct`s, the tree `make_model(...).init`
    returns (float32 kernels [in, out] and biases [out]; LayerNorm scale and bias), built
    directly: tracing flax's init takes seconds per thousand layers, and imports flax."""
    f32 = jnp.float32
    params: dict[str, Any] = {}
    widths = (features, *hidden)
    for i, (a, b) in enumerate(zip(widths, hidden)):
        params[f"hidden_{i}"] = {
            "bias": jax.ShapeDtypeStruct((b,), f32),
            "kernel": jax.ShapeDtypeStruct((a, b), f32),
        }
        if layer_norm:
            params[f"norm_{i}"] = {
                "bias": jax.ShapeDtypeStruct((b,), f32),
                "scale": jax.ShapeDtypeStruct((b,), f32),
            }
    params["output"] = {
        "bias": jax.ShapeDtypeStruct((outputs,), f32),
        "kernel": jax.ShapeDtypeStruct((widths[-1], outputs), f32),
    }
    return params


def param_count(params: Any) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(params))


def layer_table(params: Any) -> list[tuple[str, str, int]]:
    """(layer, shape, parameter count) per Dense (kernel in → out) and LayerNorm
    (width) layer, in order."""

    def order(name: str) -> tuple[bool, int, bool]:
        kind, _, index = name.rpartition("_")
        return name == "output", int(index) if index.isdigit() else 0, kind == "norm"

    rows = []
    for name in sorted(params, key=order):
        layer = params[name]
        if "kernel" in layer:
            k = layer["kernel"]
            shape = f"{k.shape[0]} → {k.shape[1]}"
        else:
            shape = f"norm {layer['scale'].shape[0]}"
        rows.append((name, shape, param_count(layer)))
    return rows
