"""Metrics as running sums and counts, added across batches and divided once at the end,
so the result does not depend on how rows were split into batches."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Sums",
    "zero_sums",
    "classification_sums",
    "regression_sums",
    "add_sums",
    "finalize",
    "finalize_regression",
    "epoch_row",
]


class Sums(NamedTuple):
    """Running totals over rows: loss_sum, correct, count (all float32 scalars)."""

    loss_sum: jax.Array
    correct: jax.Array
    count: jax.Array


def zero_sums() -> Sums:
    z = jnp.zeros((), jnp.float32)
    return Sums(z, z, z)


def classification_sums(
    losses: jax.Array, logits: jax.Array, labels: jax.Array, weight: jax.Array
) -> Sums:
    """Totals for one batch. losses, labels, weight: [batch]; logits: [batch, classes].

    weight is 1 for real rows and 0 for padding.
    """
    hit = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return Sums(jnp.sum(losses * weight), jnp.sum(hit * weight), jnp.sum(weight))


def regression_sums(
    losses: jax.Array, pred: jax.Array, targets: jax.Array, weight: jax.Array
) -> Sums:
    """Totals for one regression batch (losses: squared errors [batch]); `correct` is
    unused and stays 0, so one Sums type serves both tasks."""
    del pred, targets
    return Sums(jnp.sum(losses * weight), jnp.zeros((), jnp.float32), jnp.sum(weight))


def add_sums(a: Sums, b: Sums) -> Sums:
    return Sums(*(x + y for x, y in zip(a, b)))


def finalize(sums: Sums) -> dict[str, float]:
    """Host-side means: {"loss", "accuracy"}. Call once per epoch, outside jit."""
    s = jax.device_get(sums)
    count = max(float(s.count), 1.0)
    return {"loss": float(s.loss_sum) / count, "accuracy": float(s.correct) / count}


def finalize_regression(sums: Sums, target_scale: float) -> dict[str, float]:
    """Host-side {"loss", "rmse"} for a regression whose loss is the squared error of the
    target standardised by `target_scale`: RMSE in the target's units is
    target_scale * sqrt(mean squared error)."""
    s = jax.device_get(sums)
    mse = float(s.loss_sum) / max(float(s.count), 1.0)
    return {"loss": mse, "rmse": float(target_scale) * mse**0.5}


def epoch_row(
    epoch: int,
    train: dict[str, float],
    val: Sums,
    target_scale: float | None,
    scores: dict[str, float] | None = None,
) -> dict[str, float]:
    """metrics.jsonl's row of one epoch (a run's and a sweep trial's alike): `train` as
    `finalize` gives it, the validation sums, a regression target's scale (None for
    classification) and the optional validation metrics the spec asked for
    (`evaluation.epoch_scores`), after the others."""
    if target_scale is not None:
        v = finalize_regression(val, target_scale)
        return {"epoch": epoch, "train_loss": train["loss"], "val_loss": v["loss"],
                "val_rmse": v["rmse"]}  # fmt: skip
    v = finalize(val)
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "val_loss": v["loss"],
        "val_accuracy": v["accuracy"],
        **(scores or {}),
    }
