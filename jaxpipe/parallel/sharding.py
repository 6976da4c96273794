"""Turns a strategy and mesh shape into a `jax.sharding` layout, and places state and
data on it once. The jitted programs keep those shardings (donated state in, same
shardings out); XLA inserts the collectives.

Strategies (names used in specs, plans and summaries):

- ``single``: one device, nothing sharded.
- ``data``: parameters replicated; each batch split along the ``data`` axis.
- ``fsdp``: every parameter, gradient and optimizer-state leaf split along ``data`` on its
  largest dimension divisible by the axis size (ZeRO-3); batches split along ``data``.
  The model's Dense layers gather their kernel just before use and reduce-scatter its
  gradient (`fsdp.ModelHooks`, passed to `model.make_model(hooks=...)`).
- ``tensor``: hidden layers split along ``model`` Megatron-style: ``hidden_0`` column-parallel
  (kernel [in, out/M], bias [out/M]), ``hidden_1`` row-parallel (kernel [in/M, out]), and
  so on alternately; the output layer is row-parallel after a column-parallel layer.

The per-leaf rules are the planner's (`partition.partition_specs`), so what is estimated is
what is placed.
- ``data+tensor`` / ``fsdp+tensor``: both, on a ``data`` × ``model`` mesh. Under
  fsdp+tensor each Dense matmul is one shard_map manual over both axes (`ModelHooks`):
  the kernel's ``model`` shard gathered over ``data``, the Megatron sums explicit.

The device-resident data set is replicated on every device (tabular sets are small next to
the activations they feed); batches are gathered from it and constrained to the batch
sharding. A batch that does not divide over the ``data`` axis is padded with weight-0 rows
(see `step.epoch_batches(multiple=...)`), so every row counts once and none is dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxpipe import settings
from jaxpipe.errors import JaxpipeError
from jaxpipe.parallel import partition
from jaxpipe.parallel.fsdp import ModelHooks
from jaxpipe.spec.strategy import DATA, Strategy

__all__ = [
    "Layout",
    "make_layout",
    "make_mesh",
    "state_shardings",
    "batch_spec",
    "batch_constraint",
    "replicated",
    "place",
    "place_host_array",
    "initialize_distributed",
    "distributed_config",
    "measured_bytes_per_device",
]


def make_mesh(shape: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with the given axis sizes ({"data": 4} or {"data": 2, "model": 2}) over the
    first prod(sizes) devices (all processes' devices in a multi-host run)."""
    names = tuple(shape)
    sizes = tuple(int(shape[n]) for n in names)
    count = int(np.prod(sizes))
    devices = list(devices if devices is not None else jax.devices())
    if count > len(devices):
        raise JaxpipeError(
            f"[hardware] the plan's mesh {dict(shape)} needs {count} devices; "
            f"{len(devices)} available. Lower hardware.devices, or on a CPU simulate devices "
            f"with XLA_FLAGS=--xla_force_host_platform_device_count={count}"
        )
    return jax.make_mesh(
        sizes, names, axis_types=(AxisType.Auto,) * len(names), devices=devices[:count]
    )


def _axis(mesh: Mesh, name: str) -> int:
    return mesh.shape.get(name, 1)


def state_shardings(
    state: Any, tx: optax.GradientTransformation, strategy: Strategy | str, mesh: Mesh
) -> Any:
    """NamedShardings for a whole TrainState (concrete or abstract): parameters by the
    planner's rules (`partition.partition_specs`), optimizer leaves as the parameters they
    mirror, step and key replicated."""
    params = partition.partition_specs(state.params, strategy, dict(mesh.shape))
    specs = state._replace(
        step=PartitionSpec(),
        params=params,
        opt_state=partition.optimizer_partition_specs(
            tx, state.opt_state, params, dict(mesh.shape)
        ),
        key=PartitionSpec(),
    )
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def batch_spec(strategy: Strategy | str) -> PartitionSpec:
    """How a batch [batch, features] is split: along ``data`` unless tensor-only/single."""
    return PartitionSpec(DATA) if Strategy.parse(strategy).shards_batch else PartitionSpec()


def batch_constraint(mesh: Mesh, strategy: Strategy | str):
    """A function pinning a gathered batch (x: [batch, features], y, w: [batch]) to the
    strategy's batch sharding inside a jitted program."""
    spec = batch_spec(strategy)
    rows = NamedSharding(mesh, spec)
    matrix = NamedSharding(mesh, PartitionSpec(*spec, None))

    def constrain(x: jax.Array, y: jax.Array, w: jax.Array) -> tuple[jax.Array, ...]:
        wsc = jax.lax.with_sharding_constraint
        return wsc(x, matrix), wsc(y, rows), wsc(w, rows)

    return constrain


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run's arrays live: the mesh, the strategy, and how batches split."""

    strategy: Strategy
    mesh: Mesh

    @property
    def data_parallel(self) -> int:
        """Devices a batch is split over (1 for single and tensor-only)."""
        return _axis(self.mesh, DATA) if self.strategy.shards_batch else 1

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def state_shardings(self, state: Any, tx: optax.GradientTransformation) -> Any:
        return state_shardings(state, tx, self.strategy, self.mesh)

    def constrain(self):
        return batch_constraint(self.mesh, self.strategy) if self.data_parallel > 1 else None

    def model_hooks(self, n_hidden: int) -> ModelHooks | None:
        """The model's layout hooks (`model.make_model(hooks=...)`), None when nothing is
        split over the batch."""
        if self.data_parallel == 1:
            return None
        return ModelHooks(self.mesh, self.strategy, n_hidden)


def make_layout(strategy: Strategy | str, mesh_shape: Mapping[str, int]) -> Layout:
    """The layout for a plan's strategy and mesh ({"data": 4}, {"data": 2, "model": 2})."""
    shape = {k: int(v) for k, v in mesh_shape.items()} or {DATA: 1}
    return Layout(Strategy.parse(strategy), make_mesh(shape))


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


def distributed_config(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> dict[str, Any] | None:
    """The multi-process settings from arguments, else JAXPIPE_COORDINATOR,
    JAXPIPE_NUM_PROCESSES and JAXPIPE_PROCESS_ID; `{}` for JAXPIPE_DISTRIBUTED=auto (JAX
    detects SLURM, Open MPI, Kubernetes); None for a single-process run."""
    coordinator = coordinator or settings.coordinator()
    try:
        if num_processes is None:
            num_processes = settings.num_processes()
        if process_id is None:
            process_id = settings.process_id()
    except ValueError as e:
        raise JaxpipeError(f"JAXPIPE_NUM_PROCESSES / JAXPIPE_PROCESS_ID: {e}") from None
    given = [x is not None for x in (coordinator, num_processes, process_id)]
    if not any(given):
        return {} if settings.distributed_auto() else None
    if not all(given):
        raise JaxpipeError(
            "a multi-process run needs all of --coordinator HOST:PORT, --num-processes N and "
            "--process-id I (or JAXPIPE_COORDINATOR, JAXPIPE_NUM_PROCESSES, JAXPIPE_PROCESS_ID)"
        )
    if not 0 <= process_id < num_processes:
        raise JaxpipeError(f"--process-id {process_id} must lie in [0, {num_processes})")
    return {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}


def initialize_distributed(
    coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Joins a multi-process run through `jax.distributed` (JAX's own engine); with no
    arguments JAX detects the cluster. Must run before any other JAX computation."""
    # CPU processes need a collectives backend to talk to each other (GPUs use NCCL).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
    )
