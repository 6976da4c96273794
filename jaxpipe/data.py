"""Stage 1: read rows from storage into host numpy, encode labels, split.

Everything here runs on the host and returns plain numpy arrays; the transfer to the
device happens once, in the loop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from jaxpipe.errors import DataError
from jaxpipe.spec import DataSpec, Spec, SyntheticSpec

__all__ = ["Dataset", "load_dataset", "make_synthetic", "read_csv", "split_rows", "encode_labels"]


@dataclass(frozen=True)
class Dataset:
    """Host-resident, encoded rows, split into training and validation.

    x_*: [rows, features] float32; y_*: [rows] int32 class indices.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    raw_rows: int
    raw_columns: int
    origin: str

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.x_train, self.y_train, self.x_val, self.y_val))


def make_synthetic(cfg: SyntheticSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded classification set: each class is a mixture of two Gaussian clusters in
    an informative subspace, plus redundant and noise columns on arbitrary scales, and a
    `noise` fraction of labels redrawn at random (so accuracy tops out near
    1 - noise * (1 - 1/classes)). Returns x: [rows, features] float32, y: [rows] int32.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    k = min(cfg.features, 8)
    centers = rng.normal(scale=1.9, size=(cfg.classes, 2, k))
    y = rng.integers(0, cfg.classes, size=cfg.rows)
    cluster = rng.integers(0, 2, size=cfg.rows)
    informative = centers[y, cluster] + rng.normal(size=(cfg.rows, k))
    extra = cfg.features - k
    n_redundant = extra // 2
    mix = rng.normal(size=(k, n_redundant)) / np.sqrt(k)
    redundant = informative @ mix + 0.5 * rng.normal(size=(cfg.rows, n_redundant))
    noise_cols = rng.normal(size=(cfg.rows, extra - n_redundant))
    x = np.concatenate([informative, redundant, noise_cols], axis=1)
    x = x[:, rng.permutation(cfg.features)]
    # Arbitrary per-column scales and offsets, as real columns have: normalising matters.
    x = x * rng.uniform(0.5, 20.0, size=cfg.features) + rng.uniform(-50, 50, size=cfg.features)
    flip = rng.random(cfg.rows) < cfg.noise
    y = np.where(flip, rng.integers(0, cfg.classes, size=cfg.rows), y)
    return x.astype(np.float32), y.astype(np.int32)


def read_csv(path: str) -> dict[str, np.ndarray]:
    """Reads a CSV with a header row into named numpy columns (pyarrow's multithreaded
    reader). Numeric columns come back as float64 with NaN for missing; others as object."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not os.path.exists(path):
        raise DataError(f"{path}: data file not found; check [data] path (relative to the spec)")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: the data file is empty; it needs a header row and data rows")
    try:
        table = pacsv.read_csv(path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse as CSV ({str(e).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    columns: dict[str, np.ndarray] = {}
    for name, col in zip(table.column_names, table.columns):
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            columns[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        elif pa.types.is_null(col.type):
            columns[name] = np.full(table.num_rows, np.nan)
        else:
            columns[name] = np.asarray(col.to_pylist(), dtype=object)
    return columns


def encode_labels(values: np.ndarray, column: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Maps labels (integers or strings) to indices 0..C-1 in sorted order."""
    if values.dtype.kind == "f":
        if np.isnan(values).any():
            raise DataError(
                f"label column {column!r}: {int(np.isnan(values).sum())} rows "
                "have no label; remove them or fill them in"
            )
        if not np.all(values == np.round(values)):
            bad = values[values != np.round(values)][0]
            raise DataError(
                f"label column {column!r}: value {bad} is not a class label "
                "(classification needs integer or text labels)"
            )
        values = values.astype(np.int64)
    elif any(v is None for v in values):
        raise DataError(
            f"label column {column!r}: {sum(v is None for v in values)} rows have "
            "no label; remove them or fill them in"
        )
    uniques, index = np.unique(
        values.astype(str) if values.dtype == object else values, return_inverse=True
    )
    if len(uniques) < 2:
        raise DataError(
            f"label column {column!r} has a single class ({uniques[0]}); "
            "classification needs at least two"
        )
    return index.astype(np.int32), tuple(str(u) for u in uniques)


def _load_csv(spec: Spec) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[str, ...]]:
    path = spec.resolve_path(spec.data.path)
    columns = read_csv(path)
    label = spec.data.label
    if label not in columns:
        raise DataError(
            f"{path}: label column {label!r} not found; columns are {', '.join(columns)}"
        )
    y, class_names = encode_labels(columns.pop(label), label)
    if not columns:
        raise DataError(f"{path}: no feature columns besides the label {label!r}")
    for name, col in columns.items():
        if col.dtype == object:
            row = next(i for i, v in enumerate(col) if v is not None)
            raise DataError(
                f"{path}: column {name!r} holds text ({col[row]!r} at row {row + 1}); "
                "only numeric features are supported"
            )
        missing = np.isnan(col)
        if missing.any():
            raise DataError(
                f"{path}: column {name!r} has {int(missing.sum())} missing values; "
                "fill them in or remove those rows"
            )
    x = np.stack(list(columns.values()), axis=1).astype(np.float32)
    return x, y, tuple(columns), class_names


def split_rows(
    rows: int, validation: int | float, seed: int, shuffle: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and validation splits (validation taken last)."""
    n_val = validation if isinstance(validation, int) else int(round(rows * validation))
    if not 1 <= n_val < rows:
        raise DataError(
            f"data.validation holds out {n_val} of {rows} rows; it must leave "
            "at least one row on each side"
        )
    order = np.random.default_rng([seed, 0x5B17]).permutation(rows) if shuffle else np.arange(rows)
    return order[: rows - n_val], order[rows - n_val :]


def load_dataset(spec: Spec) -> Dataset:
    """Stage 1: the spec's rows in host memory, encoded and split."""
    cfg: DataSpec = spec.data
    if cfg.source == "synthetic":
        x, y = make_synthetic(cfg.synthetic, spec.experiment.seed)
        names = tuple(f"x{i}" for i in range(x.shape[1]))
        classes = tuple(str(c) for c in range(cfg.synthetic.classes))
        origin = "synthetic"
    else:
        x, y, names, classes = _load_csv(spec)
        origin = spec.resolve_path(cfg.path)
    train, val = split_rows(len(x), cfg.validation, spec.experiment.seed, cfg.shuffle)
    if spec.training.batch_size > len(train):
        raise DataError(
            f"training.batch_size = {spec.training.batch_size} is larger than the "
            f"training split ({len(train)} rows); lower it"
        )
    return Dataset(
        x_train=np.ascontiguousarray(x[train]),
        y_train=y[train],
        x_val=np.ascontiguousarray(x[val]),
        y_val=y[val],
        feature_names=names,
        class_names=classes,
        raw_rows=len(x),
        raw_columns=x.shape[1] + 1,
        origin=origin,
    )
