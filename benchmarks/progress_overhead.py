"""Cost of the live progress bar inside the compiled epoch (jaxpipe/core/progress.py).

Runs the same experiment with and without the progress callback, interleaved in one
process (A B A B ...), and prints one JSON line: the median steady epoch time of each
(epoch 1 excluded) and their ratio. The target is a ratio under 1.02 (< 2 % of epoch
time). Timings are never a test; this script is where they are looked at.

    python benchmarks/progress_overhead.py [benchmarks/large.toml] [--batch N] [--epochs 4]
        [--repeats 2]

The default is a long epoch (large.toml: 704 steps of 256 rows, seconds an epoch), where
the bar is shown; `experiments/seed.toml --batch 32` is a short one (313 steps in tens of
milliseconds), the worst case for the per-report cost.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from jaxpipe import load_spec  # noqa: E402
from jaxpipe.core.progress import REPORTS_PER_EPOCH  # noqa: E402
from jaxpipe.events import Observer
from jaxpipe.runner.loop import run_experiment  # noqa: E402


class _Watching(Observer):
    """What the terminal reporter asks for (a report every 1/20 of an epoch), minus the
    drawing: the callback's cost is the host round trip, which this keeps."""

    def __init__(self) -> None:
        self.calls = 0

    def progress_interval(self, steps_per_epoch: int) -> int | None:
        return max(1, steps_per_epoch // REPORTS_PER_EPOCH)

    def on_progress(self, step: int) -> None:
        self.calls += 1


def _steady(spec, observer) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as out:
        result = run_experiment(spec, os.path.join(out, "run"), observer)
    return [r["epoch_seconds"] for r in result.history][1:], result.summary["compile_seconds"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", nargs="?", default="benchmarks/large.toml")
    p.add_argument("--batch", type=int, default=None, help="default: the spec's")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("JAXPIPE_COMPILATION_CACHE", "0")  # both compile every repeat
    sets = [f"training.epochs={args.epochs}"]
    if args.batch is not None:
        sets.append(f"training.batch_size={args.batch}")
    spec = load_spec(args.spec, sets)
    plain, watched, compiles = [], [], {"plain": [], "progress": []}
    calls = 0
    for _ in range(args.repeats):
        t, c = _steady(spec, Observer())
        plain += t
        compiles["plain"].append(c)
        obs = _Watching()
        t, c = _steady(spec, obs)
        watched += t
        compiles["progress"].append(c)
        calls = obs.calls
    a, b = statistics.median(plain), statistics.median(watched)
    print(
        json.dumps(
            {
                "benchmark": "progress_overhead",
                "spec": args.spec,
                "batch_size": spec.training.batch_size,
                "epochs": args.epochs,
                "repeats": args.repeats,
                "progress_reports_per_run": calls,
                "steady_epoch_seconds_median_plain": a,
                "steady_epoch_seconds_median_progress": b,
                "ratio_progress_over_plain": b / a,
                "steady_epoch_seconds_min_plain": min(plain),
                "steady_epoch_seconds_min_progress": min(watched),
                "ratio_of_minimums": min(watched) / min(plain),
                "compile_seconds_median": {k: statistics.median(v) for k, v in compiles.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
