"""Which stage of a run sets its device peak (issue 12): runs one spec in this process
and, as each stage and epoch ends, prints the device's `bytes_in_use` and
`peak_bytes_in_use` (memory_stats; GPU/TPU only) beside the live arrays' bytes on the
first device, then the plan's per-device figure and the run's recorded peak.

On the H100 (benchmarks/RESULTS.md) the peak of small-state runs exceeded XLA's figure
by about the data set; this says whether that is the transfer, the preprocessing, the
compile or the training epochs. One JSON line per point.

    python benchmarks/gpu_stage_peaks.py [SPEC] [--set key=value ...] [--epochs 2]

Without SPEC: calibration config #23 (3 × 64 adam, 2000 features, 20000 rows, batch 32).
Run with XLA_PYTHON_CLIENT_PREALLOCATE=false so the counters see the run's own bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

DEFAULT = """
[experiment]
name = "stage-peaks"
[data]
source = "synthetic"
validation = 0.1
[data.synthetic]
rows = 20000
features = 2000
classes = 10
[model]
hidden = [64, 64, 64]
[optimizer]
name = "adam"
[training]
epochs = 2
batch_size = 32
"""


def _live(device) -> int:
    seen, total = set(), 0
    for a in __import__("jax").live_arrays():
        if a.is_deleted() or (a.sharding.memory_kind or "device") != "device":
            continue
        for s in a.addressable_shards:
            ptr = s.data.unsafe_buffer_pointer()
            if s.device == device and ptr not in seen:
                seen.add(ptr)
                total += s.data.nbytes
    return total


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", nargs="?")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    import jax

    import jaxpipe

    path = args.spec
    if path is None:
        path = os.path.join(tempfile.mkdtemp(), "spec.toml")
        with open(path, "w") as f:
            f.write(DEFAULT)
    spec = jaxpipe.load_spec(path, [f"training.epochs={args.epochs}", *args.set])
    device = jax.devices()[0]
    mib = 2**20

    def point(what: str) -> None:
        stats = device.memory_stats() or {}
        row = {"at": what, "live_mib": round(_live(device) / mib, 2)}
        for k in ("bytes_in_use", "peak_bytes_in_use"):
            if k in stats:
                row[k.replace("bytes", "mib")] = round(stats[k] / mib, 2)
        print(json.dumps(row), flush=True)

    class Watch:
        def on_plan(self, plan):
            b = {k: round(v / mib, 2) for k, v in plan.breakdown.items()}
            print(json.dumps({"plan_mib": round(plan.per_device_bytes / mib, 2), "breakdown": b}))

        def on_stage(self, stage):
            point(f"stage {stage.name}")

        def on_epoch(self, row, epochs):
            point(f"epoch {row['epoch']}")

    point("start")
    with tempfile.TemporaryDirectory() as out:
        result = jaxpipe.run(spec, out=os.path.join(out, "run"), callbacks=[Watch()], verbose=False)
    plan = result.summary["plan"]
    keys = ("per_device_bytes", "measured_peak_bytes", "donated")
    print(json.dumps({"summary": {k: plan.get(k) for k in keys}, "device": device.device_kind}))


if __name__ == "__main__":
    main()
