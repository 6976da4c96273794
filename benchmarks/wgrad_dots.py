"""What a weight gradient's dot costs on XLA:CPU beyond its FLOPs (issue 24): the evidence
for `Profile.wgrad_grid`, which `jaxpipe calibrate` measures.

    python benchmarks/wgrad_dots.py [--rounds 7]

A weight gradient dW = xᵀ·dy contracts both operands' first dimension (the batch):
`dot_general(a, b, (((0,), (0,)), ((), ())))` with a [rows, M] and b [rows, N], out [M, N].
Each such dot is timed as `jaxpipe calibrate` times it (`profiles._wgrad_seconds`, the
process clock): scanned on one core with XLA:CPU single-threaded as small steps run,
against the same product with `a` laid out transposed ([M, rows] @ [rows, N], the
matmul rate), in alternation, the median of `--rounds` (at least 5) kept. Printed: the
difference per element of `a` (rows × M), in ns (0 where the dot read no dearer).

1. N = 4 (an output layer's four classes) at widths M of 16-1024 and 16, 64, 512 rows:
   the cost grows with the width and, for wide operands, with the rows; this is the
   grid calibrate measures (at 64, 256, 512 and 1024 wide × 16, 64 and 512 rows).
2. N = M (a hidden layer into one as wide) at 128 and 512 rows: the model charges one
   operand, the leading one; here the other can add as much again at 1024 × 512.
3. The order: M = 4 against N = 1024 (the same product with the operands swapped) costs
   a small share of M = 1024 against N = 4 — why the model follows XLA's operand order
   (float32 steps read x first, bfloat16 steps dy first: `timing._wgrad_reads`).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def extra_ns(rows: int, m: int, n: int, rounds: int) -> float:
    """ns per element of a ([rows, m]) the batch-contracting dot takes beyond the
    plain-layout product: `jaxpipe calibrate`'s own measurement
    (`profiles._wgrad_seconds`) at `n` columns."""
    from jaxpipe.planner import profiles

    return profiles._wgrad_seconds(m, rows, rounds, columns=n) * 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    os.environ["JAX_PLATFORMS"] = "cpu"
    from jaxpipe.planner import profiles

    profiles.use_clock("cpu")
    widths = (16, 32, 64, 128, 256, 512, 1024)
    print("1. against 4 columns, ns per element of the leading operand, by width:")
    print("   rows " + " ".join(f"{w:>6}" for w in widths))
    for rows in (16, 64, 512):
        cells = " ".join(f"{extra_ns(rows, w, 4, a.rounds):6.2f}" for w in widths)
        print(f"   {rows:4} {cells}", flush=True)
    print("2. against as many columns as rows of the output (M = N):")
    for rows in (128, 512):
        cells = " ".join(f"{extra_ns(rows, w, w, a.rounds):6.2f}" for w in widths[1:])
        print(f"   {rows:4} {cells}   (widths {', '.join(map(str, widths[1:]))})", flush=True)
    print("3. the order, 512 rows: ns per element of the wider operand")
    wide_first = extra_ns(512, 1024, 4, a.rounds)
    narrow_first = extra_ns(512, 4, 1024, a.rounds) * 4 / 1024
    print(f"   [1024, 4] out (wide first): {wide_first:.2f}; [4, 1024] out: {narrow_first:.2f}")


if __name__ == "__main__":
    main()
