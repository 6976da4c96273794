"""Pure losses: per-row values, so callers can mask padded rows and average once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["cross_entropy", "squared_error"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy per row. logits: [batch, classes]; labels: [batch] int → [batch].

    Equals -log softmax(logits)[label]; computed through log-sum-exp so large logits
    do not overflow.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Squared error per row. pred: [batch, 1] or [batch]; target: [batch] → [batch]."""
    return jnp.square(pred.reshape(target.shape) - target)
