"""The H100's measured time profile for the catalog (issue 24), from the epochs the card
ran in benchmarks/gpu/epochs_h100.jsonl (issue 14: the seed and large workloads at
batches 64 … 16384, seconds per scanned step).

    python benchmarks/gpu_profile.py [benchmarks/gpu/epochs_h100.jsonl]

Per record, the time model's terms (planner/timing.py) for that configuration: the
step's kernels (counted in XLA:CPU's compile of the same step: a proxy for the GPU's,
whose fusions differ), its matmul FLOPs and its bytes moved. Non-negative least squares
on relative error gives the seconds per kernel, the achieved float32 matmul rate and the
achieved memory bandwidth that reproduce the measured steps; it prints them, the fit's
error per record, and the catalog lines (kernel_us, achieved_fp32_tflops,
achieved_bandwidth_gbs). Runs on CPU in ~20 s.
"""

from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from scipy.optimize import nnls  # noqa: E402

import jaxpipe  # noqa: E402
from jaxpipe.planner import profiles  # noqa: E402


def _config(record: dict) -> profiles.Config:
    spec = jaxpipe.load_spec(os.path.join(ROOT, record["spec"]))
    syn = spec.data.synthetic
    rows = syn.rows - spec.data.validation
    return profiles.Config(
        spec.model.hidden,
        record["batch"],
        syn.features,
        rows,
        spec.training.precision,
        spec.optimizer.name,
    )


def main() -> None:
    path = (
        sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "benchmarks/gpu/epochs_h100.jsonl")
    )
    records = [json.loads(line) for line in open(path)]
    rows, seconds, names = [], [], []
    ops_of: dict = {}
    for r in records:
        cfg = _config(r)
        if cfg not in ops_of:  # the step's kernels as XLA:CPU compiles it (a proxy)
            small = profiles.Config(cfg.hidden, cfg.batch, cfg.features, 4 * cfg.batch, *cfg[4:])
            ops_of[cfg] = profiles.time_epoch(small, reps=1).ops
        work, _ = profiles.config_work(cfg, ops_of[cfg])
        step = r["jaxpipe_step_us"] * 1e-6
        rows.append([work.ops / step, work.flops / step, work.moved_bytes / step])
        seconds.append(step)
        names.append(f"{os.path.basename(r['spec'])} batch {cfg.batch}")
    coef, _ = nnls(np.array(rows), np.ones(len(rows)))
    kernel_s, per_flop, per_byte = coef
    print(f"{len(rows)} records of {records[0]['device']}")
    for name, row, step in zip(names, rows, seconds):
        pred = float(np.dot(row, coef)) * step
        print(
            f"  {name:28} measured {step * 1e6:7.1f} µs  model {pred * 1e6:7.1f} µs  "
            f"{pred / step - 1:+.0%}"
        )
    print("\ncatalog lines:")
    print(f"kernel_us = {kernel_s * 1e6:.3g}")
    if per_flop:
        print(f"achieved_fp32_tflops = {1 / per_flop / 1e12:.3g}")
    if per_byte:
        print(f"achieved_bandwidth_gbs = {1 / per_byte / 1e9:.3g}")


if __name__ == "__main__":
    main()
