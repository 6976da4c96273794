"""The checkpoint store and the resume spec check, below the level of a whole run
(tests/test_resume.py runs them end to end)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxpipe.core.step import TrainState
from jaxpipe.errors import JaxpipeError
from jaxpipe.runner.checkpoint import (
    CheckpointStore,
    abstract_like,
    saved_epochs,
    state_to_tree,
    tree_to_state,
)
from jaxpipe.spec.experiment import parse_spec
from jaxpipe.spec.resume import spec_conflicts
from jaxpipe.spec.schema import to_dict


def _exact(a, b):
    """Bit-for-bit equality of two trees (the whole point of a checkpoint)."""
    assert_trees_close(a, b, rtol=0, atol=0)


def _state(mesh: Mesh, spec: P | None = None) -> TrainState:
    sh = NamedSharding(mesh, P() if spec is None else spec)
    params = {"w": jnp.arange(32.0).reshape(8, 4) / 7, "b": jnp.full((4,), -1.5, jnp.bfloat16)}
    params = jax.device_put(params, sh)
    return TrainState(
        jax.device_put(jnp.asarray(17, jnp.int32), NamedSharding(mesh, P())),
        params,
        {"mu": jax.tree.map(jnp.zeros_like, params)},
        jax.random.key(5),
    )


def test_restore_into_other_device_count_and_sharding(tmp_path):
    devices = jax.devices()
    mesh2 = Mesh(np.array(devices[:2]), ("data",))
    mesh4 = Mesh(np.array(devices[:4]), ("data",))
    saved = _state(mesh2)  # replicated over 2 devices
    store = CheckpointStore(str(tmp_path / "ck"))
    store.save(3, {"state": state_to_tree(saved)}, {"epoch": 3}, None)
    store.wait()

    for spec in (P(), P("data")):  # replicated, then split over 4 devices
        target = _state(mesh4, spec)
        template = abstract_like({"state": state_to_tree(target)})
        restored = CheckpointStore(str(tmp_path / "ck")).restore(lambda m, t=template: t, print)
        assert restored.epoch == 3 and restored.meta["epoch"] == 3
        state = tree_to_state(restored.arrays["state"], target)
        _exact(state, saved)
        assert state.params["w"].sharding == NamedSharding(mesh4, spec)
        assert state.params["w"].sharding.num_devices == 4
        assert jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key)


@given(
    shape=st.sampled_from([(3,), (2, 5)]),
    dtype=st.sampled_from([np.float32, np.int32, np.float16]),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_is_exact(tmp_path_factory, shape, dtype, seed):
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal(shape) * 1e4).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        values.flat[0] = np.finfo(dtype).tiny  # subnormal-adjacent bits survive too
    tree = {"x": jnp.asarray(values), "k": jax.random.key_data(jax.random.key(seed))}
    store = CheckpointStore(str(tmp_path_factory.mktemp("rt")))
    store.save(1, tree, {"epoch": 1, "note": [1.5, "a"]}, None)
    store.wait()
    restored = store.restore(lambda meta: abstract_like(tree), print)
    _exact(restored.arrays, tree)
    assert restored.meta["note"] == [1.5, "a"]


def test_keeps_the_newest_and_the_best_across_reopening(tmp_path):
    path = str(tmp_path / "ck")
    tree = {"x": jnp.ones(3)}
    losses = {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.6, 5: 0.7}
    store = CheckpointStore(path, keep=2, best_metric="val_loss", best_mode="min")
    for epoch in (1, 2, 3):
        store.save(epoch, tree, {"epoch": epoch}, {"val_loss": losses[epoch]})
    store.wait()
    store.close()
    # A resumed run reopens the folder: the best (epoch 2) must survive later saves.
    store = CheckpointStore(path, keep=2, best_metric="val_loss", best_mode="min")
    assert store.restore(lambda m: abstract_like(tree), print).epoch == 3
    for epoch in (4, 5):
        store.save(epoch, tree, {"epoch": epoch}, {"val_loss": losses[epoch]})
    store.wait()
    assert store.epochs() == [2, 4, 5] == saved_epochs(path)
    assert store.best == (0.3, 2)

    store = CheckpointStore(
        str(tmp_path / "max"), keep=1, best_metric="val_accuracy", best_mode="max"
    )
    for epoch, acc in enumerate([0.5, 0.8, 0.6, 0.7], 1):
        store.save(epoch, tree, {"epoch": epoch}, {"val_accuracy": acc})
    store.wait()
    assert store.epochs() == [2, 4]


def test_a_template_that_does_not_fit_is_refused_with_the_reason(tmp_path):
    store = CheckpointStore(str(tmp_path / "ck"))
    store.save(1, {"x": jnp.ones(4)}, {"epoch": 1}, None)
    store.wait()
    for wrong in ({"x": jnp.ones(5)}, {"y": jnp.ones(4)}):
        with pytest.raises(JaxpipeError, match="no checkpoint could be restored.*ValueError"):
            store.restore(lambda m, w=wrong: abstract_like(w), lambda msg: None)
    assert store.epochs() == [1]


def _corrupt(step_dir: str) -> None:
    """Overwrites every file of a checkpoint with garbage of the same length."""
    for root, _, files in os.walk(step_dir):
        for name in files:
            p = os.path.join(root, name)
            size = os.path.getsize(p)
            with open(p, "wb") as f:
                f.write(b"\x00garbage" * (size // 8 + 1))


def test_unreadable_newest_falls_back_to_previous_with_warning(tmp_path):
    path = str(tmp_path / "ck")
    store = CheckpointStore(path, keep=3)
    for epoch in (1, 2, 3):
        store.save(epoch, {"x": jnp.full(4, float(epoch))}, {"epoch": epoch}, None)
    store.wait()
    _corrupt(os.path.join(path, "3"))
    warnings = []
    restored = CheckpointStore(path).restore(
        lambda m: abstract_like({"x": jnp.ones(4)}), warnings.append
    )
    assert restored.epoch == 2
    np.testing.assert_array_equal(restored.arrays["x"], np.full(4, 2.0))
    assert len(warnings) == 1 and f"{path}/3 is unreadable" in warnings[0]
    assert "falling back" in warnings[0]
    # The bad one is kept for inspection, out of the way of the epoch's next save.
    assert os.path.isdir(str(tmp_path / "checkpoints.unreadable" / "3"))
    assert saved_epochs(path) == [1, 2]

    # A partial save (files missing) counts as unreadable too; none readable is an error.
    for epoch in (1, 2):
        for root, _, files in os.walk(os.path.join(path, str(epoch))):
            for name in files:
                os.remove(os.path.join(root, name))
    with pytest.raises(JaxpipeError, match="no checkpoint could be restored"):
        CheckpointStore(path).restore(lambda m: abstract_like({"x": jnp.ones(4)}), warnings.append)
    assert saved_epochs(path) == [1, 2]  # kept where they are: the cause may be the run


BASE = """
[model]
hidden = [8]
[training]
epochs = 4
"""


def _spec_dict(extra: str = "", base: str = BASE) -> dict:
    return to_dict(parse_spec(base + extra))


@pytest.mark.parametrize(
    "text, force, refused, forced",
    [
        ("[experiment]\nname = 'other'\n[checkpoint]\nkeep = 9\n", False, [], []),
        ("", False, [], []),
        (BASE.replace("[8]", "[9]"), False, ["model.hidden"], []),
        (BASE.replace("epochs = 4", "epochs = 6"), False, ["training.epochs"], []),
        (BASE.replace("epochs = 4", "epochs = 6"), True, [], ["training.epochs"]),
        (BASE + "batch_size = 7\n[optimizer]\nlearning_rate = 0.5\n", True,
         ["optimizer.learning_rate", "training.batch_size"], []),
        (BASE + "[training.early_stopping]\npatience = 2\n", True, [],
         ["training.early_stopping.metric", "training.early_stopping.min_delta",
          "training.early_stopping.mode", "training.early_stopping.patience",
          "training.early_stopping.restore_best"]),
        ("[experiment]\nseed = 1\n[data]\nshuffle = false\n", True,
         ["data.shuffle", "experiment.seed"], []),
    ],
)  # fmt: skip
def test_spec_conflicts(text, force, refused, forced):
    current = to_dict(parse_spec(text if text.startswith(BASE[:10]) else BASE + text))
    assert spec_conflicts(_spec_dict(), current, force=force) == (refused, forced)
