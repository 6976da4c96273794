"""Hunt for the estimate's misses over many small configurations, and re-score a change
to the closed form against stored XLA figures without compiling again.

    python benchmarks/plan_hunt.py collect --seed 1 --configs 30 --out hunt.jsonl
    python benchmarks/plan_hunt.py score [benchmarks/plan_hunt.jsonl ...] [--worst 10]

`collect` draws configurations from tests/test_plan_error.py's buckets (hidden [256],
[128, 256] or [256, 64, 128]; batch 64, 128 or 256; every activation, optimizer, task,
dropout, LayerNorm and precision), compiles each one's one-device epoch and its epoch
under data x2/x4/x8, tensor x2/x4 and data+tensor 2x2/4x2 in this process (8 simulated
host devices; ~10-20 s a configuration on XLA:CPU) and appends one JSON line per
configuration: its arguments, XLA's one-device figure and, per layout, XLA's per-device
figure (with the validation arrays) and temp size. `score` re-fits each configuration
to its stored one-device figure (`xlafit.fit`, the compile stubbed out) and prints the
estimate's error against every stored layout figure: the misses over 10 %, worst first,
then the counts. Pure arithmetic: ~20 s for 294 pairs.

benchmarks/plan_hunt.jsonl holds 52 configurations (jax 0.10.2, XLA:CPU): seeds 1
(30) and 2 (12), collected while fixing the small-batch misses and used to choose how
the one-device fit is carried into tensor layouts (xlafit.carried_scale), then seed 3
(10), collected after that rule was chosen, as a held-out check (issue 12; the counts
are in CHANGELOG.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

HERE = os.path.dirname(os.path.abspath(__file__))
STORED = os.path.join(HERE, "plan_hunt.jsonl")
OPTIMIZERS = ["sgd", "adam", "adamw", "rmsprop", "lion", "adafactor", "lamb"]
LAYOUTS = [
    ("data", {"data": 2}),
    ("data", {"data": 4}),
    ("data", {"data": 8}),
    ("tensor", {"model": 2}),
    ("tensor", {"model": 4}),
    ("data+tensor", {"data": 2, "model": 2}),
    ("data+tensor", {"data": 4, "model": 2}),
]


def spec_text(hidden, batch, activation, opt, task, dropout, layer_norm, precision) -> str:
    """tests/test_plan_error.py's spec for these arguments."""
    return f"""
[data]
source = "synthetic"
validation = 32
[data.synthetic]
rows = {2 * batch + 32}
features = 24
classes = 10
[model]
task = "{task}"
hidden = {hidden}
activation = "{activation}"
dropout = {dropout}
layer_norm = {str(layer_norm).lower()}
[optimizer]
name = "{opt}"
[training]
batch_size = {batch}
precision = "{precision}"
"""


def draw(rng: random.Random, activations: list[str]) -> list:
    hidden = [[256], [128, 256], [256, 64, 128]][rng.randrange(3)]
    return [
        hidden,
        rng.choice([64, 128, 256]),
        rng.choice(activations),
        rng.choice(OPTIMIZERS),
        rng.choice(["classification", "regression"]),
        rng.choice([0.0, 0.2]),
        rng.choice([False, True]),
        rng.choice(["float32", "bfloat16"]),
    ]


def _prepared(args: list):
    from jaxpipe.data.shapes import data_shapes
    from jaxpipe.planner import state
    from jaxpipe.planner.values import Workload
    from jaxpipe.spec.experiment import parse_spec

    spec = parse_spec(spec_text(*args))
    shapes = data_shapes(spec)
    return (
        spec,
        shapes,
        state.abstract_state(Workload.of(spec), shapes),
    )


def collect(seed: int, configs: int, out: str) -> None:
    from jaxpipe.core.model import ACTIVATION_FNS
    from jaxpipe.planner import verify, xlafit
    from jaxpipe.planner.values import Workload

    rng = random.Random(seed)
    with open(out, "a") as f:
        for i in range(configs):
            t0 = time.perf_counter()
            args = draw(rng, sorted(ACTIVATION_FNS))
            spec, shapes, abstract = _prepared(args)
            single = xlafit.single_program_bytes(
                spec.model, spec.training.precision, shapes, abstract, args[1]
            )
            layouts = []
            for strategy, mesh in LAYOUTS:
                compiled = verify.compile_layout(
                    Workload.of(spec),
                    shapes,
                    abstract,
                    strategy,
                    mesh,
                )
                x = verify.xla_figures(compiled, shapes)
                layouts.append([strategy, mesh, x["total_with_validation"], x["temp"]])
            f.write(json.dumps({"args": args, "single": single, "layouts": layouts}) + "\n")
            f.flush()
            print(f"[{i + 1}/{configs}] {args} {time.perf_counter() - t0:.1f} s", flush=True)


def score(paths: list[str], worst: int) -> None:
    from jaxpipe.planner import memory, xlafit
    from jaxpipe.planner.values import Workload

    rows = []
    for path in paths:
        for line in open(path):
            rec = json.loads(line)
            spec, shapes, abstract = _prepared(rec["args"])
            # The stored one-device figure in place of the compile.
            xlafit._FITS.clear()
            xlafit.single_program_bytes = lambda *_, _x=rec["single"]: _x
            fit = xlafit.fit(
                Workload.of(spec),
                shapes,
                abstract,
                spec.training.batch_size,
            )
            for strategy, mesh, xla, _temp in rec["layouts"]:
                scale = fit.for_layout(spec.model.hidden, strategy, mesh)
                est = memory.estimate(
                    spec.model, spec.training, shapes, abstract, strategy, mesh, scale=scale
                )
                rows.append((est.total / xla - 1, strategy, mesh, fit.scale, rec["args"]))
    errors = sorted(rows, key=lambda r: -abs(r[0]))
    for e, strategy, mesh, scale, args in [r for r in errors if abs(r[0]) > 0.10][:worst]:
        print(f"{e:+.1%} {strategy} {mesh} (one-device scale {scale:.2f}) {args}")
    a = [abs(r[0]) for r in rows]
    print(
        f"{len(rows)} pairs: {sum(x > 0.10 for x in a)} over 10 %, {sum(x > 0.05 for x in a)}"
        f" over 5 %, median |error| {statistics.median(a):.1%}, range"
        f" {min(r[0] for r in rows):+.1%} … {max(r[0] for r in rows):+.1%}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--configs", type=int, default=30)
    c.add_argument("--out", required=True)
    s = sub.add_parser("score")
    s.add_argument("paths", nargs="*", default=[STORED])
    s.add_argument("--worst", type=int, default=10)
    args = ap.parse_args()
    if args.command == "collect":
        collect(args.seed, args.configs, args.out)
    else:
        score(args.paths or [STORED], args.worst)


if __name__ == "__main__":
    main()
