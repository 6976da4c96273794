"""The planner's state as shapes (planstate.py): a deep MLP's optimizer state is built
from one leaf per distinct shape and must be exactly what optax's init gives; the
grouped byte counts must equal the leaf-by-leaf ones under every layout."""

import dataclasses

import jax
import pytest

from jaxpipe.data.shapes import data_shapes
from jaxpipe.planner import memory, state
from jaxpipe.planner import state as planstate
from jaxpipe.planner.values import Workload
from jaxpipe.spec.experiment import parse_spec

# Every optimizer the docs list (README's optimizer table).
OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "lion", "adafactor", "lamb"]


def _spec(opt: str):
    # 30 hidden layers with LayerNorm: 122 leaves (past planstate._FEW_LEAVES), 5 shapes.
    return parse_spec(
        f"""
[data]
source = "synthetic"
validation = 16
[data.synthetic]
rows = 80
features = 6
classes = 3
[model]
hidden = {[8, 16] * 15}
layer_norm = true
[optimizer]
name = "{opt}"
[training]
batch_size = 16
"""
    )


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_deep_state_from_distinct_shapes_is_optax_init(opt):
    spec = _spec(opt)
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    assert len(jax.tree.leaves(abstract.params)) > planstate._FEW_LEAVES
    full = jax.eval_shape(abstract.tx.init, abstract.params)
    assert jax.tree.structure(full) == jax.tree.structure(abstract.opt_state)
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(abstract.opt_state)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    # Grouped bytes (per distinct shape and spec) equal the leaf-by-leaf sums.
    slow = abstract._replace(classes=None)
    for strategy, mesh in [
        ("single", {"data": 1}),
        ("fsdp", {"data": 4}),
        ("tensor", {"model": 2}),
        ("fsdp+tensor", {"data": 2, "model": 2}),
    ]:
        fast = memory.estimate(spec.model, spec.training, shapes, abstract, strategy, mesh)
        ref = memory.estimate(spec.model, spec.training, shapes, slow, strategy, mesh)
        assert dataclasses.asdict(fast) == dataclasses.asdict(ref), (strategy, mesh)
