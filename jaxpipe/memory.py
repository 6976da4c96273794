"""The memory estimate: per-device bytes of a training run under each sharding strategy,
from the spec alone (nothing allocated). The search is in `search.py`; XLA's own figures
(`jaxpipe plan --verify`) in `verify.py`, since a closed form cannot follow XLA's buffer
schedule everywhere (activation functions, dropout, LayerNorm and precision change it).

Terms, per device (the run donates its state, so old and new state do not coexist):
params, gradients and optimizer state (exact shapes, split as `partition_specs` splits
them); activations (the backward pass's peak beyond the gradients, `_activations`, with the
update's temporaries and the state copies it keeps, bf16 weight copies and data parallel's
all-reduce buffer, plus the gathered batch and logits); the resident train + validation
data (replicated); workspace (the epoch's index arrays, FSDP's gathered layers).
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from jaxpipe.fsdpunits import FSDP_TABLE, gathered_bytes
from jaxpipe.planstate import Abstract, abstract_state, leaf_class, param_shapes
from jaxpipe.residuals import backward_peak, residual_units
from jaxpipe.spec import Spec

__all__ = [
    "Shapes",
    "Estimate",
    "partition_specs",
    "tensor_leaf_spec",
    "leaf_spec",
    "optimizer_partition_specs",
    "abstract_state",
    "param_shapes",
    "Abstract",
    "estimate",
    "mesh_for",
    "tensor_divides",
    "compute_dtype",
    "DATA",
    "MODEL",
]

DATA, MODEL = "data", "model"


@dataclass(frozen=True)
class Shapes:
    """What the estimate needs to know about the data, and where it was learnt."""

    features: int  # encoded feature columns (after one-hot)
    classes: int  # 0 for regression
    train_rows: int
    val_rows: int
    source: str
    task: str = "classification"

    @property
    def outputs(self) -> int:
        """The model's output width: one per class, or 1 for regression."""
        return 1 if self.task == "regression" else self.classes

    @property
    def y_dtype(self) -> Any:
        return jnp.float32 if self.task == "regression" else jnp.int32

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self)) | {"outputs": self.outputs}


def _nbytes(shape: tuple[int, ...], dtype: Any) -> int:
    return math.prod(shape) * jnp.dtype(dtype).itemsize


def _local_bytes(leaf: Any, spec: PartitionSpec, mesh: dict[str, int]) -> int:
    """Bytes of one device's shard of `leaf` laid out as `spec` over `mesh`."""
    key = (tuple(mesh.items()), tuple(spec))
    return _shard_bytes(tuple(leaf.shape), leaf.dtype, key)


@functools.lru_cache(maxsize=4096)
def _shard_bytes(shape: tuple[int, ...], dtype: Any, key: tuple) -> int:
    # Cached: a deep MLP repeats a few (shape, spec) pairs thousands of times per estimate.
    mesh, spec = dict(key[0]), key[1]
    local = list(shape)
    for i, axis in enumerate(spec[: len(local)]):
        if axis is not None:
            local[i] = -(-local[i] // mesh.get(axis, 1))
    return _nbytes(tuple(local), dtype)


def _hidden_names(params: dict[str, Any]) -> list[str]:
    return sorted((n for n in params if n.startswith("hidden_")), key=lambda n: int(n[7:]))


def tensor_divides(hidden: tuple[int, ...], m: int) -> bool:
    """Whether every column-parallel width (hidden_0, hidden_2, ...) divides by `m`."""
    return all(w % m == 0 for w in hidden[::2])


def tensor_leaf_spec(name: str, leaf: str, ndim: int, n_hidden: int) -> PartitionSpec:
    """The tensor-parallel ("model" axis) spec of one parameter leaf: hidden_0
    column-parallel (kernel split on its output dim, bias split), hidden_1 row-parallel
    (kernel split on its input dim, bias whole), alternating; the output kernel is split
    on its input dim when the last hidden layer is column-parallel; LayerNorm stays whole."""
    whole = PartitionSpec(*[None] * ndim)
    if name.startswith("hidden_"):
        column = int(name[7:]) % 2 == 0
        if leaf == "kernel":
            return PartitionSpec(None, MODEL) if column else PartitionSpec(MODEL, None)
        return PartitionSpec(MODEL) if column else whole
    if name == "output" and leaf == "kernel" and n_hidden % 2 == 1:
        return PartitionSpec(MODEL, None)
    return whole


def leaf_spec(
    name: str, leaf: str, shape: tuple[int, ...], n_hidden: int, strategy: str, mesh: dict
) -> PartitionSpec:
    """The `PartitionSpec` of one parameter leaf `params[name][leaf]` of global `shape`.

    tensor (axis "model"): `tensor_leaf_spec`. fsdp (axis "data"): the leaf's largest
    still-whole dim whose local size divides by the data axis is split along it; a leaf
    with none stays whole (replicated).
    """
    # Cached on what the spec depends on (a deep MLP repeats a few of them thousands of
    # times): the layer's kind and parity, not its name.
    kind = name if not name.startswith("hidden_") else f"hidden_{int(name[7:]) % 2}"
    return _leaf_spec(kind, leaf, shape, n_hidden % 2, strategy, tuple(sorted(mesh.items())))


@functools.lru_cache(maxsize=4096)
def _leaf_spec(
    kind: str, leaf: str, shape: tuple[int, ...], odd: int, strategy: str, mesh_items: tuple
) -> PartitionSpec:
    mesh = dict(mesh_items)
    m, d = mesh.get(MODEL, 1), mesh.get(DATA, 1)
    if "tensor" in strategy and m > 1:
        spec = list(tensor_leaf_spec(kind, leaf, len(shape), odd))
    else:
        spec = [None] * len(shape)
    if strategy.startswith("fsdp") and d > 1:
        local = [s // (m if a == MODEL else 1) for s, a in zip(shape, spec)]
        free = [i for i, a in enumerate(spec) if a is None and local[i] % d == 0]
        if free:
            spec[max(free, key=lambda i: local[i])] = DATA
    return PartitionSpec(*spec)


def partition_specs(params: Any, strategy: str, mesh: dict[str, int]) -> Any:
    """A `PartitionSpec` per parameter leaf (same tree as `params`), by `leaf_spec`."""
    n_hidden = len(_hidden_names(params))
    return {
        n: {k: leaf_spec(n, k, tuple(v.shape), n_hidden, strategy, mesh) for k, v in layer.items()}
        for n, layer in params.items()
    }


def _follow(shape: tuple[int, ...], spec: PartitionSpec, mesh: dict[str, int]) -> PartitionSpec:
    """An optimizer leaf of `shape` takes its parameter's `spec` where it can."""
    if len(shape) != len(spec):
        return PartitionSpec()
    if any(a is not None and n % mesh.get(a, 1) for n, a in zip(shape, spec)):
        return PartitionSpec()
    return spec


def optimizer_partition_specs(
    tx: optax.GradientTransformation, opt_state: Any, specs: Any, mesh: dict | None = None
) -> Any:
    """The optimizer state's specs: parameter-shaped leaves (Adam's moments, ...) follow
    their parameter; counters and other leaves stay whole, and so do leaves that cannot
    take their parameter's split (Adafactor's factored statistics: another rank, or a
    dim that does not divide over `mesh`)."""

    def follow(leaf: Any, spec: PartitionSpec) -> PartitionSpec:
        return _follow(tuple(leaf.shape), spec, mesh or {})

    return optax.tree_map_params(
        tx,
        follow,
        opt_state,
        specs,
        transform_non_params=lambda _: PartitionSpec(),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def compute_dtype(spec: Spec) -> Any:
    return jnp.bfloat16 if spec.training.precision == "bfloat16" else jnp.float32


@dataclass(frozen=True)
class Estimate:
    """Per-device bytes of one (strategy, mesh); `breakdown` in bytes per device."""

    strategy: str
    mesh: dict[str, int]
    breakdown: dict[str, int]
    total: int
    total_no_donation: int
    flops_per_step: float
    bytes_per_step: float

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())


def mesh_for(strategy: str, data: int, model: int = 1) -> dict[str, int]:
    if strategy == "single":
        return {DATA: 1}
    if strategy == "tensor":
        return {MODEL: model}
    if "tensor" in strategy:
        return {DATA: data, MODEL: model}
    return {DATA: data}


def _tree_bytes(tree: Any, specs: Any, mesh: dict[str, int]) -> int:
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    leaves = zip(jax.tree.leaves(tree), jax.tree.leaves(specs, is_leaf=is_spec))
    return sum(_local_bytes(leaf, s, mesh) for leaf, s in leaves)


def _state_bytes(abstract: Abstract, pspecs: Any, mesh: dict[str, int]) -> tuple[int, int, int]:
    """Per-device bytes of the parameters, of the optimizer state, and of the largest
    parameter leaf, summed per distinct (shape, dtype, spec): a deep MLP's 10000 leaves
    are a few groups."""
    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    if abstract.classes is None:
        ospecs = optimizer_partition_specs(abstract.tx, abstract.opt_state, pspecs, mesh)
        p_bytes = _tree_bytes(abstract.params, pspecs, mesh)
        largest = max(
            _local_bytes(a, s, mesh)
            for a, s in zip(
                jax.tree.leaves(abstract.params), jax.tree.leaves(pspecs, is_leaf=is_spec)
            )
        )
        return p_bytes, _tree_bytes(abstract.opt_state, ospecs, mesh), largest
    classes = map(leaf_class, jax.tree.leaves(abstract.params))
    groups = Counter(zip(classes, jax.tree.leaves(pspecs, is_leaf=is_spec)))
    p_bytes, o_bytes, largest = 0, abstract.classes.other, 0
    for ((shape, dtype), spec), n in groups.items():
        one = _shard_bytes(shape, dtype, (tuple(mesh.items()), tuple(spec)))
        p_bytes, largest = p_bytes + n * one, max(largest, one)
        for o_shape, o_dtype in abstract.classes.follow[(shape, dtype)]:
            o_spec = tuple(_follow(o_shape, spec, mesh))
            o_bytes += n * _shard_bytes(o_shape, o_dtype, (tuple(mesh.items()), o_spec))
    return p_bytes, o_bytes, largest


def _workspace(shapes: Shapes, batch: int) -> int:
    """The epoch's index arrays (per device). Data parallel's all-reduce buffer is part of
    the backward peak's last point, FSDP's gathered layer of the point of its layer."""
    steps = -(-shapes.train_rows // batch)
    return shapes.train_rows * 4 + 2 * steps * batch * 4 + 28  # perm, idx, weight, scalars


def _gathered(params: Any, pspecs: Any, strategy: str, m: int, it: int) -> list[int]:
    """FSDP's whole-layer buffers while each layer (hidden..., output) is differentiated
    (sharding.ModelHooks; fsdpunits.gathered_bytes): the layer whole over ``data``."""
    return [
        gathered_bytes(
            sum(
                _local_bytes(v, s, {MODEL: m})
                for v, s in zip(params[n].values(), pspecs[n].values())
            ),
            "tensor" in strategy,
            it,
        )
        for n in [*_hidden_names(params), "output"]
    ]


def _units(spec: Spec, table: dict | None, fsdp: bool = False) -> tuple[float, float, float]:
    """What each layer keeps for the backward pass, measured from XLA (residuals.py; under
    FSDP's per-layer program, fsdpunits.py)."""
    mc = spec.model
    table = FSDP_TABLE if fsdp and table is None else table
    return residual_units(
        mc.activation, mc.dropout > 0, mc.layer_norm, spec.training.precision, table
    )


def _activations(
    shapes: Shapes,
    abstract: Abstract,
    pspecs: Any,
    strategy: str,
    units: tuple[float, ...],
    hidden: tuple[int, ...],
    b: int,
    dm: tuple[int, int],
    state: tuple[int, int, int],
    dropout: bool = False,
    gathered: list[int] | None = None,
) -> int:
    """The backward pass's peak beyond the gradients, with the batch and the logits, for a
    per-device batch of `b` rows on a (data, model) = `dm` mesh; `state`: the local
    parameter bytes, the largest local leaf's, and the bfloat16 copies of the weights
    (live through the passes, not through the update); `gathered`: FSDP's per layer."""
    d, m = dm
    mesh = {DATA: d, MODEL: m}
    params = abstract.params
    p_bytes, largest, copies = state
    # Column-parallel outputs are split over "model"; row-parallel outputs are whole.
    local_w = [w // m if i % 2 == 0 else w for i, w in enumerate(hidden)]
    layer_grads = [
        sum(_local_bytes(leaf, s, mesh) for leaf, s in zip(params[n].values(), pspecs[n].values()))
        for n in [*_hidden_names(params), "output"]
    ]
    layer_grads[-1] += p_bytes - sum(layer_grads)  # LayerNorm parameters, if any
    acts = [b * w * 4 for w in local_w] + [b * shapes.outputs * 4]
    # The optimizer's update runs leaf by leaf after the backward pass, with every
    # gradient held: its temporaries are one leaf's (the largest), at most a leaf's size
    # (XLA reuses the gradient it consumes; compiled alone, Lamb's update needs 2x).
    update = int(min(1.0, abstract.classes.update_ratio if abstract.classes else 1.0) * largest)
    # Data parallel: the gradients' all-reduce writes a second gradient-sized buffer once
    # the backward pass is done (not during it: XLA:CPU reduces them together at the end).
    # The update then reads the reduced gradients while the local ones are freed, so its
    # temporaries fit in what the reduction leaves behind, and so do its copies of the
    # state it overwrites while still reading it (Abstract.state_copies: Lion's momentum).
    # Elsewhere XLA makes those as the step starts: the largest leaf's lives through the passes.
    if d > 1 and not strategy.startswith("fsdp"):
        update = max(update, p_bytes)
    else:
        copies += int(min(1.0, abstract.state_copies) * largest)
    # LayerNorm's two broadcast statistics, which XLA fuses away in small layers; dropout's
    # two counters per layer, which it hoists out of the epoch's loop.
    fused = 2.0 if any(n.startswith("norm_") for n in params) else 0.0
    narrow = shapes.outputs == 1
    peak = backward_peak(
        acts, layer_grads, units, narrow, update, copies, fused, 2.0 * dropout, gathered
    )
    # The gathered batch and the logits with their gradient live through the whole step.
    return peak - p_bytes + b * (shapes.features * 4 + 2 * shapes.outputs * 4)


def estimate(
    spec: Spec,
    shapes: Shapes,
    abstract: Abstract,
    strategy: str,
    mesh: dict[str, int],
    batch_size: int | None = None,
    table: dict | None = None,
    scale: float = 1.0,
) -> Estimate:
    """The per-device estimate of one strategy on one mesh (pure arithmetic on shapes).
    `table`: a residual table in place of `residuals.TABLE` (for fitting it); `scale`
    multiplies its per-layer units (`xlafit.fit`: matched to XLA's one-device figure)."""
    params = abstract.params
    batch = batch_size or spec.training.batch_size
    d = mesh.get(DATA, 1) if strategy != "tensor" else 1
    m = mesh.get(MODEL, 1) if "tensor" in strategy else 1
    mesh = {DATA: d, MODEL: m}
    pspecs = partition_specs(params, strategy, mesh)
    p_bytes, o_bytes, largest = _state_bytes(abstract, pspecs, mesh)
    it = jnp.dtype(compute_dtype(spec)).itemsize
    hidden = tuple(spec.model.hidden)
    b = -(-batch // d)
    fsdp = strategy.startswith("fsdp") and d > 1
    units = tuple(u * scale for u in _units(spec, table, fsdp))
    state = (p_bytes, largest, p_bytes * it // 4 if it < 4 else 0)  # compute-dtype weight copies
    args = (shapes, abstract, pspecs, strategy, units, hidden, b, (d, m), state)
    activations = _activations(*args, spec.model.dropout > 0)
    data = (shapes.train_rows + shapes.val_rows) * (shapes.features + 1) * 4
    workspace = _workspace(shapes, batch)
    if fsdp:  # what FSDP's gathered layers add to the peak, wherever it falls
        gathered = _gathered(params, pspecs, strategy, m, it)
        workspace += _activations(*args, spec.model.dropout > 0, gathered) - activations
    breakdown = {
        "params": p_bytes,
        "gradients": p_bytes,
        "optimizer": o_bytes,
        "activations": activations,
        "data": data,
        "workspace": workspace,
    }
    total = sum(breakdown.values())
    widths = (shapes.features, *hidden, shapes.outputs)
    macs = sum(a * c for a, c in zip(widths, widths[1:]))
    flops = 6.0 * batch * macs / (d * m)  # forward 2, backward 4 per multiply-add
    moved = 3 * p_bytes * it / 4 + 2 * (2 * p_bytes + o_bytes) + 2 * activations
    return Estimate(
        strategy=strategy,
        mesh=mesh_for(strategy, d, m),
        breakdown=breakdown,
        total=total,
        total_no_donation=total + p_bytes + o_bytes + 12,
        flops_per_step=flops,
        bytes_per_step=float(moved),
    )
