"""Steady-state epoch time of the seed experiment, after compilation.

Prints one JSON line: the spec, the median and spread of steady epochs (epoch 1, which
may include first-call work, is excluded), samples per second, and the first epoch's time.

    python benchmarks/epoch_time.py [experiments/seed.toml] [--epochs N]
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", nargs="?", default="experiments/seed.toml")
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    spec = jaxpipe.load_spec(args.spec, [f"training.epochs={args.epochs}"])
    with tempfile.TemporaryDirectory() as out:
        result = jaxpipe.run(spec, out=os.path.join(out, "run"))
    times = [r["epoch_seconds"] for r in result.history]
    steady = times[1:]
    train_rows = (
        spec.data.synthetic.rows - spec.data.validation
        if isinstance(spec.data.validation, int)
        else None
    )
    med = statistics.median(steady)
    print(
        json.dumps(
            {
                "benchmark": "steady_epoch_seconds",
                "spec": args.spec,
                "epochs": args.epochs,
                "first_epoch_seconds": times[0],
                "steady_epoch_seconds_median": med,
                "steady_epoch_seconds_min": min(steady),
                "steady_epoch_seconds_max": max(steady),
                "train_samples_per_second": (train_rows / med) if train_rows else None,
                "compile_seconds": result.summary["compile_seconds"],
                "device": result.summary["device"],
                "jax_version": result.summary["jax_version"],
            }
        )
    )


if __name__ == "__main__":
    main()
