import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import SMALL_SPEC, assert_trees_close
from hypothesis import given
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.core.losses import cross_entropy
from jaxpipe.core.metrics import zero_sums
from jaxpipe.core.model import make_model
from jaxpipe.core.scaling import fit_minmax
from jaxpipe.core.step import epoch_batches, init_state, make_epoch, make_train_step
from jaxpipe.errors import JaxpipeError
from jaxpipe.parallel.sharding import make_layout
from jaxpipe.runner.place import chunk_feed
from jaxpipe.runner.plan import RunPlan
from jaxpipe.runner.stream import (
    chunk_bounds,
    chunk_plan,
    make_chunk_steps,
    steps_per_chunk,
    stream_epoch,
)
from jaxpipe.spec.sections import ModelSpec

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")


@given(st.integers(1, 10**6), st.integers(0, 10**9), st.integers(1, 10**9))
def test_chunk_plan_fits_two_chunks_in_the_budget_or_is_resident(rows, budget, data_bytes):
    try:
        per = chunk_plan(data_bytes, budget, rows)
    except JaxpipeError:
        assert data_bytes > budget  # refused only when it does not fit
        return
    assert 1 <= per <= rows
    if data_bytes <= budget:
        assert per == rows
    else:
        per_row = -(-data_bytes // rows)
        assert 2 * per * per_row <= budget < 2 * (per + 1) * per_row


@given(st.integers(1, 300), st.integers(1, 50))
def test_chunk_bounds_cover_every_step_once_in_order(steps, per):
    bounds = chunk_bounds(steps, per)
    flat = [s for a, b in bounds for s in range(a, b)]
    assert flat == list(range(steps))
    assert all(b - a == per for a, b in bounds[:-1]) and 1 <= bounds[-1][1] - bounds[-1][0] <= per


def test_steps_per_chunk_rounds_to_whole_batches():
    assert steps_per_chunk(1000, 128, 100) == 7
    assert steps_per_chunk(10, 128, 100) == 1  # at least one batch
    assert steps_per_chunk(10**6, 128, 100) == 100


@pytest.mark.parametrize("rows,batch,per", [(100, 8, 3), (96, 8, 3)])
def test_streamed_epoch_equals_resident_epoch(rows, batch, per):
    # 13 or 12 steps in chunks of 3: 5 or 4 chunks, with and without a short last chunk.
    model = make_model(ModelSpec(hidden=(16,)), 3)
    tx = optax.adam(1e-2)
    rng = np.random.default_rng(rows)
    x = (rng.normal(size=(rows, 5)) * 10 + 3).astype(np.float32)
    y = rng.integers(0, 3, rows).astype(np.int32)
    scaler = fit_minmax(jnp.asarray(x))
    state = init_state(model.init, tx, jax.random.key(1), x[:1])
    train_step = make_train_step(model.apply, cross_entropy, tx)
    xs = (jnp.asarray(x) - scaler.offset) / scaler.scale
    resident = jax.jit(make_epoch(train_step, batch))
    chunk_fn = jax.jit(make_chunk_steps(train_step))
    a, b = state, state
    for e in range(2):
        a, sa = resident(a, xs, jnp.asarray(y), jnp.int32(e))
        idx, w = jax.device_get(epoch_batches(jax.random.fold_in(b.key, e), rows, batch))
        assert len(chunk_bounds(idx.shape[0], per)) >= 4
        b, sb = stream_epoch(chunk_fn, b, zero_sums(), scaler, x, y, idx, w, per)
        assert_trees_close(sa, sb)
    assert_trees_close(a, b)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_streamed_run_matches_resident_run(tmp_path, write_spec, task):
    # standard scaling: its statistics are fitted in a separate program when streaming;
    # regression: the target is standardised on the host instead of on the device.
    text = SMALL_SPEC.replace("hidden = [16]", f'hidden = [16]\ntask = "{task}"')
    path = write_spec(text + '\n[preprocess]\nnormalize = "standard"\n')
    res = jaxpipe.run(jaxpipe.load_spec(path), out=str(tmp_path / "a"))
    # 400 training rows, batch 32: 13 steps, chunks of 3 batches → 5 chunks.
    streamed = jaxpipe.run(jaxpipe.load_spec(path, ["data.chunk_rows=96"]), out=str(tmp_path / "b"))
    assert len(res.history) == len(streamed.history) == 2
    for ra, rb in zip(res.history, streamed.history):
        for k in ra:
            if k != "epoch_seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    assert_trees_close(res.params, streamed.params)
    transfer = next(s for s in streamed.stages if s.name == "transfer")
    assert "streamed, 3 batches a chunk" in transfer.output


def test_chunk_rows_bigger_than_the_data_is_resident(tmp_path, write_spec):
    res = jaxpipe.run(
        jaxpipe.load_spec(write_spec(SMALL_SPEC), ["data.chunk_rows=100000"]),
        out=str(tmp_path / "r"),
    )
    assert "streamed" not in next(s for s in res.stages if s.name == "transfer").output


AUTO_STREAM = """
[experiment]
name = "auto-stream"
seed = 2

[data]
source = "synthetic"
validation = 400

[data.synthetic]
rows = 4000
features = 50
classes = 3

[model]
hidden = [16]

[training]
epochs = 2
batch_size = 64
"""


def test_auto_streams_when_only_the_training_rows_do_not_fit(write_spec, tmp_path):
    path = write_spec(AUTO_STREAM)
    pinned = ['hardware.strategy="single"', "hardware.devices=1"]
    single = jaxpipe.plan(jaxpipe.load_spec(path, pinned)).per_device_bytes
    # Usable memory is 0.675 of this: the model and validation rows fit, the training
    # rows (80 % of the bytes) do not, two chunks of them do.
    small = jaxpipe.load_spec(path, [f'hardware.device_memory="{single}B"'])
    assert not jaxpipe.plan(small).fits
    streamed = jaxpipe.run(small, out=str(tmp_path / "s"))
    plan = streamed.summary["plan"]
    assert streamed.summary["chunk_steps"] and plan["strategy"] == "single"
    assert plan["mesh"] == {"data": 1} and plan["planned"]["mesh"] == {"data": 8}
    resident = jaxpipe.run(jaxpipe.load_spec(path, pinned), out=str(tmp_path / "r"))
    assert resident.summary["chunk_steps"] is None
    for a, b in zip(streamed.history, resident.history):
        for k in ("train_loss", "val_loss", "val_accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-7), k
    # A budget that cannot even hold the model and validation rows stops before training.
    with pytest.raises(JaxpipeError):
        jaxpipe.run(
            jaxpipe.load_spec(path, ['hardware.device_memory="64KiB"']), out=str(tmp_path / "never")
        )
    assert not (tmp_path / "never" / "summary.json").exists()


def test_host_chunks_are_split_over_the_data_axis_as_batches_are():
    # Batch 30 on a 4-device data mesh: widened to 32 with weight-0 rows, each chunk's
    # batches split over `data` (streaming no longer falls back to one device).
    layout = make_layout("data", {"data": 4})
    rp = RunPlan(None, "data", {"data": 4}, layout, 30, 4, 1, 3, "float32")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(100, 5)).astype(np.float32), rng.integers(0, 3, 100).astype(np.int32)
    feed = chunk_feed(rp, x, y)
    assert feed.width == 32 and feed.bounds == [(0, 3), (3, 4)]
    idx, w = jax.device_get(epoch_batches(jax.random.key(0), 100, 30, feed.width))
    for (a, b), chunk in zip(feed.bounds, feed.chunks(0, idx, w)):
        gx, gy, gw = feed.put(chunk)
        assert tuple(gx.sharding.spec) == (None, "data", None) and len(gx.addressable_shards) == 4
        np.testing.assert_array_equal(np.asarray(gx), x[idx[a:b]])
        np.testing.assert_array_equal(np.asarray(gy), y[idx[a:b]])
        np.testing.assert_array_equal(np.asarray(gw), w[a:b])
    assert w.sum() == 100 and w.shape == (4, 32)


@pytest.mark.parametrize("strategy", ["data", "fsdp"])
def test_streamed_sharded_run_matches_resident_single_device_run(tmp_path, write_spec, strategy):
    """Issue 16: streaming works with every strategy. With the same shuffle (host-memory
    chunks keep the resident run's per-epoch order), a streamed run over 2 devices learns
    what the resident one-device run learns, to fp32 tolerance."""
    path = write_spec(SMALL_SPEC)
    one = ['hardware.strategy="single"', "hardware.devices=1"]
    res = jaxpipe.run(jaxpipe.load_spec(path, one), out=str(tmp_path / "a"))
    two = ["data.chunk_rows=96", f'hardware.strategy="{strategy}"', "hardware.devices=2"]
    streamed = jaxpipe.run(jaxpipe.load_spec(path, two), out=str(tmp_path / "b"))
    assert streamed.summary["plan"]["strategy"] == strategy
    assert streamed.summary["plan"]["devices"] == 2 and streamed.summary["chunk_steps"]
    assert len(res.history) == len(streamed.history) == 2
    for ra, rb in zip(res.history, streamed.history):
        for k in ra:
            if k != "epoch_seconds":
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    assert_trees_close(res.params, streamed.params, rtol=1e-5, atol=1e-6)
