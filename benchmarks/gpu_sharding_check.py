"""Issue 5's GPU check: the seed experiment and a large MLP under `single` and `data`
(on one GPU, `data` is a 1-device data mesh: it measures the sharded code path's cost,
not a speed-up). Prints one JSON line per run and a table.

    PYTHONPATH=. python benchmarks/gpu_sharding_check.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jaxpipe  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    args = p.parse_args()
    large_rows = 20000 if args.quick else 200000
    large_hidden = "[256, 256]" if args.quick else "[4096, 4096]"
    workloads = {
        "seed": ["training.epochs=5"],
        "large-mlp": [
            f"data.synthetic.rows={large_rows}",
            "data.validation=0.1",
            f"model.hidden={large_hidden}",
            "training.batch_size=1024",
            "training.epochs=3",
        ],
    }
    rows = []
    for name, overrides in workloads.items():
        for strategy in ("single", "data"):
            spec = jaxpipe.load_spec(
                os.path.join(ROOT, "experiments", "seed.toml"),
                overrides
                + [
                    f'hardware.strategy="{strategy}"',
                    "hardware.devices=1",
                    "checkpoint.every_epochs=1000",
                ],
            )
            with tempfile.TemporaryDirectory() as out:
                r = jaxpipe.run(spec, out=os.path.join(out, "run"))
            times = [h["epoch_seconds"] for h in r.history]
            plan = r.summary["plan"]
            row = {
                "check": "sharding",
                "workload": name,
                "strategy": plan["strategy"],
                "mesh": plan["mesh"],
                "device": r.summary["device"]["kind"],
                "first_epoch_s": times[0],
                "steady_epoch_s": statistics.median(times[1:]),
                "compile_s": r.summary["compile_seconds"],
                "val_accuracy": r.final["val_accuracy"],
                "estimate_bytes": plan["per_device_bytes"],
                "measured_per_device_bytes": plan["measured_per_device_bytes"],
                "peak_bytes": plan.get("measured_peak_bytes"),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(
        f"{'workload':10} {'strategy':8} {'steady s/epoch':>14} {'compile s':>9} "
        f"{'val acc':>7} {'estimate MiB':>12} {'peak MiB':>9}"
    )
    for r in rows:
        peak = f"{r['peak_bytes'] / 2**20:9.1f}" if r["peak_bytes"] else "      n/a"
        print(
            f"{r['workload']:10} {r['strategy']:8} {r['steady_epoch_s']:14.4f} "
            f"{r['compile_s']:9.2f} {r['val_accuracy']:7.4f} "
            f"{r['estimate_bytes'] / 2**20:12.1f} {peak}"
        )


if __name__ == "__main__":
    main()
