"""The parallel strategies, defined once: a small typed value that knows its mesh axes,
what it splits and which collectives a step of it runs. The spec validates a
`[hardware] strategy` against it, the planner decides one and carries it in the plan,
and parallel/ turns it into meshes and shardings; nothing else compares names.

A `str` enum, so a strategy is written to JSON (summary.json, `plan --json`) and read
back as its name. Imports no jax.
"""

from __future__ import annotations

import enum

__all__ = ["Strategy", "STRATEGIES", "AUTO_SEARCH", "DATA", "MODEL"]

DATA, MODEL = "data", "model"  # the mesh's axis names


class Strategy(str, enum.Enum):
    """How a run is laid out over its devices.

    single: one device. data: the batch split over `data`, parameters replicated. fsdp:
    the batch and every parameter split over `data`, a layer gathered just before use.
    tensor: hidden layers split over `model` (Megatron column/row pairs). data+tensor and
    fsdp+tensor: the two-axis forms (`data` × `model`).
    """

    SINGLE = "single"
    DATA = "data"
    FSDP = "fsdp"
    TENSOR = "tensor"
    DATA_TENSOR = "data+tensor"
    FSDP_TENSOR = "fsdp+tensor"

    # A name and its strategy are interchangeable as dict keys and in comparisons
    # (plans read back from JSON hold names).
    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def shards_batch(self) -> bool:
        """Whether a batch [batch, features] is split over the `data` axis."""
        return self in (Strategy.DATA, Strategy.FSDP, Strategy.DATA_TENSOR, Strategy.FSDP_TENSOR)

    @property
    def shards_params(self) -> bool:
        """Whether parameters and optimizer state are split over `data` (FSDP)."""
        return self in (Strategy.FSDP, Strategy.FSDP_TENSOR)

    @property
    def model_parallel(self) -> bool:
        """Whether hidden layers are split over the `model` axis."""
        return self in (Strategy.TENSOR, Strategy.DATA_TENSOR, Strategy.FSDP_TENSOR)

    @property
    def two_axes(self) -> bool:
        """Whether the mesh has both a `data` and a `model` axis."""
        return self.shards_batch and self.model_parallel

    @property
    def axes(self) -> tuple[str, ...]:
        """The mesh axes, in order."""
        if self is Strategy.TENSOR:
            return (MODEL,)
        return (DATA, MODEL) if self.two_axes else (DATA,)

    @property
    def held_by_closed_form(self) -> bool:
        """Whether the closed-form memory estimate is held within 10 % of XLA for this
        strategy; FSDP's is not, so plans compile its layouts (planner/verify.py)."""
        return not self.shards_params

    @property
    def collectives(self) -> tuple[str, ...]:
        """The collectives one training step runs: data parallel's gradient all-reduce,
        FSDP's parameter all-gather and gradient reduce-scatter, tensor parallel's
        activation all-reduces (forward and backward)."""
        out = []
        if self.shards_params:
            out += ["all-gather", "reduce-scatter"]
        elif self.shards_batch:
            out += ["all-reduce"]
        if self.model_parallel:
            out += ["activation all-reduce"]
        return tuple(out)

    def step_collectives(
        self, grads: int, weights: int, activations: tuple[int, ...] = ()
    ) -> tuple[tuple[str, str, int], ...]:
        """The collectives one training step runs, as (kind, mesh axis, bytes of the whole
        buffer), in the convention of the ring cost formulas (planner/timing.py) and of
        nccl-tests: an all-reduce's buffer, an all-gather's gathered output, a
        reduce-scatter's input. `grads`: one device's float32 gradient bytes before any
        split over `data` (after the `model` split); `weights`: the same parameters in
        the compute dtype, which FSDP gathers in the forward and again in the backward
        pass; `activations`: the Megatron all-reduces over `model` (forward after each
        row-parallel layer, backward before each column-parallel one), bytes each."""
        out: list[tuple[str, str, int]] = []
        if self.shards_params:
            out += [("all-gather", DATA, weights)] * 2 + [("reduce-scatter", DATA, grads)]
        elif self.shards_batch:
            out.append(("all-reduce", DATA, grads))
        if self.model_parallel:
            out += [("all-reduce", MODEL, a) for a in activations]
        return tuple(out)

    def mesh(self, data: int = 1, model: int = 1) -> dict[str, int]:
        """The mesh shape {axis: size} of `data` × `model` devices for this strategy."""
        if self is Strategy.SINGLE:
            return {DATA: 1}
        if self is Strategy.TENSOR:
            return {MODEL: model}
        if self.model_parallel:
            return {DATA: data, MODEL: model}
        return {DATA: data}

    @classmethod
    def parse(cls, name: str | Strategy) -> Strategy:
        """The strategy named `name`; a ValueError listing the valid names otherwise."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(
                f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}"
            ) from None


STRATEGIES: tuple[str, ...] = tuple(s.value for s in Strategy)
# What "auto" tries, in order, when one device is too small: the model-splitting layouts.
AUTO_SEARCH: tuple[Strategy, ...] = (
    Strategy.FSDP,
    Strategy.TENSOR,
    Strategy.FSDP_TENSOR,
    Strategy.DATA_TENSOR,
)
