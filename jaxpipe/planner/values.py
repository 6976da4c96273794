"""The plan's values: `Plan`, its table rows (`Candidate`), the ranked ways to run that
fit (`Option`, with their time and cost) and the roofline bound; `format_bytes` for
people."""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass
from typing import Any

from jaxpipe.data.shapes import Shapes
from jaxpipe.spec import schema
from jaxpipe.spec.sections import ModelSpec, OptimizerSpec, TrainingSpec
from jaxpipe.spec.strategy import Strategy

__all__ = ["Plan", "Candidate", "Option", "Roofline", "Workload", "format_bytes", "GiB"]

GiB = 2**30


@dataclass(frozen=True)
class Workload:
    """The three sections the planner's estimates read together, and no others: the model
    (widths, activation, dropout, layer norm), the optimizer (its state's shapes, its
    schedule's length) and training (batch, epochs, precision). The search, the fit to
    XLA and the time model need all three, so they travel as one value rather than the
    whole `Spec`."""

    model: ModelSpec
    optimizer: OptimizerSpec
    training: TrainingSpec

    def to_json(self) -> dict[str, Any]:
        """The three sections as plain values (verify.py's child process reads them)."""
        return {name: schema.to_dict(getattr(self, name)) for name in _WORKLOAD}

    @classmethod
    def of(cls, spec: Any) -> Workload:
        """A spec's (or anything with the three sections') workload."""
        return cls(spec.model, spec.optimizer, spec.training)

    @classmethod
    def from_json(cls, table: dict[str, Any]) -> Workload:
        return cls(*(schema.build(tp, table[name], name) for name, tp in _WORKLOAD.items()))


_WORKLOAD = {"model": ModelSpec, "optimizer": OptimizerSpec, "training": TrainingSpec}


@dataclass(frozen=True)
class Candidate:
    """One row of the plan table."""

    strategy: Strategy
    devices: int
    mesh: dict[str, int]
    per_device_bytes: int
    fits: bool
    headroom_bytes: int
    breakdown: dict[str, int]
    source: str = "estimate"  # or "xla": XLA's compiled per-device figure (verify.confirm)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Roofline:
    """A lower bound on step and epoch time: max(FLOPs / peak, bytes / bandwidth) per
    device, ignoring communication, launch overhead and imperfect kernels."""

    device: str
    precision: str
    flops_per_step: float
    bytes_per_step: float
    step_seconds: float
    epoch_seconds: float
    bound: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Option:
    """One way to run that fits: `devices` × `device` (over `nodes` nodes) under
    `strategy`, with the bytes each device needs and has; the time model's epoch and
    whole-run seconds (planner/timing.py; None where no profile has rates, e.g. an
    uncalibrated CPU), from a "measured" or "data sheet" profile (`time_source`); and
    the price of all its devices an hour and of the whole run (None where unknown)."""

    strategy: Strategy
    devices: int
    mesh: dict[str, int]
    device: str
    per_device_bytes: int
    usable_bytes_per_device: int
    fits: bool
    epoch_seconds: float | None
    assumptions: str
    source: str = "estimate"
    nodes: int = 1
    step_seconds: float | None = None
    run_seconds: float | None = None
    compile_seconds: float | None = None
    time_source: str | None = None
    time_parts: dict[str, float] | None = None  # per epoch: floor, matmul, memory, ...
    price_per_hour: float | None = None  # all `devices`, USD
    cost: float | None = None  # the whole run, USD
    spot_cost: float | None = None
    owned: bool = False  # the user's own cards (`--have`, [hardware] owned)
    price_source: str | None = None

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes_per_device - self.per_device_bytes

    def _line(self) -> str:
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return (
            f"{verdict}: {self.strategy} on {self.devices} × {self.device}, "
            f"{format_bytes(self.per_device_bytes)} of {format_bytes(self.usable_bytes_per_device)}"
            f" usable per device (batch {self.batch_size}, {self.precision})"
        )

    def __repr__(self) -> str:
        """One line (the whole record: `to_json()`; the table: `jaxpipe.format_plan`)."""
        return f"Plan({self._line()})"

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict and the memory breakdown per device."""
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{format_bytes(v)}</td></tr>"
            for k, v in self.breakdown.items()
        )
        return (
            f"<b>Plan</b>: {html.escape(self._line())}"
            f"<table><tr><th>per device</th><th>bytes</th></tr>{rows}</table>"
        )

    @property
    def single(self) -> Candidate | None:
        """The one-device candidate (None when the plan has none)."""
        return next((c for c in self.candidates if c.strategy is Strategy.SINGLE), None)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"headroom_bytes": self.headroom_bytes}


@dataclass(frozen=True)
class Plan:
    """The resolved plan. Byte figures are per device; `mesh` maps axis names ("data",
    "model") to sizes and multiplies out to `devices`."""

    strategy: Strategy
    devices: int
    mesh: dict[str, int]
    per_device_bytes: int
    per_device_bytes_no_donation: int
    usable_bytes_per_device: int
    nominal_bytes_per_device: int
    memory_fraction: float
    reserve_bytes: int
    memory_source: str
    device: str
    available_devices: int | None
    breakdown: dict[str, int]
    fits: bool
    min_devices: dict[str, int | None]
    candidates: tuple[Candidate, ...]
    recommendation: str
    roofline: Roofline | None
    shapes: Shapes
    batch_size: int
    precision: str
    requested_strategy: str
    xla: dict[str, Any] | None = None
    asked_devices: int = 1  # the device count the verdict is about
    platform: str = "gpu"  # "cpu": host memory, no GPU pool
    pool: str = ""  # how usable memory was worked out (environment, source)
    options: tuple[Option, ...] = ()
    bf16_note: str | None = None  # why bfloat16 needs more than float32, when it does
    source: str = "estimate"  # "xla" once verify.confirm compiled the chosen layout
    verify: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None  # a [sweep] spec: trials, chunks, largest need
    host: dict[str, Any] | None = None  # the data's host budget and whether it streams
    # How far the closed form is vouched for: `xlafit.Fit` as JSON (scale, xla_bytes,
    # closed_form_bytes, note) and the strategies whose figures are not held to XLA.
    fit: dict[str, Any] | None = None
    # Why the asked strategy has no layout over the asked devices (search.why_not): then
    # the plan's figures are the one-device estimate's and the verdict is DOES NOT FIT.
    no_layout: str | None = None
    # The answer in time and money (options.py): how the options are ranked, the
    # cheapest and fastest that fit (copies of options), and what --budget / --deadline
    # left out.
    rank: str = "devices"
    cheapest: Option | None = None
    fastest: Option | None = None
    filtered: dict[str, Any] | None = None
    market: Any = None  # options.Market: how `verify` ranks the options again

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes_per_device - self.per_device_bytes

    def _line(self) -> str:
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return (
            f"{verdict}: {self.strategy} on {self.devices} × {self.device}, "
            f"{format_bytes(self.per_device_bytes)} of {format_bytes(self.usable_bytes_per_device)}"
            f" usable per device (batch {self.batch_size}, {self.precision})"
        )

    def __repr__(self) -> str:
        """One line (the whole record: `to_json()`; the table: `jaxpipe.format_plan`)."""
        return f"Plan({self._line()})"

    def _repr_html_(self) -> str:
        """A notebook's view: the verdict and the memory breakdown per device."""
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{format_bytes(v)}</td></tr>"
            for k, v in self.breakdown.items()
        )
        return (
            f"<b>Plan</b>: {html.escape(self._line())}"
            f"<table><tr><th>per device</th><th>bytes</th></tr>{rows}</table>"
        )

    @property
    def single(self) -> Candidate | None:
        """The one-device candidate (None when the plan has none)."""
        return next((c for c in self.candidates if c.strategy is Strategy.SINGLE), None)

    def to_json(self) -> dict[str, Any]:
        out = {
            "fits": self.fits,
            "strategy": self.strategy,
            "devices": self.devices,
            "mesh": dict(self.mesh),
            "per_device_bytes": self.per_device_bytes,
            "per_device_bytes_no_donation": self.per_device_bytes_no_donation,
            "usable_bytes_per_device": self.usable_bytes_per_device,
            "nominal_bytes_per_device": self.nominal_bytes_per_device,
            "memory_fraction": self.memory_fraction,
            "reserve_bytes": self.reserve_bytes,
            "memory_source": self.memory_source,
            "device": self.device,
            "available_devices": self.available_devices,
            "breakdown": dict(self.breakdown),
            "min_devices": dict(self.min_devices),
            "candidates": [c.to_json() for c in self.candidates],
            "recommendation": self.recommendation,
            "roofline": self.roofline.to_json() if self.roofline else None,
            "shapes": self.shapes.to_json(),
            "batch_size": self.batch_size,
            "precision": self.precision,
            "requested_strategy": self.requested_strategy,
        }
        out |= {
            "verdict": "FITS" if self.fits else "DOES NOT FIT",
            "asked_devices": self.asked_devices,
            "platform": self.platform,
            "pool": self.pool,
            "options": [o.to_json() for o in self.options],
            "bf16_note": self.bf16_note,
            "source": self.source,
            "fit": self.fit,
            "no_layout": self.no_layout,
            "rank": self.rank,
            "cheapest": self.cheapest.to_json() if self.cheapest else None,
            "fastest": self.fastest.to_json() if self.fastest else None,
            "filtered": self.filtered,
        }
        if self.xla is not None:
            out["xla"] = dict(self.xla)
        if self.verify is not None:
            out["verify"] = dict(self.verify)
        if self.sweep is not None:
            out["sweep"] = dict(self.sweep)
        if self.host is not None:
            out["host"] = dict(self.host)
        return out


def format_bytes(n: float) -> str:
    """Bytes for people: PiB and TiB from a whole one up, GiB from a tenth of a GiB, MiB
    from a tenth of a MiB, else KiB."""
    for unit, size in (("PiB", 2**50), ("TiB", 2**40)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    if abs(n) >= 0.1 * GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if abs(n) >= 0.1 * 2**20 else f"{n / 2**10:.1f} KiB"
