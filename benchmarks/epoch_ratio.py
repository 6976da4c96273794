"""A steady jaxpipe epoch against the hand-written `lax.scan` epoch, in one process,
interleaved (the issue-14 target "steady epoch ÷ hand-written scan ≤ 1.0"):

    python benchmarks/epoch_ratio.py [experiments/seed.toml | benchmarks/large.toml]
        [--repeats N] [--set KEY=VALUE ...]

jaxpipe: the epoch program exactly as a run builds it (step.make_task_steps +
step.make_epoch, state donated, programs.compiler_options). Reference: peers.py's jax_ref
epoch (a jitted scan of value_and_grad + Adam over the shuffled full batches, state
donated, mean loss returned). Both take the same device-resident rows; each repeat runs
one epoch of each, alternating which goes first, and each is followed by the one host
sync a loop needs (the metrics). Prints one RESULT JSON line: median seconds of each, the
median of the per-repeat ratios of wall and of CPU seconds, and the ratio of the best
epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import jaxpipe  # noqa: E402
from jaxpipe.core.aot import compiler_options  # noqa: E402
from jaxpipe.core.model import (  # noqa: E402
    compute_dtype,  # noqa: E402
    make_model,
    param_count,
)
from jaxpipe.core.optim import make_optimizer  # noqa: E402
from jaxpipe.core.step import init_state, make_epoch, make_task_steps  # noqa: E402


def reference_epoch(hidden: list[int], lr: float, rows: int, batch: int):
    """The hand-written epoch of benchmarks/peers.py (jax_ref), as (init, epoch)."""
    tx = optax.adam(lr)
    steps = rows // batch

    def apply(p, xb):
        for w, bias in p[:-1]:
            xb = jax.nn.relu(xb @ w + bias)
        return xb @ p[-1][0] + p[-1][1]

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(apply(p, xb), yb).mean()

    def epoch(p, o, x, y, key):
        idx = jax.random.permutation(key, rows)[: steps * batch].reshape(steps, batch)

        def body(c, i):
            p, o, total = c
            loss, g = jax.value_and_grad(loss_fn)(p, x[i], y[i])
            u, o = tx.update(g, o, p)
            return (optax.apply_updates(p, u), o, total + loss), None

        (p, o, total), _ = jax.lax.scan(body, (p, o, jnp.zeros(())), idx)
        return p, o, total / steps

    def init(features: int, classes: int):
        widths = [features, *hidden, classes]
        keys = jax.random.split(jax.random.key(0), len(widths))
        params = [
            (jax.random.normal(k, (i, o)) * jnp.sqrt(2.0 / i), jnp.zeros(o))
            for k, i, o in zip(keys, widths[:-1], widths[1:])
        ]
        return params, tx.init(params)

    return init, jax.jit(epoch, donate_argnums=(0, 1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("spec", nargs="?", default="experiments/seed.toml")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--set", action="append", default=[])
    a = p.parse_args()
    spec = jaxpipe.load_spec(a.spec, a.set)
    syn, batch = spec.data.synthetic, spec.training.batch_size
    rows, classes = syn.rows - spec.data.validation, syn.classes
    x = jax.random.uniform(jax.random.key(1), (rows, syn.features))
    y = jax.random.randint(jax.random.key(2), (rows,), 0, classes)

    tx = make_optimizer(spec.optimizer, total_steps=-(-rows // batch) * spec.training.epochs)
    model = make_model(spec.model, classes, compute_dtype(spec.training.precision))
    train_step, _ = make_task_steps(model, tx, "classification", spec.model.dropout > 0)
    state = init_state(model.init, tx, jax.random.key(0), x[:1])
    opts = compiler_options(
        "cpu" if jax.devices()[0].platform == "cpu" else "gpu", param_count(state.params), batch
    )
    ours = (
        jax.jit(make_epoch(train_step, batch), donate_argnums=0)
        .lower(state, x, y, jnp.int32(0))
        .compile(opts)
    )
    init, theirs = reference_epoch(
        list(spec.model.hidden), spec.optimizer.learning_rate, rows, batch
    )
    params, opt = init(syn.features, classes)

    def run_ours(e: int) -> None:
        nonlocal state
        state, sums = ours(state, x, y, jnp.int32(e))
        jax.device_get(sums)

    def run_theirs(e: int) -> None:
        nonlocal params, opt
        params, opt, loss = theirs(params, opt, x, y, jax.random.key(e))
        float(loss)

    run_ours(0), run_theirs(0)  # compile and warm up
    times = {"jaxpipe": [], "reference": []}
    cpu = {"jaxpipe": [], "reference": []}
    for r in range(a.repeats):
        order = [("jaxpipe", run_ours), ("reference", run_theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            t0, c0 = time.perf_counter(), time.process_time()
            fn(r + 1)
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    ratios = [o / t for o, t in zip(times["jaxpipe"], times["reference"])]
    cpu_ratios = [o / t for o, t in zip(cpu["jaxpipe"], cpu["reference"])]
    out = {
        "spec": a.spec,
        "xla_options": opts,
        "jaxpipe_seconds": statistics.median(times["jaxpipe"]),
        "reference_seconds": statistics.median(times["reference"]),
        "ratio": statistics.median(ratios),
        # CPU seconds (all threads): steadier than wall time on a loaded machine.
        "cpu_ratio": statistics.median(cpu_ratios),
        "best_ratio": min(times["jaxpipe"]) / min(times["reference"]),
        "ratios": [round(v, 3) for v in ratios],
        # Per step: jaxpipe runs ceil(rows / batch) steps, the reference floor(rows / batch).
        "batch": batch,
        "jaxpipe_step_us": statistics.median(times["jaxpipe"]) / -(-rows // batch) * 1e6,
        "reference_step_us": statistics.median(times["reference"]) / (rows // batch) * 1e6,
        "jaxpipe_samples_per_s": rows / statistics.median(times["jaxpipe"]),
        "reference_samples_per_s": rows / statistics.median(times["reference"]),
        "device": jax.devices()[0].device_kind,
    }
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
