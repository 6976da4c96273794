"""Training data bigger than the device budget: stream it through in chunks.

The resident path (`step.make_epoch`) keeps the whole training split on the device and
gathers each batch from it. When the split does not fit beside the model, the host
gathers the epoch's shuffled batches chunk by chunk (`gather_chunk`), and each chunk's
steps run as one compiled scan (`make_chunk_steps`). The next chunk's `device_put` is
dispatched while the current chunk's scan runs (JAX dispatch is asynchronous), so at most
two chunks are on the device and the transfer overlaps the compute. Batch order, padding
and metric sums are those of the resident path, so the results are the same.
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np
from jax import lax

from jaxpipe.core.metrics import Sums, add_sums
from jaxpipe.core.scaling import Scaler, apply_scaler
from jaxpipe.core.step import TrainState
from jaxpipe.errors import JaxpipeError

__all__ = [
    "chunk_plan",
    "steps_per_chunk",
    "chunk_bounds",
    "gather_chunk",
    "make_chunk_steps",
    "stream_epoch",
    "stream_chunks",
    "prefetch",
    "trim_host_heap",
]


def chunk_plan(data_bytes: int, budget_bytes: int, rows: int) -> int:
    """Rows per chunk for training data of `data_bytes` (`rows` rows) on a device with
    `budget_bytes` left beside the model: all `rows` when it fits (resident), else the
    most rows such that two chunks (the one computing and the one in flight) fit.

    Raises JaxpipeError when not even two rows fit.
    """
    if rows < 1 or data_bytes < 0:
        raise ValueError(
            f"chunk_plan: rows must be ≥ 1 and data_bytes ≥ 0, got {rows}, {data_bytes}"
        )
    if data_bytes <= budget_bytes:
        return rows
    per_row = -(-data_bytes // rows)
    fit = budget_bytes // (2 * per_row)
    if fit < 1:
        raise JaxpipeError(
            f"the device budget ({budget_bytes} bytes beside the model) holds fewer than two "
            f"rows of {per_row} bytes; use a device with more memory or a smaller model"
        )
    return int(fit)


def steps_per_chunk(chunk_rows: int, batch_size: int, steps: int) -> int:
    """Whole batches per chunk: chunk_rows rounded down to a multiple of the batch (at
    least one batch), at most the epoch's `steps`."""
    return max(1, min(steps, chunk_rows // batch_size))


def chunk_bounds(steps: int, per_chunk: int) -> list[tuple[int, int]]:
    """[start, stop) step ranges of an epoch's chunks; the last may be shorter."""
    return [(s, min(s + per_chunk, steps)) for s in range(0, steps, per_chunk)]


def gather_chunk(
    x: np.ndarray, y: np.ndarray, idx: np.ndarray, weight: np.ndarray, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host rows of steps [start, stop): x: [rows, f], y: [rows], idx, weight: [steps, batch]
    → ([n, batch, f], [n, batch], [n, batch]) with n = stop - start."""
    rows = idx[start:stop]
    return np.take(x, rows, axis=0), np.take(y, rows, axis=0), weight[start:stop]


def make_chunk_steps(
    train_step: Callable,
) -> Callable[[TrainState, Sums, Scaler, jax.Array, jax.Array, jax.Array], tuple[TrainState, Sums]]:
    """chunk(state, sums, scaler, x: [n, batch, f], y: [n, batch], weight: [n, batch])
    -> (state, sums): `train_step` scanned over n pre-gathered batches of raw host rows,
    scaled on the device (the same elementwise op as the resident path)."""

    def chunk(state, sums, scaler, x, y, weight):
        def body(carry, batch):
            state, sums = carry
            xb, yb, w = batch
            state, s = train_step(state, apply_scaler(scaler, xb), yb, w)
            return (state, add_sums(sums, s)), None

        (state, sums), _ = lax.scan(body, (state, sums), (x, y, weight))
        return state, sums

    return chunk


def stream_chunks(
    chunk_fn: Callable,
    state: TrainState,
    sums: Sums,
    scaler: Scaler,
    chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
    put: Callable = jax.device_put,
) -> tuple[TrainState, Sums]:
    """Runs `chunk_fn` over host chunks (x: [n, batch, f], y, weight: [n, batch]), each
    sent to the devices by `put`.

    Double buffering: chunk c's scan is dispatched (asynchronously), then chunk c+1 is
    made on the host and its transfer issued while chunk c computes. Before that put,
    chunk c-1's result is awaited, so at most two chunks are ever on the device.
    `chunk_fn` compiles once per chunk length (the full chunks and a shorter last one).
    No value comes back to the host.
    """
    nxt = next(chunks, None)
    nxt = None if nxt is None else put(nxt)
    done = sums  # not donated (the state is), so it can be awaited after the next dispatch
    while nxt is not None:
        cur = nxt
        state, sums = chunk_fn(state, sums, scaler, *cur)
        host = next(chunks, None)
        nxt = None
        if host is not None:
            jax.block_until_ready(done)  # the chunk before finished: its buffers are free
            done = sums
            nxt = put(host)
    return state, sums


def stream_epoch(
    chunk_fn: Callable,
    state: TrainState,
    sums: Sums,
    scaler: Scaler,
    x: np.ndarray,
    y: np.ndarray,
    idx: np.ndarray,
    weight: np.ndarray,
    per_chunk: int,
    put: Callable = jax.device_put,
) -> tuple[TrainState, Sums]:
    """One epoch over host data x: [rows, f], y: [rows] in the batch order idx, weight:
    [steps, batch] (from `step.epoch_batches`), `per_chunk` steps per device chunk
    (double-buffered: see `stream_chunks`)."""
    bounds = chunk_bounds(idx.shape[0], per_chunk)
    chunks = (gather_chunk(x, y, idx, weight, a, b) for a, b in bounds)
    return stream_chunks(chunk_fn, state, sums, scaler, chunks, put)


def prefetch(items: Iterator, depth: int = 1) -> Iterator:
    """`items`, made `depth` ahead on a background thread: reading and encoding the next
    chunk (pyarrow and numpy release the GIL) overlaps the device's work on this one.
    Host memory: `depth` more chunks. An exception in the thread is raised here."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            for item in items:
                q.put((True, item))
            q.put((True, done))
        except BaseException as e:  # re-raised in the consumer, with its traceback
            q.put((False, e))

    threading.Thread(target=work, daemon=True, name="jaxpipe-prefetch").start()
    while True:
        ok, item = q.get()
        if not ok:
            raise item
        if item is done:
            return
        yield item
        trim_host_heap()


def trim_host_heap() -> None:
    """Hands freed heap back to the system (glibc's malloc_trim; elsewhere nothing). glibc
    keeps the holes that loading's column copies leave (about two copies of the data set)
    and gives the prefetch thread its own arena: without this a run's RSS stays tens of
    MiB above its host budget (benchmarks/stream_bench.py)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False  # not glibc: nothing to trim
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None
