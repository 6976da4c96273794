"""The plan: which strategy, how many devices, how much memory each, and why.

`make_plan(spec, shapes, gpu=..., devices=...)` resolves `[hardware]` against a catalog card (`--gpu`)
or the local devices, estimates every strategy (`memory.estimate`, searched in `search.py`)
and picks one:

  strategy = "auto": one device when the run fits one and only one is available; data
  parallel across the available devices when it fits one; otherwise the layout with the
  fewest devices that fit (ties: the least bytes per device) among fsdp, tensor, and the
  2-D layouts. Without a device count (`--gpu` alone) one device is what was asked about,
  and the fewest devices of that card are recommended.

The verdict (`fits`) is for the device(s) asked about; `options` ranks what would fit:
the fewest devices per strategy and every single catalog card, smallest first. The
figures are the closed-form estimate until `verify.confirm` replaces them with XLA's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from jaxpipe.core.step import steps_per_epoch
from jaxpipe.data.shapes import Shapes
from jaxpipe.errors import JaxpipeError
from jaxpipe.planner import hardware
from jaxpipe.planner.memory import Estimate
from jaxpipe.planner.options import (
    Card,
    Market,
    bf16_note,
    build_options,
    make_market,
    no_layout_advice,
    profile_for,
    rank,
    recommendation,
    roofline,
)
from jaxpipe.planner.search import GPU_RUNTIME_BYTES, UNVERIFIED, Search
from jaxpipe.planner.values import Candidate, Plan, Workload
from jaxpipe.spec.experiment import Spec
from jaxpipe.spec.hardware import MAX_DEVICES, HardwareSpec
from jaxpipe.spec.strategy import AUTO_SEARCH, Strategy

__all__ = ["make_plan"]


def _choose(search: Search, requested: str, available: int | None) -> tuple[Strategy, int]:
    """The (strategy, devices) the plan runs: the requested one, or the auto rule."""
    limit = min(available or MAX_DEVICES, MAX_DEVICES)
    if requested != "auto":
        strategy = Strategy.parse(requested)
        if strategy is Strategy.SINGLE:
            return strategy, 1
        if available is not None:
            return strategy, available
        return strategy, search.min_devices(strategy) or 2
    if search.fits(Strategy.SINGLE, 1):
        if available and available > 1 and search.at(Strategy.DATA, available) is not None:
            return Strategy.DATA, available
        return Strategy.SINGLE, 1
    best = None
    for strategy in AUTO_SEARCH:
        n = search.min_devices(strategy, limit)
        if n is not None:
            key = (n, search.at(strategy, n).total)
            if best is None or key < best[0]:
                best = (key, strategy)
    if best is not None:
        return best[1], best[0][0]
    return (Strategy.FSDP, available) if available and available > 1 else (Strategy.SINGLE, 1)


class _Memory(NamedTuple):
    kind: hardware.DeviceKind | None
    device: str
    nominal: int
    usable: int
    fraction: float
    reserve: int
    source: str
    platform: str  # "gpu" or "cpu"
    pool: str
    local_count: int | None  # every process's devices, for a local plan
    local_kind: str | None = None  # jax's device_kind of the local devices


def _memory(hw: HardwareSpec, gpu: str | None, catalog: dict) -> _Memory:
    """The asked device's usable memory: a catalog card under the environment's pool
    rule, or the local devices (a GPU's bytes_limit, or host memory for a CPU)."""
    if gpu is not None:
        kind = hardware.find_device(gpu, catalog)
        rule = hardware.pool_rule()
        pool = int(kind.memory_bytes * rule.fraction)
        reserve = hardware.reserve_bytes(pool)
        return _Memory(
            kind,
            kind.name,
            kind.memory_bytes,
            pool - reserve,
            rule.fraction,
            reserve,
            "catalog",
            "gpu",
            rule.describe(),
            None,
        )
    local = hardware.local_devices(hw)
    kind = hardware.match_kind(local.kind, catalog)
    device = local.platform if local.kind == local.platform else f"{local.platform} ({local.kind})"
    reserve = int(local.nominal_bytes * local.fraction) - local.usable_bytes
    cpu = local.platform == "cpu"
    return _Memory(
        kind,
        device,
        local.nominal_bytes,
        local.usable_bytes,
        local.fraction,
        reserve,
        local.memory_source,
        "cpu" if cpu else "gpu",
        local.memory_source if cpu else hardware.pool_rule().describe(),
        len(local.devices) * local.process_count,
        local.kind,
    )


def _runtime(mem: _Memory) -> int:
    """A GPU's runtime bytes outside the program (search.GPU_RUNTIME_BYTES), bounded like
    the reserve (a tenth of the pool) for cards smaller than real GPUs; 0 on a CPU."""
    if mem.platform != "gpu":
        return 0
    return min(GPU_RUNTIME_BYTES, (mem.usable + mem.reserve) // 10)


def _device_count(spec_devices: int | str, devices: int | None) -> int | None:
    """The device count asked for: `--devices`, else `[hardware] devices` (None: "auto"),
    within the planner's ceiling (hardware.devices is held to it by the spec)."""
    if devices is not None and not 1 <= devices <= MAX_DEVICES:
        raise JaxpipeError(
            f"--devices {devices}: expected a count from 1 to {MAX_DEVICES} (the most the "
            "planner plans for)"
        )
    if devices is not None:
        return devices
    return spec_devices if isinstance(spec_devices, int) else None


def make_plan(
    spec: Spec,
    shapes: Shapes,
    *,
    gpu: str | None = None,
    devices: int | None = None,
    fit: bool = False,
    market: Market | None = None,
    cards: bool = True,
) -> Plan:
    """The plan for `spec` with data of `shapes` (`data.shapes.data_shapes`: the planner
    never loads data) on `devices` × the card `gpu`, or on the local devices; allocates
    nothing. `fit`: fit the estimate to XLA's one-device compile (xlafit.py; `jaxpipe plan`
    does, a run does not). `market`: prices, cards owned and the ranking (default: the
    spec's). `cards`: also weigh every other catalog card (a run's plan does not)."""
    catalog = hardware.load_catalog(spec.hardware, spec.base_dir)
    hw = spec.hardware
    count = _device_count(hw.devices, devices)
    mem = _memory(hw, gpu, catalog)
    available = count if gpu is not None or count is not None else mem.local_count
    work = Workload.of(spec)
    search = Search(work, shapes, mem.usable, fit=fit, runtime=(runtime := _runtime(mem)))
    strategy, n = _choose(search, hw.strategy, available)
    chosen, fits = _verdict(search, strategy, n, one=gpu is not None and count is None)
    asked = available or 1
    min_devices = {s: search.min_devices(s) for s in Strategy}
    market = market or make_market(hw, catalog)
    card = Card(mem.device, mem.kind, profile_for(mem.kind, mem.local_kind), search, gpu is None)
    others = _other_cards(work, shapes, catalog, mem, fit) if cards else []
    ranked = rank(build_options(work, shapes, card, others, market), market, mem.device)
    options = ranked["options"]
    no_layout = search.why_not(strategy, n)
    advice = _advice(search, chosen, (strategy, n), mem, options, no_layout)
    steps = steps_per_epoch(shapes.train_rows, spec.training.batch_size)
    return Plan(
        strategy=strategy,
        devices=chosen.devices if search.at(strategy, n) is not None else n,
        mesh=dict(chosen.mesh),
        per_device_bytes=chosen.total,
        per_device_bytes_no_donation=chosen.total_no_donation,
        **_memory_fields(mem),
        available_devices=available,
        breakdown=dict(chosen.breakdown),
        fits=fits,
        min_devices=min_devices,
        candidates=_candidates(search, (n, asked), min_devices, mem.usable),
        recommendation=advice,
        roofline=roofline(chosen, mem.kind, spec.training.precision, steps),
        shapes=shapes,
        batch_size=spec.training.batch_size,
        precision=spec.training.precision,
        requested_strategy=hw.strategy,
        asked_devices=asked,
        bf16_note=bf16_note(work, shapes, mem.usable, chosen),
        fit=search.fit.to_json() | {"unverified": list(UNVERIFIED), "runtime_bytes": runtime},
        no_layout=no_layout,
        market=market,
        **ranked,
    )


def _memory_fields(mem: _Memory) -> dict[str, Any]:
    """The plan's fields that describe the device's memory (`_memory`'s reading)."""
    return {
        "usable_bytes_per_device": mem.usable,
        "nominal_bytes_per_device": mem.nominal,
        "memory_fraction": mem.fraction,
        "reserve_bytes": mem.reserve,
        "memory_source": mem.source,
        "device": mem.device,
        "platform": mem.platform,
        "pool": mem.pool,
    }


def _advice(search: Search, chosen: Estimate, asked: tuple, mem: _Memory, options, no_layout):
    """The one-line recommendation (options.recommendation, or why there is no layout)."""
    if no_layout:
        return no_layout_advice(*asked, mem.device, no_layout, options)
    where = (chosen.strategy, chosen.devices)
    return recommendation(*where, chosen.total, mem.usable, mem.device, options)


def _other_cards(work: Workload, shapes: Shapes, catalog: dict, mem: _Memory, fit: bool) -> list:
    """Every catalog card but the asked one, each with its own search (usable bytes and
    runtime as `_memory` and `_runtime` work them out for a named card)."""
    out = []
    for kind in sorted(catalog.values(), key=lambda k: k.memory_bytes):
        if kind.name == mem.device:
            continue
        pool = int(kind.memory_bytes * hardware.memory_fraction())
        usable = pool - hardware.reserve_bytes(pool)
        runtime = min(GPU_RUNTIME_BYTES, pool // 10)
        search = Search(work, shapes, usable, fit=fit, runtime=runtime)
        out.append(Card(kind.name, kind, profile_for(kind, None), search))
    return out


def _verdict(search: Search, strategy: Strategy, n: int, one: bool) -> tuple[Estimate, bool]:
    """The chosen layout's estimate, and whether the run fits the asked device(s): one
    device when `one` (`--gpu T4` alone asks about one T4), else the chosen layout."""
    chosen = search.at(strategy, n)
    single = search.at(Strategy.SINGLE, 1)
    fits = chosen is not None and chosen.total <= search.usable
    if chosen is None:  # e.g. tensor over a count that does not divide the widths
        chosen = dataclasses.replace(single, strategy=strategy, mesh=strategy.mesh(n, 1))
    if one:
        fits = single.total <= search.usable
    return chosen, fits


def _candidates(search: Search, counts: tuple[int, int], fewest: dict, usable: int):
    """The table's rows: each strategy at 1, 2, 4, 8, the chosen and asked counts and its
    fewest devices that fit."""
    rows: dict[tuple[Strategy, int], Estimate] = {}
    for s in Strategy:
        for c in {1, 2, 4, 8, *(min(x, MAX_DEVICES) for x in counts), fewest[s] or 1}:
            e = search.at(s, c)
            if e is not None and (s is Strategy.SINGLE or c > 1):
                rows[(s, c)] = e
    order = sorted(rows.items(), key=lambda kv: (list(Strategy).index(kv[0][0]), kv[0][1]))
    return tuple(_candidate(e, usable) for _, e in order)


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
