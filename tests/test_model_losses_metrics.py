import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.losses import cross_entropy
from jaxpipe.metrics import add_sums, classification_sums, finalize, zero_sums
from jaxpipe.model import layer_table, make_model, param_count
from jaxpipe.spec import ModelSpec

hidden = st.sampled_from([(), (8,), (16, 8)])
batches = st.sampled_from([1, 4, 16])


@given(hidden, batches, st.integers(0, 2**16))
def test_mlp_output_shape_and_row_independence(h, batch, seed):
    model = make_model(ModelSpec(hidden=h), outputs=3)
    x = jax.random.normal(jax.random.key(seed), (batch, 5))
    params = model.init(jax.random.key(1), x)
    out = model.apply(params, x)
    assert out.shape == (batch, 3) and out.dtype == jnp.float32
    # A row's output does not depend on the other rows of its batch.
    for i in range(batch):
        np.testing.assert_allclose(
            model.apply(params, x[i : i + 1])[0], out[i], rtol=1e-5, atol=1e-6
        )
    assert param_count(params) == sum(n for *_, n in layer_table(params))


@given(st.integers(0, 2**16), st.sampled_from([2, 5]), st.floats(0.1, 50))
def test_cross_entropy_is_minus_log_softmax_at_label(seed, classes, scale):
    k1, k2 = jax.random.split(jax.random.key(seed))
    logits = scale * jax.random.normal(k1, (8, classes))
    labels = jax.random.randint(k2, (8,), 0, classes)
    loss = cross_entropy(logits, labels)
    assert np.all(np.asarray(loss) >= 0)
    z = np.asarray(logits, np.float64)
    zmax = z.max(axis=1, keepdims=True)
    log_softmax = z - zmax - np.log(np.exp(z - zmax).sum(axis=1, keepdims=True))
    ref = -log_softmax[np.arange(8), np.asarray(labels)]
    np.testing.assert_allclose(loss, ref, rtol=1e-5, atol=1e-5)


@given(st.integers(0, 2**16), st.integers(1, 31))
def test_metrics_from_split_batches_equal_the_whole(seed, cut):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    logits = jax.random.normal(k1, (32, 4))
    labels = jax.random.randint(k2, (32,), 0, 4)
    losses = jax.random.uniform(k3, (32,))
    w = jnp.ones(32)
    whole = finalize(classification_sums(losses, logits, labels, w))
    parts = add_sums(
        add_sums(
            zero_sums(), classification_sums(losses[:cut], logits[:cut], labels[:cut], w[:cut])
        ),
        classification_sums(losses[cut:], logits[cut:], labels[cut:], w[cut:]),
    )
    split = finalize(parts)
    assert abs(whole["loss"] - split["loss"]) < 1e-5
    assert whole["accuracy"] == split["accuracy"]
