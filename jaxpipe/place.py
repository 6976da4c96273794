"""Stage 3, place: the host arrays go to the devices once, onto the plan's mesh (the data
set is replicated on every device). A streamed run places the validation split only;
its training rows stay on the host and go in chunks during training."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxpipe.data import Dataset
from jaxpipe.runplan import RunPlan
from jaxpipe.sharding import place_host_array

__all__ = ["Placed", "place_data"]


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
