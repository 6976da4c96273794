"""Devices: the shipped accelerator catalog (`catalog.toml`), the user's additions, the
local devices JAX sees, and how much of a device's memory a program may really use.

Usable memory is not the nominal figure. JAX's GPU client preallocates a fraction of the
card (`XLA_PYTHON_CLIENT_MEM_FRACTION`, default 0.75) and every buffer of a run lives in
that pool; out of the pool, a runtime reserve goes to XLA's own scratch, cuBLAS/cuDNN
workspaces and allocator fragmentation. So usable = nominal × fraction − reserve.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jax

from jaxpipe import settings
from jaxpipe.errors import SpecError
from jaxpipe.files import read_input_file
from jaxpipe.spec import schema
from jaxpipe.spec.hardware import CatalogEntrySpec, HardwareSpec, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "DeviceKind",
    "LocalDevices",
    "load_catalog",
    "find_device",
    "memory_fraction",
    "pool_rule",
    "PoolRule",
    "usable_bytes",
    "reserve_bytes",
    "local_devices",
    "DEFAULT_MEM_FRACTION",
    "RESERVE_BYTES",
]

DEFAULT_MEM_FRACTION = 0.75
# XLA scratch, cuBLAS/cuDNN workspaces and fragmentation, taken out of the pool; capped at
# a tenth of the pool so a deliberately small `device_memory` (tests, rehearsals) stays usable.
RESERVE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class DeviceKind:
    """One kind of accelerator: nominal memory (bytes), peak rates (FLOP/s, bytes/s)."""

    name: str
    memory_bytes: int
    fp32_flops: float | None = None
    bf16_flops: float | None = None
    bandwidth: float | None = None
    match: tuple[str, ...] = ()
    price_per_hour: float | None = None  # USD, one card, on demand
    spot_price_per_hour: float | None = None
    price_source: str | None = None
    interconnect: str | None = None
    interconnect_gbs: float | None = None  # all-reduce bus bandwidth (nccl-tests), GB/s
    interconnect_latency_us: float | None = None
    gpus_per_node: int | None = None
    kernel_us: float | None = None  # the measured profile (time_source "measured")
    achieved_fp32_flops: float | None = None
    achieved_bf16_flops: float | None = None
    achieved_bandwidth: float | None = None
    time_source: str | None = None
    profile_note: str | None = None
    skypilot: str | None = None

    def peak_flops(self, precision: str) -> float | None:
        return self.bf16_flops if precision == "bfloat16" else self.fp32_flops


# Catalog keys a DeviceKind keeps as written (the rest are converted: sizes, rates).
_AS_GIVEN = (
    "price_per_hour",
    "spot_price_per_hour",
    "price_source",
    "interconnect",
    "interconnect_gbs",
    "interconnect_latency_us",
    "gpus_per_node",
    "kernel_us",
    "time_source",
    "profile_note",
    "skypilot",
)


def _entry(name: str, table: dict[str, Any], base: DeviceKind | None, where: str) -> DeviceKind:
    cfg: CatalogEntrySpec = schema.build(CatalogEntrySpec, table, where)
    if base is None:
        missing = [
            k
            for k in ("memory", "fp32_tflops", "bf16_tflops", "bandwidth_gbs")
            if getattr(cfg, k) is None
        ]
        if missing:
            raise SpecError(
                f"new catalog entry {name!r} needs {', '.join(missing)} (only an entry that "
                "overrides a shipped name may leave keys out)",
                key=where,
            )
        base = DeviceKind(name, 0)

    def tera(v: float | None, old: float | None) -> float | None:
        return old if v is None else v * 1e12

    for pattern in cfg.match or ():
        try:
            re.compile(pattern)
        except re.error as e:
            raise SpecError(
                f"match pattern {pattern!r} is not a regular expression ({e}); escape "
                "special characters, e.g. \\\\bT4\\\\b in TOML",
                key=f"{where}.match",
            ) from None

    def keep(key: str, old: Any) -> Any:
        value = getattr(cfg, key)
        return old if value is None else value

    giga = lambda v, old: old if v is None else v * 1e9  # noqa: E731
    return dataclasses.replace(
        base,
        name=name,
        memory_bytes=base.memory_bytes if cfg.memory is None else parse_size(cfg.memory, where),
        fp32_flops=tera(cfg.fp32_tflops, base.fp32_flops),
        bf16_flops=tera(cfg.bf16_tflops, base.bf16_flops),
        bandwidth=giga(cfg.bandwidth_gbs, base.bandwidth),
        match=cfg.match or base.match,
        achieved_fp32_flops=tera(cfg.achieved_fp32_tflops, base.achieved_fp32_flops),
        achieved_bf16_flops=tera(cfg.achieved_bf16_tflops, base.achieved_bf16_flops),
        achieved_bandwidth=giga(cfg.achieved_bandwidth_gbs, base.achieved_bandwidth),
        **{k: keep(k, getattr(base, k)) for k in _AS_GIVEN},
    )


def _merge(catalog: dict[str, DeviceKind], tables: dict[str, Any], where: str) -> None:
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise SpecError("expected a table of memory, fp32_tflops, ...", key=f"{where}.{name}")
        key = _normal(name)
        old = next((k for k in catalog if _normal(k) == key), None)
        entry = _entry(old or name, table, catalog.get(old) if old else None, f"{where}.{name}")
        catalog[old or name] = entry


def load_catalog(
    hardware: HardwareSpec | None = None, base_dir: str = "."
) -> dict[str, DeviceKind]:
    """The shipped catalog with the spec's entries (or its catalog file) merged over it."""
    text = resources.files("jaxpipe.planner").joinpath("catalog.toml").read_text()
    catalog: dict[str, DeviceKind] = {}
    _merge(catalog, tomllib.loads(text), "catalog.toml")
    if hardware is None:
        return catalog
    extra = hardware.catalog
    if isinstance(extra, str):
        path = extra if os.path.isabs(extra) else os.path.join(base_dir, extra)
        tables = _read_catalog(path)
        _merge(catalog, tables, path)
    else:
        _merge(catalog, dict(extra), "hardware.catalog")
    return catalog


MAX_CATALOG_BYTES = 2**20  # a catalog is a few KiB; anything larger is not one


def _read_catalog(path: str) -> dict[str, Any]:
    """A catalog file's tables, read through the one safe reader: a directory, a FIFO or
    device (which would block or never end), an oversized, binary or non-TOML file is an
    error naming the path."""
    try:
        raw = read_input_file(path, "catalog file", limit=MAX_CATALOG_BYTES)
    except FileNotFoundError:
        raise SpecError(
            "catalog file not found; the path is relative to the spec file",
            key="hardware.catalog",
            file=path,
        ) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(
            "the catalog file is not UTF-8 text; expected a TOML file",
            key="hardware.catalog",
            file=path,
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"invalid TOML: {e}", file=path) from None


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def find_device(name: str, catalog: dict[str, DeviceKind]) -> DeviceKind:
    """The catalog entry called `name` (case and punctuation ignored: "a100-40gb", "A100_40GB")."""
    want = _normal(name)
    for key, kind in catalog.items():
        if _normal(key) == want:
            return kind
    starts = [k for k in catalog if _normal(k).startswith(want)] if want else []
    if len(starts) == 1:
        return catalog[starts[0]]
    near = difflib.get_close_matches(name.upper(), list(catalog), n=2, cutoff=0.4)
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    raise SpecError(
        f"unknown device {name!r}{hint}; the catalog has {', '.join(catalog)} "
        "(add your own with [hardware.catalog.NAME])",
        key="--gpu",
    )


def match_kind(device_kind: str, catalog: dict[str, DeviceKind]) -> DeviceKind | None:
    """The catalog entry whose `match` patterns recognise jax's `device_kind` string."""
    for kind in catalog.values():
        if any(re.search(p, device_kind, re.IGNORECASE) for p in kind.match):
            return kind
    return None


_ALLOCATORS = ("default", "platform", "bfc", "cuda_async", "vmm")


@dataclass(frozen=True)
class PoolRule:
    """How JAX's GPU client sizes its memory pool, from the environment jaxlib reads
    (jaxlib/xla_client.py): `fraction` of the card is what programs may use."""

    fraction: float
    source: str  # where the fraction came from, for the plan's first lines
    preallocate: bool
    allocator: str

    def describe(self) -> str:
        notes = [self.source]
        if self.allocator == "platform":
            notes = ["XLA_PYTHON_CLIENT_ALLOCATOR=platform: no pool, the whole card (slow)"]
        elif not self.preallocate:
            # Measured on an H200 (benchmarks/RESULTS.md): the data set took 1.74x its
            # bytes in regions grown on demand; the estimate assumes one pool.
            notes.append("not preallocated: other processes count too; growth rounds buffers up")
        return "; ".join(notes)


def _env_fraction() -> tuple[float | None, str]:
    given = settings.gpu_mem_fractions()
    if all(given.values()):
        raise SpecError(
            "XLA_CLIENT_MEM_FRACTION and XLA_PYTHON_CLIENT_MEM_FRACTION are both set (jaxlib "
            "refuses that too); unset XLA_PYTHON_CLIENT_MEM_FRACTION, the deprecated one",
            key="environment",
        )
    var = next((v for v in given if given[v]), None)
    if var is None:
        return None, f"default fraction {DEFAULT_MEM_FRACTION:g}"
    raw = given[var]
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise SpecError(f"{var}={raw!r} must be a number in (0, 1]", key="environment")
    return value, f"{var}={raw}"


def pool_rule() -> PoolRule:
    """The GPU client's pool from XLA_CLIENT_MEM_FRACTION (read first by jaxlib 0.10),
    XLA_PYTHON_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_PREALLOCATE and
    XLA_PYTHON_CLIENT_ALLOCATOR. The fraction caps the BFC allocator whether or not it
    preallocates; the platform allocator has no pool (every buffer is a cudaMalloc), so
    the whole card is usable."""
    fraction, source = _env_fraction()
    allocator = settings.gpu_allocator()
    if allocator not in _ALLOCATORS:
        raise SpecError(
            f"XLA_PYTHON_CLIENT_ALLOCATOR={allocator!r}; jaxlib accepts {', '.join(_ALLOCATORS)}",
            key="environment",
        )
    preallocate = settings.gpu_preallocate()
    if allocator == "platform":
        return PoolRule(1.0, "XLA_PYTHON_CLIENT_ALLOCATOR=platform", preallocate, allocator)
    return PoolRule(fraction or DEFAULT_MEM_FRACTION, source, preallocate, allocator)


def memory_fraction() -> float:
    """The fraction of a GPU's memory programs may use (`pool_rule`)."""
    return pool_rule().fraction


def reserve_bytes(pool: int) -> int:
    """The runtime reserve taken out of a pool of `pool` bytes."""
    return min(RESERVE_BYTES, pool // 10)


def usable_bytes(nominal: int, fraction: float | None = None) -> int:
    """What one device's programs may use: nominal × fraction − reserve."""
    pool = int(nominal * (memory_fraction() if fraction is None else fraction))
    return pool - reserve_bytes(pool)


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux/macOS
        return 8 * 2**30


@dataclass(frozen=True)
class LocalDevices:
    """What this process sees: per device (id, platform, kind, memory bytes, memory
    source), the process index and count, and the usable bytes per device."""

    devices: tuple[dict[str, Any], ...]
    process_index: int
    process_count: int
    platform: str
    kind: str
    nominal_bytes: int
    usable_bytes: int
    fraction: float
    memory_source: str

    def to_json(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "kind": self.kind,
            "count": len(self.devices),
            "process_index": self.process_index,
            "process_count": self.process_count,
            "nominal_bytes_per_device": self.nominal_bytes,
            "usable_bytes_per_device": self.usable_bytes,
            "memory_fraction": self.fraction,
            "memory_source": self.memory_source,
            "devices": list(self.devices),
        }


def memory_stats(device: Any) -> dict[str, Any]:
    """`device.memory_stats()`, or {} where the backend has none (CPU, some plugins)."""
    try:
        return device.memory_stats() or {}
    except Exception:  # not implemented: an empty answer, not an error
        return {}


def local_devices(hw: HardwareSpec | None = None) -> LocalDevices:
    """The local devices and their memory. A GPU's memory is its `bytes_limit`, which
    already is the preallocated pool (so only the reserve is taken off); a CPU device's is
    the host memory shared by the local CPU devices; `[hardware] device_memory` overrides
    both (and then the fraction applies, as to a catalog figure)."""
    devs = jax.local_devices()
    rows = []
    for d in devs:
        limit = memory_stats(d).get("bytes_limit")
        rows.append(
            {
                "id": d.id,
                "platform": d.platform,
                "kind": d.device_kind,
                "process_index": d.process_index,
                "bytes_limit": int(limit) if limit else None,
            }
        )
    forced = hw is not None and hw.device_memory != "auto"
    fraction = 1.0
    if forced:
        fraction = memory_fraction()
        nominal = parse_size(hw.device_memory, "hardware.device_memory")
        usable, source = usable_bytes(nominal, fraction), "[hardware] device_memory"
    elif rows[0]["bytes_limit"]:
        nominal = rows[0]["bytes_limit"]
        usable, source = nominal - reserve_bytes(nominal), "memory_stats()['bytes_limit']"
        fraction = 1.0  # bytes_limit is already the preallocated pool
    else:
        # Host memory: no GPU pool, no fraction (the GPU variables do not apply).
        nominal, fraction = _host_memory() // len(devs), 1.0
        usable = usable_bytes(nominal, fraction)
        source = f"host memory / {len(devs)} local devices"
    return LocalDevices(
        devices=tuple(rows),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        platform=devs[0].platform,
        kind=devs[0].device_kind,
        nominal_bytes=nominal,
        usable_bytes=usable,
        fraction=fraction,
        memory_source=source,
    )
