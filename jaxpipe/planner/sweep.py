"""How a sweep group's trials fit the devices: the planner's one-trial breakdown, scaled
by the trials each device holds, against the usable memory `plan` reports (including a
`[hardware] device_memory` override), and the fewest chunks of trials that fit.

In a group's program (trials.py) every trial runs whole on one device: the trial axis is
sharded over `trial_mesh(c)`'s devices (the largest count ≤ the devices that divides the
chunk's c trials), so a device holds ceil(c / devices) trials' parameters, gradients,
optimizer state, activations, workspace and the masked epoch's kept state. The data is what sweeptrain.py holds: one
replicated copy per device when the trials share it; when the seed varies within a
chunk, each distinct seed's replicated copy plus the stacked per-trial copy (sharded on
the trial axis, so ceil(c / devices) of them per device).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jaxpipe.errors import PlanError
from jaxpipe.planner.values import Plan, format_bytes

__all__ = ["TrialSplit", "trial_devices", "chunk_bytes", "split_trials"]


@dataclass(frozen=True)
class TrialSplit:
    """A group's trials cut into chunks run one after another, each one program.
    `chunks`: the trials' positions in the group, per chunk; `per_device_bytes`: the
    largest chunk's estimated need per device."""

    chunks: tuple[tuple[int, ...], ...]
    per_device_bytes: int
    usable_bytes_per_device: int
    per_trial_bytes: int
    data_bytes: int

    def record(self, indices: Sequence[int]) -> dict[str, Any]:
        """summary.json's `sweep.groups` entry; `indices` the group's trial numbers."""
        return {
            "trials": list(indices),
            "chunks": len(self.chunks),
            "chunk_trials": [[indices[i] for i in c] for c in self.chunks],
            "per_device_bytes": self.per_device_bytes,
            "usable_bytes_per_device": self.usable_bytes_per_device,
            "per_trial_bytes": self.per_trial_bytes,
        }


def trial_devices(trials: int, devices: int) -> int:
    """The devices a chunk of `trials` runs on (as trials.trial_mesh picks them)."""
    return max(d for d in range(1, max(devices, 1) + 1) if trials % d == 0)


def _one_trial(plan: Plan) -> tuple[int, int]:
    """(per-trial bytes without the data, the data's bytes) from the plan's one-device
    breakdown: a trial of a sweep always runs whole on one device."""
    single = plan.single
    breakdown = dict(single.breakdown if single is not None else plan.breakdown)
    data = breakdown.pop("data", 0)
    # The masked epoch (trials.py) selects between a trial's new and its kept state, so
    # the old parameters and optimizer state live through the step beside the new ones:
    # XLA's figure for the vmapped epoch grows by one more such copy per trial.
    kept = breakdown.get("params", 0) + breakdown.get("optimizer", 0)
    return sum(breakdown.values()) + kept, data


def chunk_bytes(per_trial: int, data: int, seeds: Sequence[Any], devices: int) -> int:
    """Per-device bytes of one chunk whose trials have these `seeds` (one per trial,
    None when the seed is not swept) on up to `devices` devices."""
    per_device = -(-len(seeds) // trial_devices(len(seeds), devices))
    distinct = len(set(seeds))
    if distinct > 1:  # per-seed data: replicated copies, and the stacked per-trial copy
        return per_device * (per_trial + data) + distinct * data
    return per_device * per_trial + data


def _cuts(n: int, k: int) -> list[tuple[int, ...]]:
    """`n` positions in `k` contiguous, near-equal chunks (the larger ones first)."""
    size, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (i < extra)
        out.append(tuple(range(start, end)))
        start = end
    return out


def split_trials(plan: Plan, seeds: Sequence[Any], devices: int) -> TrialSplit:
    """The fewest chunks of the group's trials (`seeds`: each trial's seed, or None when
    the trials share the data) whose per-device need fits the plan's usable memory.
    Raises PlanError, with the plan, when even one trial does not fit one device."""
    per_trial, data = _one_trial(plan)
    usable = plan.usable_bytes_per_device
    n = len(seeds)
    for k in range(1, n + 1):
        chunks = _cuts(n, k)
        need = max(chunk_bytes(per_trial, data, [seeds[i] for i in c], devices) for c in chunks)
        if need <= usable:
            return TrialSplit(tuple(chunks), need, usable, per_trial, data)
    one = per_trial + data
    raise PlanError(
        f"one trial of the sweep needs {format_bytes(one)} per device, "
        f"{format_bytes(usable)} usable: the run {plan.recommendation}",
        plan=plan,
    )
