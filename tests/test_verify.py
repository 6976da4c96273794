"""What XLA compiles for each layout: FSDP gathers weights (never activations or the
batch) and reduce-scatters their gradients, so per-device bytes fall with the device
count; the compile in a child process on simulated devices gives the in-process figure."""

import math

import jax
import pytest

from jaxpipe import memory, planner, verify
from jaxpipe.spec import parse_spec

SPEC = """
[data]
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
    shapes = planner.data_shapes(spec)
    abstract = memory.abstract_state(spec, shapes)
    out = {}
    for n in (1, 2, 4, 8):
        strategy = "fsdp" if n > 1 else "single"
        c = verify.compile_layout(spec, shapes, abstract, strategy, {"data": n})
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


def test_a_child_process_compiles_what_this_process_compiles(compiled):
    spec, shapes, _, out = compiled
    here, child = out[4][0], verify._measure_child(spec, shapes, [("fsdp", {"data": 4})], 4)[0]
    assert child["total_with_validation"] == here["total_with_validation"]
