"""What FSDP's program keeps, as XLA compiles it (`fsdp.ModelHooks`: each Dense kernel
gathered inside a shard_map with a custom backward pass), measured from XLA:CPU's own
compiled epochs (`benchmarks/plan_residuals.py --fsdp`, jax 0.10.2): the per-layer
residual units of `residuals.py`, and the whole-layer buffers at each layer.

The per-layer units differ from the one-device program's: the custom backward pass saves
only the layer's input and its kernel shard, so at the layer it differentiates XLA holds
one buffer fewer for most activations (LayerNorm keeps one fewer per layer below too);
under a one-wide output (regression) the last hidden layer holds one more, as the fused
outer product of the one-device program is not there.
"""

from __future__ import annotations

__all__ = ["FSDP_TABLE", "gathered_bytes"]

# (activation, dropout > 0, layer_norm, precision): (kept, held, held_narrow), in float32
# [batch, width] units of the layer's per-device buffer, rounded to half a buffer.
FSDP_TABLE: dict[tuple[str, bool, bool, str], tuple[float, float, float]] = {
    ("relu", False, False, "float32"): (2.0, 2.0, 3.0),
    ("relu", False, False, "bfloat16"): (1.5, 2.0, 3.0),
    ("relu", False, True, "float32"): (5.0, 5.0, 6.0),
    ("relu", False, True, "bfloat16"): (5.0, 6.0, 6.5),
    ("relu", True, False, "float32"): (3.5, 7.0, 7.0),
    ("relu", True, False, "bfloat16"): (3.0, 6.5, 7.0),
    ("relu", True, True, "float32"): (6.5, 10.0, 10.0),
    ("relu", True, True, "bfloat16"): (7.0, 9.5, 10.5),
    ("gelu", False, False, "float32"): (3.0, 3.0, 4.0),
    ("gelu", False, False, "bfloat16"): (3.0, 3.5, 4.5),
    ("gelu", False, True, "float32"): (6.0, 6.0, 7.0),
    ("gelu", False, True, "bfloat16"): (6.5, 7.0, 8.0),
    ("gelu", True, False, "float32"): (4.5, 8.0, 8.0),
    ("gelu", True, False, "bfloat16"): (4.5, 8.0, 8.5),
    ("gelu", True, True, "float32"): (7.5, 11.0, 11.0),
    ("gelu", True, True, "bfloat16"): (8.5, 11.0, 12.0),
    ("silu", False, False, "float32"): (3.0, 3.0, 4.0),
    ("silu", False, False, "bfloat16"): (2.0, 2.5, 3.5),
    ("silu", False, True, "float32"): (6.0, 6.0, 7.0),
    ("silu", False, True, "bfloat16"): (5.5, 6.0, 7.0),
    ("silu", True, False, "float32"): (4.5, 8.0, 8.0),
    ("silu", True, False, "bfloat16"): (3.5, 7.0, 7.5),
    ("silu", True, True, "float32"): (7.5, 11.0, 11.0),
    ("silu", True, True, "bfloat16"): (7.5, 10.0, 11.0),
    ("tanh", False, False, "float32"): (1.0, 2.0, 2.0),
    ("tanh", False, False, "bfloat16"): (1.5, 1.5, 2.5),
    ("tanh", False, True, "float32"): (5.0, 6.0, 6.0),
    ("tanh", False, True, "bfloat16"): (5.0, 6.0, 6.0),
    ("tanh", True, False, "float32"): (3.5, 7.0, 7.0),
    ("tanh", True, False, "bfloat16"): (3.0, 6.5, 7.0),
    ("tanh", True, True, "float32"): (7.5, 11.0, 11.0),
    ("tanh", True, True, "bfloat16"): (7.0, 9.5, 10.5),
    ("sigmoid", False, False, "float32"): (1.0, 2.0, 2.0),
    ("sigmoid", False, False, "bfloat16"): (1.5, 1.5, 2.5),
    ("sigmoid", False, True, "float32"): (5.0, 6.0, 6.0),
    ("sigmoid", False, True, "bfloat16"): (5.0, 6.0, 6.0),
    ("sigmoid", True, False, "float32"): (3.5, 7.0, 7.0),
    ("sigmoid", True, False, "bfloat16"): (3.0, 6.5, 7.0),
    ("sigmoid", True, True, "float32"): (7.5, 11.0, 11.0),
    ("sigmoid", True, True, "bfloat16"): (7.0, 9.5, 10.5),
    ("elu", False, False, "float32"): (3.0, 3.0, 4.0),
    ("elu", False, False, "bfloat16"): (2.0, 2.5, 3.5),
    ("elu", False, True, "float32"): (6.0, 6.0, 7.0),
    ("elu", False, True, "bfloat16"): (5.5, 6.0, 7.0),
    ("elu", True, False, "float32"): (4.5, 8.0, 8.0),
    ("elu", True, False, "bfloat16"): (3.5, 7.0, 7.5),
    ("elu", True, True, "float32"): (7.5, 11.0, 11.0),
    ("elu", True, True, "bfloat16"): (7.5, 10.0, 11.0),
    ("leaky_relu", False, False, "float32"): (2.0, 2.0, 3.0),
    ("leaky_relu", False, False, "bfloat16"): (1.5, 2.0, 3.0),
    ("leaky_relu", False, True, "float32"): (5.0, 5.0, 6.0),
    ("leaky_relu", False, True, "bfloat16"): (5.0, 6.0, 6.5),
    ("leaky_relu", True, False, "float32"): (3.5, 7.0, 7.0),
    ("leaky_relu", True, False, "bfloat16"): (3.0, 6.5, 7.0),
    ("leaky_relu", True, True, "float32"): (6.5, 10.0, 10.0),
    ("leaky_relu", True, True, "bfloat16"): (7.0, 9.5, 10.5),
    ("softplus", False, False, "float32"): (2.0, 3.0, 3.0),
    ("softplus", False, False, "bfloat16"): (2.0, 2.0, 3.0),
    ("softplus", False, True, "float32"): (5.0, 6.0, 6.0),
    ("softplus", False, True, "bfloat16"): (5.5, 5.5, 6.5),
    ("softplus", True, False, "float32"): (4.5, 8.0, 8.0),
    ("softplus", True, False, "bfloat16"): (3.5, 7.0, 7.5),
    ("softplus", True, True, "float32"): (7.5, 11.0, 11.0),
    ("softplus", True, True, "bfloat16"): (7.5, 10.0, 11.0),
}


def gathered_bytes(layer_bytes: int, two_d: bool, itemsize: int) -> int:
    """FSDP's whole-layer buffers while one layer is differentiated, for its
    `layer_bytes` (float32, whole over ``data``, its ``model`` shard): its gathered kernel
    and its gradient before the reduce-scatter, in the compute dtype (`itemsize` bytes an
    element) under fsdp, in float32 under fsdp+tensor's two-axis shard_map (XLA:CPU
    computes the bfloat16 products there in float32). XLA sometimes holds a third, or
    part of the next layer's (adjacent wide layers): what keeps this closed form from
    being held within 10 % (search.UNVERIFIED)."""
    if two_d:
        return 2 * layer_bytes
    return 2 * layer_bytes * itemsize // 4
