"""The MLP: a flax module used only through a pure `init(key, x) -> params` and
`apply(params, x) -> outputs`, with params a plain nested dict of arrays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxpipe.spec import ModelSpec

__all__ = ["MLP", "Model", "make_model", "param_count", "layer_table", "ACTIVATION_FNS"]

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


class MLP(nn.Module):
    """Dense layers with `activation` between them and a linear output layer.

    Parameters are float32; `dtype` is the compute dtype (bfloat16 halves activation
    memory and uses the matrix units); outputs are always float32 for a stable loss.
    """

    hidden: Sequence[int]
    outputs: int
    activation: str = "relu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATION_FNS[self.activation]
        x = x.astype(self.dtype)
        for i, width in enumerate(self.hidden):
            x = act(nn.Dense(width, dtype=self.dtype, name=f"hidden_{i}")(x))
        return nn.Dense(self.outputs, dtype=self.dtype, name="output")(x).astype(jnp.float32)


class Model(NamedTuple):
    """A pure pair: init(key, x: [batch, features]) -> params; apply(params, x) ->
    [batch, outputs]."""

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]


def make_model(cfg: ModelSpec, outputs: int, dtype: Any = jnp.float32) -> Model:
    """Builds the spec's MLP with `outputs` logits."""
    module = MLP(hidden=tuple(cfg.hidden), outputs=outputs, activation=cfg.activation, dtype=dtype)

    def init(key: jax.Array, x: jax.Array) -> Any:
        return module.init(key, x)["params"]

    def apply(params: Any, x: jax.Array) -> jax.Array:
        return module.apply({"params": params}, x)

    return Model(init, apply)


def param_count(params: Any) -> int:
    return sum(int(p.size) for p in jax.tree.leaves(params))


def layer_table(params: Any) -> list[tuple[str, str, int]]:
    """(layer, kernel shape in → out, parameter count) per Dense layer, in order."""
    rows = []
    names = sorted(params, key=lambda n: (n == "output", int(n.split("_")[-1]) if "_" in n else 0))
    for name in names:
        layer = params[name]
        k = layer["kernel"]
        rows.append((name, f"{k.shape[0]} → {k.shape[1]}", param_count(layer)))
    return rows
