"""FSDP inside the model: each Dense matmul gathers its kernel over ``data`` just before
use and reduce-scatters its gradient (`ModelHooks`, passed to
`core.model.make_model(hooks=...)`). Under fsdp+tensor the matmul is one shard_map manual
over both axes, the Megatron sums explicit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxpipe.parallel import partition
from jaxpipe.spec.strategy import Strategy

__all__ = ["ModelHooks"]


@dataclasses.dataclass(frozen=True)
class ModelHooks:
    """What makes XLA compile the layout the planner estimates.

    Every activation keeps its batch dim split over ``data``: without that pin the SPMD
    partitioner may all-gather the batch instead of the (smaller) weights. Under fsdp
    each Dense kernel is all-gathered, in the compute dtype, just before its matmul and
    inside `jax.checkpoint`, so the gathered copy is freed after the forward use and
    gathered again for the backward pass (ZeRO-3); its gradient leaves the checkpoint
    through the gather's transpose, a reduce-scatter.
    """

    mesh: Mesh
    strategy: Strategy
    n_hidden: int

    def activations(self, x: jax.Array) -> jax.Array:
        spec = PartitionSpec("data", *[PartitionSpec.UNCONSTRAINED] * (x.ndim - 1))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def dense(self, name: str) -> dict[str, Any]:
        if not self.strategy.shards_params:
            return {}
        return {"dot_general": self._dot(name)}

    def _dot(self, name: str) -> Callable[..., jax.Array]:
        """x @ kernel inside a shard_map: the kernel all-gathered along ``data`` (see
        `_gathered_dot`). Under fsdp+tensor the shard_map is manual over both axes (a
        partial-manual one CHECK-failed in XLA:CPU, jax 0.10.2, with bfloat16 beside an
        auto ``model`` axis), so the Megatron split is explicit too: a column-parallel
        kernel [in, out/M] takes x whole over ``model`` and gives out/M columns; a
        row-parallel one [in/M, out] takes in/M columns and sums its partial product
        over ``model``."""

        def dot_general(x: jax.Array, k: jax.Array, dims: Any, **kw: Any) -> jax.Array:
            spec = tuple(
                partition.leaf_spec(
                    name, "kernel", k.shape, self.n_hidden, self.strategy, self.mesh.shape
                )
            )
            two_d = self.strategy.two_axes
            if (
                ("data" not in spec and not two_d)
                or x.ndim != 2
                or x.shape[0] % self.mesh.shape["data"]
            ):
                # init's one-row example; the epoch's batches are padded to divide.
                return jax.lax.dot_general(x, k, dims, **kw)
            dim = spec.index("data") if "data" in spec else None
            row, column = spec[0] == "model", spec[1] == "model"
            fn = _gathered_dot(dim, kw.get("precision"), row, column)
            return jax.shard_map(
                fn,
                mesh=self.mesh,
                in_specs=(PartitionSpec("data", "model" if row else None), PartitionSpec(*spec)),
                out_specs=PartitionSpec("data", "model" if column else None),
                axis_names=set(self.mesh.axis_names),
            )(x, k)

        return dot_general


def _gathered_dot(
    dim: int | None, precision: Any, row: bool = False, column: bool = False
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """ZeRO-3's matmul on one device's rows x: [b, in] and kernel shard k, gathered along
    `dim` over ``data`` (None: the kernel is not split over ``data``). The gathered
    kernel is not kept for the backward pass: it is gathered again there, after the
    incoming gradient exists (tied to it, or XLA would merge the two gathers and hold
    every layer's whole kernel from the forward pass on), and the kernel's gradient
    leaves as a reduce-scatter, so it is never whole for long. `row`: a row-parallel
    kernel (its partial product is summed over ``model``); `column`: a column-parallel
    one (the input's gradient is summed over ``model``)."""

    def gather(k: jax.Array, after: jax.Array) -> jax.Array:
        # k + 0 × (an element of `after`): XLA does not fold a float multiply by zero
        # (NaN), so the gather cannot be scheduled before `after` exists, and the
        # backward pass's gather is not merged with the forward pass's.
        if dim is None:
            return k
        k = k + (after[0, 0] * 0).astype(k.dtype)
        return jax.lax.all_gather(k, "data", axis=dim, tiled=True)

    @jax.custom_vjp
    def dot(x: jax.Array, k: jax.Array) -> jax.Array:
        y = jnp.dot(x, gather(k, x), precision=precision)
        return jax.lax.psum(y, "model") if row else y

    def forward(x: jax.Array, k: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        return dot(x, k), (x, k)

    def backward(res: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
        x, k = res
        w = gather(k, dy)
        dx = jnp.dot(dy, w.T, precision=precision).astype(x.dtype)
        dw = jnp.dot(x.T, dy, precision=precision).astype(k.dtype)
        if column:
            dx = jax.lax.psum(dx, "model")
        if dim is None:
            return dx, jax.lax.psum(dw, "data")
        return dx, jax.lax.psum_scatter(dw, "data", scatter_dimension=dim, tiled=True)

    dot.defvjp(forward, backward)
    return dot
