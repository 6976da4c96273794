"""The memory estimate: per-device bytes of a training run under each sharding strategy,
from the spec alone (nothing allocated). The search is in `search.py`; XLA's own figures
(`jaxpipe plan --verify`) in `verify.py`, since a closed form cannot follow XLA's buffer
schedule everywhere (activation functions, dropout, LayerNorm and precision change it).

Terms, per device (the run donates its state, so old and new state do not coexist):
params, gradients and optimizer state (exact shapes, split as `partition_specs` splits
them); activations (the backward pass's peak beyond the gradients, `_backward_peak`, plus
the gathered batch and logits); the resident train + validation data (replicated); and
workspace (the epoch's index arrays, the optimizer update's temporaries as XLA compiles
the update alone, bf16 weight copies, FSDP's one gathered layer and its whole gradient,
data parallel's all-reduce buffer).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec

from jaxpipe.aot import cached_number
from jaxpipe.optim import make_optimizer
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
    m, d = mesh.get(MODEL, 1), mesh.get(DATA, 1)
    if "tensor" in strategy and m > 1:
        spec = list(tensor_leaf_spec(name, leaf, len(shape), n_hidden))
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


def optimizer_partition_specs(
    tx: optax.GradientTransformation, opt_state: Any, specs: Any, mesh: dict | None = None
) -> Any:
    """The optimizer state's specs: parameter-shaped leaves (Adam's moments, ...) follow
    their parameter; counters and other leaves stay whole, and so do leaves that cannot
    take their parameter's split (Adafactor's factored statistics: another rank, or a
    dim that does not divide over `mesh`)."""

    def follow(leaf: Any, spec: PartitionSpec) -> PartitionSpec:
        if len(leaf.shape) != len(spec):
            return PartitionSpec()
        sizes = mesh or {}
        if any(a is not None and n % sizes.get(a, 1) for n, a in zip(leaf.shape, spec)):
            return PartitionSpec()
        return spec

    return optax.tree_map_params(
        tx,
        follow,
        opt_state,
        specs,
        transform_non_params=lambda _: PartitionSpec(),
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def _backward_peak(acts: list[int], grads: list[int], narrow_output: bool = False) -> int:
    """Bytes live at the backward pass's peak: activations and the gradients so far.

    acts[l]: one [batch, width] buffer of layer l (the output layer last); grads[l]: its
    weight gradient. The forward pass keeps each layer's pre-activation and output (2 acts).
    At layer l the backward pass holds the layers below (2 acts each), then either three
    of layer l's buffers (pre-activation, incoming and outgoing gradient) or two of them
    while its weight gradient is written, and every gradient of the layers above it. After
    the last layer all gradients are held at once (the optimizer's input). With a
    one-wide output (regression) the last hidden layer's incoming gradient is an outer
    product XLA fuses into the activation's backward, so it is never a buffer of its own.
    """
    peaks = [sum(grads)]
    below, above = 0, sum(grads)  # running sums: O(layers), not O(layers²)
    for i, a in enumerate(acts):
        above -= grads[i]
        held = 2 if narrow_output and i == len(acts) - 2 else 3
        peaks.append(2 * below + max(held * a, 2 * a + grads[i]) + above)
        below += a
    return max(peaks)


def compute_dtype(spec: Spec) -> Any:
    return jnp.bfloat16 if spec.training.precision == "bfloat16" else jnp.float32


class Abstract(NamedTuple):
    """The run's state as shapes: params and opt_state have `jax.ShapeDtypeStruct` leaves;
    `update_temp` is the bytes of temporaries XLA needs for the optimizer update alone."""

    params: Any
    opt_state: Any
    tx: optax.GradientTransformation
    update_temp: int


_UPDATE_TEMP: dict[tuple[str, str], int] = {}
# Past this many distinct leaf shapes the update is compiled for the distinct shapes only
# (a 5000-layer MLP has 10000 leaves but a handful of shapes): XLA runs the per-leaf
# update fusions one after another, so their temporaries do not add up.
_UPDATE_LEAVES = 64


def _update_temp(tx: optax.GradientTransformation, params: Any, opt_state: Any) -> int:
    """Temporaries of the optax update with params and state donated, from compiling it
    for abstract shapes (allocates nothing). Adam's and SGD's updates fuse in place (0);
    Lion's needs a parameter-sized buffer. Optax does not expose this, so ask XLA."""

    def update(params: Any, opt_state: Any, grads: Any) -> Any:
        updates, new_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_state

    compiled = jax.jit(update, donate_argnums=(0, 1)).lower(params, opt_state, params).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def param_shapes(hidden: tuple[int, ...], features: int, outputs: int, layer_norm: bool) -> Any:
    """The MLP's parameters as `jax.ShapeDtypeStruct`s, the tree `model.make_model(...).init`
    returns (float32 kernels [in, out] and biases [out]; LayerNorm scale and bias), built
    directly: tracing flax's init takes seconds per thousand layers."""
    f32 = jnp.float32
    params: dict[str, Any] = {}
    widths = (features, *hidden)
    for i, (a, b) in enumerate(zip(widths, hidden)):
        params[f"hidden_{i}"] = {
            "bias": jax.ShapeDtypeStruct((b,), f32),
            "kernel": jax.ShapeDtypeStruct((a, b), f32),
        }
        if layer_norm:
            params[f"norm_{i}"] = {
                "bias": jax.ShapeDtypeStruct((b,), f32),
                "scale": jax.ShapeDtypeStruct((b,), f32),
            }
    params["output"] = {
        "bias": jax.ShapeDtypeStruct((outputs,), f32),
        "kernel": jax.ShapeDtypeStruct((widths[-1], outputs), f32),
    }
    return params


def abstract_state(spec: Spec, shapes: Shapes) -> Abstract:
    """The run's parameters, optimizer state and optimizer as shapes; nothing is allocated."""
    steps = -(-shapes.train_rows // spec.training.batch_size) * spec.training.epochs
    tx = make_optimizer(spec.optimizer, total_steps=steps)
    m = spec.model
    params = param_shapes(tuple(m.hidden), shapes.features, shapes.outputs, m.layer_norm)
    opt_state = jax.eval_shape(tx.init, params)
    distinct = {(tuple(a.shape), str(a.dtype)) for a in jax.tree.leaves(params)}
    key = (repr(spec.optimizer), str(sorted(distinct)))  # one compile each, kept on disk too
    if key not in _UPDATE_TEMP:
        one = {str(i): jax.ShapeDtypeStruct(s, d) for i, (s, d) in enumerate(sorted(distinct))}
        few = one if len(jax.tree.leaves(params)) > _UPDATE_LEAVES else params
        temp = lambda: _update_temp(tx, few, jax.eval_shape(tx.init, few))  # noqa: E731
        _UPDATE_TEMP[key] = cached_number("update-temp", str(key), temp)
    return Abstract(params, opt_state, tx, _UPDATE_TEMP[key])


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


def _workspace(
    shapes: Shapes,
    abstract: Abstract,
    pspecs: Any,
    strategy: str,
    batch: int,
    d: int,
    m: int,
    p_bytes: int,
    it: int,
) -> int:
    """The epoch's index arrays, the optimizer update's temporaries, bf16 weight copies,
    and the layout's collective buffers (per device)."""
    params, update_temp = abstract.params, abstract.update_temp
    steps = -(-shapes.train_rows // batch)
    workspace = shapes.train_rows * 4 + 2 * steps * batch * 4 + 28  # perm, idx, weight, scalars
    full = sum(_nbytes(leaf.shape, leaf.dtype) for leaf in jax.tree.leaves(params))
    workspace += update_temp * p_bytes // max(full, 1)  # the optimizer update's temporaries
    if it < 4:  # compute-dtype copies of the weights
        workspace += p_bytes * it // 4
    if strategy.startswith("fsdp") and d > 1:
        # One layer whole at a time: its gathered kernel (compute dtype) and its gradient
        # before the reduce-scatter (see sharding.ModelHooks).
        layer_bytes = max(
            sum(_local_bytes(leaf, s, {MODEL: m}) for leaf, s in zip(layer.values(), ls.values()))
            for layer, ls in zip(params.values(), pspecs.values())
        )
        workspace += layer_bytes + layer_bytes * it // 4
    elif d > 1:  # data parallel: the all-reduce writes a second gradient-sized buffer
        workspace += p_bytes
    return workspace


def estimate(
    spec: Spec,
    shapes: Shapes,
    abstract: Abstract,
    strategy: str,
    mesh: dict[str, int],
    batch_size: int | None = None,
) -> Estimate:
    """The per-device estimate of one strategy on one mesh (pure arithmetic on shapes)."""
    params, opt_state, tx, update_temp = abstract
    batch = batch_size or spec.training.batch_size
    d = mesh.get(DATA, 1) if strategy != "tensor" else 1
    m = mesh.get(MODEL, 1) if "tensor" in strategy else 1
    mesh = {DATA: d, MODEL: m}
    pspecs = partition_specs(params, strategy, mesh)
    ospecs = optimizer_partition_specs(tx, opt_state, pspecs, mesh)
    p_bytes, o_bytes = _tree_bytes(params, pspecs, mesh), _tree_bytes(opt_state, ospecs, mesh)
    it = jnp.dtype(compute_dtype(spec)).itemsize
    hidden = tuple(spec.model.hidden)
    # Column-parallel outputs are split over "model"; row-parallel outputs are whole.
    local_w = [w // m if i % 2 == 0 else w for i, w in enumerate(hidden)]
    b = -(-batch // d)
    layer_grads = [
        sum(_local_bytes(leaf, s, mesh) for leaf, s in zip(params[n].values(), pspecs[n].values()))
        for n in [*_hidden_names(params), "output"]
    ]
    layer_grads[-1] += p_bytes - sum(layer_grads)  # LayerNorm parameters, if any
    # A hidden layer's buffer. LayerNorm adds its normalised output and the backward
    # pass's temporaries; dropout its random bits, mask and dropped output. These two
    # multipliers are calibrated against XLA's figure on CPU (README "Will it fit?").
    per_layer = 1.0 + 1.1 * spec.model.layer_norm + 1.45 * (spec.model.dropout > 0)
    acts = [int(b * w * it * per_layer) for w in local_w] + [b * shapes.outputs * 4]
    peak = _backward_peak(acts, layer_grads, narrow_output=shapes.outputs == 1)
    # The gathered batch and the logits with their gradient live through the whole step.
    activations = peak - p_bytes + b * (shapes.features * 4 + 2 * shapes.outputs * 4)
    data = (shapes.train_rows + shapes.val_rows) * (shapes.features + 1) * 4
    workspace = _workspace(shapes, abstract, pspecs, strategy, batch, d, m, p_bytes, it)
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
