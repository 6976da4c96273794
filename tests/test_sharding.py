"""Sharding never changes what is learned: one epoch under every strategy equals the
single-device epoch, on 8 simulated CPU devices."""

import functools

import jax
import jax.numpy as jnp
import optax
import pytest
from conftest import assert_trees_close
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpipe.core.losses import cross_entropy
from jaxpipe.core.metrics import finalize
from jaxpipe.core.model import make_model
from jaxpipe.core.step import init_state, make_epoch, make_eval_step, make_evaluate, make_train_step
from jaxpipe.parallel.sharding import (
    batch_constraint,
    make_layout,
    make_mesh,
    measured_bytes_per_device,
    place,
    replicated,
    state_shardings,
)
from jaxpipe.spec.sections import ModelSpec
from jaxpipe.testing import MESHES, strategy_meshes

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

CASES = [(s, m) for s, ms in MESHES.items() for m in ms]


def _epoch(strategy, mesh_shape, hidden, batch, rows=96, features=6, classes=3, seed=0):
    # The run's model: sharded layouts pass their hooks (FSDP's explicit per-layer gather).
    hooks = (
        None if strategy == "single" else make_layout(strategy, mesh_shape).model_hooks(len(hidden))
    )
    model = make_model(ModelSpec(hidden=hidden), classes, hooks=hooks)
    tx = optax.adam(1e-2)
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(k1, (rows, features))
    y = jax.random.randint(k2, (rows,), 0, classes)
    state = init_state(model.init, tx, k3, x[:1])
    step = make_train_step(model.apply, cross_entropy, tx)
    ev = make_eval_step(model.apply, cross_entropy)
    if strategy == "single":
        epoch = jax.jit(make_epoch(step, batch))
        evaluate = jax.jit(make_evaluate(ev, 32))
        new, sums = epoch(state, x, y, jnp.int32(1))
        return new, finalize(sums), finalize(evaluate(new.params, x, y)), state
    mesh = make_mesh(mesh_shape)
    shardings = state_shardings(state, tx, strategy, mesh)
    placed = place(state, shardings)
    x, y = jax.device_put((x, y), replicated(mesh))
    dp = mesh.shape.get("data", 1) if "tensor" != strategy else 1
    constrain = batch_constraint(mesh, strategy)
    epoch = jax.jit(
        make_epoch(step, batch, multiple=dp, constrain=constrain),
        out_shardings=(shardings, replicated(mesh)),
        donate_argnums=0,
    )
    evaluate = jax.jit(make_evaluate(ev, 32, multiple=dp, constrain=constrain))
    new, sums = epoch(placed, x, y, jnp.int32(1))
    for a, s in zip(jax.tree.leaves(new), jax.tree.leaves(shardings)):
        assert a.sharding.is_equivalent_to(s, a.ndim), (a.sharding, s)
    return new, finalize(sums), finalize(evaluate(new.params, x, y)), None


SHAPES = [((8,), 16), ((16, 8), 24), ((8, 16, 8), 13)]  # 13: uneven over every data axis


@functools.cache
def _single(hidden, batch):
    ref, train, val, _ = _epoch("single", None, hidden, batch)
    return jax.device_get(ref), train, val


def _check(strategy, mesh, hidden, batch):
    ref, ref_train, ref_val = _single(hidden, batch)
    got, train, val, _ = _epoch(strategy, mesh, hidden, batch)
    # fp32 sums reduced in a different order across devices: a few ulps per step, compounded
    # over 4-8 Adam steps.
    assert_trees_close(jax.device_get(got), ref, rtol=1e-4, atol=1e-5)
    for a, b in ((train, ref_train), (val, ref_val)):
        assert abs(a["loss"] - b["loss"]) < 1e-4 and abs(a["accuracy"] - b["accuracy"]) < 1e-9


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{s}-{m}" for s, m in CASES])
def test_every_strategy_and_mesh_equals_single(i):
    strategy, mesh = CASES[i]
    hidden, batch = SHAPES[i % len(SHAPES)]
    _check(strategy, mesh, hidden, batch)


@settings(max_examples=6)
@given(case=strategy_meshes(max_devices=8), shape=st.sampled_from(SHAPES))
def test_drawn_strategy_mesh_and_shape_equal_single(case, shape):
    _check(case[0], case[1], *shape)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_fsdp_shards_fall_as_one_over_n(n):
    model = make_model(ModelSpec(hidden=(64, 64)), 8)
    tx = optax.adam(1e-3)
    state = init_state(model.init, tx, jax.random.key(0), jnp.zeros((1, 32)))
    single = measured_bytes_per_device(state)
    placed = place(state, state_shardings(state, tx, "fsdp", make_mesh({"data": n})))
    per_device = measured_bytes_per_device(placed)
    # Biases of width 8 do not divide by 8... all others shard: close to 1/n, never more
    # than 1/n plus the unsharded small leaves.
    assert per_device <= single / n * 1.15 + 64 * 4
    assert per_device < single
