"""Stage 1: read rows from storage into host numpy, encode them, split.

The readers (`readers.py`: CSV, Parquet, NPZ) give named columns; `encoding.py` turns
them into a feature matrix with an encoder fitted on the training split. Everything here
runs on the host and returns plain numpy arrays; the transfer to the device happens
once, in the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jaxpipe.data.diskrows import DiskRows, ReadSpec, scan_source
from jaxpipe.data.encoding import (
    Columns,
    FeatureEncoder,
    column_values,
    encode_target,
    fit_encoder,
    handle_missing,
    select_features,
)
from jaxpipe.data.readers import arrow_columns, check_host_memory, read_table
from jaxpipe.data.sources import (
    IN_MEMORY_BYTES_PER_CELL,
    FileSet,
    host_budget,
    is_multi_path,
    open_files,
    read_group,
)
from jaxpipe.errors import DataError, SpecError
from jaxpipe.spec.experiment import Spec, SpecOrigin, path_from
from jaxpipe.spec.sections import DataSpec, PreprocessSpec, SyntheticSpec, no_rows_error

__all__ = [
    "Dataset",
    "LoadRequest",
    "Rows",
    "read_rows",
    "encode_split",
    "load_dataset",
    "make_synthetic",
    "make_synthetic_regression",
    "split_rows",
    "prepare_features",
]


@dataclass(frozen=True)
class Dataset:
    """Host-resident, encoded rows, split into training and validation.

    x_*: [rows, features] float32; y_*: [rows] int32 class indices (classification) or
    float32 targets (regression).
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
    task: str = "classification"
    encoder: FeatureEncoder | None = None
    label: str | None = None
    dropped_rows: int = 0

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def outputs(self) -> int:
        """Width of the model's output: one per class, or 1 for regression."""
        return 1 if self.task == "regression" else self.num_classes

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
    parts = np.concatenate([informative, redundant, noise_cols], axis=1)
    del informative, redundant, noise_cols
    perm = rng.permutation(cfg.features)
    # Arbitrary per-column scales and offsets, as real columns have: normalising matters.
    scale = rng.uniform(0.5, 20.0, size=cfg.features)
    offset = rng.uniform(-50, 50, size=cfg.features)
    # Column by column into float32: the same values as (parts[:, perm] * scale + offset)
    # in float64, without its three full-size float64 temporaries (peak host memory).
    x = np.empty((cfg.rows, cfg.features), np.float32)
    for j, src in enumerate(perm):
        x[:, j] = parts[:, src] * scale[j] + offset[j]
    del parts
    flip = rng.random(cfg.rows) < cfg.noise
    y = np.where(flip, rng.integers(0, cfg.classes, size=cfg.rows), y)
    return x, y.astype(np.int32)


def make_synthetic_regression(cfg: SyntheticSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded regression set: a smooth nonlinear function of a few informative columns
    (the rest are noise), columns on arbitrary scales, plus Gaussian noise of `noise`
    times the signal's standard deviation. Returns x: [rows, features] float32, y: [rows]
    float32 (offset and scaled, as real targets are)."""
    rng = np.random.default_rng([seed, 0x5EED, 1])
    x = rng.normal(size=(cfg.rows, cfg.features))
    k = min(cfg.features, 6)
    w = rng.normal(size=k)
    signal = np.sin(x[:, :k] @ w / np.sqrt(k)) * 2.0 + x[:, :k] @ rng.normal(size=k) * 0.5
    y = signal + cfg.noise * signal.std() * rng.normal(size=cfg.rows)
    x = x[:, rng.permutation(cfg.features)]
    x = x * rng.uniform(0.5, 20.0, size=cfg.features) + rng.uniform(-50, 50, size=cfg.features)
    return x.astype(np.float32), (100.0 + 25.0 * y).astype(np.float32)


def prepare_features(
    columns: Columns,
    names: list[str],
    file: str,
    *,
    categorical: tuple[str, ...] = (),
    kinds: dict | None = None,
) -> tuple[Columns, dict]:
    """Feature columns as numeric (float64, NaN) or categorical (str, None) values, with
    their kinds (given `kinds` forces those of the training file)."""
    out, found = {}, {}
    for name in names:
        kind, values = column_values(
            name,
            columns[name],
            file,
            categorical=name in categorical,
            kind=None if kinds is None else kinds[name],
        )
        out[name], found[name] = values, kind
    return out, found


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


def _read_split(
    cfg: DataSpec,
    missing: str,
    task: str,
    path: str,
    kinds: dict | None,
    classes: tuple[str, ...] | None,
    columns: Columns | None = None,
):
    """One file's (or in-memory table's) feature columns, targets and kinds, after the
    missing-value policy (`[preprocess] missing`); `task`: `[model] task`."""
    if columns is None:
        wanted = None if cfg.features is None else [*cfg.features, cfg.label or "y"]
        columns = read_table(path, cfg.source, wanted)
    label = cfg.label if cfg.label is not None else "y"
    if kinds is None:
        names = select_features(columns, label, cfg.features, path)
    else:  # a validation file: the training file's features, whatever else it holds
        names = _same_features(columns, label, list(kinds), path, cfg.path)
    raw_columns = len(names) + 1
    feats, kinds = prepare_features(columns, names, path, categorical=cfg.categorical, kinds=kinds)
    feats, y_raw, dropped = handle_missing(feats, columns[label], label, missing, path)
    y, classes = encode_target(y_raw, label, task, path, classes)
    return feats, y, kinds, classes, dropped, raw_columns


def _same_features(
    columns: Columns, label: str, names: list[str], path: str, train: str | None
) -> list[str]:
    """The training file's feature columns, which a validation file must also hold (its
    other columns are ignored)."""
    absent = [n for n in [*names, label] if n not in columns]
    if absent:
        raise DataError(
            f"{path}: the validation data has no column {absent[0]!r}, which the training "
            f"{'file ' + train if train else 'data'} has; it needs the columns "
            f"{', '.join(names + [label])}"
        )
    return names


# Peak host bytes per generated cell: make_synthetic's float64 draws and float32 matrix,
# the per-column float64 copies, and the encoded float32 splits, about 32; a margin on top.
_SYNTHETIC_BYTES_PER_CELL = 40


_WIDE_FIX = "a text column has too many distinct values: leave it out with data.features"


def _check_width(width: int, rows: int, origin: str) -> None:
    """One-hot width comes from the data: a text column of a million distinct values is a
    million float32 columns (plus a float64 block per column while encoding)."""
    what = f"{origin}: the encoded features ({rows} rows × {width})"
    check_host_memory(rows * width * 12, what, _WIDE_FIX)


def _synthetic(
    cfg: SyntheticSpec, task: str, seed: int
) -> tuple[Columns, np.ndarray, dict, tuple[str, ...]]:
    centers = cfg.classes * 2 * min(cfg.features, 8) * 8  # the class centres, float64
    check_host_memory(
        cfg.rows * cfg.features * _SYNTHETIC_BYTES_PER_CELL + centers,
        f"data.synthetic ({cfg.rows} rows × {cfg.features} features, {cfg.classes} classes)",
        "lower data.synthetic.rows, features or classes",
    )
    if task == "regression":
        x, y = make_synthetic_regression(cfg, seed)
        classes: tuple[str, ...] = ()
    else:
        x, y = make_synthetic(cfg, seed)
        classes = tuple(str(c) for c in range(cfg.classes))
    feats = {f"x{i}": x[:, i].astype(np.float64) for i in range(x.shape[1])}
    return feats, y, {name: "numeric" for name in feats}, classes


def _split(feats: Columns, train: np.ndarray, val: np.ndarray) -> tuple[Columns, Columns]:
    """Both splits, column by column, each unsplit column dropped from `feats` once it
    is split: the peak is the data set and one column, not the data set twice."""
    tr, va = {}, {}
    for k in list(feats):
        col = feats.pop(k)
        tr[k], va[k] = col[train], col[val]
    return tr, va


def _check_batch(batch_size: int, train_rows: int) -> None:
    if batch_size > train_rows:
        raise DataError(
            f"training.batch_size = {batch_size} is larger than the "
            f"training split ({train_rows} rows); lower it"
        )


@dataclass(frozen=True)
class Rows:
    """Every row read and prepared, before any split: feature columns (float64 with NaN,
    or text with None), targets y: [rows], the columns' kinds and the class names."""

    feats: Columns
    y: np.ndarray
    kinds: dict
    classes: tuple[str, ...]
    origin: str
    raw_columns: int
    dropped: int = 0


@dataclass(frozen=True)
class LoadRequest:
    """What loading reads of the spec: `[data]`, `[preprocess]`, the task, the seed that
    splits (and makes synthetic) rows, the batch the training split must hold, the spec's
    folder (relative paths are relative to it) and where the spec came from (to place an
    error)."""

    data: DataSpec
    preprocess: PreprocessSpec
    task: str
    seed: int
    batch_size: int
    base_dir: str
    origin: SpecOrigin

    @classmethod
    def of(cls, spec: Spec) -> LoadRequest:
        return cls(
            spec.data,
            spec.preprocess,
            spec.model.task,
            spec.experiment.seed,
            spec.training.batch_size,
            spec.base_dir,
            spec.origin,
        )

    def resolve_path(self, path: str) -> str:
        """A data path as the spec means it (`Spec.resolve_path`)."""
        return path_from(self.base_dir, path)


def read_rows(req: LoadRequest, columns: Columns | None = None, origin: str = "<memory>") -> Rows:
    """The spec's rows (or in-memory `columns`, named `origin`), read, checked and
    prepared as one pool (cross-validation's folds); a file set (directory, glob), which
    may stream, is load_dataset's only."""
    cfg: DataSpec = req.data
    if columns is None and cfg.source is None:
        raise req.origin.place(no_rows_error())
    if columns is None and cfg.source in ("csv", "parquet") and _file_set(cfg, req.resolve_path):
        raise SpecError(
            "reads one file into memory; a directory, a glob or data.host_memory (rows "
            "that may stream from disk) is not supported with data.folds: give one file",
            key="data.folds",
        )
    if columns is None and cfg.source == "synthetic":
        feats, y, kinds, classes = _synthetic(cfg.synthetic, req.task, req.seed)
        return Rows(feats, y, kinds, classes, "synthetic", len(feats) + 1)
    origin = origin if columns is not None else req.resolve_path(cfg.path or "")
    feats, y, kinds, classes, dropped, raw_columns = _read_split(
        cfg, req.preprocess.missing, req.task, origin, None, None, columns
    )
    return Rows(feats, y, kinds, classes, origin, raw_columns, dropped)


def load_dataset(
    spec: Spec,
    columns: Columns | None = None,
    validation: Columns | None = None,
    origin: str = "<memory>",
) -> Dataset:
    """Stage 1: the spec's rows, encoded and split (directories and globs: `_load_files`).
    The encoder is fitted on the training split only. `columns` (and `validation`): rows
    already in memory (`jaxpipe.fit`), named `origin`, checked and encoded as a file's."""
    return _load(LoadRequest.of(spec), columns, validation, origin)


def _load(
    req: LoadRequest,
    columns: Columns | None = None,
    validation: Columns | None = None,
    origin: str = "<memory>",
) -> Dataset:
    cfg: DataSpec = req.data
    if columns is None and cfg.source in ("csv", "parquet") and _file_set(cfg, req.resolve_path):
        return _load_files(req)
    pool = read_rows(req, columns, origin)
    feats, y, dropped = pool.feats, pool.y, pool.dropped
    if validation is not None or isinstance(cfg.validation, str):
        where = f"{pool.origin} (validation)" if validation is not None else cfg.validation
        v_feats, y_val, _, _, v_dropped, _ = _read_split(
            cfg,
            req.preprocess.missing,
            req.task,
            req.resolve_path(where) if validation is None else where,
            pool.kinds,
            pool.classes if req.task == "classification" else None,
            validation,
        )
        dropped += v_dropped
        tr_feats, y_train = feats, y
    else:
        train, val = split_rows(len(y), cfg.validation, req.seed, cfg.shuffle)
        (tr_feats, v_feats), y_train, y_val = _split(feats, train, val), y[train], y[val]
    _check_batch(req.batch_size, len(y_train))
    encoder = fit_encoder(tr_feats, pool.kinds, req.preprocess.missing == "mean", pool.origin)
    train_part, val_part = (tr_feats, y_train), (v_feats, y_val)
    return encode_split(req.task, cfg.label, pool, encoder, train_part, val_part, dropped)


def encode_split(
    task: str,
    label: str | None,
    pool: Rows,
    encoder: FeatureEncoder,
    train: tuple[Columns, np.ndarray],
    val: tuple[Columns, np.ndarray],
    dropped: int,
) -> Dataset:
    """A Dataset of the `train` and `val` (columns, targets) parts, encoded by `encoder`
    (fitted on the training part). The training columns are dropped from `train`'s table
    once encoded (peak host memory). `task`: `[model] task`; `label`: `[data] label`."""
    (tr_feats, y_train), (v_feats, y_val) = train, val
    _check_width(len(encoder.feature_names), len(y_train) + len(y_val), pool.origin)
    x_train = encoder.transform(tr_feats)
    tr_feats.clear()  # float64 columns: two copies of the training split (peak host memory)
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_val=encoder.transform(v_feats),
        y_val=y_val,
        feature_names=encoder.feature_names,
        class_names=pool.classes,
        raw_rows=len(y_train) + len(y_val) + dropped,
        raw_columns=pool.raw_columns,
        origin=pool.origin,
        task=task,
        encoder=encoder,
        label=None if pool.origin == "synthetic" else (label or "y"),
        dropped_rows=dropped,
    )


def _file_set(cfg: DataSpec, resolve_path: Callable[[str], str]) -> bool:
    """Whether `[data] path` goes through the out-of-core source: a directory or glob,
    or one file with an explicit `host_memory`. `resolve_path`: the spec's
    (`Spec.resolve_path`: relative to the spec file's folder)."""
    if cfg.path is None:
        return False
    return is_multi_path(resolve_path(cfg.path)) or cfg.host_memory != "auto"


def _load_files(req: LoadRequest) -> Dataset:
    """A directory, glob or file of csv/parquet: loaded whole when it fits the host
    budget, else its training split streams from disk (`DiskRows`)."""
    cfg: DataSpec = req.data
    path = req.resolve_path(cfg.path or "")
    budget = host_budget(cfg.host_memory)
    fs = open_files(path, cfg.source, budget)
    cells = fs.rows * len(fs.names)
    if cells * IN_MEMORY_BYTES_PER_CELL <= budget:
        import pyarrow as pa

        table = pa.concat_tables([read_group(fs, g, list(fs.names)) for g in fs.groups])
        return _load(req, arrow_columns(table, path), origin=path)
    return _load_streamed(req, path, fs, budget)


def _fraction(cfg: DataSpec, rows: int, path: str, budget: int, width: int) -> float:
    if isinstance(cfg.validation, str):
        raise SpecError(
            "a data set streamed from disk splits off its validation rows by a row hash; "
            "give a fraction (or a count) instead of a file",
            key="data.validation",
        )
    fraction = cfg.validation if isinstance(cfg.validation, float) else cfg.validation / rows
    need = int(rows * fraction * width * 8 * 2)
    if need > budget:
        raise DataError(
            f"{path}: the validation split (about {need / 2**20:.1f} MiB) does not fit the "
            f"host budget ({budget / 2**20:.1f} MiB, data.host_memory); lower data.validation "
            "or raise host_memory"
        )
    return fraction


def _load_streamed(req: LoadRequest, path: str, fs: FileSet, budget: int) -> Dataset:
    cfg: DataSpec = req.data
    fraction = _fraction(cfg, fs.rows, path, budget, len(fs.names))
    rs = ReadSpec(
        fs, cfg.label or "y", cfg.features, cfg.categorical, req.preprocess.missing,
        req.task, req.seed, fraction, cfg.shuffle, budget,
    )  # fmt: skip
    scan = scan_source(rs, req.preprocess.normalize, path)
    rows = DiskRows(rs, scan, path)
    _check_batch(req.batch_size, rows.shape[0])
    return Dataset(
        x_train=rows,
        y_train=rows.labels,
        x_val=scan.x_val,
        y_val=scan.y_val,
        feature_names=scan.encoder.feature_names,
        class_names=scan.classes,
        raw_rows=fs.rows,
        raw_columns=len(scan.names) + 1,
        origin=path,
        task=req.task,
        encoder=scan.encoder,
        label=rs.label,
        dropped_rows=scan.dropped,
    )
