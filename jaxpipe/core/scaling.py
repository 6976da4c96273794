"""Stage 3: feature scaling on the device. Pure and jittable: `fit_*` computes statistics
from the training split, `apply_*` uses them on any split, `invert_*` undoes them."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Scaler",
    "fit_minmax",
    "fit_standard",
    "fit_identity",
    "fit_scaler",
    "apply_scaler",
    "invert_scaler",
]


class Scaler(NamedTuple):
    """`apply(x) = (x - offset) / scale`, per feature. offset, scale: [features]."""

    offset: jax.Array
    scale: jax.Array


def _safe(scale: jax.Array) -> jax.Array:
    # A constant column has zero spread; dividing by 1 maps it to 0 instead of NaN.
    return jnp.where(scale > 0, scale, jnp.ones_like(scale))


def fit_minmax(x: jax.Array) -> Scaler:
    """Scaler mapping each column of x: [rows, features] onto [0, 1]."""
    lo = jnp.min(x, axis=0)
    return Scaler(lo, _safe(jnp.max(x, axis=0) - lo))


def fit_standard(x: jax.Array) -> Scaler:
    """Scaler to zero mean and unit variance per column of x: [rows, features]."""
    mean = jnp.mean(x, axis=0)
    # Two-pass variance: the one-pass E[x²] - E[x]² loses everything in fp32 for columns
    # with a large offset.
    std = jnp.sqrt(jnp.mean(jnp.square(x - mean), axis=0))
    return Scaler(mean, _safe(std))


def fit_identity(x: jax.Array) -> Scaler:
    """The scaler that changes nothing (normalize = "none")."""
    return Scaler(jnp.zeros(x.shape[1], x.dtype), jnp.ones(x.shape[1], x.dtype))


_FITS = {"minmax": fit_minmax, "standard": fit_standard, "none": fit_identity}


def fit_scaler(kind: str, x: jax.Array) -> Scaler:
    """Fits the scaler named by `preprocess.normalize` on x: [rows, features]."""
    try:
        return _FITS[kind](x)
    except KeyError:
        raise ValueError(
            f"unknown normaliser {kind!r}; expected one of {', '.join(_FITS)}"
        ) from None


def apply_scaler(scaler: Scaler, x: jax.Array) -> jax.Array:
    """x: [rows, features] → scaled [rows, features]."""
    return (x - scaler.offset) / scaler.scale


def invert_scaler(scaler: Scaler, z: jax.Array) -> jax.Array:
    """The inverse of `apply_scaler`."""
    return z * scaler.scale + scaler.offset
