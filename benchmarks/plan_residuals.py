"""Fits the planner's per-layer residual table (jaxpipe/planner/residuals.py) from XLA:CPU's own
compiled epochs: for every (activation, dropout, LayerNorm, precision), an MLP of equal
256-wide hidden layers at batch 4096 (activations dwarf the weights) is compiled at depth 1
and 3, for classification and regression, and the bytes beyond the exactly known state
(params, gradients, optimizer, data) are read in units of one float32 [batch, width]
buffer. The slope over depth is what the backward pass keeps per layer below it (`kept`);
the depth-1 figure, less what the closed form puts outside the hidden layers, is what it
holds at the layer it is differentiating (`held`).

    python benchmarks/plan_residuals.py > /tmp/table.py   # then paste into residuals.py

`--fsdp`: the same under fsdp over 2 devices (the same batch per device), for
jaxpipe/planner/fsdpunits.py: FSDP's per-layer program (`fsdp.ModelHooks`) keeps less.
"""

from __future__ import annotations

import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WIDTH, BATCH = 256, 4096
UNIT = WIDTH * BATCH * 4


LAYOUT = ("single", {"data": 1})


def _spec(act, dropout, ln, precision, task, depth):
    from jaxpipe.spec.experiment import parse_spec

    return parse_spec(f"""
[data]
source = "synthetic"
validation = 64
[data.synthetic]
rows = {2 * BATCH * LAYOUT[1]["data"]}
features = 8
classes = 2
[model]
task = "{task}"
hidden = {[WIDTH] * depth}
activation = "{act}"
dropout = {dropout}
layer_norm = {str(ln).lower()}
[optimizer]
name = "sgd"
[training]
batch_size = {BATCH * LAYOUT[1]["data"]}
precision = "{precision}"
""")


def _units(spec) -> tuple[float, float]:
    """(XLA's dynamic bytes, the default closed form's), in units."""
    from jaxpipe.data.shapes import data_shapes
    from jaxpipe.planner import memory, verify
    from jaxpipe.planner.state import abstract_state
    from jaxpipe.planner.values import Workload

    shapes = data_shapes(spec)
    ab = abstract_state(Workload.of(spec), shapes)
    compiled = verify.compile_layout(Workload.of(spec), shapes, ab, *LAYOUT)
    x = verify.xla_figures(compiled, shapes)
    est = memory.estimate(spec.model, spec.training, shapes, ab, *LAYOUT, table={})
    b = est.breakdown
    fixed = 2 * b["params"] + b["optimizer"] + b["data"]
    return (x["total_with_validation"] - fixed) / UNIT, (est.total - fixed) / UNIT


def main() -> None:
    global LAYOUT
    if "--fsdp" in sys.argv[1:]:
        LAYOUT = ("fsdp", {"data": 2})
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=2".strip()
    from jaxpipe.core.model import ACTIVATION_FNS

    print("TABLE = {")
    for act, do, ln, prec in itertools.product(
        ACTIVATION_FNS, [0.0, 0.2], [False, True], ["float32", "bfloat16"]
    ):
        # The default entry (2, 3, 2) puts 3 (2 for regression) units at depth 1 and
        # 2 per further layer: the rest of its figure is outside the hidden layers.
        one, est_one = _units(_spec(act, do, ln, prec, "classification", 1))
        three, _ = _units(_spec(act, do, ln, prec, "classification", 3))
        reg, est_reg = _units(_spec(act, do, ln, prec, "regression", 1))
        kept = (three - one) / 2
        held, held_reg = one - (est_one - 3), reg - (est_reg - 2)
        key = (act, do > 0, ln, prec)
        print(f"    {key!r}: ({kept:.2f}, {held:.2f}, {held_reg:.2f}),", flush=True)
    print("}")


if __name__ == "__main__":
    main()
