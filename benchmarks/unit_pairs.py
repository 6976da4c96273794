"""What the gather and a bfloat16 step's casts cost, read from pairs of the run's own
epochs (issue 24): the evidence for `jaxpipe calibrate`'s unit epochs.

    python benchmarks/unit_pairs.py [--rounds 9]

1. The gather: each configuration at 4 and at 512 features; their difference per extra
   element (rows × 508) and the same less the first layer's extra matmuls at the
   profile's large-matmul rate. Across batches and widths: what grows with the batch is
   the gather (`Profile.gather_curve`), what grows with the width the matmul.
2. The casts: each configuration in float32 and in bfloat16; their difference per hidden
   activation element (rows × Σ hidden), and per element the model counts cast (each
   weight once a step, each hidden activation three times: timing.py) — the latter
   against the activation's size is `Profile.convert_curve`.

One core, the process clock, XLA:CPU single-threaded (as `time_error.py` measures), the
epochs timed in turns (`profiles.time_epochs`, their median). Prints two tables.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# (hidden, batch, rows) each at 4 and at 512 features, float32, sgd.
GATHER = (
    ((4,), 16, 8192),
    ((4,), 64, 8192),
    ((4,), 256, 8192),
    ((4,), 256, 2048),
    ((32,), 16, 4096),
    ((32, 32), 16, 4096),
    ((64,), 256, 8192),
    ((256,), 64, 4096),
)
# (hidden, batch, features, rows, optimizer) each in float32 and bfloat16.
CASTS = (
    ((256,), 16, 16, 8192, "sgd"),
    ((256,), 64, 16, 8192, "sgd"),
    ((64,), 16, 64, 4096, "sgd"),
    ((64,), 512, 16, 8192, "sgd"),
    ((256,), 512, 16, 8192, "sgd"),
    ((512,), 512, 16, 2048, "sgd"),
    ((512,), 512, 16, 2048, "adam"),
    ((512,), 128, 64, 8192, "sgd"),
    ((256, 256), 256, 16, 4096, "sgd"),
    ((1024,), 64, 16, 4096, "sgd"),
    ((128, 128), 16, 16, 4096, "sgd"),
)
RATE = 98e9  # FLOP/s: this machine's single-threaded large matmuls (`jaxpipe calibrate`)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    a = p.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["JAXPIPE_CPU_THREADING"] = "single"
    from jaxpipe.planner import profiles
    from jaxpipe.planner.profiles import Config

    profiles.use_clock("cpu")
    cfgs = []
    for hidden, batch, rows in GATHER:
        cfgs += [Config(hidden, batch, f, rows, "float32", "sgd") for f in (4, 512)]
    for hidden, batch, features, rows, opt in CASTS:
        cfgs += [Config(hidden, batch, features, rows, p, opt) for p in ("float32", "bfloat16")]
    timed = iter(profiles.time_epochs(cfgs, a.rounds))
    print("the gather: 4 against 512 features (float32, sgd), ns per extra element")
    for hidden, batch, rows in GATHER:
        narrow, wide = next(timed).seconds, next(timed).seconds
        elements = rows * 508
        matmul = 2 * 2 * elements * hidden[0] / RATE  # forward and weight gradient
        print(
            f"  {str(list(hidden)):10} batch {batch:4} rows {rows:5}: {narrow * 1e3:7.2f} → "
            f"{wide * 1e3:7.2f} ms, {(wide - narrow) / elements * 1e9:5.2f} ns, less the "
            f"matmul {(wide - narrow - matmul) / elements * 1e9:5.2f} ns"
        )
    print("a bfloat16 step's casts: bfloat16 against float32")
    for hidden, batch, features, rows, opt in CASTS:
        f32, bf16 = next(timed).seconds, next(timed).seconds
        steps = rows // batch
        widths = (features, *hidden, 4)
        weights = sum(a * b for a, b in zip(widths, widths[1:]))
        cast = steps * (weights + 3 * batch * sum(hidden))
        extra = bf16 - f32
        print(
            f"  {str(list(hidden)):12} batch {batch:4} features {features:3} {opt:4}: "
            f"{f32 * 1e3:7.2f} → {bf16 * 1e3:7.2f} ms, "
            f"{extra / (steps * batch * sum(hidden)) * 1e9:5.2f} ns an activation, "
            f"{extra / cast * 1e9:5.2f} ns an element cast"
        )


if __name__ == "__main__":
    main()
