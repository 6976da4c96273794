"""Cross-validation's folds (`[data] folds = K`): the rows read once, dealt into K folds
(stratified by class for classification, seeded by the spec's seed), and one Dataset per
fold whose encoder is fitted on that fold's training part only.

Every fold holds out the same number of rows, rows // K, so the K folds stack into one
vmapped program (sweep/cv.py); the rows // K * K dealt rows are each held out once, and
the rows % K left over (fewer than K) are in every fold's training part."""

from __future__ import annotations

import numpy as np

from jaxpipe.data.encoding import ColumnCode, Columns, FeatureEncoder, fit_encoder
from jaxpipe.data.load import Dataset, LoadRequest, Rows, encode_split, read_rows
from jaxpipe.errors import DataError, SpecError

__all__ = ["fold_indices", "load_folds"]

# A stream of its own: the folds never coincide with split_rows' permutation.
_FOLD_STREAM = 0xF01D


def fold_indices(
    y: np.ndarray, folds: int, seed: int, *, stratify: bool, shuffle: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) row indices of each fold, both ascending; every validation part
    has len(y) // folds rows. y: [rows] class indices (stratify) or targets.

    Stratified: the rows are ordered class by class (each class shuffled with `seed`
    when `shuffle`) and dealt round the folds, so each fold holds every class in
    proportion, within one row."""
    rows = len(y)
    held = rows // folds
    if held < 1:
        raise DataError(
            f"data.folds = {folds} is more than the {rows} rows; give at most {rows} folds"
        )
    rng = np.random.default_rng([seed, _FOLD_STREAM])
    if stratify:
        order = np.concatenate(
            [_shuffled(np.flatnonzero(y == c), rng, shuffle) for c in np.unique(y)]
        )
    else:
        order = _shuffled(np.arange(rows), rng, shuffle)
    dealt = order[: held * folds]
    out = []
    for k in range(folds):
        val = np.sort(dealt[k::folds])
        train = np.setdiff1d(np.arange(rows), val, assume_unique=True)
        out.append((train, val))
    return out


def _shuffled(index: np.ndarray, rng: np.random.Generator, shuffle: bool) -> np.ndarray:
    return rng.permutation(index) if shuffle else index


def _check_classes(y: np.ndarray, classes: tuple[str, ...], folds: int, origin: str) -> None:
    """Stratified folds need every class in every fold: at least `folds` rows of each."""
    counts = np.bincount(y, minlength=len(classes))
    small = [(classes[i], int(n)) for i, n in enumerate(counts) if n < folds]
    if small:
        name, n = min(small, key=lambda c: c[1])
        raise DataError(
            f"{origin}: class {name!r} has {n} row{'s' * (n != 1)}, fewer than data.folds = "
            f"{folds}; stratified folds need at least one row of each class per fold: lower "
            "data.folds"
        )


def _widened(encoder: FeatureEncoder, pooled: FeatureEncoder) -> FeatureEncoder:
    """`encoder` (one fold's training part) with every category the pool has, so every
    fold encodes to the same columns: a category only in a fold's held-out rows gets a
    column of zeros in its training part (no label, no statistic crosses over) and fill
    frequency 0."""
    codes = []
    for mine, every in zip(encoder.columns, pooled.columns, strict=True):
        if mine.kind == "numeric":
            codes.append(mine)
            continue
        freq = dict(zip(mine.categories, mine.fill, strict=True))
        fill = tuple(freq.get(c, 0.0) for c in every.categories)
        codes.append(ColumnCode(mine.name, mine.kind, every.categories, fill))
    return FeatureEncoder(tuple(codes), encoder.impute)


def _take(feats: Columns, index: np.ndarray) -> Columns:
    return {k: col[index] for k, col in feats.items()}


def load_folds(
    req: LoadRequest, columns: Columns | None = None, origin: str = "<memory>"
) -> list[Dataset]:
    """One Dataset per fold of `[data] folds` (`req`: `LoadRequest.of(spec)`): its
    training part and held-out fold, encoded by an encoder fitted on its training part
    only (the scaler is fitted on the device the same way, runner/preprocess.py).
    `columns`: rows in memory, as load_dataset takes them."""
    cfg = req.data
    folds = cfg.folds
    if folds is None:
        raise SpecError("is not set: cross-validation needs K ≥ 2 folds", key="data.folds")
    pool: Rows = read_rows(req, columns, origin)
    classification = req.task == "classification"
    if classification:
        _check_classes(pool.y, pool.classes, folds, pool.origin)
    parts = fold_indices(pool.y, folds, req.seed, stratify=classification,
                         shuffle=cfg.shuffle)  # fmt: skip
    held = len(parts[0][1])
    if req.batch_size > len(pool.y) - held:
        raise DataError(
            f"training.batch_size = {req.batch_size} is larger than a fold's "
            f"training part ({len(pool.y) - held} rows); lower it"
        )
    impute = req.preprocess.missing == "mean"
    pooled = fit_encoder(pool.feats, pool.kinds, False, pool.origin)  # categories only
    out = []
    for train, val in parts:
        tr_feats = _take(pool.feats, train)
        encoder = _widened(fit_encoder(tr_feats, pool.kinds, impute, pool.origin), pooled)
        part = (tr_feats, pool.y[train]), (_take(pool.feats, val), pool.y[val])
        out.append(encode_split(req.task, cfg.label, pool, encoder, *part, pool.dropped))
    return out
