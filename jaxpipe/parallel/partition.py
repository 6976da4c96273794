"""Partition rules: the `PartitionSpec` of every parameter and optimizer leaf under a
strategy and mesh. The planner estimates with them and parallel/sharding.py lays the
run out with them, so what is estimated is what runs."""

from __future__ import annotations

import functools
from typing import Any

import jax
import optax
from jax.sharding import PartitionSpec

from jaxpipe.spec.strategy import DATA, MODEL, Strategy

__all__ = [
    "hidden_names",
    "follow_spec",
    "tensor_divides",
    "tensor_leaf_spec",
    "leaf_spec",
    "partition_specs",
    "optimizer_partition_specs",
    "map_state_params",
]


def hidden_names(params: dict[str, Any]) -> list[str]:
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
    name: str,
    leaf: str,
    shape: tuple[int, ...],
    n_hidden: int,
    strategy: Strategy | str,
    mesh: dict,
) -> PartitionSpec:
    """The `PartitionSpec` of one parameter leaf `params[name][leaf]` of global `shape`.

    tensor (axis "model"): `tensor_leaf_spec`. fsdp (axis "data"): the leaf's largest
    still-whole dim whose local size divides by the data axis is split along it; a leaf
    with none stays whole (replicated).
    """
    # Cached on what the spec depends on (a deep MLP repeats a few of them thousands of
    # times): the layer's kind and parity, not its name.
    kind = name if not name.startswith("hidden_") else f"hidden_{int(name[7:]) % 2}"
    layout = Strategy.parse(strategy), tuple(sorted(mesh.items()))
    return _leaf_spec(kind, leaf, shape, n_hidden % 2, *layout)


@functools.lru_cache(maxsize=4096)
def _leaf_spec(
    kind: str, leaf: str, shape: tuple[int, ...], odd: int, strategy: Strategy, mesh_items: tuple
) -> PartitionSpec:
    mesh = dict(mesh_items)
    m, d = mesh.get(MODEL, 1), mesh.get(DATA, 1)
    if strategy.model_parallel and m > 1:
        spec = list(tensor_leaf_spec(kind, leaf, len(shape), odd))
    else:
        spec = [None] * len(shape)
    if strategy.shards_params and d > 1:
        local = [s // (m if a == MODEL else 1) for s, a in zip(shape, spec)]
        free = [i for i, a in enumerate(spec) if a is None and local[i] % d == 0]
        if free:
            spec[max(free, key=lambda i: local[i])] = DATA
    return PartitionSpec(*spec)


def partition_specs(params: Any, strategy: Strategy | str, mesh: dict[str, int]) -> Any:
    """A `PartitionSpec` per parameter leaf (same tree as `params`), by `leaf_spec`."""
    n_hidden = len(hidden_names(params))
    return {
        n: {k: leaf_spec(n, k, tuple(v.shape), n_hidden, strategy, mesh) for k, v in layer.items()}
        for n, layer in params.items()
    }


def follow_spec(shape: tuple[int, ...], spec: PartitionSpec, mesh: dict[str, int]) -> PartitionSpec:
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
        return follow_spec(tuple(leaf.shape), spec, mesh or {})

    is_spec = lambda x: isinstance(x, PartitionSpec)  # noqa: E731
    return map_state_params(tx, follow, opt_state, specs, lambda _: PartitionSpec(), is_spec)


def map_state_params(
    tx: optax.GradientTransformation,
    fn: Any,
    opt_state: Any,
    params: Any,
    other: Any,
    is_leaf: Any = None,
) -> Any:
    """`optax.tree_map_params`: fn(state leaf, its parameter's entry of `params`) on the
    parameter-shaped leaves of `opt_state`, other(leaf) elsewhere. Where optax cannot map
    a state (SM3 keeps a list of per-axis vectors in place of each parameter), the leaves
    are matched by key path instead: a leaf whose path holds a parameter's path is that
    parameter's (fn decides what a leaf of another shape takes: `follow_spec` keeps it
    whole); the rest (counters) go to `other`."""
    mapped: list[Any] = []

    def traced() -> None:  # tx.init's counters as tracers: no eager op compiled and run
        mapped.append(
            optax.tree_map_params(
                tx, fn, opt_state, params, transform_non_params=other, is_leaf=is_leaf
            )
        )

    try:
        jax.eval_shape(traced)
        return mapped[0]
    except (ValueError, TypeError):
        pass
    entries = jax.tree_util.tree_flatten_with_path(params, is_leaf=is_leaf)[0]
    by_path = {tuple(path): entry for path, entry in entries}
    sizes = sorted({len(p) for p in by_path}, reverse=True)

    def one(path: tuple, leaf: Any) -> Any:
        for n in sizes:  # the longest parameter path found in the leaf's path
            for start in range(len(path) - n, -1, -1):
                entry = by_path.get(tuple(path[start : start + n]))
                if entry is not None:
                    return fn(leaf, entry)
        return other(leaf)

    return jax.tree_util.tree_map_with_path(one, opt_state)
