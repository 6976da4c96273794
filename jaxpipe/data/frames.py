"""Data already in memory, as named columns: a pandas DataFrame (when pandas is
importable; jaxpipe never needs it), a pyarrow Table, `(X, y)` arrays, a bare `X`, or a
file path. Every kind goes through the same readers' column rules, encoders and checks
as a file (`data.load_dataset(spec, columns=...)`)."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np

from jaxpipe.data.encoding import Columns, rows_indexed_by
from jaxpipe.data.readers import arrow_columns, read_table
from jaxpipe.errors import DataError
from jaxpipe.spec.sections import source_of

__all__ = ["to_columns", "is_path", "is_dataframe", "positional_columns", "frame_rows"]

_KINDS = "a pandas DataFrame, a pyarrow Table, (X, y) arrays or a file path"


def is_path(data: Any) -> bool:
    return isinstance(data, (str, os.PathLike))


def is_dataframe(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


def _refuse_complex(a: np.ndarray, name: str, what: str) -> None:
    if a.dtype.kind == "c":
        raise DataError(
            f"{what}: {name} holds complex numbers (dtype {a.dtype}); jaxpipe needs real "
            "numbers or text: pass the real and imaginary parts as two columns"
        )


def frame_rows(data: Any) -> contextlib.AbstractContextManager:
    """A context in which data errors name a DataFrame's rows by its own index ("index 3",
    "index 'b'"); other data keep "row N" (files count data rows from 1)."""
    x = data[0] if isinstance(data, tuple) and len(data) == 2 else data
    if is_dataframe(x):
        return rows_indexed_by(list(x.index))
    return contextlib.nullcontext()


def _array_columns(x: Any, y: Any, label: str, what: str) -> Columns:
    """x: [rows, features] → columns x0, x1, ... as an npz file's; y: [rows] → `label`.
    Each column goes through pyarrow and the readers' column rules, as a DataFrame's does
    (exact int64 / uint64 labels, None as missing, bool labels as False / True)."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or len(x) == 0:
        raise DataError(f"{what}: X must be [rows, features] with rows; found shape {x.shape}")
    _refuse_complex(x, "X", what)
    named = {f"x{i}": x[:, i] for i in range(x.shape[1])}
    if y is not None:
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{what}: y must be [rows] beside X {x.shape}; found shape {y.shape}")
        _refuse_complex(y, "y", what)
        if label in named:
            raise DataError(f"{what}: the label {label!r} is also an X column name; set data.label")
        named[label] = y
    rest = {k: v for k, v in named.items() if _plain_number_column(v) is None}
    read = arrow_columns(_columns_table(rest), "<arrays>") if rest else {}
    return {k: read[k] if k in rest else _plain_number_column(v) for k, v in named.items()}


def _plain_number_column(values: np.ndarray) -> np.ndarray | None:
    """A numpy column of native-order booleans, integers or floats as the readers' rules
    make it from its Arrow copy (floats as float64, NaN missing; integers and booleans as
    they are), without the round trip: pyarrow's first conversion imports pandas (0.15-0.4
    s of a fresh process's first `fit` on arrays). None for any other column."""
    if values.dtype.kind not in "biuf" or not values.dtype.isnative:
        return None
    return values.astype(np.float64) if values.dtype.kind == "f" else np.array(values)


def _columns_table(named: dict[str, Any]):
    """Named columns (numpy arrays or pandas Series) as a pyarrow Table: a column pyarrow
    cannot type (numbers mixed with stray text) becomes text, so the reader's rules name
    the bad value and its row, as they do in a CSV file."""
    import pyarrow as pa

    arrays = {}
    for name, values in named.items():
        try:
            arrays[name] = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError,
                ValueError):  # fmt: skip
            items = values.tolist()
            arrays[name] = pa.array([None if _missing(v) else str(v) for v in items])
    return pa.table(arrays)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _frame_table(df: Any, what: str):
    """A DataFrame as a pyarrow Table, column by column (`_columns_table`)."""
    names = [str(c) for c in df.columns]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{what}: column name {dup[0]!r} appears twice; rename one of them")
    for name, (_, series) in zip(names, df.items()):
        _refuse_complex(series.to_numpy()[:0], f"column {name!r}", what)  # dtype only
    return _columns_table({name: series for name, (_, series) in zip(names, df.items())})


def to_columns(data: Any, label: str = "y", what: str = "data") -> tuple[Columns, str]:
    """The named columns of `data` and the name messages use for it ("<DataFrame>", the
    path). `(X, y)` arrays give columns x0, x1, ... and `label`, as an npz file does."""
    if is_path(data):
        path = os.fspath(data)
        return read_table(path, source_of(path)), path
    if is_dataframe(data):
        return arrow_columns(_frame_table(data, what), "<DataFrame>"), "<DataFrame>"
    if type(data).__module__.split(".")[0] == "pyarrow" and hasattr(data, "column_names"):
        return arrow_columns(data, "<pyarrow.Table>"), "<pyarrow.Table>"
    if isinstance(data, tuple) and len(data) == 2:
        return _array_columns(data[0], data[1], label, what), "<arrays>"
    if isinstance(data, np.ndarray) or isinstance(data, list):
        return _array_columns(data, None, label, what), "<array>"
    raise DataError(f"{what}: expected {_KINDS}; found {type(data).__name__}")


def positional_columns(data: Any, names: tuple[str, ...], what: str) -> tuple[Columns, str]:
    """Rows to predict: a DataFrame, Table or path by column name; a bare array (or the X
    of `(X, y)`) by position, its columns being the model's input columns in order."""
    x = data[0] if isinstance(data, tuple) and len(data) == 2 else data
    if not isinstance(x, (np.ndarray, list)):
        return to_columns(data, what=what)
    x = np.asarray(x)
    x = x[:, None] if x.ndim == 1 else x
    _refuse_complex(x, "X", what)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise DataError(
            f"{what}: an array's columns are the model's input columns in order "
            f"({', '.join(names)}): expected [rows, {len(names)}], found shape {x.shape}"
        )
    numeric = x.dtype.kind in "fiub"
    return {
        n: x[:, i].astype(np.float64) if numeric else x[:, i].astype(object)
        for i, n in enumerate(names)
    }, "<array>"
