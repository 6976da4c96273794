import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from conftest import assert_trees_close
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.core.losses import cross_entropy
from jaxpipe.core.metrics import add_sums, finalize, zero_sums
from jaxpipe.core.model import make_model
from jaxpipe.core.step import (
    epoch_batches,
    init_state,
    make_epoch,
    make_eval_step,
    make_evaluate,
    make_train_step,
)
from jaxpipe.spec.sections import ModelSpec

ADAM = optax.adam(1e-2)
optimizers = st.sampled_from([ADAM, optax.sgd(0.1, momentum=0.9)])


def _setup(hidden=(16,), tx=None, rows=64, features=4, classes=3, seed=0):
    tx = tx or ADAM
    model = make_model(ModelSpec(hidden=hidden), classes)
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (rows, features))
    y = jax.random.randint(k2, (rows,), 0, classes)
    state = init_state(model.init, tx, k3, x[:1])
    return model, tx, state, x, y


# Drawn examples differ in values, not shapes: one step function (and one jit of it) per
# model and optimizer keeps jit's cache across examples. A fresh `jax.jit` of a fresh
# closure recompiled the same program for every example: most of this file's time.
@functools.cache
def _train_step(hidden=(16,), tx=ADAM):
    return make_train_step(make_model(ModelSpec(hidden=hidden), 3).apply, cross_entropy, tx)


@functools.cache
def _jitted(fn):
    return jax.jit(fn)


@given(optimizers, st.sampled_from([(), (8,), (16, 8)]), st.integers(0, 100))
def test_train_step_keeps_structure_shapes_dtypes(tx, hidden, seed):
    model, tx, state, x, y = _setup(hidden, tx, seed=seed)
    step = _jitted(_train_step(hidden, tx))
    new, sums = step(state, x[:8], y[:8], jnp.ones(8))
    assert jax.tree.structure(new) == jax.tree.structure(state)
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(state)):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert int(new.step) == 1 and float(sums.count) == 8


@given(st.integers(0, 100))
def test_jit_and_no_jit_agree(seed):
    model, tx, state, x, y = _setup(seed=seed)
    step = _train_step()
    a = step(state, x[:8], y[:8], jnp.ones(8))
    b = _jitted(step)(state, x[:8], y[:8], jnp.ones(8))
    assert_trees_close(a, b, rtol=1e-5, atol=1e-6)  # fusion changes fp32 rounding slightly


def test_train_step_lowers_the_loss_on_separable_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    x = rng.normal(size=(256, 2)).astype(np.float32) + 4.0 * np.stack([y, 1 - y], 1)
    model, tx, state, *_ = _setup(hidden=(8,), tx=optax.adam(3e-2), features=2, classes=2)
    step = jax.jit(make_train_step(model.apply, cross_entropy, tx))
    evaluate = jax.jit(make_evaluate(make_eval_step(model.apply, cross_entropy), 64))
    before = finalize(evaluate(state.params, x, y))
    for _ in range(50):
        state, _ = step(state, x, y, jnp.ones(256))
    after = finalize(evaluate(state.params, x, y))
    assert after["loss"] < 0.5 * before["loss"] and after["accuracy"] > 0.97


@functools.cache
def _jitted_epoch(batch):
    return jax.jit(make_epoch(_train_step(), batch))


@given(st.sampled_from([(64, 16), (64, 24), (50, 7)]), st.integers(0, 100))
def test_scanned_epoch_equals_steps_one_by_one(rows_batch, seed):
    rows, batch = rows_batch
    model, tx, state, x, y = _setup(rows=rows, seed=seed)
    train_step = _train_step()
    scanned, sums = _jitted_epoch(batch)(state, x, y, jnp.int32(3))
    idx, w = epoch_batches(jax.random.fold_in(state.key, 3), rows, batch)
    step = _jitted(train_step)
    manual, total = state, zero_sums()
    for i in range(idx.shape[0]):
        manual, s = step(manual, x[idx[i]], y[idx[i]], w[i])
        total = add_sums(total, s)
    assert_trees_close(scanned, manual, rtol=1e-5, atol=1e-6)  # scan vs. unrolled fusion
    assert float(sums.count) == rows == float(total.count)


@given(st.integers(1, 200), st.sampled_from([7, 32]))
def test_epoch_batches_cover_every_row_once(rows, batch):
    idx, w = epoch_batches(jax.random.key(rows), rows, batch)
    used = np.asarray(idx)[np.asarray(w) > 0]
    assert sorted(used.tolist()) == list(range(rows))


def test_evaluate_covers_every_row():
    model, tx, state, x, y = _setup(rows=37)
    ev = jax.jit(make_evaluate(make_eval_step(model.apply, cross_entropy), 16))
    whole = finalize(ev(state.params, x, y))
    ref = finalize(
        jax.jit(make_eval_step(model.apply, cross_entropy))(state.params, x, y, jnp.ones(37))
    )
    assert abs(whole["loss"] - ref["loss"]) < 1e-5 and whole["accuracy"] == ref["accuracy"]


def test_dropout_key_is_derived_from_the_state_key_and_step():
    """Same state → same update (no hidden RNG state); a later step draws a new mask."""
    model = make_model(ModelSpec(hidden=(32,), dropout=0.5), 3)
    tx = optax.sgd(0.1)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(k1, (16, 4))
    y = jax.random.randint(k2, (16,), 0, 3)
    state = init_state(model.init, tx, k3, x[:1])
    step = jax.jit(
        make_train_step(model.apply, cross_entropy, tx, train_apply_fn=model.train_apply)
    )
    a, sa = step(state, x, y, jnp.ones(16))
    b, sb = step(state, x, y, jnp.ones(16))
    assert_trees_close(a, b, rtol=0, atol=0)
    later = state._replace(step=state.step + 1)
    c, sc = step(later, x, y, jnp.ones(16))
    assert float(sa.loss_sum) != float(sc.loss_sum)  # a different dropout mask
    plain = jax.jit(make_train_step(model.apply, cross_entropy, tx))(state, x, y, jnp.ones(16))
    assert float(plain[1].loss_sum) != float(sa.loss_sum)
