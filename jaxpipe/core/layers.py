"""The MLP as flax modules. Imported where a program is traced (`model.make_model`'s
`init` and `apply` on their first call, the trace's program on a cache miss), not by
`import jaxpipe.core.model`: a warm run loads its programs from disk and never builds a
module, so it never imports flax (~0.08 s, a sixth of `import jax, optax`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["MLP", "Dropout"]


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
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu  # model.ACTIVATION_FNS's
    dtype: Any = jnp.float32
    dropout: Any = 0.0  # a float, or a traced scalar in a sweep
    layer_norm: bool = False
    # A sharded run's layout hooks (`sharding.Layout.model_hooks`): `dense(name)` gives
    # extra nn.Dense arguments (FSDP's per-layer weight gather), `activations(x)` pins a
    # [batch, width] activation's batch dim. None: one device, nothing pinned.
    hooks: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        act = self.activation
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
