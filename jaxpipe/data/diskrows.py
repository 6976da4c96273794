"""A training split that stays on disk: the one statistics pass over an out-of-core
source (`scan_source`), and `DiskRows`, which stands where a host array of the training
split stands (shape, dtype, nbytes) and reads an epoch's chunks row group by row group.

Only a few row groups are ever in host memory: the one being read, the lanes' shuffle
buffers (`roworder`) and the chunk being assembled; the validation split is kept
(encoded) in host memory, as the in-memory path keeps it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from jaxpipe.core.scaling import Scaler
from jaxpipe.data.encoding import (
    Columns,
    FeatureEncoder,
    column_values,
    encode_target,
    handle_missing,
    select_features,
)
from jaxpipe.data.fastrows import numeric_rows
from jaxpipe.data.readers import arrow_columns
from jaxpipe.data.roworder import assign_lanes, lane_order, shuffled_blocks, validation_mask
from jaxpipe.data.sources import (
    FileSet,
    Group,
    decoded_bytes,
    read_ahead,
    read_group,
    release_unused,
)
from jaxpipe.data.streamstats import StreamFit
from jaxpipe.errors import DataError

__all__ = ["ReadSpec", "Scan", "DiskRows", "DiskLabels", "scan_source"]


@dataclass(frozen=True)
class ReadSpec:
    """How a group's rows become encoded training and validation rows."""

    fs: FileSet
    label: str
    features: tuple[str, ...] | None
    categorical: tuple[str, ...]
    missing: str  # preprocess.missing
    task: str
    seed: int
    validation: float  # the fraction held out
    shuffle: bool
    budget: int  # host bytes the data path may hold (data.host_memory)


@dataclass
class _Block:
    train: Columns
    y_train: np.ndarray
    val: Columns
    y_val: np.ndarray
    dropped: int
    nbytes: int


def _take(cols: Columns, rows: np.ndarray) -> Columns:
    return {k: v[rows] for k, v in cols.items()}


def _columns(rs: ReadSpec) -> list[str]:
    return list(rs.fs.names) if rs.features is None else [*rs.features, rs.label]


def _read_table(rs: ReadSpec, g: Group):
    return read_group(rs.fs, g, _columns(rs))


def _read_block(rs: ReadSpec, g: Group, names: list[str] | None, kinds: dict | None, table=None):
    """A group's rows (`table`: the group already read), split (by the row hash) and
    after the missing-value policy; the feature names and kinds (decided on the first
    group, then held)."""
    table = _read_table(rs, g) if table is None else table
    columns = arrow_columns(table, g.file, g.first_row)
    if names is None:
        names = select_features(columns, rs.label, rs.features, g.file)
    at = g.first_row + np.arange(g.rows)  # each row's row in its file, for messages
    feats, found = {}, {}
    for n in names:
        kind = None if kinds is None else kinds[n]
        cat = n in rs.categorical
        found[n], feats[n] = column_values(
            n, columns[n], g.file, categorical=cat, kind=kind, rows=at
        )
    val = validation_mask(g.file, g.first_row, g.rows, rs.seed, rs.validation)
    parts, dropped = [], 0
    for rows in (np.flatnonzero(~val), np.flatnonzero(val)):
        f, y = _take(feats, rows), columns[rs.label][rows]
        if len(rows):
            f, y, d = handle_missing(f, y, rs.label, rs.missing, g.file, rows=at[rows])
            dropped += d
        parts.append((f, y))
    block = _Block(*parts[0], *parts[1], dropped, table.nbytes)
    return block, names, found


@dataclass(frozen=True)
class Scan:
    """What the statistics pass found: the fitted encoder, scaler and target, the class
    names, the validation split (encoded, in memory) and each group's training rows."""

    names: list[str]
    kinds: dict
    encoder: FeatureEncoder
    classes: tuple[str, ...]
    scaler: Scaler
    target: Scaler | None
    x_val: np.ndarray
    y_val: np.ndarray
    train_rows: list[int]
    dropped: int
    read_bytes: int = 0  # this process's share of the pass


@dataclass
class _Share:
    """One process's part of the statistics pass: its groups' statistics, validation
    rows and training-row counts, or the data error it met (raised on every process
    after the exchange, so none waits for a peer that stopped)."""

    fit: StreamFit | None = None
    names: list[str] | None = None
    kinds: dict | None = None
    groups: dict = field(default_factory=dict)  # g: (val columns, val labels, train rows)
    dropped: int = 0
    nbytes: int = 0
    error: str | None = None


def _scan_share(rs: ReadSpec, origin: str, process: int, processes: int) -> _Share:
    sh = _Share()
    try:
        for i, g in enumerate(rs.fs.groups):
            if i % processes != process:
                continue
            b, sh.names, sh.kinds = _read_block(rs, g, sh.names, sh.kinds)
            if sh.fit is None:
                sh.fit = StreamFit(sh.kinds, rs.missing == "mean", rs.task, rs.label, origin)
            y = b.y_train
            if len(y) and rs.task == "regression":
                y = encode_target(y, rs.label, rs.task, g.file)[0]
            if len(y):
                sh.fit.add(b.train, y)
            sh.fit.add_labels(b.y_train)
            sh.fit.add_labels(b.y_val)
            sh.groups[i] = (b.val, b.y_val, len(b.y_train))
            sh.dropped, sh.nbytes = sh.dropped + b.dropped, sh.nbytes + b.nbytes
    except DataError as e:
        sh.error = str(e)
    return sh


def _exchange(share: _Share) -> list[_Share]:
    """Every process's share, on every process (pickled bytes through jax's allgather:
    the peers run this same program)."""
    import jax

    if jax.process_count() == 1:
        return [share]
    from jax.experimental import multihost_utils

    blob = np.frombuffer(pickle.dumps(share), np.uint8)
    sizes = np.ravel(multihost_utils.process_allgather(np.array([blob.size], np.int64)))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: blob.size] = blob
    every = multihost_utils.process_allgather(padded)
    return [pickle.loads(every[i, : int(n)].tobytes()) for i, n in enumerate(sizes)]


def scan_source(rs: ReadSpec, normalize: str, origin: str) -> Scan:
    """One pass over the groups, each process its share (group i on process i mod n):
    the training split's statistics (`StreamFit`, merged across processes) and the
    validation rows (every process gets all of them, in group order)."""
    import jax

    mine = _scan_share(rs, origin, jax.process_index(), jax.process_count())
    shares = _exchange(mine)
    error = next((s.error for s in shares if s.error), None)
    if error:
        raise DataError(error)
    done = [s for s in shares if s.fit is not None]
    fit, names, kinds = done[0].fit, done[0].names, done[0].kinds
    for s in done[1:]:
        fit.merge(s.fit)
    groups = {i: v for s in shares for i, v in s.groups.items()}
    val = [groups[i][:2] for i in sorted(groups)]
    rows = sum(len(y) for _, y in val)
    if fit.rows == 0 or not rows:
        raise DataError(
            f"{origin}: data.validation = {rs.validation:g} leaves {fit.rows} training and "
            f"{rows} validation rows; each side needs at least one"
        )
    encoder, classes = fit.encoder(), fit.classes()
    cols = {n: np.concatenate([v[n] for v, _ in val]) for n in names}
    y_val, _ = encode_target(
        np.concatenate([y for _, y in val]), rs.label, rs.task, origin, classes or None
    )
    return Scan(
        names, kinds, encoder, classes, fit.scaler(normalize, encoder), fit.target(),
        encoder.transform(cols), y_val, [groups[i][2] for i in sorted(groups)],
        sum(s.dropped for s in shares), mine.nbytes,
    )  # fmt: skip


class DiskLabels:
    """The training labels' stand-in: [rows] int32 (classes) or float32 (targets)."""

    ndim = 1

    def __init__(self, rows: int, dtype: np.dtype):
        self.shape, self.dtype = (rows,), np.dtype(dtype)
        self.nbytes = rows * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def fingerprint(self) -> str:  # the labels are part of the rows' (DiskRows) digest
        return f"{self.dtype.str}{self.shape}"


class DiskRows:
    """The training split of an out-of-core source, x: [rows, features] float32 as far
    as planning is concerned; `lane_blocks` reads it."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, rs: ReadSpec, scan: Scan, origin: str):
        self.rs, self.scan, self.origin = rs, scan, origin
        rows, width = sum(scan.train_rows), scan.x_val.shape[1]
        self.shape = (rows, width)
        self.nbytes = rows * width * 4
        ydt = np.float32 if rs.task == "regression" else np.int32
        self.labels = DiskLabels(rows, ydt)
        self.bytes_read = (
            scan.read_bytes
        )  # what this process read: its share of the pass, then its lanes

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def fitted(self) -> tuple[Scaler, Scaler | None]:
        """The scaler and regression target fitted in the statistics pass."""
        return self.scan.scaler, self.scan.target

    def __getitem__(self, index: slice) -> np.ndarray:
        """Zero rows of the right shape (the model's init only needs a shape)."""
        n = len(range(*index.indices(self.shape[0])))
        return np.zeros((n, self.shape[1]), np.float32)

    def chunk_budget(self) -> int:
        """Host bytes two device chunks may take: the budget less the validation split
        (raw and encoded) and a row group in reading (its table, decoded columns, split,
        encoded and shuffled copies: about 6 × its decoded size), halved for the chunk
        being assembled and the one prefetched (on a CPU the device chunks are host
        memory too)."""
        group = max(decoded_bytes(g) for g in self.rs.fs.groups)
        return (self.rs.budget - 3 * self.scan.x_val.nbytes - 6 * group) // 2

    def lanes(self, lanes: int) -> list[list[int]]:
        return assign_lanes(self.scan.train_rows, lanes, self.rs.seed)

    def lane_rows(self, lanes: int) -> list[int]:
        return [sum(self.scan.train_rows[g] for g in gs) for gs in self.lanes(lanes)]

    def fingerprint(self) -> str:
        """The files as they were read (names, sizes, modification times, groups)."""
        h = hashlib.blake2b(digest_size=16)
        for f in self.rs.fs.files:
            st = os.stat(f)
            h.update(f"{os.path.basename(f)}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(repr(self.scan.train_rows).encode())
        return h.hexdigest()

    def _train(self, g: int, table) -> tuple[np.ndarray, np.ndarray]:
        """Group g's training rows (x: [n, f] float32, y: [n]) from its `table`."""
        sc, rs, grp = self.scan, self.rs, self.rs.fs.groups[g]
        self.bytes_read += table.nbytes
        val = validation_mask(grp.file, grp.first_row, grp.rows, rs.seed, rs.validation)
        fast = numeric_rows(table, sc.encoder, rs.label, np.flatnonzero(~val), rs.task, sc.classes)
        if fast is None:  # categoricals, gaps, odd labels: column by column
            b, _, _ = _read_block(rs, grp, sc.names, sc.kinds, table)
            x = sc.encoder.transform(b.train)
            y, _ = encode_target(b.y_train, rs.label, rs.task, self.origin, sc.classes or None)
        else:
            x, y = fast
        release_unused()
        if sc.target is not None:  # the regression target, scaled as in memory
            y = (y - sc.target.offset[0]) / sc.target.scale[0]
        return x, y

    def _blocks(self, groups: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for g, table in read_ahead(self.rs.fs, groups, _columns(self.rs)):
            block = self._train(g, table)
            del table  # freed before the next read is awaited, not after
            yield block

    def lane_blocks(self, epoch: int, lane: int, groups: Sequence[int]) -> Iterator:
        """Epoch `epoch`'s (x, y) blocks of one lane: its groups in the epoch's order,
        through the shuffle buffer (the largest group's rows)."""
        rs = self.rs
        order = lane_order(list(groups), rs.seed, epoch, lane, rs.shuffle)
        blocks = self._blocks([g for g in order if self.scan.train_rows[g]])
        rng = np.random.default_rng([rs.seed, 0xB0FF, epoch, lane]) if rs.shuffle else None
        return shuffled_blocks(blocks, max(self.scan.train_rows), rng)

    def epoch_chunks(
        self, epoch: int, lanes: int, per_lane: int, bounds: list[tuple[int, int]], local: range
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Host chunks (x: [n, width, f], y, weight: [n, width]) of epoch `epoch` for the
        lanes `local`, steps [start, stop) of `bounds` each: a batch is the lanes'
        `per_lane` rows side by side (width = len(local) × per_lane); a lane out of rows
        pads with weight-0 zero rows."""
        groups = self.lanes(lanes)
        takers = [_Taker(self.lane_blocks(epoch, lane, groups[lane])) for lane in local]
        f = self.shape[1]
        for start, stop in bounds:
            n = stop - start
            parts = [t.take(n * per_lane, f, self.labels.dtype) for t in takers]
            if len(parts) == 1:  # one lane: the chunk is its rows as they are
                yield tuple(p.reshape(n, per_lane, *p.shape[1:]) for p in parts[0])
                continue
            x = np.stack([p[0].reshape(n, per_lane, f) for p in parts], 1).reshape(n, -1, f)
            y = np.stack([p[1].reshape(n, per_lane) for p in parts], 1).reshape(n, -1)
            w = np.stack([p[2].reshape(n, per_lane) for p in parts], 1).reshape(n, -1)
            yield x, y, w


class _Taker:
    """Exactly k rows at a time from a stream of blocks of any size, copied straight
    into the chunk's arrays (no concatenation of the blocks held: one copy, less peak
    memory)."""

    def __init__(self, blocks: Iterator):
        self.blocks, self.held = blocks, None

    def take(self, k: int, width: int, ydt: np.dtype):
        x = np.zeros((k, width), np.float32)
        y = np.zeros(k, ydt)
        w = np.zeros(k, np.float32)
        at = 0
        while at < k:
            if self.held is None:
                self.held = next(self.blocks, None)
                if self.held is None:
                    break
            hx, hy = self.held
            m = min(k - at, len(hy))
            x[at : at + m], y[at : at + m], w[at : at + m] = hx[:m], hy[:m], 1.0
            self.held = (hx[m:], hy[m:]) if m < len(hy) else None
            at += m
        return x, y, w
