"""The epoch-time model: what one training epoch and the whole run take on a device kind,
from what that kind achieves (its `Profile`), not from its peak.

A scanned training step of an MLP costs, per device:

    step = ops × op                               the per-step floor: the step's kernels
                                                  (XLA's compiled step, counted by
                                                  `count_step_ops`) at the measured cost
                                                  of launching one
         + Σ 2·M·K·N / rate(precision)            every matmul of the forward and backward
                                                  pass, at the rate the device achieves
         + bytes / bandwidth(working set)         the matmuls' operands, the elementwise
                                                  passes, the optimizer update (cache
                                                  bandwidth while the state fits a cache)
         + Σ converted × convert(size)            a bfloat16 step on XLA:CPU: the casts of
                                                  its weights and activations (below),
                                                  each array's at the cost for its size
         + gathered × gather(batch)               the batch's rows gathered from the data
                                                  (batch × features elements), dearer
                                                  per element as the batch grows
         + powered × pow                          elements raised to a power (Adafactor's
                                                  second moment): a library call each
         + Σ transposed × transpose(size)         elements written transposed (XLA:CPU's
                                                  bfloat16 updates; `count_step`), each
                                                  kernel's at the cost measured for its
                                                  array's size
         + Σ rows × width × wgrad(width, rows)    each weight gradient's dot (xᵀ·dy,
                                                  contracting the batch), beyond its
                                                  FLOPs: XLA:CPU reads its leading operand
                                                  down its rows, dearer per element as
                                                  that operand widens (below)
         + Σ collective(kind, bytes, group)       the strategy's collectives
                                                  (`Strategy.step_collectives`)

an epoch = steps × step + its call + the shuffle (a sort of the rows) + the validation
pass, each
device term weighed by the profile's calibration fit (`Profile.scale`: least squares on
the log error over real scanned epochs, each weight pulled towards 1, the
measurement), and a run = epochs × epoch + the compile.

bfloat16 on XLA:CPU is not a faster matmul: the compiled step casts each weight and
activation to float32 and runs float32 dots (its HLO shows `convert` fusions feeding
f32 `dot`s), so the profile's bfloat16 rate is measured as the model computes it (a
bfloat16 `jnp.dot`, near the float32 rate on CPU, native on a GPU), and the casts are a
term of their own: the elements cast per step (the parameters once, each hidden
activation three times: forward, and the backward's two dots) at `Profile.convert_s`,
measured as a step pays it: a bfloat16 epoch against the same one in float32, less what
the other terms say of their difference (0 on GPUs, whose GEMMs read bfloat16 directly).

A weight gradient dW = xᵀ·dy contracts both operands' first dimension (the batch). On
XLA:CPU such a dot costs, beyond its FLOPs at the matmul rate, an amount per element of
the operand its output's rows come from ([rows, width], read down its columns): 0.4-0.8
ns an element at widths up to 128, 1.4 at 256, 3.0 at 512 and 7.7 at 1024 for 512 rows,
1.6 at 1024 for 16 rows (one core, issue 24: `[1024]` batch 512 spends 4.1 of its 5.4 ms
a step in the output layer's [1024, 4] gradient, whose FLOPs take 4 µs). XLA orders the
operands as the layer reads them in float32 (x first: width `in`) and the other way in a
bfloat16 step (dy first: width `out`), so a bfloat16 step pays it on its first layer and a
float32 step on its output layer. `Profile.wgrad_grid` holds the cost per element
measured at a few widths and rows (log-interpolated in both); 0 on GPUs.

The collectives use the ring formulas in the nccl-tests convention (a bus bandwidth B per
device and a per-hop latency a over a group of n): all-reduce of S bytes takes
2(n−1)·a + 2(n−1)/n · S/B; all-gather (S the gathered size) and reduce-scatter (S the
input) take (n−1)·a + (n−1)/n · S/B. Within a node B is the interconnect's bus bandwidth
(NVLink, PCIe: catalog.toml cites nccl-tests figures); a group across nodes runs the
hierarchical form (reduce-scatter within the node, all-reduce of the node's share over
the network, all-gather within), whose network part is 2(N−1)/N · S / network for N
nodes of one network link each.

Profiles are kept per device kind (`save_profile`, `stored_profiles`) or taken from the
catalog (`catalog_profile`). No jax: arithmetic on shapes and a profile
(planner/profiles.py measures one).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from jaxpipe import settings
from jaxpipe.errors import JaxpipeError
from jaxpipe.files import atomic_write
from jaxpipe.spec.strategy import DATA, MODEL, Strategy

if TYPE_CHECKING:  # hardware imports jax; the time model needs none
    from jaxpipe.planner.hardware import DeviceKind

__all__ = [
    "Profile",
    "StepWork",
    "EpochTime",
    "step_work",
    "estimate_ops",
    "count_step_ops",
    "count_step",
    "StepCounts",
    "powered_elements",
    "transposed_elements",
    "transposed_arrays",
    "collective_seconds",
    "epoch_time",
    "MEASURED",
    "DATA_SHEET",
    "DEFAULT_NETWORK_GBS",
    "EVAL_BATCH",
    "TERMS",
    "save_profile",
    "load_profile",
    "profile_path",
    "catalog_profile",
    "stored_profiles",
    "GPU_COMPILE_S",
]

MEASURED, DATA_SHEET = "measured", "data sheet"
# A typical cloud VM's network between nodes when the spec does not say
# (`[hardware] network_gbs`): 100 Gbit/s Ethernet, 12.5 GB/s per node.
DEFAULT_NETWORK_GBS = 12.5
NETWORK_LATENCY_S = 10e-6  # one hop between nodes (RDMA-less TCP is slower; stated)
EVAL_BATCH = 1024  # runner/programs.EVAL_BATCH: the validation pass's batch
# Bytes each hidden layer's elementwise passes move per activation element (float32):
# forward writes the pre-activation and the activation; backward reads the incoming
# gradient and the pre-activation, writes the outgoing one and reduces the bias gradient.
ELEMENTWISE_PASSES = 6
LAYER_NORM_PASSES = 6  # its statistics, normalise, scale: forward and backward
DROPOUT_PASSES = 3  # the mask's bits, its multiply forward and backward


# The terms a profile's fit weighs (`Profile.scale`): the step's kernels, its matmuls
# per precision, its memory traffic served by the cache and by memory, a bfloat16 step's
# casts, the batch's gathered elements, the elements raised to a power, the transposed
# elements, the weight gradients' strided reads; and, once an epoch (`EPOCH_TERMS`,
# last), its call and its shuffle.
TERMS = (
    "kernels",
    "matmul/float32",
    "matmul/bfloat16",
    "cache",
    "memory",
    "convert",
    "gather",
    "pow",
    "transpose",
    "wgrad",
    "epoch",
    "shuffle",
)
EPOCH_TERMS = ("epoch", "shuffle")
STEP_TERMS = TERMS[: -len(EPOCH_TERMS)]


def _log_interp(points: Sequence[tuple[float, float]], x: float) -> float:
    """The value at `x` of the (size, value) `points` (sizes ascending, positive),
    interpolated linearly in log(size); the end points' values beyond them."""
    at = math.log(max(x, 1.0))
    logs = [(math.log(n), v) for n, v in points]
    if at <= logs[0][0]:
        return logs[0][1]
    for (x0, v0), (x1, v1) in zip(logs, logs[1:]):
        if at <= x1:
            return v0 + (v1 - v0) * (at - x0) / (x1 - x0)
    return logs[-1][1]


def _sized(curve: Sequence[tuple[int, float]], flat: float, elements: float) -> float:
    """Seconds per element of an array of `elements`: the measured (elements, seconds per
    element) `curve` interpolated on the log of the size (its end points beyond it), else
    the one `flat` figure (an older profile, a GPU's)."""
    return _log_interp(curve, elements) if curve else flat


def _sized_seconds(
    curve: Sequence[tuple[int, float]], flat: float, arrays: Sequence[float], total: float
) -> float:
    """Seconds for a step's `arrays` (elements each; `total` in all), each at the cost for
    its size (`_sized`), or `total` at `flat` where the arrays are not known one by one."""
    if arrays:
        return sum(n * _sized(curve, flat, n) for n in arrays)
    return total * flat


@dataclass(frozen=True)
class Profile:
    """What one device kind achieves. `source`: "measured" (`jaxpipe calibrate`, or the
    GPU records in benchmarks/gpu) or "data sheet" (the vendor's peaks under stated
    efficiencies). `op_s`: seconds per kernel of a step (the floor over its kernels);
    `matmul`: FLOP/s per precision for large shapes ("float32/single": XLA:CPU's
    single-threaded Eigen, which small steps compile with); `bandwidth`: bytes/s to
    memory, `cache_bandwidth` while a step's working set fits `cache_bytes`; `sort_s`:
    seconds per row·log2(rows) of the epoch's shuffle; `link`: (bus bytes/s, latency s)
    between the devices of one node; `collectives`: measured (bus bytes/s, latency s)
    per group size, preferred to `link`; `compile_s`: (base, per hidden layer) seconds;
    `convert_s`: seconds per element a bfloat16 step casts (XLA:CPU's bfloat16 steps,
    measured as a step pays it; 0 where matmuls read bfloat16 directly); `gather_s`:
    seconds per element of the batch's gather (rows × features; `gather_bf16_s` in a
    bfloat16 step, where XLA:CPU fuses it with the batch's casts; `gather_s` where 0),
    `gather_curve`: (batch, seconds per element) of the float32 gather at a few batches,
    the last the batch `gather_s` was measured at (`gather_cost`); `pow_s` per element
    raised to a power (a `pow` is a library call per element on XLA:CPU, not a vector op),
    `transpose_s` per element written transposed (at [512, 512]; `transpose_curve`:
    (elements, seconds per element) measured at several sizes, ascending, which
    `transpose_cost` interpolates; `convert_curve` likewise for the casts,
    `convert_cost`); `wgrad_grid`: (width, rows, seconds per element) of a weight
    gradient's dot beyond its FLOPs, per element of its leading operand (`wgrad_cost`;
    module docstring); `epoch_s`: seconds an epoch's call
    costs beyond its steps and shuffle (the program's launch, its arguments, the scan's
    setup); each 0 where not measured (older profiles);
    `scale`: the fit of each term (`TERMS`) to real epochs; a term missing is 1."""

    kind: str
    source: str
    op_s: float
    matmul: Mapping[str, float]
    bandwidth: float
    cache_bandwidth: float | None = None
    cache_bytes: int = 2**20
    sort_s: float = 0.0
    link: tuple[float, float] | None = None
    collectives: Mapping[int, tuple[float, float]] = field(default_factory=dict)
    compile_s: tuple[float, float] = (3.0, 0.5)
    scale: Mapping[str, float] = field(default_factory=dict)
    convert_s: float = 0.0
    gather_s: float = 0.0
    gather_bf16_s: float = 0.0
    gather_curve: tuple[tuple[int, float], ...] = ()
    pow_s: float = 0.0
    transpose_s: float = 0.0
    transpose_curve: tuple[tuple[int, float], ...] = ()
    convert_curve: tuple[tuple[int, float], ...] = ()
    wgrad_grid: tuple[tuple[int, int, float], ...] = ()
    epoch_s: float = 0.0
    platform: str = "gpu"
    note: str = ""

    def rate(self, precision: str, single_thread: bool = False) -> float:
        """FLOP/s for large matmuls in `precision` (float32 where bfloat16 is not given)."""
        if single_thread and f"{precision}/single" in self.matmul:
            return self.matmul[f"{precision}/single"]
        return self.matmul.get(precision) or self.matmul["float32"]

    def in_cache(self, working_set: float) -> float:
        """The share of a step's memory traffic served by the cache: 1 while its working
        set fits `cache_bytes`, 0 from 64 × that, log-interpolated between (0 without a
        measured cache)."""
        if not self.cache_bandwidth:
            return 0.0
        return _log_interp(((self.cache_bytes, 1.0), (64 * self.cache_bytes, 0.0)), working_set)

    def weight(self, term: str) -> float:
        return float(self.scale.get(term, 1.0))

    def terms(self, work: StepWork, precision: str, single_thread: bool) -> dict[str, float]:
        """One step's device terms in seconds, unscaled (`STEP_TERMS`)."""
        share = self.in_cache(work.working_set)
        out = dict.fromkeys(STEP_TERMS, 0.0)
        out["kernels"] = work.ops * self.op_s
        out[f"matmul/{precision}"] = work.flops / self.rate(precision, single_thread)
        out["cache"] = work.moved_bytes * share / (self.cache_bandwidth or self.bandwidth)
        out["memory"] = work.moved_bytes * (1 - share) / self.bandwidth
        out["convert"] = self.converted_seconds(work)
        out["gather"] = work.gathered * self.gather_cost(precision, work.batch)
        out["pow"] = work.powered * self.pow_s
        out["transpose"] = self.transposed_seconds(work)
        out["wgrad"] = self.wgrad_seconds(work)
        return out

    def gather_cost(self, precision: str, batch: int = 0) -> float:
        """Seconds per element of the batch's gather (rows × features) in `precision`
        at `batch` rows a step: `gather_s` (`gather_bf16_s` in bfloat16, where measured)
        at the batch it was measured at (`gather_curve`'s last), scaled as the float32
        `gather_curve` scales with the batch (log-interpolated; flat without one)."""
        flat = (
            self.gather_bf16_s if precision == "bfloat16" and self.gather_bf16_s else self.gather_s
        )
        if not self.gather_curve or batch <= 0 or self.gather_curve[-1][1] <= 0:
            return flat
        return flat * _log_interp(self.gather_curve, batch) / self.gather_curve[-1][1]

    def convert_cost(self, elements: float) -> float:
        """Seconds per element of a bfloat16 step's cast of an array of `elements`
        (`convert_curve`, else `convert_s`: `_sized`)."""
        return _sized(self.convert_curve, self.convert_s, elements)

    def converted_seconds(self, work: StepWork) -> float:
        """A step's casts: each array at the cost for its size, or all at `convert_s`
        where they are not known one by one."""
        return _sized_seconds(
            self.convert_curve, self.convert_s, work.converted_arrays, work.converted
        )

    def transpose_cost(self, elements: float) -> float:
        """Seconds per element of a transposed write of an array of `elements`
        (`transpose_curve`, else `transpose_s`: `_sized`)."""
        return _sized(self.transpose_curve, self.transpose_s, elements)

    def transposed_seconds(self, work: StepWork) -> float:
        """A step's transposed writes: each kernel's at the cost for its size, or all at
        `transpose_s` where the step's kernels are not known one by one."""
        return _sized_seconds(
            self.transpose_curve, self.transpose_s, work.transposed_arrays, work.transposed
        )

    def wgrad_cost(self, width: int, rows: int) -> float:
        """Seconds per element of a weight gradient's leading operand ([rows, width])
        beyond the dot's FLOPs: `wgrad_grid` log-interpolated in the width, then in the
        rows, each held at the grid's edges (0 without a grid)."""
        if not self.wgrad_grid:
            return 0.0
        by_rows: dict[int, list[tuple[int, float]]] = {}
        for w, r, c in self.wgrad_grid:
            by_rows.setdefault(r, []).append((w, c))
        at_rows = [(r, _log_interp(sorted(p), width)) for r, p in sorted(by_rows.items())]
        return _log_interp(at_rows, rows)

    def wgrad_seconds(self, work: StepWork) -> float:
        """A step's weight gradients beyond their FLOPs (`wgrad_cost`)."""
        return sum(r * w * self.wgrad_cost(w, r) for r, w in work.wgrad_reads)

    def bus(self, n: int) -> tuple[float, float] | None:
        """(bus bytes/s, latency s) for a group of `n` devices within a node: measured for
        that size (or the nearest below), else the catalog's link."""
        sizes = sorted(k for k in self.collectives if k <= n)
        if sizes:
            return tuple(self.collectives[sizes[-1]])  # type: ignore[return-value]
        if self.collectives:
            return tuple(self.collectives[min(self.collectives)])  # type: ignore[return-value]
        return self.link

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["collectives"] = {str(k): list(v) for k, v in self.collectives.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["collectives"] = {int(k): tuple(v) for k, v in dict(kw.get("collectives", {})).items()}
        kw["scale"] = dict(kw.get("scale") or {})
        for key in ("link", "compile_s"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        for key in ("transpose_curve", "gather_curve", "convert_curve"):
            kw[key] = tuple((int(n), float(c)) for n, c in kw.get(key) or ())
        grid = kw.get("wgrad_grid") or ()
        kw["wgrad_grid"] = tuple((int(w), int(r), float(c)) for w, r, c in grid)
        kw["matmul"] = dict(kw["matmul"])
        return cls(**kw)


@dataclass(frozen=True)
class StepWork:
    """One device's work in one training step: its kernels (`ops`), its matmuls as
    (M, K, N), the bytes its memory passes move over a working set of `working_set`
    bytes, and its collectives (kind, mesh axis, bytes); and one validation batch's.
    Elements: the batch's gathered ones (`gathered`: rows × features), those raised to a
    power (`powered`), those written transposed (`transposed`; `transposed_arrays`: per
    kernel) and those a bfloat16 step casts, per array (`converted_arrays`: each weight
    once, each hidden activation three times; `converted`, their sum); `batch`: the
    device's rows a step (0 where not known); `wgrad_reads`: (rows, width) of the operand
    each weight gradient's dot reads down its rows (`Profile.wgrad_cost`)."""

    ops: int
    matmuls: tuple[tuple[int, int, int], ...]
    moved_bytes: float
    working_set: float
    collectives: tuple[tuple[str, str, int], ...]
    eval_matmuls: tuple[tuple[int, int, int], ...] = ()
    eval_bytes: float = 0.0
    gathered: float = 0.0
    powered: float = 0.0
    transposed: float = 0.0
    transposed_arrays: tuple[float, ...] = ()
    batch: int = 0
    converted_arrays: tuple[float, ...] = ()
    wgrad_reads: tuple[tuple[int, int], ...] = ()

    @property
    def flops(self) -> float:
        return sum(2.0 * m * k * n for m, k, n in self.matmuls)

    @property
    def converted(self) -> float:
        return float(sum(self.converted_arrays))


# The step's kernels when XLA's compiled step is not at hand (`estimate_ops`): a base
# (the batch's gather, the loss, the scan's bookkeeping), per dense layer, and per layer
# the optimizer's update adds, fitted to XLA:CPU's counts over 40 configurations
# (benchmarks/time_error.py); bfloat16 adds its casts.
OPS_BASE, OPS_PER_LAYER, OPS_BF16_PER_LAYER = 24, 8, 3
OPTIMIZER_OPS = {"sgd": 0, "rmsprop": 3, "lion": 6, "adafactor": 30, "lamb": 10}
OPTIMIZER_OPS_DEFAULT = 5  # adam and its kin


def estimate_ops(layers: int, optimizer: str, bfloat16: bool = False) -> int:
    """The kernels of one training step of `layers` dense layers (hidden + output)."""
    per = OPS_PER_LAYER + OPTIMIZER_OPS.get(optimizer, OPTIMIZER_OPS_DEFAULT)
    return OPS_BASE + layers * (per + OPS_BF16_PER_LAYER * bfloat16)


_TRIVIAL = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast"}
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) \(.*\{\s*$")
_INSTRUCTION = re.compile(r"= \S+ ([\w\-]+)\(")
_WHILE_BODY = re.compile(r"while\(.*body=%?([\w.\-]+)")


class StepCounts(NamedTuple):
    """What a compiled step's HLO says of its work: its kernels (`ops`), the elements its
    kernels raise to a power (`powered`) and those they write transposed
    (`transposed`: XLA:CPU's bfloat16 steps fuse the weight gradient's transpose into
    the update, one strided pass per parameter-sized operand); `transposed_arrays`: the
    elements of each kernel that does (their sum is `transposed`), whose cost per
    element grows with the array's size (`Profile.transpose_curve`)."""

    ops: int
    powered: int
    transposed: int
    transposed_arrays: tuple[int, ...] = ()


_ARRAY = re.compile(r"\b(?:pred|[suf]\d+|bf16)\[([\d,]*)\]")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def _elements(text: str) -> int:
    """The elements of the first array shape in `text` (a scalar's: 1)."""
    m = _ARRAY.search(text)
    return math.prod(int(d) for d in m.group(1).split(",") if d) if m else 0


def _computations(hlo_text: str) -> dict[str, list[str]]:
    """Each computation's instruction lines, by name."""
    bodies: dict[str, list[str]] = {}
    name = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m:
            name = m.group(1)
            bodies[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None:
            bodies[name].append(line)
    return bodies


def _count_body(lines: list[str], bodies: dict[str, list[str]]) -> StepCounts:
    ops = powered = 0
    arrays: list[int] = []
    for line in lines:
        m = _INSTRUCTION.search(line)
        if not m or m.group(1) in _TRIVIAL:
            continue
        ops += 1
        op, out = m.group(1), max(_elements(line.split("=", 1)[1]), 1)
        c = _CALLS.search(line)
        called = bodies.get(c.group(1), []) if c else []
        if op == "power" or any(" power(" in x for x in called):
            powered += out
        layout_swap = op in ("transpose", "copy") and "{0,1}" in line
        if layout_swap or any(" transpose(" in x for x in called):
            arrays.append(out)
    return StepCounts(ops, powered, sum(arrays), tuple(arrays))


def count_step(hlo_text: str) -> StepCounts | None:
    """The scanned step's counts (`StepCounts`) in a compiled epoch's HLO text: the
    instructions of the largest while loop's body, less parameters, constants and tuple
    plumbing (each is a kernel launch on a GPU, a thunk on XLA:CPU). None without a
    loop."""
    bodies = _computations(hlo_text)
    loops = [m.group(1) for lines in bodies.values() for x in lines if (m := _WHILE_BODY.search(x))]
    counts = [_count_body(bodies[b], bodies) for b in loops if b in bodies]
    return max(counts, key=lambda c: c.ops) if counts else None


def count_step_ops(hlo_text: str) -> int | None:
    """The kernels of the scanned step in a compiled epoch's HLO text (`count_step`)."""
    counts = count_step(hlo_text)
    return counts.ops if counts else None


# Adafactor (optax) keeps a factored second moment only for matrices whose smaller side
# is at least this; a smaller one keeps it whole, and its update raises every element of
# it to a power (`powered_elements`).
FACTORED_MIN_DIM = 128
# Parameter-sized operands a bfloat16 update writes transposed, per optimizer (XLA:CPU,
# counted in compiled steps): the gradient, and each moment it folds the gradient into.
TRANSPOSED_PASSES = {"sgd": 1, "nadam": 3, "nadamw": 3, "adafactor": 3}
TRANSPOSED_PASSES_DEFAULT = 2


def powered_elements(shapes: Sequence[tuple[int, int]], optimizer: str) -> int:
    """The elements one update raises to a power where the compiled step is not at hand,
    over layers of (in, out): Adafactor's second moment, factored (rows + columns) or
    whole (optax's `scale_by_factored_rms`), and its biases; other optimizers' are a few
    scalars (their step counts' powers)."""
    if optimizer != "adafactor":
        return 3
    out = 0
    for a, b in shapes:
        out += (a + b if min(a, b) >= FACTORED_MIN_DIM else a * b) + b
    return out


def transposed_elements(shapes: Sequence[tuple[int, int]], optimizer: str, bfloat16: bool) -> int:
    """The elements one step writes transposed where the compiled step is not at hand,
    over layers of (in, out): in a bfloat16 step on XLA:CPU, the weights once per
    `TRANSPOSED_PASSES`; none in float32."""
    return sum(transposed_arrays(shapes, optimizer, bfloat16))


def transposed_arrays(
    shapes: Sequence[tuple[int, int]], optimizer: str, bfloat16: bool
) -> tuple[int, ...]:
    """`transposed_elements` per kernel: each weight, once per `TRANSPOSED_PASSES`."""
    if not bfloat16:
        return ()
    passes = TRANSPOSED_PASSES.get(optimizer, TRANSPOSED_PASSES_DEFAULT)
    return tuple(a * b for a, b in shapes for _ in range(passes))


def _layer_shapes(widths: Sequence[int], m: int) -> list[tuple[int, int]]:
    """(in, out) per layer on one device of a model axis of `m`: column-parallel hidden
    layers (0, 2, ...) keep out / m, row-parallel ones in / m; the output layer is
    row-parallel when the last hidden layer is column-parallel."""
    hidden = len(widths) - 2
    shapes = []
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        if i < hidden:
            shapes.append((a, -(-b // m)) if i % 2 == 0 else (-(-a // m), b))
        else:
            shapes.append((-(-a // m), b) if hidden % 2 == 1 else (a, b))
    return shapes


def _matmuls(shapes: list[tuple[int, int, int]], b: int, backward: bool) -> list[tuple]:
    """Forward [b, in] @ [in, out]; backward dW = xᵀ @ dy and, past the first layer,
    dx = dy @ Wᵀ (the inputs need no gradient)."""
    out = []
    for i, (a, c) in enumerate(shapes):
        out.append((b, a, c))
        if backward:
            out.append((a, b, c))
            if i > 0:
                out.append((b, c, a))
    return out


def _io_bytes(matmuls: list[tuple[int, int, int]], itemsize: int) -> float:
    return float(sum((m * k + k * n + m * n) * itemsize for m, k, n in matmuls))


# Parameter-sized passes of an optimizer's update where its state does not say them:
# Adafactor's factored second moment, its RMS clipping and relative step size and Lamb's
# trust ratio read and write each parameter many times over a small state.
UPDATE_PASSES = {"adafactor": 12.0, "lamb": 10.0}


def update_passes(optimizer: str, param_bytes: int, optimizer_bytes: int) -> float:
    """Parameter-sized memory passes of one update: read parameters and gradients,
    write parameters, and read and write the state (Adam's two moments: 7)."""
    if optimizer in UPDATE_PASSES:
        return UPDATE_PASSES[optimizer]
    return 3.0 + 2.0 * optimizer_bytes / max(param_bytes, 1)


def step_work(
    strategy: Strategy | str,
    mesh: Mapping[str, int],
    *,
    features: int,
    hidden: Sequence[int],
    outputs: int,
    batch: int,
    param_bytes: int,
    optimizer_bytes: int,
    ops: int,
    optimizer: str = "",
    itemsize: int = 4,
    layer_norm: bool = False,
    dropout: bool = False,
    val_rows: int = 0,
    counted: StepCounts | None = None,
) -> StepWork:
    """One device's work per step of `strategy` on `mesh`: `param_bytes` and
    `optimizer_bytes` are that device's (after its split), `ops` the one-device step's
    kernels (`count_step_ops` or `estimate_ops`), `itemsize` the compute dtype's;
    `counted`: the one-device step's compiled counts (`count_step`, `_elementwise`)."""
    strategy = Strategy.parse(strategy)
    d = mesh.get(DATA, 1) if strategy.shards_batch else 1
    m = mesh.get(MODEL, 1) if strategy.model_parallel else 1
    b = -(-batch // d)
    widths = (features, *hidden, outputs)
    shapes = _layer_shapes(widths, m)
    mms = _matmuls(shapes, b, backward=True)
    moved = _io_bytes(mms, itemsize)
    passes = ELEMENTWISE_PASSES + LAYER_NORM_PASSES * layer_norm + DROPOUT_PASSES * dropout
    activations = sum(passes * b * c * 4 for _, c in shapes[:-1])
    moved += activations
    moved += b * (features + 1) * 8 + b * outputs * 4 * 4  # gathered batch; logits, loss
    # The update reads the parameters, gradients and state and writes parameters and
    # state (`update_passes`); a bfloat16 step also writes and reads its weights' copy.
    moved += update_passes(optimizer, param_bytes, optimizer_bytes) * param_bytes
    casts: tuple[float, ...] = ()
    if itemsize < 4:
        moved += param_bytes * (1 + itemsize / 4)
        casts = _casts(shapes, b, param_bytes / 4)
    grads = param_bytes * d if strategy.shards_params else param_bytes
    weights = grads * itemsize // 4
    collectives = strategy.step_collectives(grads, weights, _megatron(shapes, b, m, itemsize))
    working_set = 2 * param_bytes + optimizer_bytes + activations / 2
    ops += 2 * len(collectives)  # each collective and its wait
    return StepWork(
        ops,
        tuple(mms),
        moved,
        working_set,
        collectives,
        *_eval_work(shapes, -(-min(EVAL_BATCH, max(val_rows, 1)) // d), itemsize),
        **_elementwise(shapes, widths, b, optimizer, itemsize < 4, counted),
        batch=b,
        converted_arrays=casts,
        wgrad_reads=_wgrad_reads(shapes, b, itemsize < 4),
    )


def _wgrad_reads(shapes: list[tuple[int, int]], b: int, bfloat16: bool) -> tuple:
    """(rows, width) of the operand each layer's weight gradient reads down its rows:
    the layer's input ([b, in]) in float32, its output's gradient ([b, out]) in a
    bfloat16 step, as XLA:CPU orders the dot's operands (module docstring)."""
    return tuple((b, c if bfloat16 else a) for a, c in shapes)


def _casts(shapes: list[tuple[int, int]], b: int, params: float) -> tuple[float, ...]:
    """The arrays a bfloat16 step casts, in elements: each weight once (shared out so
    that they sum to the device's `params`), each hidden activation ([b, out]) forward
    and for the backward's two dots (module docstring)."""
    weights = sum(a * c for a, c in shapes)
    share = params / max(weights, 1)
    return tuple(a * c * share for a, c in shapes) + tuple(
        float(b * c) for _, c in shapes[:-1] for _ in range(3)
    )


def _eval_work(shapes: list[tuple[int, int]], eb: int, itemsize: int) -> tuple[tuple, float]:
    """One validation batch of `eb` rows: its matmuls and the bytes they and the
    activations move."""
    mms = _matmuls(shapes, eb, backward=False)
    return tuple(mms), _io_bytes(mms, itemsize) + sum(2 * eb * c * 4 for _, c in shapes)


def _elementwise(
    shapes: list[tuple[int, int]],
    widths: Sequence[int],
    b: int,
    optimizer: str,
    bfloat16: bool,
    counted: StepCounts | None,
) -> dict[str, float]:
    """One device's gathered (`b` rows of the input's features), powered and transposed
    elements a step: the compiled one-device step's counts, shared out as that device's
    weights are, else the closed forms (`powered_elements`, `transposed_elements`)."""
    if counted is None:
        powered = powered_elements(shapes, optimizer)
        arrays: tuple[float, ...] = transposed_arrays(shapes, optimizer, bfloat16)
        transposed = float(sum(arrays))
    else:
        whole = sum(a * c for a, c in zip(widths, widths[1:]))
        share = sum(a * c for a, c in shapes) / max(whole, 1)
        powered, transposed = counted.powered * share, counted.transposed * share
        arrays = tuple(n * share for n in counted.transposed_arrays)
    return {
        "gathered": float(b * widths[0]),
        "powered": powered,
        "transposed": transposed,
        "transposed_arrays": arrays,
    }


def _megatron(shapes: list[tuple[int, int]], b: int, m: int, itemsize: int) -> tuple[int, ...]:
    """The model axis's activation all-reduces per step: forward, the output of every
    row-parallel layer ([b, out]); backward, the input gradient of every column-parallel
    layer past the first ([b, in])."""
    if m <= 1:
        return ()
    hidden = len(shapes) - 1
    out = []
    for i, (a, c) in enumerate(shapes):
        row = (i % 2 == 1) if i < hidden else hidden % 2 == 1
        if row:
            out.append(b * c * itemsize)
        elif i > 0:
            out.append(b * a * itemsize)
    return tuple(out)


def collective_seconds(kind: str, nbytes: float, n: int, bus: float, latency: float) -> float:
    """One ring collective of `nbytes` over `n` devices at bus bandwidth `bus` (bytes/s)
    and per-hop `latency` (s), in the nccl-tests convention (module docstring)."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    if kind == "all-reduce":
        return 2 * (n - 1) * latency + 2 * (n - 1) / n * nbytes / bus
    return (n - 1) * latency + (n - 1) / n * nbytes / bus


@dataclass(frozen=True)
class EpochTime:
    """The model's figures for one option: seconds per step (and its parts), per epoch
    (steps × step + validation), the compile, and the whole run."""

    step_seconds: float
    epoch_seconds: float
    run_seconds: float
    compile_seconds: float
    parts: dict[str, float]  # floor, matmul, memory, communication, evaluation (per epoch)
    source: str  # the profile's: "measured" | "data sheet"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _group_seconds(
    kind: str,
    nbytes: float,
    n: int,
    local: int,
    profile: Profile,
    network: float,
) -> float:
    """A collective over `n` devices of which `local` share a node: within the node on
    its link; across nodes in the hierarchical form over the network."""
    if n <= 1:
        return 0.0
    inside = min(n, max(local, 1))
    bus = profile.bus(inside) or (network, 5e-6)
    if inside >= n:
        return collective_seconds(kind, nbytes, n, *bus)
    nodes = -(-n // inside)
    across = collective_seconds(kind, nbytes, nodes, network, NETWORK_LATENCY_S)
    if kind == "all-reduce":  # reduce-scatter in the node, all-reduce across, all-gather
        inner = collective_seconds("reduce-scatter", nbytes, inside, *bus)
        return 2 * inner + across
    return collective_seconds(kind, nbytes, inside, *bus) + across


def _mesh_locals(mesh: Mapping[str, int], per_node: int) -> dict[str, int]:
    """How many devices of each axis's group share a node: devices fill nodes in mesh
    order with `model` innermost, so the model axis is local first."""
    m, d = mesh.get(MODEL, 1), mesh.get(DATA, 1)
    model_local = min(m, per_node)
    data_local = max(1, min(d, per_node // max(m, 1)))
    return {MODEL: model_local, DATA: data_local}


def epoch_time(
    work: StepWork,
    profile: Profile,
    *,
    precision: str,
    steps: int,
    epochs: int,
    rows: int,
    val_rows: int,
    depth: int,
    mesh: Mapping[str, int],
    per_node: int | None = None,
    network_gbs: float = DEFAULT_NETWORK_GBS,
    single_thread: bool = False,
) -> EpochTime:
    """The model's epoch and run seconds for `work` on `profile` (module docstring):
    `rows` training rows in `steps` steps, `val_rows` validated each epoch, `depth`
    hidden layers; `per_node` devices share a node's link, `network_gbs` joins nodes."""
    terms = profile.terms(work, precision, single_thread)
    w = profile.weight
    floor = terms["kernels"] * w("kernels")
    # The weight gradients' strided reads are their dots' own: reported with the matmuls.
    matmul = sum(terms[k] * w(k) for k in ("matmul/float32", "matmul/bfloat16", "wgrad"))
    memory = terms["cache"] * w("cache") + terms["memory"] * w("memory")
    # The casts, the batch's gather, the transposed writes and the powers: elementwise
    # passes, reported with the memory traffic.
    passes = sum(terms[k] * w(k) for k in ("convert", "gather", "transpose", "pow"))
    rate = profile.rate(precision, single_thread) / w(f"matmul/{precision}")
    bandwidth = work.moved_bytes / memory if memory else profile.bandwidth
    locals_ = _mesh_locals(mesh, per_node or math.prod(mesh.values()))
    comm = sum(
        _group_seconds(kind, nbytes, mesh.get(axis, 1), locals_[axis], profile, network_gbs * 1e9)
        for kind, axis, nbytes in work.collectives
    )
    step = floor + matmul + memory + passes + comm
    shuffle = profile.sort_s * rows * math.log2(max(rows, 2)) * w("shuffle")
    call = profile.epoch_s * w("epoch")
    eval_steps = -(-val_rows // EVAL_BATCH) if val_rows else 0
    eval_flops = sum(2.0 * m * k * n for m, k, n in work.eval_matmuls)
    # A validation batch runs the forward pass alone: about a third of the step's kernels.
    evaluation = eval_steps * (floor / 3 + eval_flops / rate + work.eval_bytes / bandwidth)
    epoch = steps * step + call + shuffle + evaluation
    base, per_layer = profile.compile_s
    compile_s = base + per_layer * depth
    parts = {
        "floor": steps * floor + call,
        "matmul": steps * matmul,
        "memory": steps * (memory + passes),
        "communication": steps * comm,
        "shuffle": shuffle,
        "evaluation": evaluation,
    }
    return EpochTime(step, epoch, epochs * epoch + compile_s, compile_s, parts, profile.source)


# Data-sheet profiles (a card nobody measured), predicted from the H100's measured one as
# Habitat predicts one card from another: float32 matmuls at the fraction of the float32
# peak the H100 reached (52.4 of 67 TFLOP/s over its MLP epochs, benchmarks/gpu_profile.py;
# XLA may use TF32 there, but MLP-sized matmuls got no more than that); bfloat16 at 0.6 of
# its peak (cuBLAS GEMMs reach 60-80 %, unmeasured here); memory at 0.8 of its peak; and
# the H100's time per kernel.
DATA_SHEET_FP32 = 0.78
DATA_SHEET_MATMUL = 0.6
DATA_SHEET_BANDWIDTH = 0.8
DATA_SHEET_KERNEL_US = 0.688
# A GPU's compile (cold cache, autotuning included): base and per hidden layer, seconds.
GPU_COMPILE_S = (8.0, 1.0)


def _slug(kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-") or "device"


def profile_path(kind: str, folder: str | None = None) -> str:
    """Where the profile of device kind `kind` is kept (settings.profile_dir)."""
    return os.path.join(folder or settings.profile_dir(), f"{_slug(kind)}.json")


def save_profile(profile: Profile, path: str | None = None) -> str:
    """Writes `profile` (atomically) to `path` or its kind's place; returns the path."""
    path = path or profile_path(profile.kind)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, json.dumps(profile.to_json(), indent=2) + "\n")
    return path


def load_profile(kind: str, path: str | None = None) -> Profile | None:
    """The stored profile of device kind `kind` (or the file `path`), None when none is
    kept; a file that is not a profile is an error naming it."""
    path = path or profile_path(kind)
    try:
        with open(path, encoding="utf-8") as f:
            return Profile.from_json(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise JaxpipeError(
            f"{path}: not a jaxpipe device profile ({type(e).__name__}: {e}); run "
            "`jaxpipe calibrate` again"
        ) from None


def stored_profiles(folder: str | None = None) -> dict[str, Profile]:
    """Every profile kept in `folder` (settings.profile_dir), by device kind; a file that
    is not a profile is passed over (`load_profile` names it)."""
    folder = folder or settings.profile_dir()
    try:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".json"))
    except OSError:
        return {}
    out = {}
    for name in names:
        try:
            profile = load_profile("", os.path.join(folder, name))
        except JaxpipeError:
            continue
        if profile is not None:
            out[profile.kind] = profile
    return out


def catalog_profile(kind: DeviceKind) -> Profile | None:
    """A catalog card's profile: its measured figures where the catalog has them (the
    achieved rates, kernel time and bandwidth of benchmarks/gpu), else its data sheet
    under the stated efficiencies; None for a card without rates."""
    if not kind.fp32_flops or not kind.bandwidth:
        return None
    measured = kind.time_source == MEASURED
    bf16 = kind.bf16_flops or kind.fp32_flops
    f32 = kind.achieved_fp32_flops or kind.fp32_flops * DATA_SHEET_FP32
    matmul = {
        "float32": f32,
        "bfloat16": kind.achieved_bf16_flops or max(bf16 * DATA_SHEET_MATMUL, f32),
    }
    link = None
    if kind.interconnect_gbs:
        link = (kind.interconnect_gbs * 1e9, (kind.interconnect_latency_us or 5.0) * 1e-6)
    return Profile(
        kind=kind.name,
        source=MEASURED if measured else DATA_SHEET,
        op_s=(kind.kernel_us or DATA_SHEET_KERNEL_US) * 1e-6,
        matmul=matmul,
        bandwidth=kind.achieved_bandwidth or kind.bandwidth * DATA_SHEET_BANDWIDTH,
        link=link,
        compile_s=GPU_COMPILE_S,
        note=kind.profile_note or "data sheet peaks × stated efficiencies (planner/timing.py)",
    )
