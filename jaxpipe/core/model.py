"""The MLP: a flax module used only through a pure `init(key, x) -> params` and
`apply(params, x) -> outputs`, with params a plain nested dict of arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpipe.spec.sections import ModelSpec

__all__ = [
    "MLP",
    "Model",
    "make_model",
    "compute_dtype",
    "param_count",
    "layer_table",
    "ACTIVATION_FNS",
]

ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "softplus": nn.softplus,
}


def compute_dtype(precision: str) -> Any:
    """The matmuls' dtype for `[training] precision`: bfloat16 or float32."""
    return jnp.bfloat16 if precision == "bfloat16" else jnp.float32


def _dropout_on(rate: Any) -> bool:
    """A Python rate of 0 means no dropout layer; a traced rate (one per trial of a sweep,
    see trials.py) always has one, which keeps everything when the rate is 0."""
    return not isinstance(rate, (int, float)) or rate > 0.0


class Dropout(nn.Module):
    """flax's nn.Dropout (same name, so the same rng stream, and the same mask) with a
    rate that may be a traced value: flax's tests `rate == 0.0` in Python."""

    rate: Any

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), p=keep, shape=x.shape)
        return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


class MLP(nn.Module):
    """Dense layers (each optionally followed by LayerNorm) with `activation` and
    dropout between them, and a linear output layer.

    Parameters are float32; `dtype` is the compute dtype (bfloat16 halves activation
    memory and uses the matrix units); outputs are always float32 for a stable loss.
    Dropout is active only when `train` is true (it then needs a "dropout" rng).
    """

    hidden: Sequence[int]
    outputs: int
    activation: str = "relu"
    dtype: Any = jnp.float32
    dropout: Any = 0.0  # a float, or a traced scalar in a sweep
    layer_norm: bool = False
    # A sharded run's layout hooks (`sharding.Layout.model_hooks`): `dense(name)` gives
    # extra nn.Dense arguments (FSDP's per-layer weight gather), `activations(x)` pins a
    # [batch, width] activation's batch dim. None: one device, nothing pinned.
    hooks: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = ACTIVATION_FNS[self.activation]
        dense = self.hooks.dense if self.hooks is not None else lambda name: {}
        pin = self.hooks.activations if self.hooks is not None else lambda a: a
        x = pin(x.astype(self.dtype))
        for i, width in enumerate(self.hidden):
            x = pin(
                nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}", **dense(f"hidden_{i}"))(x)
            )
            if self.layer_norm:
                x = nn.LayerNorm(dtype=self.dtype, name=f"norm_{i}")(x)
            x = act(x)
            if _dropout_on(self.dropout):
                x = Dropout(self.dropout)(x, deterministic=not train)
        out = nn.Dense(self.outputs, dtype=self.dtype, name="output", **dense("output"))(x)
        return pin(out).astype(jnp.float32)


class Model(NamedTuple):
    """Pure functions: init(key, x: [batch, features]) -> params; apply(params, x) ->
    [batch, outputs] (inference: no dropout); train_apply(params, x, key) -> [batch,
    outputs] with dropout drawn from `key`."""

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    train_apply: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None


def make_model(cfg: ModelSpec, outputs: int, dtype: Any = jnp.float32, hooks: Any = None) -> Model:
    """Builds the spec's MLP with `outputs` logits (1 for regression). `hooks`: a sharded
    layout's `model_hooks` (same parameters, same numbers; only where XLA puts them)."""
    module = MLP(
        hidden=tuple(cfg.hidden),
        outputs=outputs,
        activation=cfg.activation,
        dtype=dtype,
        dropout=cfg.dropout,
        layer_norm=cfg.layer_norm,
        hooks=hooks,
    )

    def init(key: jax.Array, x: jax.Array) -> Any:
        return module.init(key, x)["params"]

    def apply(params: Any, x: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x)

    def train_apply(params: Any, x: jax.Array, key: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x, train=True, rngs={"dropout": key})

    return Model(init, apply, train_apply)


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
