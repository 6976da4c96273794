"""When a run checkpoints: every N epochs, or by wall time (`[checkpoint] every_epochs`,
`every_minutes`). Pure; the loop asks `due` at each epoch end."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cadence", "make_cadence", "held_in_memory"]

# Device memory the in-memory snapshots of the newest epochs may take (all `keep` of them).
_MEMORY_BUDGET = 64 * 2**20


def held_in_memory(state_bytes: int, keep: int) -> bool:
    """Whether `keep` snapshots of a state fit the budget: then the epoch does not donate
    its state (programs.py) and snapshots hold the arrays instead of copies."""
    return state_bytes * max(keep, 1) <= _MEMORY_BUDGET


@dataclass(frozen=True)
class Cadence:
    """Which epochs save. every_epochs: every this many epochs; None: by wall time, at the
    first epoch end `every_seconds` after the loop started or the last save. The loop
    saves the last epoch, an early stop and a signal's epoch whatever this says."""

    every_epochs: int | None
    every_seconds: float

    def due(self, epoch: int, seconds_since_save: float) -> bool:
        if self.every_epochs is not None:
            return epoch % self.every_epochs == 0
        return seconds_since_save >= self.every_seconds


def make_cadence(every_epochs: int | str, every_minutes: float) -> Cadence:
    """The cadence of `[checkpoint] every_epochs` ("auto": by wall time, every
    `every_minutes`) and `every_minutes`."""
    if every_epochs == "auto":
        return Cadence(None, 60.0 * every_minutes)
    return Cadence(int(every_epochs), 0.0)
