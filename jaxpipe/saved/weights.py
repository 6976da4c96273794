"""model.msgpack: a parameter tree in flax's msgpack format (`flax.serialization.
msgpack_serialize` / `msgpack_restore`), written and read without importing flax.

`from flax import serialization` runs flax's `__init__`, which imports flax.linen: ~0.08 s
that a warm run (its programs loaded from disk) otherwise never pays. The format is
flax's, byte for byte (tests/test_weights.py compares both ways on drawn trees, chunked
arrays included), so files stay readable by flax and by older jaxpipe versions.

The format: a msgpack map per dict, keys in sorted order (flax copies the tree with a
jax tree map, which sorts them); an array is msgpack extension 1 holding the msgpack of
`(shape, dtype name, C-order bytes)`, a numpy scalar extension 3 the same; an array over
2**30 bytes becomes a `{"__msgpack_chunked_array__": True, "shape", "chunks"}` map of
flat pieces.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

__all__ = ["pack_params", "unpack_params"]

_NDARRAY, _COMPLEX, _NPSCALAR = 1, 2, 3  # flax's extension codes
_CHUNK_BYTES = 2**30  # flax's MAX_CHUNK_SIZE: msgpack's limit is 2**31 - 1 a leaf
_CHUNKED = "__msgpack_chunked_array__"


def pack_params(tree: Any) -> bytes:
    """tree (nested dicts with string keys; array, scalar, str or None leaves; numpy or
    jax arrays) → the bytes `flax.serialization.msgpack_serialize(tree)` gives."""
    return msgpack.packb(_prepared(tree), default=_ext, strict_types=True)


def unpack_params(raw: bytes) -> Any:
    """The tree `flax.serialization.msgpack_restore(raw)` gives: numpy arrays, read-only
    views of `raw`. Raises ValueError or TypeError on damaged bytes."""
    tree = msgpack.unpackb(raw, ext_hook=_unext, raw=False, strict_map_key=False)
    return _unchunked(tree)


def _prepared(tree: Any) -> Any:
    """A copy with sorted keys, arrays on the host and oversized ones chunked."""
    if isinstance(tree, dict):
        return {k: _prepared(tree[k]) for k in sorted(tree)}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_prepared(v) for v in tree)
    if hasattr(tree, "__array__") and not isinstance(tree, (np.ndarray, np.generic)):
        tree = np.asarray(tree)  # a jax.Array
    if isinstance(tree, np.ndarray) and tree.nbytes > _CHUNK_BYTES:
        return _chunk(tree)
    return tree


def _chunk(a: np.ndarray) -> dict[str, Any]:
    size = max(1, int(_CHUNK_BYTES / a.dtype.itemsize))
    flat = a.reshape(-1)
    pieces = [flat[i : i + size] for i in range(0, flat.size, size)]
    return {
        _CHUNKED: True,
        "shape": {str(i): n for i, n in enumerate(a.shape)},
        "chunks": {str(i): p for i, p in enumerate(pieces)},
    }


def _array_bytes(a: np.ndarray) -> bytes:
    if a.dtype.hasobject or a.dtype.isalignedstruct:
        raise ValueError(f"cannot save an array of dtype {a.dtype} (object or structured)")
    return msgpack.packb((a.shape, a.dtype.name, a.tobytes("C")), use_bin_type=True)


def _ext(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return msgpack.ExtType(_NDARRAY, _array_bytes(x))
    if isinstance(x, np.generic):
        return msgpack.ExtType(_NPSCALAR, _array_bytes(np.asarray(x)))
    if isinstance(x, complex):
        return msgpack.ExtType(_COMPLEX, msgpack.packb((x.real, x.imag)))
    raise TypeError(f"cannot save a {type(x).__name__} in model.msgpack")


def _dtype(name: Any) -> np.dtype:
    if name == b"bfloat16":  # not a numpy name; ml_dtypes' type, as jnp.bfloat16 is
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    if not isinstance(name, bytes):
        raise ValueError(f"an array's dtype name is {type(name).__name__}, not bytes")
    text = name.decode("ascii", "replace")
    try:
        return np.dtype(text)
    except Exception:  # numpy parses some strings as Python (a damaged name: SyntaxError)
        raise ValueError(f"unknown dtype {text!r}") from None


def _array(data: bytes) -> np.ndarray:
    shape, name, buffer = msgpack.unpackb(data, raw=True)
    return np.frombuffer(buffer, dtype=_dtype(name)).reshape(shape, order="C")


def _unext(code: int, data: bytes) -> Any:
    if code == _NDARRAY:
        return _array(data)
    if code == _NPSCALAR:
        return _array(data)[()]
    if code == _COMPLEX:
        real, imag = msgpack.unpackb(data)
        return complex(real, imag)
    return msgpack.ExtType(code, data)


def _unchunked(tree: Any) -> Any:
    if not isinstance(tree, dict):
        return tree
    if _CHUNKED in tree:
        shape = tuple(tree["shape"][str(i)] for i in range(len(tree["shape"])))
        pieces = [tree["chunks"][str(i)] for i in range(len(tree["chunks"]))]
        return np.concatenate(pieces).reshape(shape)
    return {k: _unchunked(v) for k, v in tree.items()}
