"""The order of a streamed data set's rows: which rows are validation, which reader
("lane") reads which row groups, and the order of each epoch. Pure numpy, seeded.

Randomness and what it costs (README "Scaling out"):

- The train/validation split is a seeded hash of (file name without its folder and
  extension, row index within the file):
  stable however many processes read, and whatever order the files are listed in;
  a row keeps its side when other files are added. Cost: one hash per row per read.
- Row groups are dealt once per run to `lanes` lanes (one per device of the run's
  mesh: the order depends on the seed and the mesh size), by a seeded permutation, each to the lane with the fewest training rows so far.
  A global batch is the lanes' batches side by side, so it mixes rows of `lanes`
  different groups. Every epoch each lane reads its groups in a fresh seeded order,
  through a shuffle buffer of `buffer` rows: a row can move anywhere within its group
  and the buffered rows before it, not across the whole data set (a group stays in its
  lane). Cost: the buffer's rows in host memory, one permutation per group read.
- Nothing depends on the number of processes: process p of n reads lanes
  [p·L/n, (p+1)·L/n), and the global batches are the same for any n dividing L.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator

import numpy as np

__all__ = [
    "validation_mask",
    "assign_lanes",
    "lane_order",
    "process_lanes",
    "lane_batch",
    "epoch_steps",
    "shuffled_blocks",
]

_M = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 (wrapping arithmetic): a well-mixed hash."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _file_key(seed: int, file: str) -> np.uint64:
    stem = os.path.splitext(os.path.basename(file))[0]  # the same rows as csv or parquet
    digest = hashlib.blake2b(f"{seed}:{stem}".encode(), digest_size=8)
    return np.uint64(int.from_bytes(digest.digest(), "little"))


def validation_mask(file: str, first_row: int, rows: int, seed: int, fraction: float) -> np.ndarray:
    """[rows] bool: True where row first_row + i of `file` is held out for validation
    (about `fraction` of the rows, by a seeded hash of the file's name and row index)."""
    index = np.arange(first_row, first_row + rows, dtype=np.uint64)
    u = _mix(_mix(index) ^ _file_key(seed, file)) >> np.uint64(11)
    return u.astype(np.float64) / float(2**53) < fraction


def assign_lanes(train_rows: list[int], lanes: int, seed: int) -> list[list[int]]:
    """Group indices per lane: groups in a seeded order, each to the lane holding the
    fewest training rows so far (ties: the lowest lane), so the lanes' rows balance."""
    order = np.random.default_rng([seed, 0x1A7E]).permutation(len(train_rows))
    out: list[list[int]] = [[] for _ in range(lanes)]
    load = [0] * lanes
    for g in order:
        lane = min(range(lanes), key=lambda i: (load[i], i))
        out[lane].append(int(g))
        load[lane] += train_rows[g]
    return out


def lane_order(groups: list[int], seed: int, epoch: int, lane: int, shuffle: bool) -> list[int]:
    """The lane's groups in epoch `epoch`'s order (file order when not shuffling)."""
    if not shuffle:
        return sorted(groups)
    rng = np.random.default_rng([seed, 0x0DE5, epoch, lane])
    return [groups[i] for i in rng.permutation(len(groups))]


def process_lanes(lanes: int, process: int, processes: int) -> range:
    """The lanes process `process` of `processes` reads (a contiguous run of them)."""
    if lanes % processes:
        raise ValueError(f"{lanes} lanes do not split over {processes} processes")
    per = lanes // processes
    return range(process * per, (process + 1) * per)


def lane_batch(batch: int, lanes: int) -> int:
    """Rows each lane gives a global batch: the batch split evenly, rounded up (the
    global batch is `lanes` times this)."""
    return -(-batch // lanes)


def epoch_steps(lane_rows: list[int], per_lane: int) -> int:
    """Steps of an epoch: the fullest lane's batches (shorter lanes pad with weight 0)."""
    return max(1, max(-(-r // per_lane) for r in lane_rows))


def shuffled_blocks(
    blocks: Iterable[tuple[np.ndarray, np.ndarray]], buffer: int, rng: np.random.Generator | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Blocks (x: [r, f], y: [r]) passed through a shuffle buffer of `buffer` rows: each
    incoming block is permuted together with the rows held back, all but `buffer` rows
    go out, the rest wait for the next block. `rng` None: rows pass in order."""
    held: tuple[np.ndarray, np.ndarray] | None = None
    for x, y in blocks:
        if rng is None:
            yield x, y
            continue
        if held is not None:
            x, y = np.concatenate([held[0], x]), np.concatenate([held[1], y])
        perm = rng.permutation(len(y))
        keep = min(buffer, len(y))
        out, rest = perm[: len(y) - keep], perm[len(y) - keep :]
        held = (x[rest], y[rest])
        if len(out):
            yield x[out], y[out]
    if held is not None and len(held[1]):
        yield held
