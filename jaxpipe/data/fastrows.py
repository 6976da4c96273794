"""The numeric fast path of a streamed epoch's reading: a row group whose
features are all float columns without missing or non-finite values, and whose label is
an integer class (or a float regression target) without gaps, becomes x: [rows, features]
float32 in one matrix conversion instead of column by column through `column_values`,
`handle_missing`, `FeatureEncoder.transform` and `encode_labels` (Python per row).

The values are the general path's bit for bit: the same float64 values cast once to
float32, the same class indices. Anything else (categoricals, integer or text features,
a missing value, an infinity, a class outside the fitted ones) returns None, and the
general path reads the group and words any error.
"""

from __future__ import annotations

import numpy as np

from jaxpipe.data.encoding import FeatureEncoder

__all__ = ["numeric_rows"]

_F32_MAX = float(np.finfo(np.float32).max)


def _features(table, encoder: FeatureEncoder, rows: np.ndarray) -> np.ndarray | None:
    """x: [len(rows), features] float32, filled column by column from the arrow buffers
    (no float64 matrix: the group's peak host memory is one float32 copy)."""
    import pyarrow as pa

    x = np.empty((len(rows), len(encoder.columns)), np.float32)
    for j, code in enumerate(encoder.columns):
        col = table.column(code.name)
        if code.kind != "numeric" or col.null_count or not pa.types.is_floating(col.type):
            return None
        v = col.to_numpy()  # zero-copy for a one-chunk column
        if not _in_range(v):
            return None
        x[:, j] = v[rows]  # float64 -> float32 as FeatureEncoder.transform casts
    return x


def _in_range(v: np.ndarray) -> bool:
    """No NaN (a missing value: the policy decides), infinity or value beyond float32
    (an error the general path words). min / max propagate NaN: two passes, no copy."""
    return not v.size or bool(v.min() >= -_F32_MAX and v.max() <= _F32_MAX)


def _class_keys(classes: tuple[str, ...], dtype: np.dtype) -> np.ndarray | None:
    """The fitted class names as the label column's integers, when each name is an
    integer's own spelling (as `encode_labels` writes integer classes)."""
    try:
        keys = [int(c) for c in classes]
        if any(str(k) != c for k, c in zip(keys, classes)):
            return None
        return np.array(keys, dtype)
    except (ValueError, OverflowError):
        return None


def _labels(col, task: str, classes: tuple[str, ...]) -> np.ndarray | None:
    """y for every row of the group: int32 class indices or float32 targets."""
    import pyarrow as pa

    if col.null_count:
        return None
    if task == "regression":
        if not pa.types.is_floating(col.type):
            return None
        y = col.to_numpy().astype(np.float64)
        return y.astype(np.float32) if _in_range(y) else None
    if not pa.types.is_integer(col.type) or not classes:
        return None
    y = col.to_numpy()
    keys = _class_keys(classes, y.dtype)
    if keys is None:
        return None
    order = np.argsort(keys, kind="stable")
    pos = np.minimum(np.searchsorted(keys[order], y), len(keys) - 1)
    if not (keys[order][pos] == y).all():  # a class the training split never had
        return None
    return order[pos].astype(np.int32)


def numeric_rows(
    table, encoder: FeatureEncoder, label: str, rows: np.ndarray, task: str, classes: tuple
) -> tuple[np.ndarray, np.ndarray] | None:
    """The group's rows `rows` (indices into the table) as (x: [n, features] float32,
    y: [n]), or None where the general path must read the group. y is unscaled (the
    regression target's scaling is the caller's, as on the general path)."""
    y = _labels(table.column(label), task, classes)
    if y is None:
        return None
    x = _features(table, encoder, rows)
    return None if x is None else (x, y[rows])
