"""[training] precision = "bfloat16": bf16 matmuls, float32 master weights, optimizer
state and logits."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import SMALL_SPEC

import jaxpipe
from jaxpipe.core.losses import cross_entropy
from jaxpipe.core.model import make_model
from jaxpipe.core.step import init_state, make_train_step
from jaxpipe.spec.sections import ModelSpec

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")


def _bf16_setup():
    model = make_model(ModelSpec(hidden=(16, 8)), 3, jnp.bfloat16)
    tx = optax.adam(1e-2)
    x = jax.random.normal(jax.random.key(0), (32, 5))
    y = jax.random.randint(jax.random.key(1), (32,), 0, 3)
    return model, tx, init_state(model.init, tx, jax.random.key(2), x[:1]), x, y


def _float_dtypes(tree):
    return {
        leaf.dtype for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)
    }


def test_bf16_keeps_params_and_optimizer_state_float32_after_a_step():
    model, tx, state, x, y = _bf16_setup()
    state, sums = jax.jit(make_train_step(model.apply, cross_entropy, tx))(
        state, x, y, jnp.ones(32)
    )
    assert _float_dtypes(state.params) == {jnp.dtype(jnp.float32)}
    assert _float_dtypes(state.opt_state) == {jnp.dtype(jnp.float32)}
    assert sums.loss_sum.dtype == jnp.float32


def test_bf16_computes_matmuls_in_bf16_and_returns_float32_logits():
    model, _, state, x, _ = _bf16_setup()
    logits = model.apply(state.params, x)
    assert logits.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(model.apply)(state.params, x))
    dots = [ln for ln in jaxpr.splitlines() if "dot_general" in ln]
    assert len(dots) == 3 and all("bf16[" in ln for ln in dots)
    # bf16 rounding is visible: the logits differ from the float32 model's, but not by much.
    f32 = make_model(ModelSpec(hidden=(16, 8)), 3).apply(state.params, x)
    diff = np.abs(np.asarray(logits) - np.asarray(f32)).max()
    assert 0 < diff < 0.1


def test_bf16_run_trains_like_float32(tmp_path, write_spec):
    path = write_spec(SMALL_SPEC.replace("epochs = 2", "epochs = 4"))
    fast = ["optimizer.learning_rate=0.01"]
    f32 = jaxpipe.run(jaxpipe.load_spec(path, fast), out=str(tmp_path / "f32"))
    bf16 = jaxpipe.run(
        jaxpipe.load_spec(path, [*fast, "training.precision=bfloat16"]), out=str(tmp_path / "bf16")
    )
    assert bf16.history[-1]["train_loss"] < 0.8 * bf16.history[0]["train_loss"]
    # bf16 rounding changes the trajectory a little, not the outcome.
    assert bf16.final["train_loss"] != f32.final["train_loss"]
    assert abs(bf16.final["train_loss"] - f32.final["train_loss"]) < 0.1 * f32.final["train_loss"]
    assert abs(bf16.final["val_accuracy"] - f32.final["val_accuracy"]) < 0.05
    assert _float_dtypes(bf16.params) == {np.dtype(np.float32)}
