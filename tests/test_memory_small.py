"""residuals.backward_peak, the closed form's backward-pass peak (issue 12, small
per-device batches): properties that hold for any shapes. Pure arithmetic, no compile;
how close it lands to XLA is tests/test_plan_error.py's property."""

from hypothesis import given, settings
from hypothesis import strategies as st

from jaxpipe.planner.residuals import SMALL_BYTES, TABLE, backward_peak

KEYS = sorted(TABLE)
# A network: hidden layers' float32 [batch, width] buffers (the output layer's last) and
# their weight gradients, on both sides of SMALL_BYTES.
ACTS = st.lists(st.integers(64, 4 * SMALL_BYTES), min_size=2, max_size=5)
GRADS = st.lists(st.integers(0, 8 * SMALL_BYTES), min_size=5, max_size=5)


def _peak(acts, grads, key, narrow=False, update=0, small=None):
    """The peak as memory.estimate asks for it: LayerNorm's statistics fused away in
    small layers, dropout's two hoisted counters per layer."""
    _, dropout, layer_norm, _ = key
    small = (2.0 if layer_norm else 0.0) if small is None else small
    hoisted = 2.0 if dropout else 0.0
    return backward_peak(acts, grads[: len(acts)], TABLE[key], narrow, update, 0, small, hoisted)


@settings(max_examples=60, deadline=None)
@given(
    acts=ACTS, grads=GRADS, key=st.sampled_from(KEYS), narrow=st.booleans(), at=st.integers(0, 4)
)
def test_the_peak_never_falls_when_a_buffer_grows(acts, grads, key, narrow, at):
    at %= len(acts)
    base = _peak(acts, grads, key, narrow)
    wider = [a * 2 if i == at else a for i, a in enumerate(acts)]
    heavier = [g + SMALL_BYTES if i == at else g for i, g in enumerate(grads)]
    assert _peak(wider, grads, key, narrow) >= base
    assert _peak(acts, heavier, key, narrow) >= base


@settings(max_examples=40, deadline=None)
@given(acts=ACTS, grads=GRADS, key=st.sampled_from(KEYS))
def test_layernorm_statistics_are_fused_only_in_small_layers(acts, grads, key):
    large = [max(a, SMALL_BYTES) for a in acts]
    assert _peak(large, grads, key, small=2.0) == _peak(large, grads, key, small=0.0)
    small = [min(a, SMALL_BYTES - 1) for a in acts]
    assert _peak(small, grads, key, small=2.0) <= _peak(small, grads, key, small=0.0)


@settings(max_examples=40, deadline=None)
@given(acts=ACTS, grads=GRADS, key=st.sampled_from(KEYS))
def test_the_update_holds_every_gradient_and_dropouts_counters(acts, grads, key):
    # An update whose temporaries dwarf every activation: the peak is the update's.
    update = 1000 * sum(acts) * 16
    counters = 2 * sum(acts[:-1]) if key[1] else 0
    expected = sum(grads[: len(acts)]) + update + counters
    assert _peak(acts, grads, key, update=update) == expected
