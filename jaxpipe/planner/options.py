"""What would fit, with its time and cost, ranked: on the asked device the fewest devices
per strategy, on the cards owned their layouts, on every other catalog card its cheapest
layout; each with the time model's epoch and run seconds (timing.py) and the price of
its devices (the catalog's, the spec's, `--price`, or 0 for cards owned); ranked by cost,
time or devices, filtered by a budget and a deadline; and the one-line recommendation."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jaxpipe.core.aot import single_threaded
from jaxpipe.core.step import steps_per_epoch
from jaxpipe.data.shapes import Shapes
from jaxpipe.errors import SpecError
from jaxpipe.planner import hardware, timing
from jaxpipe.planner.memory import Estimate
from jaxpipe.planner.search import MAX_DEVICES, Search
from jaxpipe.planner.timing import DEFAULT_NETWORK_GBS, Profile, epoch_time, estimate_ops, step_work
from jaxpipe.planner.values import Option, Roofline, Workload, format_bytes
from jaxpipe.spec.hardware import HardwareSpec, parse_owned, parse_price
from jaxpipe.spec.strategy import AUTO_SEARCH, Strategy

__all__ = [
    "Market",
    "RANKS",
    "make_market",
    "profile_for",
    "option_time",
    "build_options",
    "Card",
    "rank",
    "roofline",
    "bf16_note",
    "recommendation",
    "no_layout_advice",
]


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


@dataclass(frozen=True)
class Market:
    """What the options cost and how they are ranked: hourly prices of one card by
    catalog name over the catalog's (`[hardware] prices`, `--price`), the cards owned
    ({name: (count, USD an hour per card)}), the ranking ("auto": cost when prices are
    known, else devices; "cost", "time", "devices"), a budget (USD a run) and a
    deadline (seconds a run), and the network between nodes (GB/s)."""

    prices: Mapping[str, float] = field(default_factory=dict)
    owned: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    rank: str = "auto"
    budget: float | None = None
    deadline: float | None = None
    network_gbs: float = DEFAULT_NETWORK_GBS


RANKS = ("auto", "cost", "time", "devices")


def make_market(
    hw: HardwareSpec,
    catalog: dict[str, hardware.DeviceKind],
    have: Sequence[str] = (),
    prices: Sequence[str] | Mapping[str, float] = (),
    rank: str = "auto",
    budget: float | None = None,
    deadline: float | None = None,
) -> Market:
    """The spec's [hardware] owned / prices / network_gbs with the command line's `--have`,
    `--price` and ranking over them; card names as the catalog spells them."""
    if rank not in RANKS:
        raise SpecError(
            f"unknown ranking {rank!r}; expected one of {', '.join(RANKS)}", key="--rank"
        )
    owned: dict[str, tuple[int, float]] = {}
    for where, texts in (("hardware.owned", hw.owned), ("--have", have)):
        for text in texts:
            name, count, hourly = parse_owned(text, where)
            owned[hardware.find_device(name, catalog).name] = (count, hourly)
    table = dict(hw.prices)
    extra = prices.items() if isinstance(prices, Mapping) else map(parse_price, prices)
    table.update(dict(extra))
    by_name = {hardware.find_device(k, catalog).name: float(v) for k, v in table.items()}
    for name, value in (("--budget", budget), ("--deadline", deadline)):
        if value is not None and not value > 0:
            raise SpecError(f"must be > 0, found {value!r}", key=name)
    return Market(by_name, owned, rank, budget, deadline, hw.network_gbs)


def profile_for(kind: hardware.DeviceKind | None, local_kind: str | None) -> Profile | None:
    """The time profile of a card: one `jaxpipe calibrate` stored for it (by the card's
    `match` patterns, or the local device kind), else the catalog's."""
    stored = timing.stored_profiles()
    if local_kind is not None and local_kind in stored:
        return stored[local_kind]
    if kind is None:
        return None
    for name, profile in stored.items():
        if name == kind.name or any(re.search(p, name, re.IGNORECASE) for p in kind.match):
            return profile
    return timing.catalog_profile(kind)


@dataclass(frozen=True)
class Card:
    """A device kind as the options see it: its name, catalog entry, time profile,
    usable bytes and search, and whether it is the local device."""

    name: str
    kind: hardware.DeviceKind | None
    profile: Profile | None
    search: Search
    local: bool = False


def option_time(workload: Workload, shapes: Shapes, e: Estimate, card: Card, market: Market):
    """The time model's figures (timing.EpochTime) for estimate `e` on `card`, or None."""
    profile = card.profile
    if profile is None:
        return None
    fit = card.search.fit
    m = workload.model
    precision = workload.training.precision
    bf16 = precision == "bfloat16"
    counted = fit.counts
    ops = (counted and counted.ops) or estimate_ops(
        len(m.hidden) + 1, workload.optimizer.name, bf16
    )
    batch = workload.training.batch_size
    work = step_work(
        e.strategy,
        e.mesh,
        features=shapes.features,
        hidden=m.hidden,
        outputs=shapes.outputs,
        batch=batch,
        param_bytes=e.breakdown["params"],
        optimizer_bytes=e.breakdown["optimizer"],
        ops=ops,
        optimizer=workload.optimizer.name,
        itemsize=2 if bf16 else 4,
        layer_norm=m.layer_norm,
        dropout=m.dropout > 0,
        val_rows=shapes.val_rows,
        counted=counted,
    )
    params = card.search.at(Strategy.SINGLE, 1).breakdown["params"] // 4
    per_node = card.kind.gpus_per_node if card.kind and card.kind.gpus_per_node else None
    return epoch_time(
        work,
        profile,
        precision=precision,
        steps=steps_per_epoch(shapes.train_rows, batch),
        epochs=workload.training.epochs,
        rows=shapes.train_rows,
        val_rows=shapes.val_rows,
        depth=len(m.hidden),
        mesh=e.mesh,
        per_node=per_node,
        network_gbs=market.network_gbs,
        single_thread=single_threaded(profile.platform, params, batch),
    )


def _price(card: Card, devices: int, market: Market) -> tuple[float | None, bool, str | None]:
    """(USD an hour for `devices` of `card`, owned, where the price is from)."""
    owned = market.owned.get(card.name)
    if owned is not None and devices <= owned[0]:
        return devices * owned[1], True, "owned"
    if card.local and not market.prices.get(card.name):
        return 0.0, True, "local devices"
    if card.name in market.prices:
        return devices * market.prices[card.name], False, "your price"
    if card.kind is not None and card.kind.price_per_hour is not None:
        return devices * card.kind.price_per_hour, False, card.kind.price_source
    return None, False, None


def _option(work: Workload, shapes: Shapes, e: Estimate, card: Card, market: Market) -> Option:
    t = option_time(work, shapes, e, card, market)
    hourly, owned, source = _price(card, e.devices, market)
    per_node = card.kind.gpus_per_node if card.kind and card.kind.gpus_per_node else None
    nodes = -(-e.devices // per_node) if per_node else 1
    spot = card.kind.spot_price_per_hour if card.kind and not owned else None
    hours = t.run_seconds / 3600 if t else None
    usable = card.search.usable
    return Option(
        strategy=e.strategy,
        devices=e.devices,
        mesh=dict(e.mesh),
        device=card.name,
        per_device_bytes=e.total,
        usable_bytes_per_device=usable,
        fits=e.total <= usable,
        epoch_seconds=t.epoch_seconds if t else None,
        assumptions=_assumptions(t, card),
        nodes=nodes,
        step_seconds=t.step_seconds if t else None,
        run_seconds=t.run_seconds if t else None,
        compile_seconds=t.compile_seconds if t else None,
        time_source=t.source if t else None,
        time_parts=dict(t.parts) if t else None,
        price_per_hour=hourly,
        cost=_cost(hourly, hours),
        spot_cost=spot * e.devices * hours if spot is not None and hours is not None else None,
        owned=owned,
        price_source=source,
    )


def _cost(hourly: float | None, hours: float | None) -> float | None:
    """USD of a run: hourly × hours; 0 for cards that cost nothing, however long."""
    if hourly == 0:
        return 0.0
    return hourly * hours if hourly is not None and hours is not None else None


def _assumptions(t, card: Card) -> str:
    if t is None:
        return (
            "no time profile for this device: run `jaxpipe calibrate` on it"
            if card.local
            else "no rates for this device"
        )
    return f"{t.source} profile ({card.profile.note})" if card.profile.note else t.source


def _fewest(search: Search, strategies, limit: int | None = None) -> list[Estimate]:
    out = []
    for strategy in strategies:
        n = search.min_devices(strategy, limit or MAX_DEVICES)
        e = search.at(strategy, n) if n is not None else None
        if e is not None and (strategy is Strategy.SINGLE or n > 1):
            out.append(e)
    return out


def build_options(
    work: Workload, shapes: Shapes, asked: Card, others: Sequence[Card], market: Market
) -> list[Option]:
    """What fits: on the asked device, the fewest devices per strategy; on each card
    owned, its layouts up to the count owned; on every other catalog card, one card if
    the run fits one, else its layout with the fewest cards (ties: least bytes)."""
    options = [
        _option(work, shapes, e, asked, market)
        for e in _fewest(asked.search, (Strategy.SINGLE, *AUTO_SEARCH, Strategy.DATA))
    ]
    for card in others:
        owned = market.owned.get(card.name)
        if owned is not None:
            for e in _fewest(card.search, (Strategy.SINGLE, *AUTO_SEARCH), owned[0]):
                options.append(_option(work, shapes, e, card, market))
        if card.search.fits(Strategy.SINGLE, 1):
            if owned is None:
                options.append(_option(work, shapes, card.search.at("single", 1), card, market))
            continue
        layouts = _fewest(card.search, AUTO_SEARCH, CLOUD_LIMIT)
        best = min(layouts, key=lambda e: (e.devices, e.total), default=None)
        if best is not None and (owned is None or owned[0] < best.devices):
            options.append(_option(work, shapes, best, card, market))
    return options


# The most cards a catalog card's own layout is searched over (eight nodes of eight).
CLOUD_LIMIT = 64


def _key(rank: str, asked: str):
    inf = float("inf")
    if rank == "cost":
        return lambda o: (o.cost is None, o.cost or 0.0, o.run_seconds or inf, o.devices)
    if rank == "time":
        return lambda o: (o.run_seconds is None, o.run_seconds or inf, o.cost or 0.0)
    # devices: the asked device's layouts, fewest first, then the other cards by memory
    return lambda o: (
        o.device != asked,
        o.devices if o.device == asked else 0,
        o.usable_bytes_per_device,
        o.per_device_bytes,
    )


def rank(options: Sequence[Option], market: Market, asked: str) -> dict:
    """The options ranked as `market` says, filtered by its budget and deadline; the
    cheapest and fastest that fit; what the filters left out. As Plan fields."""
    chosen = market.rank
    if chosen == "auto":
        chosen = "cost" if any(o.cost is not None for o in options if o.fits) else "devices"
    kept, filtered = [], {"budget": 0, "deadline": 0}
    for o in options:
        if market.budget is not None and (o.cost is None or o.cost > market.budget):
            filtered["budget"] += 1
        elif market.deadline is not None and (
            o.run_seconds is None or o.run_seconds > market.deadline
        ):
            filtered["deadline"] += 1
        else:
            kept.append(o)
    kept.sort(key=_key(chosen, asked))
    fitting = [o for o in kept if o.fits]
    priced = [o for o in fitting if o.cost is not None]
    timed = [o for o in fitting if o.run_seconds is not None]
    cheapest = min(priced, key=_key("cost", asked)) if priced else None
    fastest = min(timed, key=_key("time", asked)) if timed else None
    return {
        "options": tuple(kept),
        "rank": chosen,
        "cheapest": cheapest,
        "fastest": fastest,
        "filtered": filtered if market.budget is not None or market.deadline is not None else None,
    }


def bf16_note(work: Workload, shapes: Shapes, usable: int, chosen: Estimate) -> str | None:
    if work.training.precision != "bfloat16":
        return None
    f32 = dataclasses.replace(
        work, training=dataclasses.replace(work.training, precision="float32")
    )
    other = Search(f32, shapes, usable).at(chosen.strategy, chosen.devices)
    if other is None or other.total >= chosen.total:
        return None
    return (
        f"bfloat16 needs {format_bytes(chosen.total - other.total)} more than float32 here: "
        "the float32 weights, gradients and optimizer state stay, and bfloat16 copies of the "
        "weights are added, while the activations it halves are small for this batch"
    )


def recommendation(
    strategy: Strategy, devices: int, need: int, usable: int, device: str, options
) -> str:
    """One line for the run's error and the summary: the chosen layout (`strategy` over
    `devices`, `need` bytes of `usable` per `device`), and if it does not fit, the best
    of `options`."""
    fits = need <= usable
    where = "one device" if devices == 1 else f"{strategy} over {devices}"
    head = (
        f"{'fits' if fits else 'does not fit'} {where}: needs "
        f"{format_bytes(need)} of {format_bytes(usable)} usable per {device}"
    )
    if fits:
        return f"{head} (headroom {format_bytes(usable - need)})"
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
