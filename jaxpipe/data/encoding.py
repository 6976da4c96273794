"""From table columns to a feature matrix: column kinds, missing values, labels, and the
one-hot / imputation encoder fitted on the training split.

Host numpy only. The fitted `FeatureEncoder` is plain JSON, so `jaxpipe predict` applies
exactly what training fitted. Kept apart from `data.py` (which reads files and splits
rows) so each stays one responsibility; it imports no other jaxpipe module but errors.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from jaxpipe.errors import DataError

__all__ = [
    "Columns",
    "ColumnCode",
    "FeatureEncoder",
    "missing_mask",
    "check_finite",
    "column_values",
    "select_features",
    "handle_missing",
    "encode_labels",
    "encode_target",
    "fit_encoder",
    "row_name",
    "rows_indexed_by",
]

# name -> [rows]: float64 with NaN for missing, or object (str / None for missing).
Columns = dict[str, np.ndarray]
Kind = Literal["numeric", "categorical"]


# The index labels of the rows being read, when they are a DataFrame's (`rows_indexed_by`):
# messages then name a row by the frame's own index, not by its position.
_ROW_INDEX: contextvars.ContextVar[Sequence[Any] | None] = contextvars.ContextVar(
    "jaxpipe_row_index", default=None
)


@contextlib.contextmanager
def rows_indexed_by(index: Sequence[Any] | None) -> Iterator[None]:
    """Within it, `row_name` names rows by these labels (a DataFrame's index)."""
    token = _ROW_INDEX.set(index)
    try:
        yield
    finally:
        _ROW_INDEX.reset(token)


def row_name(i: int, rows: np.ndarray | None = None) -> str:
    """How a message names row `i` (from 0) of the rows being read: "row N" for a file
    (data rows count from 1 after the header; `rows` gives each entry's 0-based row in the
    file when they are a streamed row group or a split, `row_number`), "index L" for a
    DataFrame's row labelled L."""
    if rows is not None:
        return f"row {row_number(i, rows)}"
    index = _ROW_INDEX.get()
    if index is None or not 0 <= i < len(index):
        return f"row {i + 1}"
    label = index[i]
    label = label.item() if hasattr(label, "item") else label  # numpy scalars print plainly
    return f"index {label!r}"


def missing_mask(col: np.ndarray) -> np.ndarray:
    """[rows] bool: which entries are missing (NaN or None)."""
    if col.dtype.kind == "f":
        return np.isnan(col)
    if col.dtype.kind in "iub":
        return np.zeros(len(col), bool)
    return np.fromiter(
        (v is None or (isinstance(v, float) and math.isnan(v)) for v in col), bool, len(col)
    )


def _number(v: Any) -> float | None:
    if isinstance(v, (bool, np.bool_)):  # a boolean column's value with gaps: 0 / 1
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _category(v: Any) -> str:
    # Integer codes read as floats ("3.0") must match the same code written as "3".
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# The largest magnitude a float32 holds: larger values (1e308, inf) would reach the
# device as inf and show up as a "diverged" run, blaming training for the data.
_F32_MAX = float(np.finfo(np.float32).max)


def row_number(i: int, rows: np.ndarray | None) -> int:
    """The 1-based row of entry `i` in its file, for messages: `rows` gives each entry's
    0-based row in the file (a streamed row group, a split), else the entry is row i."""
    return int(rows[i]) + 1 if rows is not None else i + 1


def check_finite(
    values: np.ndarray, name: str, file: str, what: str = "column", rows: np.ndarray | None = None
) -> None:
    """Raises DataError naming the first value (row, value) of float64 `values` that is
    infinite or beyond float32's range. NaN is a missing value, left to the policy.
    `rows`: each entry's row in the file (`row_number`)."""
    bad = np.isinf(values) | (np.abs(np.nan_to_num(values)) > _F32_MAX)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{file}: {what} {name!r} holds {float(values[i])!r} at {row_name(i, rows)}, which is not a "
            f"finite float32 (|x| ≤ {_F32_MAX:.4g}); fix or remove that value (or leave it "
            "empty for [preprocess] missing to handle)"
        )


def column_values(
    name: str,
    col: np.ndarray,
    file: str,
    *,
    categorical: bool = False,
    kind: Kind | None = None,
    rows: np.ndarray | None = None,
) -> tuple[Kind, np.ndarray]:
    """Decides a feature column's kind and returns its values: numeric as float64 with
    NaN, categorical as object (str, or None for missing).

    Text columns are categorical, unless most of their values parse as numbers: then the
    rest are stray text in a numeric column, a data error naming column, row and value.
    `kind` forces a kind already decided on the training file. `rows`: each entry's row
    in the file, for messages (a streamed row group starts mid-file).
    """
    miss = missing_mask(col)
    forced = kind is not None
    if kind is None:
        if categorical:
            kind = "categorical"
        elif col.dtype.kind in "fiub":
            kind = "numeric"
        else:
            present = [v for v, m in zip(col, miss) if not m]
            parsed = sum(_number(v) is not None for v in present)
            kind = "numeric" if present and parsed >= 0.5 * len(present) else "categorical"
    if kind == "categorical":
        return kind, np.array([None if m else _category(v) for v, m in zip(col, miss)], object)
    if col.dtype.kind in "fiub":
        out = col.astype(np.float64)
        check_finite(out, name, file, rows=rows)
        return kind, out
    out = np.full(len(col), np.nan)
    for i, (v, m) in enumerate(zip(col, miss)):
        if m:
            continue
        x = _number(v)
        if x is None and forced:  # e.g. predict: the column was numeric in training
            raise DataError(
                f"{file}: column {name!r} holds text {v!r} at {row_name(i, rows)}, but it was a "
                "numeric column in the training data; give numbers there"
            )
        if x is None:
            raise DataError(
                f"{file}: column {name!r} holds text {v!r} at {row_name(i, rows)} where the column's "
                "other values are numbers; fix or remove that value (or list the column in "
                "data.categorical)"
            )
        out[i] = x
    check_finite(out, name, file, rows=rows)
    return kind, out


def select_features(
    columns: Columns, label: str | None, features: Sequence[str] | None, file: str
) -> list[str]:
    """The feature column names: `features`, or every column but the label."""
    if label is not None and label not in columns:
        raise DataError(
            f"{file}: label column {label!r} not found; columns are {', '.join(columns)} "
            "(set data.label)"
        )
    names = list(features) if features is not None else [c for c in columns if c != label]
    for name in names:
        if name not in columns:
            raise DataError(
                f"{file}: feature column {name!r} (data.features) not found; columns are "
                f"{', '.join(columns)}"
            )
    if not names:
        raise DataError(f"{file}: no feature columns besides the label {label!r}")
    return names


def handle_missing(
    features: Columns,
    y: np.ndarray | None,
    label: str | None,
    policy: str,
    file: str,
    rows: np.ndarray | None = None,
) -> tuple[Columns, np.ndarray | None, int]:
    """Applies `preprocess.missing` to rows: "error" raises naming the column and the
    number of missing rows, "drop" removes the rows, "mean" leaves feature gaps for the
    encoder to fill (a missing label is never imputed). Returns (features, y, dropped).
    `rows`: each entry's row in the file, for messages (`row_number`)."""
    masks = {name: missing_mask(col) for name, col in features.items()}
    if y is not None:
        y_miss = missing_mask(y)
        if y_miss.any() and policy != "drop":
            raise DataError(
                f"{file}: label column {label!r} has {int(y_miss.sum())} rows without a label "
                f"(first at {row_name(int(np.argmax(y_miss)), rows)}); remove them or set "
                '[preprocess] missing = "drop"'
            )
    if policy == "error":
        for name, m in masks.items():
            if m.any():
                raise DataError(
                    f"{file}: column {name!r} has {int(m.sum())} missing values (first at "
                    f'{row_name(int(np.argmax(m)), rows)}); fill them in or set [preprocess] missing = "drop" '
                    'or "mean"'
                )
        return features, y, 0
    if policy == "mean":
        return features, y, 0
    count = len(next(iter(features.values())))
    drop = np.zeros(count, bool)
    for m in masks.values():
        drop |= m
    if y is not None:
        drop |= missing_mask(y)
    if drop.all():
        raise DataError(f'{file}: every row has a missing value; missing = "drop" leaves none')
    keep = ~drop
    return (
        {k: v[keep] for k, v in features.items()},
        None if y is None else y[keep],
        int(drop.sum()),
    )


def encode_labels(
    values: np.ndarray, column: str, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Maps class labels (integers or strings) to indices 0..C-1 in sorted order (numeric
    order for integers), or onto the given `classes` (a validation or prediction file)."""
    miss = missing_mask(values)
    if miss.any():
        raise DataError(
            f"label column {column!r}: {int(miss.sum())} rows have no label; remove them or "
            'set [preprocess] missing = "drop"'
        )
    if values.dtype.kind == "b":
        old = classes is not None and set(classes) <= {"0", "1"}  # saved before bool names
        strings = np.where(values, "1" if old else "True", "0" if old else "False").astype(object)
        names = tuple(sorted(set(strings)))
    elif values.dtype.kind in "fiu":
        ints = _integer_labels(values, column)
        uniques = np.unique(ints)  # numeric order, exact (int64 / uint64)
        names = tuple(str(u) for u in uniques)
        strings = np.array([str(v) for v in ints], object)
    else:
        strings = np.array([_category(v) for v in values], object)
        names = tuple(sorted(set(strings)))
    if classes is None:
        if len(names) < 2:
            raise DataError(
                f"label column {column!r} has a single class ({names[0]}); "
                "classification needs at least two"
            )
        classes = names
    lookup = {c: i for i, c in enumerate(classes)}
    unknown = [s for s in names if s not in lookup]
    if unknown:
        raise DataError(
            f"label column {column!r}: class {unknown[0]!r} does not occur in the training "
            f"data (classes: {', '.join(classes)})"
        )
    return np.array([lookup[s] for s in strings], np.int32), tuple(classes)


# Above 2**53 a float64 no longer holds every integer: neighbouring labels read as floats
# may already have merged, so such labels are refused rather than silently joined.
_EXACT_FLOAT_INT = 2**53


def _integer_labels(values: np.ndarray, column: str) -> np.ndarray:
    """Numeric class labels as exact integers: int64 / uint64 columns as they are; float
    columns only when every value is an integer a float64 holds exactly."""
    if values.dtype.kind in "iu":
        return values
    values = values.astype(np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"label column {column!r}: value {values[i]} ({row_name(i)}) "
            "is not a class label; classification needs integer or text labels "
            '(or set model.task = "regression")'
        )
    big = np.abs(values) > _EXACT_FLOAT_INT
    if big.any():
        i = int(np.argmax(big))
        raise DataError(
            f"label column {column!r}: value {values[i]:.17g} ({row_name(i)}) was read as a "
            f"float beyond 2**53, where distinct integers merge; use integer labels within "
            "±2**53 (or text labels, e.g. with a letter prefix)"
        )
    return values.astype(np.int64)


def encode_target(
    values: np.ndarray, column: str, task: str, file: str, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """y: [rows] int32 class indices (classification) or float32 values (regression)."""
    if task == "classification":
        try:
            return encode_labels(values, column, classes)
        except DataError as e:
            raise DataError(f"{file}: {e}") from None
    if values.dtype.kind in "fiub":  # already numbers: no per-value parsing
        numbers = values.astype(np.float64)
        check_finite(numbers, column, file, "label column")
        return numbers.astype(np.float32), ()
    miss = missing_mask(values)
    numbers = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        x = None if miss[i] else _number(v)
        if x is None and not miss[i]:
            raise DataError(
                f"{file}: label column {column!r} holds text {v!r} at {row_name(i)}; regression "
                'needs numeric targets (or set model.task = "classification")'
            )
        numbers[i] = np.nan if x is None else x
    check_finite(numbers, column, file, "label column")
    return numbers.astype(np.float32), ()


@dataclass(frozen=True)
class ColumnCode:
    """How one input column becomes feature columns.

    numeric: one column; `fill` = (training mean,). categorical: one column per category
    of the training split (unseen values → all zeros); `fill` = category frequencies.
    """

    name: str
    kind: Kind
    categories: tuple[str, ...] = ()
    fill: tuple[float, ...] = ()

    @property
    def outputs(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name]
        return [f"{self.name}={c}" for c in self.categories]


@dataclass(frozen=True)
class FeatureEncoder:
    """The fitted column encoding; `transform` gives [rows, width] float32."""

    columns: tuple[ColumnCode, ...]
    impute: bool = False

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(n for c in self.columns for n in c.outputs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def kinds(self) -> dict[str, Kind]:
        return {c.name: c.kind for c in self.columns}

    def transform(self, columns: Columns) -> np.ndarray:
        """Prepared columns (see `column_values`) → x: [rows, width] float32."""
        parts = []
        for code in self.columns:
            col = columns[code.name]
            if code.kind == "numeric":
                if self.impute:
                    col = np.where(np.isnan(col), code.fill[0], col)
                parts.append(col[:, None])
                continue
            index = {c: i for i, c in enumerate(code.categories)}
            # -1: unseen (stays all zeros), -2: missing (imputed when asked).
            idx = np.fromiter((-2 if v is None else index.get(v, -1) for v in col), int, len(col))
            onehot = np.zeros((len(col), len(code.categories)))
            known = idx >= 0
            onehot[np.nonzero(known)[0], idx[known]] = 1.0
            if self.impute:
                onehot[idx == -2] = code.fill
            parts.append(onehot)
        rows = len(next(iter(columns.values()))) if columns else 0
        # Straight into float32, part by part: concatenating the float64 parts first
        # would hold two more copies of the data set at once (peak host memory).
        x = np.empty((rows, sum(p.shape[1] for p in parts)), np.float32)
        at = 0
        for part in parts:
            x[:, at : at + part.shape[1]] = part
            at += part.shape[1]
        return x

    def to_json(self) -> dict[str, Any]:
        return {
            "impute": self.impute,
            "columns": [
                {
                    "name": c.name,
                    "kind": c.kind,
                    "categories": list(c.categories),
                    "fill": list(c.fill),
                }
                for c in self.columns
            ],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FeatureEncoder:
        cols = tuple(
            ColumnCode(c["name"], c["kind"], tuple(c["categories"]), tuple(c["fill"]))
            for c in obj["columns"]
        )
        return cls(cols, bool(obj["impute"]))


def fit_encoder(
    columns: Columns, kinds: dict[str, Kind], impute: bool, file: str = ""
) -> FeatureEncoder:
    """Fits categories and fill values on the training split's prepared columns."""
    codes = []
    for name, kind in kinds.items():
        col = columns[name]
        miss = missing_mask(col)
        if kind == "numeric":
            present = col[~miss]
            if impute and present.size == 0:
                raise DataError(
                    f"{file}: column {name!r} has no values in the training split to impute from"
                )
            codes.append(
                ColumnCode(name, kind, (), (float(present.mean()) if present.size else 0.0,))
            )
            continue
        values, counts = np.unique(np.array([v for v in col[~miss]], dtype=str), return_counts=True)
        freq = counts / max(counts.sum(), 1)
        codes.append(ColumnCode(name, kind, tuple(map(str, values)), tuple(map(float, freq))))
    return FeatureEncoder(tuple(codes), impute)
