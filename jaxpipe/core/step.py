"""Pure training and evaluation programs: the train step, the scanned epoch and the
batched evaluation. Factories return functions; the loop jits them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxpipe.core.losses import cross_entropy, squared_error
from jaxpipe.core.metrics import Sums, add_sums, classification_sums, regression_sums, zero_sums

SumsFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], Sums]

# Dropout keys come from their own stream of the state key, folded with the step, so they
# never coincide with the per-epoch shuffle keys fold_in(key, epoch).
_DROPOUT_STREAM = 0x7D0F

__all__ = [
    "TrainState",
    "steps_per_epoch",
    "init_state",
    "make_train_step",
    "make_eval_step",
    "make_task_steps",
    "weighted_by_class",
    "epoch_batches",
    "make_epoch",
    "make_evaluate",
    "make_probabilities",
]

ApplyFn = Callable[[Any, jax.Array], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]


class TrainState(NamedTuple):
    """Everything that changes during training; a pytree of arrays only."""

    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


def steps_per_epoch(rows: int, batch_size: int) -> int:
    """Batches in one epoch over `rows` rows: ceil(rows / batch_size), the last batch
    padded with weight-0 rows (`epoch_batches`), so no row is dropped. The one place this
    is computed."""
    return -(-rows // batch_size)


def init_state(
    init_fn: Callable[[jax.Array, jax.Array], Any],
    tx: optax.GradientTransformation,
    key: jax.Array,
    x_example: jax.Array,
) -> TrainState:
    """Fresh state from `key`. x_example: [batch, features] (only its shape is used)."""
    init_key, run_key = jax.random.split(key)
    params = init_fn(init_key, x_example)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), run_key)


def make_train_step(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    sums_fn: SumsFn = classification_sums,
    train_apply_fn: Callable[[Any, jax.Array, jax.Array], jax.Array] | None = None,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, Sums]]:
    """train_step(state, x: [batch, features], y: [batch], weight: [batch]) -> (state, sums).

    The gradient is of the mean loss over rows with weight 1; weight-0 rows (padding of
    the last batch) contribute nothing. With `train_apply_fn(params, x, key)` (dropout),
    the key is fold_in(fold_in(state.key, stream), state.step): explicit, per step.
    """

    def train_step(
        state: TrainState, x: jax.Array, y: jax.Array, weight: jax.Array
    ) -> tuple[TrainState, Sums]:
        def objective(params: Any) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            if train_apply_fn is None:
                logits = apply_fn(params, x)
            else:
                stream = jax.random.fold_in(state.key, _DROPOUT_STREAM)
                logits = train_apply_fn(params, x, jax.random.fold_in(stream, state.step))
            losses = loss_fn(logits, y)
            return jnp.sum(losses * weight) / jnp.maximum(jnp.sum(weight), 1.0), (losses, logits)

        (_, (losses, logits)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = sums_fn(losses, logits, y, weight)
        return TrainState(state.step + 1, params, opt_state, state.key), sums

    return train_step


def make_eval_step(
    apply_fn: ApplyFn, loss_fn: LossFn, *, sums_fn: SumsFn = classification_sums
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], Sums]:
    """eval_step(params, x: [batch, features], y: [batch], weight: [batch]) -> sums."""

    def eval_step(params: Any, x: jax.Array, y: jax.Array, weight: jax.Array) -> Sums:
        logits = apply_fn(params, x)
        return sums_fn(loss_fn(logits, y), logits, y, weight)

    return eval_step


def make_task_steps(
    model: Any,
    tx: optax.GradientTransformation,
    task: str,
    dropout: bool,
    class_weights: tuple[float, ...] | None = None,
) -> tuple[Callable, Callable]:
    """(train_step, eval_step) for a `model.Model` and `task`: softmax cross-entropy with
    accuracy sums for "classification", squared error with RMSE sums for "regression";
    dropout (`model.train_apply`) in training only. `class_weights` ([classes]) weigh
    each row's training loss by its class (the mean stays over rows, as Keras's
    `class_weight`); evaluation is unweighted."""
    loss_fn, sums_fn = (
        (squared_error, regression_sums)
        if task == "regression"
        else (cross_entropy, classification_sums)
    )
    train_loss = loss_fn if class_weights is None else weighted_by_class(loss_fn, class_weights)
    train_step = make_train_step(
        model.apply,
        train_loss,
        tx,
        sums_fn=sums_fn,
        train_apply_fn=model.train_apply if dropout else None,
    )
    return train_step, make_eval_step(model.apply, loss_fn, sums_fn=sums_fn)


def weighted_by_class(loss_fn: LossFn, class_weights: tuple[float, ...]) -> LossFn:
    """loss_fn(logits, labels) * class_weights[labels]: [batch], per row."""
    weights = jnp.asarray(class_weights, jnp.float32)

    def weighted(logits: jax.Array, labels: jax.Array) -> jax.Array:
        return loss_fn(logits, labels) * weights[labels]

    return weighted


def epoch_batches(
    key: jax.Array | None, rows: int, batch_size: int, multiple: int = 1
) -> tuple[jax.Array, jax.Array]:
    """Row indices and weights of one epoch's batches: ([steps, width] int32, [steps, width]).

    A seeded permutation when `key` is given (else rows in order), cut into
    ceil(rows / batch_size) batches; the last is padded with row 0 at weight 0, so every
    row is used exactly once and none is dropped. With `multiple` > 1 (the data-parallel
    axis size) each batch is widened with weight-0 rows to a multiple of it, so it splits
    evenly over devices while computing exactly the same weighted mean.
    """
    steps = steps_per_epoch(rows, batch_size)
    order = jnp.arange(rows) if key is None else jax.random.permutation(key, rows)
    pad = steps * batch_size - rows
    idx = jnp.concatenate([order, jnp.zeros(pad, order.dtype)]).astype(jnp.int32)
    weight = (jnp.arange(steps * batch_size) < rows).astype(jnp.float32)
    idx, weight = idx.reshape(steps, batch_size), weight.reshape(steps, batch_size)
    extra = -batch_size % multiple
    if extra:
        idx = jnp.pad(idx, ((0, 0), (0, extra)))
        weight = jnp.pad(weight, ((0, 0), (0, extra)))
    return idx, weight


def _unconstrained(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    return arrays


def make_epoch(
    train_step: Callable,
    batch_size: int,
    *,
    multiple: int = 1,
    constrain: Callable[..., tuple[jax.Array, ...]] = _unconstrained,
) -> Callable[[TrainState, jax.Array, jax.Array, jax.Array], tuple[TrainState, Sums]]:
    """epoch(state, x: [rows, features], y: [rows], epoch: int32 scalar) -> (state, sums).

    One compiled program: a `lax.scan` of `train_step` over the seeded, shuffled batches
    of the device-resident data (shuffle key: fold_in(state.key, epoch)). For sharded
    runs, `multiple` is the data-parallel axis size and `constrain(x, y, w)` pins each
    gathered batch to its sharding (see `sharding.py`).
    """

    def epoch(
        state: TrainState, x: jax.Array, y: jax.Array, epoch_index: jax.Array
    ) -> tuple[TrainState, Sums]:
        key = jax.random.fold_in(state.key, epoch_index)
        idx, weight = epoch_batches(key, x.shape[0], batch_size, multiple)

        def body(carry: tuple[TrainState, Sums], batch: tuple[jax.Array, jax.Array]):
            state, sums = carry
            rows, w = batch
            state, s = train_step(state, *constrain(x[rows], y[rows], w))
            return (state, add_sums(sums, s)), None

        (state, sums), _ = lax.scan(body, (state, zero_sums()), (idx, weight))
        return state, sums

    return epoch


def make_probabilities(apply_fn: ApplyFn) -> Callable[[Any, jax.Array], jax.Array]:
    """probabilities(params, x: [batch, features]) -> [batch, classes] float32 softmax."""

    def probabilities(params: Any, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(apply_fn(params, x).astype(jnp.float32), axis=-1)

    return probabilities


def make_evaluate(
    eval_step: Callable,
    batch_size: int,
    *,
    multiple: int = 1,
    constrain: Callable[..., tuple[jax.Array, ...]] = _unconstrained,
    probabilities: Callable[[Any, jax.Array], jax.Array] | None = None,
) -> Callable[[Any, jax.Array, jax.Array], Any]:
    """evaluate(params, x: [rows, features], y: [rows]) -> sums over every row, in
    batches of `batch_size` (one compiled scan; bounded activation memory). With
    `probabilities` (make_probabilities) it returns (sums, probs: [rows, classes]): every
    row's probabilities, for the metrics that rank all rows (ROC-AUC), scored on the host."""

    def evaluate(params: Any, x: jax.Array, y: jax.Array) -> Any:
        idx, weight = epoch_batches(None, x.shape[0], batch_size, multiple)

        def body(sums: Sums, batch: tuple[jax.Array, jax.Array]):
            rows, w = batch
            xb, yb, wb = constrain(x[rows], y[rows], w)
            sums = add_sums(sums, eval_step(params, xb, yb, wb))
            return sums, None if probabilities is None else probabilities(params, xb)

        sums, probs = lax.scan(body, zero_sums(), (idx, weight))
        if probabilities is None:
            return sums
        # Back to row order: a padding slot points at row 0 and adds exactly 0 there.
        flat = jnp.where(weight.reshape(-1, 1) > 0, probs.reshape(-1, probs.shape[-1]), 0.0)
        out = jnp.zeros((x.shape[0], probs.shape[-1]), jnp.float32)
        return sums, out.at[idx.reshape(-1)].add(flat)

    return evaluate
