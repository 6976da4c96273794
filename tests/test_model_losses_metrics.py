import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.core.losses import cross_entropy, squared_error
from jaxpipe.core.metrics import (
    add_sums,
    classification_sums,
    finalize,
    finalize_regression,
    regression_sums,
    zero_sums,
)
from jaxpipe.core.model import layer_table, make_model, param_count
from jaxpipe.spec.sections import ModelSpec

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


def test_dropout_only_in_training_and_driven_by_the_key():
    model = make_model(ModelSpec(hidden=(32,), dropout=0.5), outputs=2)
    x = jax.random.normal(jax.random.key(0), (8, 5))
    params = model.init(jax.random.key(1), x)
    np.testing.assert_array_equal(model.apply(params, x), model.apply(params, x))
    a = model.train_apply(params, x, jax.random.key(2))
    b = model.train_apply(params, x, jax.random.key(2))
    c = model.train_apply(params, x, jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, model.apply(params, x))


def test_layer_norm_layers_and_table():
    model = make_model(ModelSpec(hidden=(8, 4), layer_norm=True), outputs=3)
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)))
    names = [r[0] for r in layer_table(params)]
    assert names == ["hidden_0", "norm_0", "hidden_1", "norm_1", "output"]
    assert layer_table(params)[1] == ("norm_0", "norm 8", 16)
    h = model.apply(params, jax.random.normal(jax.random.key(1), (4, 5)))
    assert h.shape == (4, 3) and h.dtype == jnp.float32


@given(st.integers(1, 40), st.floats(0.1, 100.0), st.integers(0, 2**16))
def test_regression_rmse_is_in_the_targets_units(rows, scale, seed):
    """Standardised squared errors summed in batches, then undone, equal numpy's RMSE."""
    rng = np.random.default_rng(seed)
    y = rng.normal(50.0, scale, rows)
    pred = y + rng.normal(0.0, scale / 3, rows)
    z_y, z_p = (y - 50.0) / scale, (pred - 50.0) / scale
    total = zero_sums()
    for lo in range(0, rows, 7):
        sl = slice(lo, lo + 7)
        losses = squared_error(jnp.asarray(z_p[sl])[:, None], jnp.asarray(z_y[sl]))
        total = add_sums(total, regression_sums(losses, None, None, jnp.ones(losses.shape)))
    got = finalize_regression(total, scale)["rmse"]
    want = float(np.sqrt(np.mean(np.square(pred - y))))
    assert abs(got - want) <= 1e-4 * max(want, 1.0)


@given(
    st.integers(0, 2**16),
    st.sampled_from([2, 3, 5]),
    st.sampled_from([12, 60, 250]),
    st.sampled_from([None, 1, 2]),
)
def test_evaluation_metrics_equal_scikit_learns(seed, classes, rows, decimals):
    """AUC, PR-AUC, F1, balanced accuracy and log loss on random probabilities (rounded
    to `decimals` to make ties) equal scikit-learn's within 1e-6 (issue 25)."""
    import pytest

    metrics = pytest.importorskip("sklearn.metrics")

    from jaxpipe.core.evaluation import classification_metrics

    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(classes), size=rows)
    if decimals is not None:
        probs = np.round(probs, decimals) + 1e-3
        probs /= probs.sum(axis=1, keepdims=True)
    y = np.concatenate([np.arange(classes), rng.integers(0, classes, rows - classes)])
    m = classification_metrics(probs, y, [str(c) for c in range(classes)])
    expected = _sklearn_metrics(probs, y, classes) | {
        "log_loss": metrics.log_loss(y, probs, labels=range(classes)),
        "accuracy": metrics.accuracy_score(y, probs.argmax(axis=1)),
    }
    for name, value in expected.items():
        assert abs(m[name] - value) <= 1e-6, (name, m[name], value)


def _sklearn_metrics(probs, y, classes: int) -> dict[str, float]:
    """scikit-learn's ROC-AUC (binary, or one-vs-rest macro), PR-AUC, macro and weighted
    F1 and balanced accuracy of the probabilities `probs` for labels `y` (callers have
    skipped already where scikit-learn is missing)."""
    from sklearn import metrics
    from sklearn.preprocessing import label_binarize

    pred = probs.argmax(axis=1)
    if classes == 2:
        auc = metrics.roc_auc_score(y, probs[:, 1])
        ap = metrics.average_precision_score(y, probs[:, 1])
    else:
        auc = metrics.roc_auc_score(y, probs, multi_class="ovr", average="macro")
        ap = metrics.average_precision_score(label_binarize(y, classes=range(classes)), probs)
    return {
        "roc_auc": auc,
        "pr_auc": ap,
        "f1_macro": metrics.f1_score(y, pred, average="macro"),
        "f1_weighted": metrics.f1_score(y, pred, average="weighted"),
        "balanced_accuracy": metrics.balanced_accuracy_score(y, pred),
    }


_EPOCH_EVALS: dict = {}


def _epoch_evaluate(classes: int):
    """The evaluation program a run compiles when optional metrics are asked for, over
    an identity "model" (x are the logits): batches of 16 widened to a multiple of 3,
    so the probabilities come back through padded batches. One jit per class count."""
    from jaxpipe.core.step import make_eval_step, make_evaluate, make_probabilities

    if classes not in _EPOCH_EVALS:

        def logits(params, x):
            return x

        step = make_eval_step(logits, cross_entropy)
        fn = make_evaluate(step, 16, multiple=3, probabilities=make_probabilities(logits))
        _EPOCH_EVALS[classes] = jax.jit(fn)
    return _EPOCH_EVALS[classes]


@given(
    st.integers(0, 2**16),
    st.sampled_from([2, 3]),
    st.sampled_from([None, 0]),
)
def test_epoch_metrics_equal_scikit_learns(seed, classes, decimals):
    """The optional epoch metrics (val_roc_auc, ...) of the evaluation program's
    probabilities equal scikit-learn's functions within 1e-6 on random logits (rounded
    to `decimals` to make ties); rows of a fixed 53 keep one compile per class count."""
    import pytest

    metrics = pytest.importorskip("sklearn.metrics")

    from jaxpipe.core.evaluation import epoch_scores
    from jaxpipe.spec.sections import OPTIONAL_METRICS

    rows = 53
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, (rows, classes))
    x = (x if decimals is None else np.round(x, decimals)).astype(np.float32)
    y = np.concatenate([np.arange(classes), rng.integers(0, classes, rows - classes)])
    sums, probs = _epoch_evaluate(classes)(None, jnp.asarray(x), jnp.asarray(y, jnp.int32))
    probs = np.asarray(probs, np.float64)
    np.testing.assert_allclose(probs, jax.nn.softmax(x, axis=-1), rtol=1e-6, atol=1e-7)
    names = OPTIONAL_METRICS["classification"]
    got = epoch_scores(probs, y, names)
    assert list(got) == list(names)
    expected = {f"val_{k}": v for k, v in _sklearn_metrics(probs, y, classes).items()} | {
        # fp32 softmax rows sum to 1 within ~1e-7, which scikit-learn warns of and
        # divides out; the log moves by as much, well inside 1e-6.
        "val_log_loss": metrics.log_loss(y, probs / probs.sum(1, keepdims=True)),
    }
    for name, value in expected.items():
        assert abs(got[name] - value) <= 1e-6, (name, got[name], value)
    # The row's val_loss (fp32 running sums) and val_log_loss describe the same rows.
    assert abs(float(sums.loss_sum) / rows - got["val_log_loss"]) <= 1e-5


def test_epoch_auc_without_both_sides_of_a_class_is_nan():
    from jaxpipe.core.evaluation import epoch_scores

    got = epoch_scores(np.array([[0.7, 0.3], [0.4, 0.6]]), np.array([0, 0]), ["val_roc_auc"])
    assert np.isnan(got["val_roc_auc"])
