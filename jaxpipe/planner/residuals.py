"""What the backward pass keeps per hidden layer, as XLA compiles jaxpipe's epoch: a
table measured from XLA:CPU's own compiled programs (`benchmarks/plan_residuals.py`,
jax 0.10.2), in units of one float32 [batch, width] buffer of the layer.

Per (activation, dropout on, layer_norm, precision): (kept, held, held_narrow).
`kept`: bytes the backward pass still holds for each layer below the one it is
differentiating (saved pre-activations, outputs, dropout masks, LayerNorm statistics and
normalised outputs; what XLA keeps depends on which of them the activation's derivative
reads: tanh and sigmoid read only their output, gelu, silu and elu both sides). `held`:
what it holds at that layer (the saved buffers plus the incoming and outgoing gradient);
`held_narrow` the same for the last hidden layer under a one-wide output (regression),
where XLA fuses the incoming gradient's outer product into the activation's backward.

Precision is a key of its own, not a factor: XLA:CPU computes bfloat16 elementwise work
in float32 and keeps both copies of some buffers, so bfloat16 often keeps as much as
float32 or more (`options.bf16_note` says so in the plan).
"""

from __future__ import annotations

__all__ = ["residual_units", "backward_peak", "DEFAULT", "TABLE", "SMALL_BYTES"]

# The pre-table closed form (a relu-like float32 layer): what a key missing from the
# table falls back to.
DEFAULT = (2.0, 3.0, 2.0)

# (activation, dropout > 0, layer_norm, precision): (kept, held, held_narrow), the
# fitted values rounded to half a buffer (XLA allocates whole float32 or bfloat16 ones).
TABLE: dict[tuple[str, bool, bool, str], tuple[float, float, float]] = {
    ("relu", False, False, "float32"): (2.0, 3.0, 2.0),
    ("relu", False, False, "bfloat16"): (1.5, 2.5, 2.5),
    ("relu", False, True, "float32"): (6.0, 7.0, 7.0),
    ("relu", False, True, "bfloat16"): (6.0, 7.0, 7.5),
    ("relu", True, False, "float32"): (4.0, 7.0, 7.0),
    ("relu", True, False, "bfloat16"): (3.5, 6.5, 6.5),
    ("relu", True, True, "float32"): (8.0, 11.0, 11.0),
    ("relu", True, True, "bfloat16"): (8.0, 11.0, 11.0),
    ("gelu", False, False, "float32"): (3.0, 4.0, 3.0),
    ("gelu", False, False, "bfloat16"): (3.0, 4.0, 4.0),
    ("gelu", False, True, "float32"): (7.0, 8.0, 7.0),
    ("gelu", False, True, "bfloat16"): (7.5, 8.5, 8.5),
    ("gelu", True, False, "float32"): (5.0, 8.0, 8.0),
    ("gelu", True, False, "bfloat16"): (5.0, 8.0, 8.0),
    ("gelu", True, True, "float32"): (9.0, 12.0, 12.0),
    ("gelu", True, True, "bfloat16"): (9.5, 12.5, 12.5),
    ("silu", False, False, "float32"): (3.0, 4.0, 3.0),
    ("silu", False, False, "bfloat16"): (2.0, 3.0, 3.0),
    ("silu", False, True, "float32"): (7.0, 8.0, 7.0),
    ("silu", False, True, "bfloat16"): (6.5, 7.5, 7.5),
    ("silu", True, False, "float32"): (5.0, 8.0, 8.0),
    ("silu", True, False, "bfloat16"): (4.0, 7.0, 7.0),
    ("silu", True, True, "float32"): (9.0, 12.0, 12.0),
    ("silu", True, True, "bfloat16"): (8.5, 11.5, 11.5),
    ("tanh", False, False, "float32"): (1.0, 2.0, 2.0),
    ("tanh", False, False, "bfloat16"): (1.5, 2.5, 2.5),
    ("tanh", False, True, "float32"): (6.0, 7.0, 7.0),
    ("tanh", False, True, "bfloat16"): (6.0, 7.0, 7.5),
    ("tanh", True, False, "float32"): (4.0, 7.0, 7.0),
    ("tanh", True, False, "bfloat16"): (3.5, 6.5, 6.5),
    ("tanh", True, True, "float32"): (9.0, 12.0, 12.0),
    ("tanh", True, True, "bfloat16"): (8.0, 11.0, 11.0),
    ("sigmoid", False, False, "float32"): (1.0, 2.0, 2.0),
    ("sigmoid", False, False, "bfloat16"): (1.5, 2.5, 2.5),
    ("sigmoid", False, True, "float32"): (6.0, 7.0, 7.0),
    ("sigmoid", False, True, "bfloat16"): (6.0, 7.0, 7.5),
    ("sigmoid", True, False, "float32"): (4.0, 7.0, 7.0),
    ("sigmoid", True, False, "bfloat16"): (3.5, 6.5, 6.5),
    ("sigmoid", True, True, "float32"): (9.0, 12.0, 12.0),
    ("sigmoid", True, True, "bfloat16"): (8.0, 11.0, 11.0),
    ("elu", False, False, "float32"): (3.0, 4.0, 3.0),
    ("elu", False, False, "bfloat16"): (2.0, 3.0, 3.0),
    ("elu", False, True, "float32"): (7.0, 8.0, 7.0),
    ("elu", False, True, "bfloat16"): (6.5, 7.5, 7.5),
    ("elu", True, False, "float32"): (5.0, 8.0, 8.0),
    ("elu", True, False, "bfloat16"): (4.0, 7.0, 7.0),
    ("elu", True, True, "float32"): (9.0, 12.0, 12.0),
    ("elu", True, True, "bfloat16"): (8.5, 11.5, 11.5),
    ("leaky_relu", False, False, "float32"): (2.0, 3.0, 2.0),
    ("leaky_relu", False, False, "bfloat16"): (1.5, 2.5, 2.5),
    ("leaky_relu", False, True, "float32"): (6.0, 7.0, 7.0),
    ("leaky_relu", False, True, "bfloat16"): (6.0, 7.0, 7.5),
    ("leaky_relu", True, False, "float32"): (4.0, 7.0, 7.0),
    ("leaky_relu", True, False, "bfloat16"): (3.5, 6.5, 6.5),
    ("leaky_relu", True, True, "float32"): (8.0, 11.0, 11.0),
    ("leaky_relu", True, True, "bfloat16"): (8.0, 11.0, 11.0),
    ("softplus", False, False, "float32"): (2.0, 3.0, 2.0),
    ("softplus", False, False, "bfloat16"): (2.0, 3.0, 3.0),
    ("softplus", False, True, "float32"): (6.0, 7.0, 7.0),
    ("softplus", False, True, "bfloat16"): (6.5, 7.5, 7.5),
    ("softplus", True, False, "float32"): (5.0, 8.0, 8.0),
    ("softplus", True, False, "bfloat16"): (4.0, 7.0, 7.0),
    ("softplus", True, True, "float32"): (9.0, 12.0, 12.0),
    ("softplus", True, True, "bfloat16"): (8.5, 11.5, 11.5),
}


def residual_units(
    activation: str,
    dropout: bool,
    layer_norm: bool,
    precision: str,
    table: dict | None = None,
) -> tuple[float, float, float]:
    """(kept, held, held_narrow) for a hidden layer, in float32 [batch, width] units."""
    found = (TABLE if table is None else table).get((activation, dropout, layer_norm, precision))
    return found or DEFAULT


# XLA:CPU materialises LayerNorm's broadcast row statistics (mean and inverse standard
# deviation, two float32 [batch, width] buffers) only for buffers of this size or more;
# below it they are fused into their users (measured, jax 0.10.2: relu, gelu and tanh
# with and without dropout, relu in bfloat16, on one device and under data+tensor).
SMALL_BYTES = 16 * 1024


def backward_peak(
    acts: list[int],
    grads: list[int],
    units: tuple[float, float, float],
    narrow: bool = False,
    update: int = 0,
    during: int = 0,
    small: float = 0.0,
    hoisted: float = 0.0,
    gathered: list[int] | None = None,
) -> int:
    """Bytes live at the backward pass's peak: activations and the gradients so far.

    acts[l]: one float32 [batch, width] buffer of layer l (the output layer last);
    grads[l]: its weight gradient; units: `residuals.residual_units` (kept, held,
    held_narrow). At layer l the backward pass holds `kept` buffers for each layer below,
    then either `held` of layer l's buffers or, while its weight gradient is written,
    `_writing`'s, and every gradient of the layers above it. After the last layer all
    gradients are held at once, with the optimizer update's `update` bytes of
    temporaries. With a one-wide output (`narrow`) the last hidden layer holds
    `held_narrow`. `during`: bytes live through the forward and backward passes but freed
    before the update (bfloat16 copies of the weights). The output layer itself holds
    three (logits, their gradient, the outgoing gradient). `small`: units a hidden layer
    whose buffer is under `SMALL_BYTES` keeps and holds fewer (LayerNorm's statistics).
    `hoisted`: units per hidden layer live through the whole step, above the layer being
    differentiated and through the update too (dropout's random-bit counters: two uint32
    [batch, width] per layer, loop-invariant, so XLA computes them once per epoch).
    `gathered[l]`: bytes live only while layer l is differentiated (FSDP's gathered
    kernel and its whole gradient, fsdpunits.py).
    """
    kept, held, held_narrow = units
    last = len(acts) - 1
    # Hoisted buffers of the hidden layers not yet differentiated (the table's units
    # count those of the layers below and of the layer itself).
    later = hoisted * sum(acts[:last])
    peaks = [sum(grads) + update + int(later)]
    below, above = 0.0, sum(grads)  # running sums: O(layers), not O(layers²)
    for i, a in enumerate(acts):
        above -= grads[i]
        later -= hoisted * a if i != last else 0.0
        h = 3.0 if i == last else held_narrow if narrow and i == last - 1 else held
        fewer = small if i != last and a < SMALL_BYTES else 0.0
        here = max((h - fewer) * a, _writing(acts, i, h, grads[i]))
        at = gathered[i] if gathered else 0  # FSDP: layer i's whole-layer buffers
        peaks.append(int(below + here + later) + above + during + at)
        below += (kept - fewer) * a
    return max(peaks)


def _writing(acts: list[int], i: int, h: float, grad: int) -> int:
    """Bytes of layer `i` live while its weight gradient is written. A hidden layer has
    freed its saved buffers by then: XLA keeps only the gradient at its pre-activation and
    the outgoing gradient (a buffer of the layer below; none for the first layer). At a
    small per-device batch the weight gradient outweighs the saved buffers, and counting
    them here put data parallel's estimate +20 % over XLA's figure. The output layer
    holds its logits' gradient and one more of its own."""
    if i == len(acts) - 1:
        return int((h - 1) * acts[i]) + grad
    return acts[i] + (acts[i - 1] if i else 0) + grad
