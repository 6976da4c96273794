"""The plan: which strategy, how many devices, how much memory each, and why.

`make_plan(spec, gpu=..., devices=...)` resolves `[hardware]` against a catalog card (`--gpu`)
or the local devices, estimates every strategy (`memory.estimate`), finds the fewest devices
that fit per strategy and picks one:

  strategy = "auto": one device when the run fits one and only one is available; data
  parallel across the available devices when it fits one; otherwise FSDP, then FSDP × tensor,
  with the fewest devices that fit. Without a device count (`--gpu` alone) "available" is
  unbounded, so the fewest devices of that card are chosen. If nothing fits, the plan says
  what would: more devices, a smaller batch, a larger card.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from jaxpipe import hardware
from jaxpipe.data import load_dataset
from jaxpipe.memory import (
    DATA,
    Estimate,
    Shapes,
    abstract_state,
    estimate,
    mesh_for,
    tensor_divides,
)
from jaxpipe.spec import STRATEGIES, Spec

__all__ = [
    "Plan",
    "Candidate",
    "Roofline",
    "make_plan",
    "verify_plan",
    "data_shapes",
    "format_bytes",
    "MAX_DEVICES",
]

MAX_DEVICES = 4096  # the search's ceiling for "the fewest devices that fit"
GiB = 2**30


@dataclass(frozen=True)
class Candidate:
    """One row of the plan table."""

    strategy: str
    devices: int
    mesh: dict[str, int]
    per_device_bytes: int
    fits: bool
    headroom_bytes: int
    breakdown: dict[str, int]

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
class Plan:
    """The resolved plan. Byte figures are per device; `mesh` maps axis names ("data",
    "model") to sizes and multiplies out to `devices`."""

    strategy: str
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

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes_per_device - self.per_device_bytes

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
        if self.xla is not None:
            out["xla"] = dict(self.xla)
        return out


def data_shapes(spec: Spec, dataset: Any | None = None) -> Shapes:
    """The data's shapes. Synthetic data: from the spec. A file (csv, parquet, npz, or a
    separate validation file): the data set is loaded on the host, as `jaxpipe run` loads
    it, because only then is the encoded feature count exact (one-hot vocabularies are
    fitted on the training split) and rows dropped for missing values known; nothing goes
    to a device. Pass an already loaded `data.Dataset` to skip that."""
    task = spec.model.task
    cfg = spec.data
    if dataset is None and (cfg.source != "synthetic" or isinstance(cfg.validation, str)):
        dataset = load_dataset(spec)
    if dataset is not None:
        return Shapes(
            dataset.num_features,
            dataset.num_classes if task == "classification" else 0,
            len(dataset.x_train),
            len(dataset.x_val),
            "loaded data set",
            task,
        )
    syn = cfg.synthetic
    val = cfg.validation
    n_val = val if isinstance(val, int) else int(round(syn.rows * val))
    classes = syn.classes if task == "classification" else 0
    return Shapes(syn.features, classes, syn.rows - n_val, n_val, "spec", task)


def format_bytes(n: float) -> str:
    """Bytes for people: GiB from a tenth of a GiB up, MiB from a tenth of a MiB, else KiB."""
    if abs(n) >= 0.1 * GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if abs(n) >= 0.1 * 2**20 else f"{n / 2**10:.1f} KiB"


class _Search:
    """Estimates of every (strategy, device count), memoised."""

    def __init__(self, spec: Spec, shapes: Shapes, usable: int, batch: int | None = None):
        self.spec, self.shapes, self.usable, self.batch = spec, shapes, usable, batch
        self.abstract = abstract_state(spec, shapes)
        self.hidden = tuple(spec.model.hidden)
        self._memo: dict[tuple[str, int], Estimate | None] = {}

    def at(self, strategy: str, n: int) -> Estimate | None:
        """The best mesh of `n` devices for `strategy`, or None if there is none."""
        key = (strategy, n)
        if key not in self._memo:
            self._memo[key] = self._best(strategy, n)
        return self._memo[key]

    def _best(self, strategy: str, n: int) -> Estimate | None:
        batch = self.batch or self.spec.training.batch_size
        if strategy == "single":
            meshes = [(1, 1)] if n == 1 else []
        elif strategy in ("data", "fsdp"):
            meshes = [(n, 1)] if 1 <= n <= batch else []
        elif strategy == "tensor":
            meshes = [(1, n)] if n >= 1 and tensor_divides(self.hidden, n) else []
        else:
            meshes = [
                (d, n // d)
                for d in range(2, n // 2 + 1)
                if n % d == 0 and n // d >= 2 and d <= batch and tensor_divides(self.hidden, n // d)
            ]
        ests = [
            estimate(
                self.spec, self.shapes, self.abstract, strategy, mesh_for(strategy, d, m), batch
            )
            for d, m in meshes
        ]
        if not ests:
            return None
        return min(ests, key=lambda e: (e.total, -e.mesh.get(DATA, 1)))

    def fits(self, strategy: str, n: int) -> bool:
        e = self.at(strategy, n)
        return e is not None and e.total <= self.usable

    def min_devices(self, strategy: str, limit: int = MAX_DEVICES) -> int | None:
        counts = [1] if strategy == "single" else [1, *_counts(limit)]
        return next((n for n in counts if self.fits(strategy, n)), None)


def _counts(limit: int) -> list[int]:
    small = list(range(2, min(limit, 64) + 1))
    return small + [2**k for k in range(7, 13) if 64 < 2**k <= limit]


def _candidate(e: Estimate, usable: int) -> Candidate:
    return Candidate(
        e.strategy,
        e.devices,
        dict(e.mesh),
        e.total,
        e.total <= usable,
        usable - e.total,
        dict(e.breakdown),
    )


def _choose(search: _Search, requested: str, available: int | None) -> tuple[str, int]:
    """The (strategy, devices) the plan runs: the requested one, or the auto rule."""
    limit = available or MAX_DEVICES
    if requested != "auto":
        if requested == "single":
            return "single", 1
        if available is not None:
            return requested, available
        return requested, search.min_devices(requested) or 2
    if search.fits("single", 1):
        if available and available > 1 and search.at("data", available) is not None:
            return "data", available
        return "single", 1
    for strategy in ("fsdp", "fsdp+tensor"):
        n = search.min_devices(strategy, limit)
        if n is not None:
            return strategy, n
    for strategy in ("tensor", "data+tensor"):
        n = search.min_devices(strategy, limit)
        if n is not None:
            return strategy, n
    return ("fsdp", available) if available and available > 1 else ("single", 1)


def _roofline(e: Estimate, kind: hardware.DeviceKind | None, precision: str, steps: int):
    peak = kind.peak_flops(precision) if kind else None
    if kind is None or not peak or not kind.bandwidth:
        return None
    compute, memory = e.flops_per_step / peak, e.bytes_per_step / kind.bandwidth
    step = max(compute, memory)
    return Roofline(
        kind.name,
        precision,
        e.flops_per_step,
        e.bytes_per_step,
        step,
        step * steps,
        "compute" if compute >= memory else "memory",
    )


def _advice(
    search: _Search,
    chosen: Estimate,
    fits: bool,
    available: int | None,
    device: str,
    catalog: dict[str, hardware.DeviceKind],
    single: Estimate,
) -> str:
    usable = search.usable
    if fits and chosen.strategy in ("single", "data"):
        where = "one device" if chosen.devices == 1 else f"{chosen.devices} devices, data parallel"
        return (
            f"fits {where}: needs {format_bytes(chosen.total)} of {format_bytes(usable)} usable per {device} "
            f"(headroom {format_bytes(usable - chosen.total)})"
        )
    head = f"needs {format_bytes(single.total)} on one device; a {device} gives {format_bytes(usable)} usable"
    if fits:
        return (
            f"{head}; {chosen.strategy.upper()} over {chosen.devices} × {device} needs "
            f"{format_bytes(chosen.total)} each" + _bigger_card(search, single, catalog, " — or ")
        )
    options = []
    for strategy in ("fsdp", "fsdp+tensor", "tensor"):
        n = search.min_devices(strategy)
        if n is not None:
            e = search.at(strategy, n)
            options.append(f"{strategy} over {n} × {device} ({format_bytes(e.total)} each)")
            break
    batch = search.spec.training.batch_size
    n = chosen.devices
    for b in (batch // 2**k for k in range(1, 20)):
        if b < 1:
            break
        smaller = _Search(search.spec, search.shapes, usable, batch=b)
        if smaller.fits(chosen.strategy, n):
            options.append(f"training.batch_size = {b} with {chosen.strategy} over {n}")
            break
    card = _bigger_card(search, single, catalog, "")
    if card:
        options.append(card)
    have = f" (have {available})" if available else ""
    return (
        f"does not fit: {chosen.strategy} over {n} × {device} needs {format_bytes(chosen.total)} per "
        f"device of {format_bytes(usable)} usable{have}; would fit: "
        + ("; or ".join(options) if options else "nothing in the catalog")
    )


def _bigger_card(search: _Search, single: Estimate, catalog: dict, sep: str) -> str:
    for kind in sorted(catalog.values(), key=lambda k: k.memory_bytes):
        usable = hardware.usable_bytes(kind.memory_bytes)
        if single.total <= usable:
            return f"{sep}one {kind.name} ({format_bytes(usable)} usable)"
    return ""


def make_plan(
    spec: Spec,
    *,
    gpu: str | None = None,
    devices: int | None = None,
    dataset: Any | None = None,
) -> Plan:
    """The plan for `spec` on `devices` × the catalog card `gpu`, or on the local devices.

    Pure: shapes come from `jax.eval_shape`, nothing is allocated. `dataset` (a loaded
    `data.Dataset`) makes the data shapes exact; without it they come from the spec or the
    CSV's header and label column.
    """
    catalog = hardware.load_catalog(spec.hardware, spec.base_dir)
    shapes = data_shapes(spec, dataset)
    hw = spec.hardware
    count = (
        devices if devices is not None else (hw.devices if isinstance(hw.devices, int) else None)
    )
    if gpu is not None:
        kind = hardware.find_device(gpu, catalog)
        fraction = hardware.memory_fraction()
        nominal = kind.memory_bytes
        pool = int(nominal * fraction)
        usable, reserve, source = (
            pool - hardware.reserve_bytes(pool),
            hardware.reserve_bytes(pool),
            "catalog",
        )
        device, available = kind.name, count
    else:
        local = hardware.local_devices(spec)
        kind = hardware.match_kind(local.kind, catalog)
        nominal, usable, fraction = local.nominal_bytes, local.usable_bytes, local.fraction
        reserve, source = int(nominal * fraction) - usable, local.memory_source
        device = (
            local.platform if local.kind == local.platform else f"{local.platform} ({local.kind})"
        )
        # Every process's devices: a multi-process run's mesh spans all of them.
        available = count if count is not None else len(local.devices) * local.process_count
    search = _Search(spec, shapes, usable)
    strategy, n = _choose(search, hw.strategy, available)
    chosen = search.at(strategy, n)
    single = search.at("single", 1)
    if chosen is None:  # e.g. tensor over a count that does not divide the widths
        chosen = dataclasses.replace(single, strategy=strategy, mesh=mesh_for(strategy, n, 1))
        fits = False
    else:
        fits = chosen.total <= usable
    min_devices = {s: search.min_devices(s) for s in STRATEGIES}
    rows: dict[tuple[str, int], Estimate] = {}
    for s in STRATEGIES:
        for c in {1, 2, 4, 8, n, available or 1, min_devices[s] or 1}:
            e = search.at(s, c)
            if e is not None and (s == "single" or c > 1):
                rows[(s, c)] = e
    candidates = tuple(
        _candidate(e, usable)
        for _, e in sorted(rows.items(), key=lambda kv: (STRATEGIES.index(kv[0][0]), kv[0][1]))
    )
    steps = -(-shapes.train_rows // spec.training.batch_size)
    return Plan(
        strategy=strategy,
        devices=chosen.devices if search.at(strategy, n) is not None else n,
        mesh=dict(chosen.mesh),
        per_device_bytes=chosen.total,
        per_device_bytes_no_donation=chosen.total_no_donation,
        usable_bytes_per_device=usable,
        nominal_bytes_per_device=nominal,
        memory_fraction=fraction,
        reserve_bytes=reserve,
        memory_source=source,
        device=device,
        available_devices=available,
        breakdown=dict(chosen.breakdown),
        fits=fits,
        min_devices=min_devices,
        candidates=candidates,
        recommendation=_advice(search, chosen, fits, available, device, catalog, single),
        roofline=_roofline(chosen, kind, spec.training.precision, steps),
        shapes=shapes,
        batch_size=spec.training.batch_size,
        precision=spec.training.precision,
        requested_strategy=hw.strategy,
    )


def verify_plan(spec: Spec, plan: Plan) -> Plan:
    """The plan with `xla` filled in: XLA's memory and cost analysis of the real epoch
    program, compiled for abstract inputs on the local backend (one device), beside the
    one-device estimate and their relative difference."""
    from jaxpipe.memory import compile_epoch, xla_figures

    search = _Search(spec, plan.shapes, plan.usable_bytes_per_device)
    single = search.at("single", 1)
    xla = xla_figures(compile_epoch(spec, plan.shapes, search.abstract), plan.shapes)
    xla["estimate"] = single.total
    xla["relative_difference"] = single.total / xla["total_with_validation"] - 1.0
    xla["estimate_flops_per_step"] = single.flops_per_step
    return dataclasses.replace(plan, xla=xla)
