"""What a run holds on its devices while it trains, beside the compiled epoch (issue 12):
the state and the data set the plan counts, the snapshots it says it keeps, and nothing
else: no device copy of a donated state for a checkpoint (those go to pinned host
memory), no fresh state left behind by a resume, no raw data set after preprocessing."""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALL_SPEC

import jaxpipe
from jaxpipe.runner.checkpoint import CheckpointStore, abstract_like, host_copy

pytestmark = pytest.mark.usefixtures("compile_once")  # the resumed run compiles nothing

# The best epoch's parameters are kept too (in host memory, not counted on the device).
BEST = "\n[training.early_stopping]\npatience = 10\nrestore_best = true\n"
MARGIN = 512  # bytes: the scaler (2 × 6 floats), step and key, outside the plan's terms


def _live_bytes(device) -> dict[str, int]:
    """Bytes of every live array on `device`, by memory kind; each buffer counted once
    (an array's shards are arrays of their own, and `jax.live_arrays` lists both)."""
    seen, out = set(), {}
    for a in jax.live_arrays():
        if a.is_deleted():
            continue
        for shard in a.addressable_shards:
            if shard.device != device:
                continue
            ptr = shard.data.unsafe_buffer_pointer()
            if ptr not in seen:
                seen.add(ptr)
                kind = a.sharding.memory_kind or "device"
                out[kind] = out.get(kind, 0) + shard.data.nbytes
    return out


class _Watch:
    """Reads the live arrays at each epoch end: the newest state, the snapshots and the
    placed data are alive then; the epoch's temporaries are not. Arrays that earlier
    tests in this worker process left alive (they were there before this test's runs)
    are taken off: only what the runs hold is compared with the plan."""

    def __init__(self):
        self.plans, self.seen = [], []
        gc.collect()  # what earlier tests dropped but a reference cycle still holds
        self.before = _live_bytes(jax.devices()[0])

    def on_plan(self, plan):
        self.plans.append(plan)

    def on_epoch(self, row, epochs):
        gc.collect()  # a finished run's garbage (the first run's, during the resume)
        live = _live_bytes(jax.devices()[0])
        self.seen.append({k: v - self.before.get(k, 0) for k, v in live.items()})


@pytest.mark.parametrize("donated", [False, True])
def test_training_holds_only_what_the_plan_counts(write_spec, tmp_path, monkeypatch, donated):
    """A small state is kept (not donated) and its snapshots are the states themselves;
    donated (as a state too big for `keep` snapshots in memory is), checkpoints copy it
    to host memory. Trained 2 epochs, then resumed for a third: the fresh state the
    checkpoint replaces must not linger, nor a device copy of the best parameters."""
    if donated:
        monkeypatch.setattr("jaxpipe.runner.plan.held_in_memory", lambda state, keep: False)
    path, out, watch = write_spec(SMALL_SPEC + BEST), str(tmp_path / "run"), _Watch()
    jaxpipe.run(path, out=out, callbacks=[watch], verbose=False)
    longer = jaxpipe.load_spec(path, ["training.epochs=3"])
    result = jaxpipe.run(longer, out=out, resume=True, force=True, callbacks=[watch], verbose=False)
    assert result.summary["resumed_from"] == 2 and len(watch.seen) == 3
    assert result.summary["plan"]["donated"] is donated
    b = watch.plans[-1].breakdown
    counted = b["params"] + b["optimizer"] + b["data"]
    for live in watch.seen:
        # At least the state and the data (the reading is not vacuous), at most what the
        # plan counts: an undonated run's snapshots are a term of its plan.
        assert counted <= live["device"] <= counted + b.get("snapshots", 0) + MARGIN, live
        # The best parameters, and a donated state's snapshots, are in host memory.
        host = b["params"] + (b["params"] + b["optimizer"] if donated else 0)
        assert live.get("pinned_host", 0) >= host, live
    if not donated:
        state = b["params"] + b["optimizer"]
        assert b["snapshots"] == 3 * state and b["output state"] >= state  # keep = 3
        plan = watch.plans[-1]
        assert plan.per_device_bytes == sum(b.values()) <= plan.usable_bytes_per_device


def test_a_snapshot_takes_no_device_memory_and_saves_exactly(tmp_path):
    mesh = jax.make_mesh((2,), ("data",))
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    tree = {"w": jax.device_put(jnp.arange(4096, dtype=jnp.float32) / 7, rep)}
    copy = host_copy(tree)
    assert copy["w"].sharding == rep.with_memory_kind("pinned_host")
    assert copy["w"].sharding.memory_kind == "pinned_host"
    np.testing.assert_array_equal(jax.device_get(copy["w"]), jax.device_get(tree["w"]))
    store = CheckpointStore(str(tmp_path / "ck"))
    before = _live_bytes(jax.devices()[0]).get("device", 0)
    store.save(1, tree, {"epoch": 1}, None)  # copies to host memory, then writes
    assert _live_bytes(jax.devices()[0]).get("device", 0) == before
    store.wait()
    restored = store.restore(lambda meta: abstract_like(tree), print)
    assert restored.arrays["w"].sharding == rep  # back on the devices it was saved from
    np.testing.assert_array_equal(jax.device_get(restored.arrays["w"]), jax.device_get(tree["w"]))
    store.close()
