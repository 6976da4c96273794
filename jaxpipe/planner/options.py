"""What would fit, ranked, with a whole-job epoch time per option: the fewest devices per
strategy and every single catalog card, smallest first; and the one-line recommendation."""

from __future__ import annotations

import dataclasses

from jaxpipe.data.shapes import Shapes
from jaxpipe.planner import hardware
from jaxpipe.planner.memory import Estimate
from jaxpipe.planner.search import Search
from jaxpipe.planner.values import Option, Roofline, format_bytes
from jaxpipe.spec.experiment import Spec
from jaxpipe.spec.strategy import AUTO_SEARCH, Strategy

__all__ = ["rank_options", "roofline", "bf16_note", "recommendation", "no_layout_advice"]


def roofline(e: Estimate, kind: hardware.DeviceKind | None, precision: str, steps: int):
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


def _option(e: Estimate, kind, name: str, usable: int, precision: str, steps: int) -> Option:
    r = roofline(e, kind, precision, steps)
    comm = "" if e.devices == 1 else ", no communication cost"
    return Option(
        strategy=e.strategy,
        devices=e.devices,
        mesh=dict(e.mesh),
        device=name,
        per_device_bytes=e.total,
        usable_bytes_per_device=usable,
        fits=e.total <= usable,
        epoch_seconds=r.epoch_seconds if r else None,
        assumptions=(f"{precision} peak roofline{comm}" if r else "no rates for this device"),
    )


def rank_options(search: Search, kind, device: str, catalog: dict, precision: str, steps: int):
    """What fits, ranked: the fewest devices per strategy (fewest first, then least bytes
    per device), then every single catalog card that fits, smallest first."""
    multi = []
    for strategy in (Strategy.SINGLE, *AUTO_SEARCH, Strategy.DATA):
        n = search.min_devices(strategy)
        e = search.at(strategy, n) if n is not None else None
        if e is not None and (strategy is Strategy.SINGLE or n > 1):
            multi.append(_option(e, kind, device, search.usable, precision, steps))
    multi.sort(key=lambda o: (o.devices, o.per_device_bytes))
    single = search.at(Strategy.SINGLE, 1)
    cards = []
    for card in sorted(catalog.values(), key=lambda k: k.memory_bytes):
        usable = hardware.usable_bytes(card.memory_bytes)
        if card.name != device and single.total <= usable:
            cards.append(_option(single, card, card.name, usable, precision, steps))
    return tuple(multi + cards)


def bf16_note(spec: Spec, shapes: Shapes, usable: int, chosen: Estimate) -> str | None:
    if spec.training.precision != "bfloat16":
        return None
    f32 = dataclasses.replace(
        spec, training=dataclasses.replace(spec.training, precision="float32")
    )
    other = Search(f32, shapes, usable).at(chosen.strategy, chosen.devices)
    if other is None or other.total >= chosen.total:
        return None
    return (
        f"bfloat16 needs {format_bytes(chosen.total - other.total)} more than float32 here: "
        "the float32 weights, gradients and optimizer state stay, and bfloat16 copies of the "
        "weights are added, while the activations it halves are small for this batch"
    )


def recommendation(plan_fits: bool, chosen: Estimate, usable: int, device: str, options) -> str:
    """One line for the run's error and the summary: the chosen layout, and if it does not
    fit, the best option."""
    where = "one device" if chosen.devices == 1 else f"{chosen.strategy} over {chosen.devices}"
    head = (
        f"{'fits' if plan_fits else 'does not fit'} {where}: needs "
        f"{format_bytes(chosen.total)} of {format_bytes(usable)} usable per {device}"
    )
    if plan_fits:
        return f"{head} (headroom {format_bytes(usable - chosen.total)})"
    best = next((o for o in options if o.fits), None)
    if best is None:
        return f"{head}; nothing in the catalog fits (a smaller batch or model would)"
    what = "one" if best.devices == 1 else f"{best.devices} ×"
    return f"{head}; would fit: {best.strategy} over {what} {best.device}"


def no_layout_advice(strategy: Strategy, n: int, device: str, why: str, options) -> str:
    """The recommendation when the asked strategy has no layout over `n` devices."""
    head = f"{strategy} over {n} × {device} is not a layout of this model: {why}"
    best = next((o for o in options if o.fits), None)
    if best is None:
        return f"{head}; nothing in the catalog fits"
    what = "one" if best.devices == 1 else f"{best.devices} ×"
    return f"{head}; would fit: {best.strategy} over {what} {best.device}"
