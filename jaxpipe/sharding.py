"""Turns a strategy and mesh shape into a `jax.sharding` layout, and places state and
data on it once. The jitted programs keep those shardings (donated state in, same
shardings out); XLA inserts the collectives.

Strategies (names used in specs, plans and summaries):

- ``single``: one device, nothing sharded.
- ``data``: parameters replicated; each batch split along the ``data`` axis.
- ``fsdp``: every parameter, gradient and optimizer-state leaf split along ``data`` on its
  largest dimension divisible by the axis size (ZeRO-3); batches split along ``data``.
- ``tensor``: hidden layers split along ``model`` Megatron-style: ``hidden_0`` column-parallel
  (kernel [in, out/M], bias [out/M]), ``hidden_1`` row-parallel (kernel [in/M, out]), and
  so on alternately; the output layer is row-parallel after a column-parallel layer.
- ``data+tensor`` / ``fsdp+tensor``: both, on a ``data`` × ``model`` mesh.

The device-resident data set is replicated on every device (tabular sets are small next to
the activations they feed); batches are gathered from it and constrained to the batch
sharding. A batch that does not divide over the ``data`` axis is padded with weight-0 rows
(see `step.epoch_batches(multiple=...)`), so every row counts once and none is dropped.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = [
    "STRATEGIES",
    "make_mesh",
    "param_partition_specs",
    "state_shardings",
    "batch_spec",
    "batch_constraint",
    "replicated",
    "place",
    "place_host_array",
    "initialize_distributed",
    "measured_bytes_per_device",
]

STRATEGIES = ("single", "data", "fsdp", "tensor", "data+tensor", "fsdp+tensor")


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with the given axis sizes ({"data": 4} or {"data": 2, "model": 2}) over the
    first prod(sizes) devices (all processes' devices in a multi-host run)."""
    names = tuple(shape)
    sizes = tuple(int(shape[n]) for n in names)
    count = int(np.prod(sizes))
    devices = list(devices if devices is not None else jax.devices())
    if count > len(devices):
        raise ValueError(f"mesh {dict(shape)} needs {count} devices; {len(devices)} available")
    return jax.make_mesh(
        sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices[:count]
    )


def _axis(mesh: Mesh, name: str) -> int:
    return mesh.shape.get(name, 1)


def _layer_rules(layer_names: Sequence[str]) -> dict[str, str]:
    """'col' | 'row' | 'rep' per Dense layer for tensor parallelism (alternating pairs)."""
    hidden = sorted(
        (n for n in layer_names if n.startswith("hidden_")), key=lambda n: int(n.split("_")[1])
    )
    rules = {n: ("col" if i % 2 == 0 else "row") for i, n in enumerate(hidden)}
    if "output" in layer_names:
        rules["output"] = "row" if hidden and len(hidden) % 2 == 1 else "rep"
    return rules


def _fsdp_spec(shape: tuple[int, ...], size: int, taken: Sequence[Any]) -> list[Any]:
    """Adds the ``data`` axis on the largest still-free dimension divisible by `size`."""
    spec = list(taken) + [None] * (len(shape) - len(taken))
    if size <= 1:
        return spec
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if spec[dim] is None and shape[dim] % size == 0 and shape[dim] >= size:
            spec[dim] = "data"
            break
    return spec


def _leaf_spec(
    path: tuple[str, ...],
    shape: tuple[int, ...],
    strategy: str,
    mesh: Mesh,
    rules: Mapping[str, str],
) -> PartitionSpec:
    spec: list[Any] = [None] * len(shape)
    model = _axis(mesh, "model")
    if "tensor" in strategy and len(path) >= 2 and path[-2] in rules and model > 1:
        rule, kind = rules[path[-2]], path[-1]
        if kind == "kernel" and rule == "col" and shape[1] % model == 0:
            spec[1] = "model"
        elif kind == "kernel" and rule == "row" and shape[0] % model == 0:
            spec[0] = "model"
        elif kind == "bias" and rule == "col" and shape[0] % model == 0:
            spec[0] = "model"
    if strategy.startswith("fsdp") and shape:
        spec = _fsdp_spec(shape, _axis(mesh, "data"), spec)
    return PartitionSpec(*spec)


def _key_path(path: tuple[Any, ...]) -> tuple[str, ...]:
    out = []
    for k in path:
        name = getattr(k, "key", None) or getattr(k, "name", None)
        out.append(str(name) if name is not None else str(getattr(k, "idx", k)))
    return tuple(out)


def param_partition_specs(tree: Any, strategy: str, mesh: Mesh, layer_names: Sequence[str]) -> Any:
    """A PartitionSpec per leaf of `tree` (parameters, or any tree holding parameter-shaped
    leaves under their layer names, such as an optax state: Adam's mu and nu are sharded
    as the parameters they mirror)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    rules = _layer_rules(layer_names)

    def spec(path: tuple[Any, ...], leaf: Any) -> PartitionSpec:
        shape = tuple(getattr(leaf, "shape", ()))
        if strategy in ("single", "data") or not shape:
            return PartitionSpec()
        return _leaf_spec(_key_path(path), shape, strategy, mesh, rules)

    return jax.tree_util.tree_map_with_path(spec, tree)


def state_shardings(state: Any, strategy: str, mesh: Mesh) -> Any:
    """NamedShardings for a whole TrainState (step and key replicated)."""
    layer_names = list(state.params)
    specs = state._replace(
        step=PartitionSpec(),
        params=param_partition_specs(state.params, strategy, mesh, layer_names),
        opt_state=param_partition_specs(state.opt_state, strategy, mesh, layer_names),
        key=PartitionSpec(),
    )
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def batch_spec(strategy: str) -> PartitionSpec:
    """How a batch [batch, features] is split: along ``data`` unless tensor-only/single."""
    return (
        PartitionSpec("data")
        if strategy in ("data", "fsdp", "data+tensor", "fsdp+tensor")
        else PartitionSpec()
    )


def batch_constraint(mesh: Mesh, strategy: str):
    """A function pinning a gathered batch (x: [batch, features], y, w: [batch]) to the
    strategy's batch sharding inside a jitted program."""
    spec = batch_spec(strategy)
    rows = NamedSharding(mesh, spec)
    matrix = NamedSharding(mesh, PartitionSpec(*spec, None))

    def constrain(x: jax.Array, y: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
        wsc = jax.lax.with_sharding_constraint
        return wsc(x, matrix), wsc(y, rows), wsc(w, rows)

    return constrain


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def place(tree: Any, shardings: Any) -> Any:
    """Places a pytree of (device or host) arrays with matching shardings, once."""
    return jax.tree.map(lambda a, s: jax.device_put(a, s), tree, shardings)


def place_host_array(array: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A host array as one global array. In a multi-process run every process passes the
    same full array and keeps only its own devices' part
    (`jax.make_array_from_process_local_data`)."""
    if jax.process_count() == 1:
        return jax.device_put(array, sharding)
    return jax.make_array_from_process_local_data(sharding, array, array.shape)


def measured_bytes_per_device(tree: Any) -> int:
    """The most bytes any one local device holds of `tree`, read back from the placed
    arrays' addressable shards."""
    per_device: dict[Any, int] = {}
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        for shard in leaf.addressable_shards:
            per_device[shard.device] = per_device.get(shard.device, 0) + shard.data.nbytes
    return max(per_device.values(), default=0)


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> bool:
    """Joins a multi-process run through `jax.distributed` (JAX's own engine).

    Arguments fall back to JAXPIPE_COORDINATOR, JAXPIPE_NUM_PROCESSES and
    JAXPIPE_PROCESS_ID; with JAXPIPE_DISTRIBUTED=auto and none of them, JAX detects the
    cluster itself (SLURM, Open MPI, Kubernetes, TPU pods). Returns whether it joined.
    Must run before any other JAX call in the process.
    """
    env = os.environ
    coordinator = coordinator or env.get("JAXPIPE_COORDINATOR")
    if num_processes is None and env.get("JAXPIPE_NUM_PROCESSES"):
        num_processes = int(env["JAXPIPE_NUM_PROCESSES"])
    if process_id is None and env.get("JAXPIPE_PROCESS_ID"):
        process_id = int(env["JAXPIPE_PROCESS_ID"])
    auto = env.get("JAXPIPE_DISTRIBUTED", "").lower() == "auto"
    if coordinator is None and num_processes is None and not auto:
        return False
    # CPU processes need a collectives backend to talk to each other (GPUs use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
    return True
