"""model.msgpack's codec (saved/weights.py) against flax.serialization, the format's
owner: the same bytes from the same tree, each reading the other's files, chunked
arrays included; and the codec is what a run uses without importing flax."""

import ml_dtypes
import numpy as np
import pytest
from flax import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxpipe.saved import weights

DTYPES = st.sampled_from(
    [np.float32, np.float64, np.float16, np.int32, np.int8, np.uint8, np.bool_, ml_dtypes.bfloat16]
)
ARRAYS = DTYPES.flatmap(
    lambda d: hnp.arrays(
        np.dtype(d),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
        elements=st.integers(0, 1) if d in (np.bool_, np.uint8) else st.integers(-100, 100),
    )
)
LEAVES = ARRAYS | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.none()
LEAVES = LEAVES | st.just(np.float32(1.5)) | st.text(max_size=5)
TREES = st.recursive(
    st.dictionaries(st.text(min_size=1, max_size=6), LEAVES, max_size=4),
    lambda inner: st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4),
    max_leaves=12,
)


def _same(a, b):
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
    else:
        assert type(a) is type(b) and (a == b or a is b), (a, b)


@settings(max_examples=60, deadline=None)
@given(TREES)
def test_the_codec_writes_flaxs_bytes_and_each_reads_the_others(tree):
    raw = weights.pack_params(tree)
    assert raw == serialization.msgpack_serialize(tree)
    _same(weights.unpack_params(raw), serialization.msgpack_restore(raw))


def test_a_trained_models_parameters_round_trip_bit_for_bit():
    import jax

    from jaxpipe.core.model import make_model
    from jaxpipe.spec.sections import ModelSpec

    model = make_model(ModelSpec(hidden=(8, 4), layer_norm=True), 3)
    params = model.init(jax.random.key(0), np.zeros((1, 5), np.float32))
    raw = weights.pack_params(params)  # jax arrays in, as a run hands them
    assert raw == serialization.msgpack_serialize(params)
    back = weights.unpack_params(raw)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), params, back)


def test_oversized_arrays_are_chunked_as_flax_chunks_them(monkeypatch):
    """flax splits an array over 2**30 bytes into flat pieces; with the limit lowered in
    both, a 10-element array goes in 3-element chunks, and comes back whole."""
    monkeypatch.setattr(weights, "_CHUNK_BYTES", 12)
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 12)
    tree = {"a": {"kernel": np.arange(10, dtype=np.float32).reshape(2, 5)}, "b": np.ones(2)}
    raw = weights.pack_params(tree)
    assert raw == serialization.msgpack_serialize(tree)
    assert b"__msgpack_chunked_array__" in raw
    _same(weights.unpack_params(raw), serialization.msgpack_restore(raw))
    np.testing.assert_array_equal(weights.unpack_params(raw)["a"]["kernel"], tree["a"]["kernel"])


def test_what_the_format_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="object"):
        weights.pack_params({"a": np.array([object()])})
    with pytest.raises(TypeError, match="set"):
        weights.pack_params({"a": {1, 2}})
    with pytest.raises(ValueError):
        weights.unpack_params(b"\xc1 not msgpack")


def test_damaged_bytes_raise_value_or_type_errors_only():
    """What load_predictor turns into its one-line error: cut or flipped bytes of a real
    file raise ValueError or TypeError (or decode to some other tree, which the shape
    check refuses), never another exception."""
    rng = np.random.default_rng(0)
    tree = {"hidden_0": {"kernel": rng.random((5, 8), np.float32), "bias": np.zeros(8)}}
    raw = weights.pack_params(tree)
    for i in range(3000):
        b = bytearray(raw[: int(rng.integers(len(raw)))] if i % 3 == 0 else raw)
        for j in rng.integers(len(b), size=int(rng.integers(1, 5))) if i % 3 else []:
            b[j] = int(rng.integers(256))
        try:
            weights.unpack_params(bytes(b))
        except (ValueError, TypeError):
            pass
    # a dtype name numpy would parse as Python, and one that is not bytes at all
    import msgpack

    for name in (b"[(", 7):
        ext = msgpack.ExtType(1, msgpack.packb(((2,), name, b"\0" * 8), use_bin_type=True))
        with pytest.raises(ValueError, match="dtype"):
            weights.unpack_params(msgpack.packb({"a": ext}))
