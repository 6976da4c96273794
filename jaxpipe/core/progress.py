"""Progress from inside the compiled epoch: a train step that reports its step number to
the host every `every` steps, through `jax.debug.callback` under a `lax.cond`, so a long
epoch (one `lax.scan` program) can drive a progress bar.

Only used when a person watches a terminal and the epoch is long: a program with a host
callback is not stored in JAX's persistent compilation cache, and each report makes the
device wait for the host briefly (benchmarks/progress_overhead.py measures it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax import lax

__all__ = ["with_progress", "progress_every", "LONG_EPOCH_STEPS", "REPORTS_PER_EPOCH"]

# Each report costs a host round trip (about 0.8 ms on a busy 2-core CPU host; see
# benchmarks/progress_overhead.py), so a bar pays only in epochs of a second or more:
# epochs of fewer steps show none, and a long epoch reports 10 times (a 7 s epoch:
# about once a second).
LONG_EPOCH_STEPS = 500
REPORTS_PER_EPOCH = 10


def progress_every(steps_per_epoch: int) -> int | None:
    """Steps between reports for an epoch of `steps_per_epoch` steps; None for no bar."""
    if steps_per_epoch < LONG_EPOCH_STEPS:
        return None
    return max(1, steps_per_epoch // REPORTS_PER_EPOCH)


def with_progress(
    train_step: Callable[..., tuple[Any, Any]], every: int, report: Callable[[int], None]
) -> Callable[..., tuple[Any, Any]]:
    """train_step(state, *batch) -> (state, sums), calling `report(step)` on the host
    after every `every`-th step (state.step counts steps since the run began)."""

    def host(step: np.ndarray) -> None:
        report(int(step))

    def step(state: Any, *batch: jax.Array) -> tuple[Any, Any]:
        state, sums = train_step(state, *batch)
        lax.cond(
            state.step % every == 0,
            lambda s: jax.debug.callback(host, s),
            lambda s: None,
            state.step,
        )
        return state, sums

    return step
