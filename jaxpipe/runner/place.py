"""Stage 3, place: the host arrays go to the devices once, onto the plan's mesh (the data
set is replicated on every device). A streamed run places the validation split only;
its training rows stay on the host and go in chunks during training."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxpipe.data.diskrows import DiskRows
from jaxpipe.data.load import Dataset
from jaxpipe.parallel.sharding import batch_spec, place_host_array
from jaxpipe.runner.plan import RunPlan
from jaxpipe.runner.stream import chunk_bounds, gather_chunk, prefetch

__all__ = ["Placed", "place_data", "ChunkFeed", "chunk_feed", "chunk_shardings", "make_put"]


@dataclass(frozen=True)
class Placed:
    """The run's arrays where training reads them. x_*: [rows, features]; y_*: [rows].
    Training arrays are host numpy in a streamed run, device arrays otherwise."""

    x_train: Any
    y_train: Any
    x_val: jax.Array
    y_val: jax.Array
    device: Any  # the first device: its platform names the compiler options
    where: str  # "cpu:0", "8 cpu devices (replicated)"

    @property
    def arrays(self) -> tuple[Any, ...]:
        return (self.x_train, self.y_train, self.x_val, self.y_val)


def place_data(ds: Dataset, rp: RunPlan) -> tuple[Placed, float]:
    """The data set placed as `rp` says, and the seconds the transfer took."""
    streamed = rp.chunk > 0
    host: tuple[np.ndarray, ...] = (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
    todo = host[2:] if streamed else host
    t0 = time.perf_counter()
    arrays = jax.block_until_ready(tuple(place_host_array(a, rp.layout.replicated) for a in todo))
    seconds = time.perf_counter() - t0
    if streamed:
        arrays = host[:2] + arrays
    device = jax.devices()[0]
    mesh = rp.layout.mesh
    where = (
        f"{device.platform}:{device.id}"
        if mesh.size == 1
        else f"{mesh.size} {device.platform} devices (replicated)"
    )
    return Placed(*arrays, device=device, where=where), seconds


def chunk_shardings(mesh: Mesh, strategy: str) -> tuple[NamedSharding, ...]:
    """Where a chunk (x: [n, batch, f], y, weight: [n, batch]) lives: its batch axis
    split as the strategy splits a batch (over `data`), else replicated."""
    spec = batch_spec(strategy)
    return (
        NamedSharding(mesh, PartitionSpec(None, *spec, None)),
        NamedSharding(mesh, PartitionSpec(None, *spec)),
        NamedSharding(mesh, PartitionSpec(None, *spec)),
    )


def make_put(shardings: tuple[NamedSharding, ...], width: int) -> Callable:
    """put(chunk) -> global arrays. One process: a `device_put` onto the shardings. Several:
    each passes only its own rows of every batch (`local_batch_rows`) and
    `jax.make_array_from_process_local_data` assembles the global batch."""

    def put(chunk):
        if jax.process_count() == 1:
            return jax.device_put(chunk, shardings)
        return tuple(
            jax.make_array_from_process_local_data(s, a, (a.shape[0], width, *a.shape[2:]))
            for s, a in zip(shardings, chunk)
        )

    return put


def local_batch_rows(sharding: NamedSharding, width: int) -> tuple[int, int]:
    """[start, stop) of a global batch's rows that this process's devices hold."""
    index = sharding.addressable_devices_indices_map((1, width))
    starts = [i[1].start or 0 for i in index.values()]
    stops = [width if i[1].stop is None else i[1].stop for i in index.values()]
    return min(starts), max(stops)


@dataclass(frozen=True)
class ChunkFeed:
    """A streamed epoch's chunks: `width` rows per global batch, the steps of each chunk
    (`bounds`), this process's host chunks (`chunks`) and `put`, which makes them global
    arrays on the mesh."""

    width: int
    bounds: list[tuple[int, int]]
    put: Callable
    chunks: Callable[[int, np.ndarray | None, np.ndarray | None], Iterator]
    ordered: bool  # the chunks need the resident epoch's (idx, weight) order
    replicated: NamedSharding
    shardings: tuple[NamedSharding, ...]  # x, y, weight (`chunk_shardings`)

    def replicate(self, tree):
        """Small values the chunk programs take beside the chunks (scaler, metric sums),
        on every device of the mesh."""
        host = jax.device_get(tree)
        return jax.tree.map(lambda a: place_host_array(np.asarray(a), self.replicated), host)


def chunk_feed(rp: RunPlan, x, y) -> ChunkFeed:
    """How the training rows `x`, `y` (host arrays, or a `DiskRows` split) reach the
    mesh chunk by chunk, as `rp` says."""
    shardings = chunk_shardings(rp.layout.mesh, rp.strategy)
    bounds = chunk_bounds(rp.steps_per_epoch, rp.chunk)
    if isinstance(x, DiskRows):
        per_lane = -(-rp.batch // rp.lanes)
        width = per_lane * rp.lanes
        a, b = local_batch_rows(shardings[0], width)
        local = range(a // per_lane, -(-b // per_lane))

        def disk(epoch, idx=None, weight=None):
            return prefetch(x.epoch_chunks(int(epoch), rp.lanes, per_lane, bounds, local))

        put = make_put(shardings, width)
        return ChunkFeed(width, bounds, put, disk, False, rp.layout.replicated, shardings)
    width = rp.batch + (-rp.batch % rp.layout.data_parallel)
    a, b = local_batch_rows(shardings[0], width)

    def host(epoch, idx, weight):
        for s, t in bounds:
            xs, ys, ws = gather_chunk(x, y, idx, weight, s, t)
            yield xs[:, a:b], ys[:, a:b], ws[:, a:b]

    put = make_put(shardings, width)
    return ChunkFeed(width, bounds, put, host, True, rp.layout.replicated, shardings)
