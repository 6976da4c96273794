"""What XLA compiles for each layout: FSDP gathers weights (never activations or the
batch) and reduce-scatters their gradients, so per-device bytes fall with the device
count; the compile in a child process on simulated devices gives the in-process figure."""

import math

import jax
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jaxpipe.data.shapes import data_shapes
from jaxpipe.parallel import partition
from jaxpipe.planner import state, verify
from jaxpipe.planner.values import Workload
from jaxpipe.spec.experiment import parse_spec

SPEC = """
[data]
source = "synthetic"
validation = 16
[data.synthetic]
rows = 272
features = 16
classes = 4
[model]
hidden = [512, 512, 512]
[training]
batch_size = 32
"""


@pytest.fixture(scope="module")
def compiled():
    spec = parse_spec(SPEC)
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    out = {}
    for n in (1, 2, 4, 8):
        strategy = "fsdp" if n > 1 else "single"
        c = verify.compile_layout(
            Workload.of(spec),
            shapes,
            abstract,
            strategy,
            {"data": n},
        )
        out[n] = (verify.xla_figures(c, shapes), verify.collectives(c))
    return spec, shapes, abstract, out


def _param_shapes(abstract):
    return {f"f32{list(leaf.shape)}".replace(" ", "") for leaf in _leaves(abstract.params)}


def _leaves(tree):
    return jax.tree.leaves(tree)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_fsdp_gathers_weights_and_reduce_scatters_their_gradients(compiled, n):
    _, _, abstract, out = compiled
    figures, found = out[n]
    whole = _param_shapes(abstract)
    # Every all-gather is of a parameter, whole: never of activations or the batch.
    assert found["all-gather"] and set(found["all-gather"]) <= whole, found["all-gather"]
    assert "f32[512,512]" in found["all-gather"]
    # Each kernel's gradient leaves as a reduce-scatter of its shard, not an all-reduce.
    assert f"f32[{512 // n},512]" in found["reduce-scatter"], found["reduce-scatter"]
    assert all(s in ("f32[]", "tuple") or s not in whole for s in found.get("all-reduce", []))


def test_fsdp_per_device_bytes_fall_with_the_device_count(compiled):
    _, shapes, abstract, out = compiled
    totals = [out[n][0]["total_with_validation"] for n in (1, 2, 4, 8)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 4, totals
    state = sum(math.prod(a.shape) * 4 for a in _leaves((abstract.params, abstract.opt_state)))
    kernel = 512 * 512 * 4
    data = (shapes.train_rows + shapes.val_rows) * (shapes.features + 1) * 4
    for n in (2, 4, 8):
        figures = out[n][0]
        # The state is split n ways (small leaves that do not divide stay whole: 2 %).
        resident = figures["argument"] - data
        assert resident == pytest.approx(state / n, rel=0.02), n
        # Temporaries hold about one layer whole (its gathered kernel and its gradient
        # before the reduce-scatter), never the whole model's weights.
        assert figures["temp"] < out[1][0]["temp"] + 2.5 * kernel, n


@pytest.fixture(scope="module")
def compiled_2d():
    """fsdp+tensor on 2 × 2 and 4 × 2, beside tensor over 2 (the same model split)."""
    spec = parse_spec(SPEC)
    shapes = data_shapes(spec)
    abstract = state.abstract_state(Workload.of(spec), shapes)
    out = {}
    for d in (1, 2, 4):
        strategy, mesh = (
            ("tensor", {"model": 2}) if d == 1 else ("fsdp+tensor", {"data": d, "model": 2})
        )
        c = verify.compile_layout(Workload.of(spec), shapes, abstract, strategy, mesh)
        out[d] = (verify.xla_figures(c, shapes), verify.collectives(c))
    return shapes, abstract, out


@pytest.mark.parametrize("d", [2, 4])
def test_fsdp_tensor_gathers_model_shards_and_reduce_scatters_their_gradients(compiled_2d, d):
    _, abstract, out = compiled_2d
    _, found = out[d]
    specs = partition.partition_specs(abstract.params, "tensor", {"model": 2})
    shards = {
        f"f32{[n // (2 if a else 1) for n, a in zip(leaf.shape, spec)]}".replace(" ", "")
        for leaf, spec in zip(_leaves(abstract.params), _leaves_specs(specs))
    }
    # Every all-gather is of a parameter's ``model`` shard, whole over ``data``: the
    # weights are gathered, never the activations or the batch.
    assert found["all-gather"] and set(found["all-gather"]) <= shards, found["all-gather"]
    assert {"f32[512,256]", "f32[256,512]"} <= set(found["all-gather"])
    # The kernels' gradients leave as reduce-scatters of their (data, model) shards.
    scattered = {f"f32[256,{512 // d}]", f"f32[{512 // d},256]"}  # row-, column-parallel
    assert scattered <= set(found["reduce-scatter"]), found["reduce-scatter"]
    # The only all-reduces are Megatron's, of activations over ``model`` (rows = the
    # per-device batch), and scalars: never a gradient.
    rows = f"f32[{32 // d},"
    assert all(s in ("f32[]", "tuple") or s.startswith(rows) for s in found["all-reduce"]), found


def test_fsdp_tensor_per_device_bytes_fall_with_the_data_axis(compiled_2d):
    shapes, abstract, out = compiled_2d
    totals = [out[d][0]["total_with_validation"] for d in (1, 2, 4)]
    assert totals == sorted(totals, reverse=True) and len(set(totals)) == 3, totals
    state = sum(math.prod(a.shape) * 4 for a in _leaves((abstract.params, abstract.opt_state)))
    data = (shapes.train_rows + shapes.val_rows) * (shapes.features + 1) * 4
    for d in (2, 4):
        # The state is split d × 2 ways (small leaves that do not divide stay whole).
        resident = out[d][0]["argument"] - data
        assert resident == pytest.approx(state / (2 * d), rel=0.03), d


def _leaves_specs(specs):
    from jax.sharding import PartitionSpec

    return jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def test_a_child_process_compiles_what_this_process_compiles(compiled):
    spec, shapes, _, out = compiled
    here, child = (
        out[4][0],
        verify._measure_child(Workload.of(spec), shapes, [("fsdp", {"data": 4})], 4)[0],
    )
    assert child["total_with_validation"] == here["total_with_validation"]


ACTIVATIONS = st.sampled_from(["relu", "gelu", "tanh", "silu"])
OPTIMIZERS = st.sampled_from(["sgd", "adam", "lion", "adafactor", "lamb", "rmsprop"])
LAYOUTS = st.sampled_from(
    [
        ("single", {"data": 1}),
        ("data", {"data": 2}),
        ("fsdp", {"data": 2}),
        ("fsdp", {"data": 4}),
        ("fsdp", {"data": 8}),
        ("tensor", {"model": 2}),
        ("fsdp+tensor", {"data": 2, "model": 2}),
        ("data+tensor", {"data": 4, "model": 2}),
    ]
)


def _run_program_bytes(spec, shapes, strategy, mesh):
    """XLA's per-device figure of the epoch built as `loop.run` builds it: concrete
    arrays initialised into their shardings, data placed, the program compiled for them."""
    import jax.numpy as jnp
    import numpy as np

    from jaxpipe.core.model import compute_dtype, make_model
    from jaxpipe.core.optim import make_optimizer
    from jaxpipe.core.step import init_state, make_epoch, make_task_steps
    from jaxpipe.parallel.sharding import make_layout

    layout = make_layout(strategy, mesh)
    steps = -(-shapes.train_rows // spec.training.batch_size) * spec.training.epochs
    tx = make_optimizer(spec.optimizer, total_steps=steps)
    model = make_model(
        spec.model,
        shapes.outputs,
        compute_dtype(spec.training.precision),
        layout.model_hooks(len(spec.model.hidden)),
    )
    x = jax.device_put(
        np.zeros((shapes.train_rows, shapes.features), np.float32), layout.replicated
    )
    y = jax.device_put(np.zeros((shapes.train_rows,), shapes.y_dtype), layout.replicated)
    key = jax.random.key(0)

    def init_fn(k, x1):
        return init_state(model.init, tx, k, x1)

    shardings = layout.state_shardings(jax.eval_shape(init_fn, key, x[:1]), tx)
    state = jax.jit(init_fn, out_shardings=shardings)(key, x[:1])
    train_step, _ = make_task_steps(model, tx, shapes.task, spec.model.dropout > 0)
    split = {"multiple": layout.data_parallel}
    if layout.constrain() is not None:
        split["constrain"] = layout.constrain()
    program = jax.jit(
        make_epoch(train_step, spec.training.batch_size, **split),
        donate_argnums=0,
        out_shardings=(shardings, layout.replicated),
    )
    compiled = program.lower(state, x, y, jnp.zeros((), jnp.int32)).compile()
    return verify.xla_figures(compiled, shapes)["total_with_validation"]


# Issue 12: the per-device figure the plan quotes (`--verify`: the planner's abstract
# compile, in a child process when the mesh needs more devices) within 10 % of XLA's
# figure for the program the run itself compiles, across what the spec accepts and every
# layout at 1-8 devices. (The closed form's own error, which `plan` without --verify
# shows, is tabulated in benchmarks/RESULTS.md.) Small buckets: few distinct compiles.
@settings(max_examples=5)
# Found by this test: XLA:CPU CHECK-failed on fsdp+tensor with bfloat16 when the kernel
# gather was an explicit partial-manual shard_map (fsdp.ModelHooks.dense).
@example(
    width=64,
    depth=1,
    batch=16,
    activation="gelu",
    opt="adam",
    regression=True,
    dropout=0.25,
    layer_norm=False,
    bf16=True,
    layout=("fsdp+tensor", {"data": 2, "model": 2}),
)
# Found by this test: Adafactor's (1,)-shaped statistics were given their bias's fsdp split.
@example(
    width=64,
    depth=1,
    batch=16,
    activation="relu",
    opt="adafactor",
    regression=False,
    dropout=0.0,
    layer_norm=False,
    bf16=False,
    layout=("fsdp", {"data": 2}),
)
@given(
    width=st.sampled_from([64, 128]),
    depth=st.integers(1, 2),
    batch=st.sampled_from([16, 64]),
    activation=ACTIVATIONS,
    opt=OPTIMIZERS,
    regression=st.booleans(),
    dropout=st.sampled_from([0.0, 0.25]),
    layer_norm=st.booleans(),
    bf16=st.booleans(),
    layout=LAYOUTS,
)
def test_quoted_figure_is_within_10_percent_of_the_runs_program(
    width, depth, batch, activation, opt, regression, dropout, layer_norm, bf16, layout
):
    task = "regression" if regression else "classification"
    spec = parse_spec(
        f"""
[data]
source = "synthetic"
validation = 16
[data.synthetic]
rows = 144
features = 12
classes = 3
[model]
task = "{task}"
hidden = {[width] * depth}
activation = "{activation}"
dropout = {dropout}
layer_norm = {str(layer_norm).lower()}
[optimizer]
name = "{opt}"
[training]
batch_size = {batch}
precision = "{"bfloat16" if bf16 else "float32"}"
"""
    )
    strategy, mesh = layout
    shapes = data_shapes(spec)
    quoted = verify.measure(Workload.of(spec), shapes, [(strategy, mesh)])[0][
        "total_with_validation"
    ]
    actual = _run_program_bytes(spec, shapes, strategy, mesh)
    assert abs(quoted / actual - 1) <= 0.10, (quoted, actual, strategy, mesh)
