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
from jax.sharding import PartitionSpec

from jaxpipe.core.step import steps_per_epoch
from jaxpipe.data.shapes import Shapes
from jaxpipe.parallel.partition import (
    follow_spec,
    hidden_names,
    optimizer_partition_specs,
    partition_specs,
)
from jaxpipe.planner.fsdpunits import FSDP_TABLE, gathered_bytes
from jaxpipe.planner.residuals import backward_peak, residual_units
from jaxpipe.planner.state import Abstract, leaf_class
from jaxpipe.spec.sections import ModelSpec, TrainingSpec
from jaxpipe.spec.strategy import DATA, MODEL, Strategy

__all__ = ["Estimate", "estimate"]


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


@dataclass(frozen=True)
class Estimate:
    """Per-device bytes of one (strategy, mesh); `breakdown` in bytes per device."""

    strategy: Strategy
    mesh: dict[str, int]
    breakdown: dict[str, int]
    total: int
    total_no_donation: int
    flops_per_step: float
    bytes_per_step: float

    @property
    def devices(self) -> int:
        return math.prod(self.mesh.values())


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
            o_spec = tuple(follow_spec(o_shape, spec, mesh))
            o_bytes += n * _shard_bytes(o_shape, o_dtype, (tuple(mesh.items()), o_spec))
    return p_bytes, o_bytes, largest


def _workspace(shapes: Shapes, batch: int) -> int:
    """The epoch's index arrays (per device). Data parallel's all-reduce buffer is part of
    the backward peak's last point, FSDP's gathered layer of the point of its layer."""
    steps = steps_per_epoch(shapes.train_rows, batch)
    return shapes.train_rows * 4 + 2 * steps * batch * 4 + 28  # perm, idx, weight, scalars


def _gathered(params: Any, pspecs: Any, strategy: Strategy, m: int, it: int) -> list[int]:
    """FSDP's whole-layer buffers while each layer (hidden..., output) is differentiated
    (fsdp.ModelHooks; fsdpunits.gathered_bytes): the layer whole over ``data``."""
    return [
        gathered_bytes(
            sum(
                _local_bytes(v, s, {MODEL: m})
                for v, s in zip(params[n].values(), pspecs[n].values())
            ),
            strategy.model_parallel,
            it,
        )
        for n in [*hidden_names(params), "output"]
    ]


def _units(
    mc: ModelSpec, precision: str, table: dict | None, fsdp: bool = False
) -> tuple[float, float, float]:
    """What each layer keeps for the backward pass, measured from XLA (residuals.py; under
    FSDP's per-layer program, fsdpunits.py)."""
    table = FSDP_TABLE if fsdp and table is None else table
    return residual_units(mc.activation, mc.dropout > 0, mc.layer_norm, precision, table)


def _activations(
    shapes: Shapes,
    abstract: Abstract,
    pspecs: Any,
    strategy: Strategy,
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
        for n in [*hidden_names(params), "output"]
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
    if d > 1 and not strategy.shards_params:
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
    model: ModelSpec,
    training: TrainingSpec,
    shapes: Shapes,
    abstract: Abstract,
    strategy: Strategy | str,
    mesh: dict[str, int],
    batch_size: int | None = None,
    table: dict | None = None,
    scale: float = 1.0,
) -> Estimate:
    """The per-device estimate of one strategy on one mesh (pure arithmetic on shapes).
    `table`: a residual table in place of `residuals.TABLE` (for fitting it); `scale`
    multiplies its per-layer units (`xlafit.fit`: matched to XLA's one-device figure)."""
    params = abstract.params
    strategy = Strategy.parse(strategy)
    batch = batch_size or training.batch_size
    d = mesh.get(DATA, 1) if strategy.shards_batch else 1
    m = mesh.get(MODEL, 1) if strategy.model_parallel else 1
    mesh = {DATA: d, MODEL: m}
    pspecs = partition_specs(params, strategy, mesh)
    p_bytes, o_bytes, largest = _state_bytes(abstract, pspecs, mesh)
    it = jnp.dtype(training.precision).itemsize  # names core.model.compute_dtype's dtype
    hidden = tuple(model.hidden)
    b = -(-batch // d)
    fsdp = strategy.shards_params and d > 1
    units = tuple(u * scale for u in _units(model, training.precision, table, fsdp))
    state = (p_bytes, largest, p_bytes * it // 4 if it < 4 else 0)  # compute-dtype weight copies
    args = (shapes, abstract, pspecs, strategy, units, hidden, b, (d, m), state)
    activations = _activations(*args, model.dropout > 0)
    data = (shapes.train_rows + shapes.val_rows) * (shapes.features + 1) * 4
    workspace = _workspace(shapes, batch)
    if fsdp:  # what FSDP's gathered layers add to the peak, wherever it falls
        gathered = _gathered(params, pspecs, strategy, m, it)
        workspace += _activations(*args, model.dropout > 0, gathered) - activations
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
        mesh=strategy.mesh(d, m),
        breakdown=breakdown,
        total=total,
        total_no_donation=total + p_bytes + o_bytes + 12,
        flops_per_step=flops,
        bytes_per_step=float(moved),
    )
