"""What checkpointing every epoch costs a run, as a ratio against checkpointing only at
the end, in one process (same compiled programs, same machine state).

Prints one JSON line: the wall time of the training loop (epochs, evaluation and the
time spent waiting on checkpoints) with `checkpoint.every_epochs = 1` and with one save
at the end, their ratio, and the checkpoint stage's own seconds.

    python benchmarks/checkpoint_overhead.py [experiments/seed.toml] [--epochs N] [--repeat R]
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


def _loop_seconds(spec_path: str, epochs: int, every: int) -> tuple[float, float]:
    overrides = [f"training.epochs={epochs}", f"checkpoint.every_epochs={every}"]
    spec = jaxpipe.load_spec(spec_path, overrides)
    with tempfile.TemporaryDirectory() as out:
        result = jaxpipe.run(spec, out=os.path.join(out, "run"))
    stages = {s.name: s.seconds for s in result.stages}
    loop = stages["train"] + stages["evaluate"] + stages["checkpoint"]
    return loop, stages["checkpoint"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", nargs="?", default="experiments/seed.toml")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    _loop_seconds(args.spec, args.epochs, 1)  # warm-up: compile, caches, orbax import
    every, end = [], []
    for _ in range(args.repeat):  # interleaved, so drift in machine load hits both
        every.append(_loop_seconds(args.spec, args.epochs, 1))
        end.append(_loop_seconds(args.spec, args.epochs, args.epochs))
    med_every = statistics.median(t for t, _ in every)
    med_end = statistics.median(t for t, _ in end)
    print(
        json.dumps(
            {
                "benchmark": "checkpoint_overhead",
                "spec": args.spec,
                "epochs": args.epochs,
                "loop_seconds_every_epoch": med_every,
                "loop_seconds_end_only": med_end,
                "ratio_every_epoch_over_end_only": med_every / med_end,
                "checkpoint_stage_seconds_every_epoch": statistics.median(c for _, c in every),
                "checkpoint_stage_seconds_end_only": statistics.median(c for _, c in end),
            }
        )
    )


if __name__ == "__main__":
    main()
