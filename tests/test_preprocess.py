import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.core.scaling import apply_scaler, fit_minmax, fit_scaler, fit_standard, invert_scaler
from jaxpipe.testing import matrices


@given(matrices())
def test_minmax_maps_training_data_into_unit_interval(x):
    z = np.asarray(jax.jit(lambda a: apply_scaler(fit_minmax(a), a))(x))
    assert np.all(np.isfinite(z))
    assert z.min() >= -1e-6 and z.max() <= 1 + 1e-6


@given(matrices(), st.sampled_from(["minmax", "standard", "none"]))
def test_invert_gives_the_input_back(x, kind):
    s = fit_scaler(kind, jnp.asarray(x))
    back = np.asarray(invert_scaler(s, apply_scaler(s, jnp.asarray(x))))
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-2)  # fp32 over a 1e4 range


@given(matrices())
def test_constant_columns_are_finite(x):
    x[:, 0] = 7.0
    for fit in (fit_minmax, fit_standard):
        z = np.asarray(apply_scaler(fit(jnp.asarray(x)), jnp.asarray(x)))
        assert np.all(np.isfinite(z)) and np.all(z[:, 0] == 0)


@given(matrices(), matrices())
def test_statistics_come_from_the_training_split_only(train, other):
    if train.shape[1] != other.shape[1]:
        return
    s = fit_minmax(jnp.asarray(train))
    # Applying to other data uses train's statistics: changing `other` never changes them.
    z_train = np.asarray(apply_scaler(s, jnp.asarray(train)))
    both = np.asarray(apply_scaler(s, jnp.concatenate([jnp.asarray(train), jnp.asarray(other)])))
    np.testing.assert_array_equal(both[: len(train)], z_train)


def test_standard_has_zero_mean_unit_std():
    x = np.random.default_rng(0).normal(5.0, 3.0, size=(1000, 4)).astype(np.float32) + 1e3
    z = np.asarray(apply_scaler(fit_standard(jnp.asarray(x)), jnp.asarray(x)))
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
