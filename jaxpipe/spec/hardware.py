"""The `[hardware]` sections: the devices a run plans for and catalog entries, with
the size parser they share. Imports no jax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jaxpipe.errors import SpecError
from jaxpipe.spec import schema
from jaxpipe.spec.schema import Section, field
from jaxpipe.spec.strategy import STRATEGIES

__all__ = ["HardwareSpec", "CatalogEntrySpec", "parse_size", "parse_owned", "parse_price"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, key: str = "size") -> int:
    """Bytes in a size string: "16GiB", "512MiB", "1.5GB", "80 GB" (GB = 10⁹, GiB = 2³⁰)."""
    m = _SIZE.match(text)
    if not m:
        raise SpecError(
            f'{text!r} is not a size; write a number and a unit, e.g. "16GiB", '
            '"512MiB" or "1.5GB" (GB = 10^9 bytes, GiB = 2^30)',
            key=key,
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise SpecError(f"a size must be at least 1 byte, found {text!r}", key=key)
    return value


_OWNED = re.compile(
    r"^\s*([A-Za-z0-9][\w.\-]*?)\s*[x×]\s*(\d+)\s*(?:@\s*(\d+(?:\.\d*)?|\.\d+))?\s*$"
)


def parse_owned(text: str, key: str = "--have") -> tuple[str, int, float]:
    """(card, count, USD an hour per card) from "T4x2", "T4 x 2" or "A10x1@0.25" (an
    owned card costs 0 unless an hourly figure is given)."""
    m = _OWNED.match(text)
    if not m or int(m.group(2)) < 1:
        raise SpecError(
            f'expected KINDxN or KINDxN@USD, e.g. "T4x2" or "A10x1@0.25", found {text!r}',
            key=key,
        )
    return m.group(1), int(m.group(2)), float(m.group(3) or 0.0)


def parse_price(text: str, key: str = "--price") -> tuple[str, float]:
    """(card, USD an hour) from "A100-40GB=1.10"."""
    name, sep, value = text.partition("=")
    try:
        price = float(value)
    except ValueError:
        price = -1.0
    if not sep or not name.strip() or price < 0:
        raise SpecError(f'expected KIND=USD, e.g. "A100-40GB=1.10", found {text!r}', key=key)
    return name.strip(), price


@dataclass(frozen=True)
class CatalogEntrySpec(Section):
    """One accelerator of the hardware catalog (a `[hardware.catalog.NAME]` table, or a
    table of the file `[hardware] catalog` names). An entry that overrides a shipped name
    may give only the keys it changes."""

    memory: str | None = field(None, 'Nominal device memory, e.g. "16GB" or "80GiB".')
    fp32_tflops: float | None = field(
        None, "Peak dense float32 rate, TFLOP/s.", exclusive_minimum=0.0
    )
    bf16_tflops: float | None = field(
        None, "Peak dense bfloat16 rate, TFLOP/s.", exclusive_minimum=0.0
    )
    bandwidth_gbs: float | None = field(
        None, "Peak memory bandwidth, GB/s (10⁹ bytes/s).", exclusive_minimum=0.0
    )
    match: tuple[str, ...] = field(
        (), "Substrings of jax's device_kind that identify this card (case-insensitive)."
    )
    price_per_hour: float | None = field(
        None, "On-demand price of one card, USD an hour.", minimum=0.0
    )
    spot_price_per_hour: float | None = field(
        None, "Spot (preemptible) price of one card, USD an hour.", minimum=0.0
    )
    price_source: str | None = field(None, "Where and when the prices were read.")
    interconnect: str | None = field(None, 'The link between a node\'s cards, e.g. "NVLink 4".')
    interconnect_gbs: float | None = field(
        None,
        "All-reduce bus bandwidth between a node's cards, GB/s (nccl-tests busbw).",
        exclusive_minimum=0.0,
    )
    interconnect_latency_us: float | None = field(
        None, "Per-hop latency of a collective between a node's cards, µs.", minimum=0.0
    )
    gpus_per_node: int | None = field(None, "Cards in one node (cloud instance).", minimum=1)
    kernel_us: float | None = field(
        None,
        "Measured time per kernel of a scanned training step (its floor over its kernels), µs.",
        exclusive_minimum=0.0,
    )
    achieved_fp32_tflops: float | None = field(
        None, "Measured float32 matmul rate, TFLOP/s.", exclusive_minimum=0.0
    )
    achieved_bf16_tflops: float | None = field(
        None, "Measured bfloat16 matmul rate, TFLOP/s.", exclusive_minimum=0.0
    )
    achieved_bandwidth_gbs: float | None = field(
        None, "Measured memory bandwidth, GB/s.", exclusive_minimum=0.0
    )
    time_source: Literal["measured", "data sheet"] | None = field(
        None, 'Where the time figures come from: "measured" or "data sheet".'
    )
    profile_note: str | None = field(None, "Where the measured figures were taken, and when.")
    skypilot: str | None = field(
        None, 'SkyPilot\'s accelerator name for this card (`--emit skypilot`), e.g. "A100".'
    )

    def _check(self, where: str) -> None:
        if self.memory is not None:
            parse_size(self.memory, f"{where}.memory")


# The planner's ceiling: the most devices it searches and plans for (a larger count was
# silently planned as one device). planner/search.py reads it.
MAX_DEVICES = 4096


@dataclass(frozen=True)
class HardwareSpec(Section):
    """The devices a run plans for (see `jaxpipe plan`)."""

    device_memory: str = field(
        "auto",
        '"auto" (what the device reports) or a size per device such as "16GiB" or "512MiB".',
    )
    strategy: Literal[("auto",) + STRATEGIES] = field(  # type: ignore[valid-type]
        "auto",
        "auto (the plan's choice) | single | data | fsdp | tensor | data+tensor | fsdp+tensor.",
    )
    devices: int | str = field("auto", '"auto" (every local device) or a device count ≥ 1.')
    catalog: str | Mapping[str, Any] = field(
        factory=dict,
        doc="Extra or overriding catalog entries: [hardware.catalog.NAME] tables, or the "
        "path of a TOML file of such tables (relative to the spec file).",
    )
    owned: tuple[str, ...] = field(
        (),
        'Cards you already have, "KINDxN" (cost 0) or "KINDxN@USD" (USD an hour per card), '
        'e.g. ["T4x2"]; `jaxpipe plan --have` adds to them.',
    )
    prices: Mapping[str, float] = field(
        factory=dict,
        doc="Hourly price of one card by catalog name (USD), over the catalog's, e.g. "
        "{ A100-40GB = 1.10 }; `jaxpipe plan --price KIND=USD` overrides these.",
    )
    network_gbs: float = field(
        12.5,
        "Network bandwidth between nodes, GB/s per node (default: 100 Gbit/s Ethernet, a "
        "typical cloud VM); options across nodes use it.",
        exclusive_minimum=0.0,
    )

    def _check(self, where: str) -> None:
        if self.device_memory != "auto":
            parse_size(self.device_memory, f"{where}.device_memory")
        if isinstance(self.devices, str) and self.devices != "auto":
            raise SpecError(
                f'expected "auto" or a device count, found {self.devices!r}',
                key=f"{where}.devices",
            )
        if isinstance(self.devices, int) and self.devices < 1:
            raise SpecError(f"must be ≥ 1, found {self.devices}", key=f"{where}.devices")
        if isinstance(self.devices, int) and self.devices > MAX_DEVICES:
            raise SpecError(
                f"{self.devices} is more than the {MAX_DEVICES} devices the planner plans "
                f"for; give at most {MAX_DEVICES}",
                key=f"{where}.devices",
            )
        for i, text in enumerate(self.owned):
            parse_owned(text, f"{where}.owned[{i}]")
        for name, price in dict(self.prices).items():
            if isinstance(price, bool) or not isinstance(price, (int, float)) or price < 0:
                raise SpecError(
                    f"expected a price in USD an hour ≥ 0, found {price!r}",
                    key=f"{where}.prices.{name}",
                )
        if isinstance(self.catalog, Mapping):
            for name, table in self.catalog.items():
                if not isinstance(table, dict):
                    raise SpecError(
                        "expected a table of memory, fp32_tflops, bf16_tflops, bandwidth_gbs",
                        key=f"{where}.catalog.{name}",
                    )
                schema.build(CatalogEntrySpec, table, f"{where}.catalog.{name}")
