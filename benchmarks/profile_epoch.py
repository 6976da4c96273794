"""Where a steady training epoch's time goes, measured in one process (interleaved):

    python benchmarks/profile_epoch.py [experiments/seed.toml | benchmarks/large.toml]

Programs over the same device-resident data and batch order, each a jitted `lax.scan`:
  roofline   a 2048² fp32 matmul, GFLOP/s (the machine's matmul limit)
  matmuls    only the MLP's forward and backward matmuls at the step's shapes
  step_math  value_and_grad of the loss + Adam, pre-gathered batches, no metrics
  jaxpipe    the real epoch program (step.make_epoch: gather, padding, metric sums),
             with Eigen multi- and single-threaded
  streamed   the same epoch streamed from host memory in 4 chunks (jaxpipe.stream) Prints one JSON line per program:
seconds per epoch (median) and GFLOP/s (6 × parameters × rows ÷ seconds).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import jaxpipe  # noqa: E402
from jaxpipe.core.losses import cross_entropy  # noqa: E402
from jaxpipe.core.metrics import zero_sums  # noqa: E402
from jaxpipe.core.model import make_model, param_count  # noqa: E402
from jaxpipe.core.optim import make_optimizer  # noqa: E402
from jaxpipe.core.scaling import fit_identity  # noqa: E402
from jaxpipe.core.step import epoch_batches, init_state, make_epoch, make_train_step  # noqa: E402
from jaxpipe.runner.stream import make_chunk_steps, stream_epoch  # noqa: E402


def main() -> None:
    args = sys.argv[1:]
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    path = args[0] if args and args[0] != "--set" else "benchmarks/large.toml"
    spec = jaxpipe.load_spec(path, sets)
    syn, batch = spec.data.synthetic, spec.training.batch_size
    rows = syn.rows - spec.data.validation
    model = make_model(spec.model, syn.classes)
    tx = make_optimizer(spec.optimizer)
    x = jax.random.uniform(jax.random.key(1), (rows, syn.features))
    y = jax.random.randint(jax.random.key(2), (rows,), 0, syn.classes)
    state = init_state(model.init, tx, jax.random.key(0), x[:1])
    params = param_count(state.params)
    flops = 6 * params * rows
    idx, w = epoch_batches(jax.random.key(3), rows, batch)
    xs, ys = x[idx], y[idx]
    widths = [syn.features, *spec.model.hidden, syn.classes]
    mats = [jnp.ones((a, b)) * 0.01 for a, b in zip(widths[:-1], widths[1:])]

    def matmuls(mats, xs):
        def body(acc, xb):  # forward, and the two backward matmuls per layer
            h = xb
            for m in mats:
                g = h @ m
                acc = acc + jnp.sum(h.T @ g) + jnp.sum(g @ m.T)
                h = g
            return acc, None

        return lax.scan(body, 0.0, xs)[0]

    train_step = make_train_step(model.apply, cross_entropy, tx)

    def step_math(state, xs, ys):
        def body(p_o, b):
            p, o = p_o
            xb, yb = b
            g = jax.grad(lambda p: cross_entropy(model.apply(p, xb), yb).mean())(p)
            u, o = tx.update(g, o, p)
            return (jax.tree.map(jnp.add, p, u), o), None

        return lax.scan(body, (state.params, state.opt_state), (xs, ys))[0]

    n = 2048
    a = jnp.ones((n, n)) * 0.5
    progs = {
        "roofline": (jax.jit(jnp.matmul), (a, a), 2 * n**3),
        "matmuls": (jax.jit(matmuls), (mats, xs), flops),
        "step_math": (jax.jit(step_math), (state, xs, ys), flops),
    }
    epoch = jax.jit(make_epoch(train_step, batch))
    for threads, opts in (("multi", {}), ("single", {"xla_cpu_multi_thread_eigen": False})):
        compiled = epoch.lower(state, x, y, jnp.int32(0)).compile(opts)
        progs[f"jaxpipe_{threads}"] = (compiled, (state, x, y, jnp.int32(0)), flops)
    host_x, host_y = jax.device_get((x, y))
    host_idx, host_w = jax.device_get(epoch_batches(jax.random.key(0), rows, batch))
    chunk_fn = jax.jit(make_chunk_steps(train_step))
    scaler = fit_identity(x)
    per_chunk = -(-host_idx.shape[0] // 4)

    def streamed(state):
        return stream_epoch(
            chunk_fn, state, zero_sums(), scaler, host_x, host_y, host_idx, host_w, per_chunk
        )

    progs["streamed_4_chunks"] = (streamed, (state,), flops)
    times: dict[str, list[float]] = {k: [] for k in progs}
    for f, args, _ in progs.values():
        jax.block_until_ready(f(*args))  # first call: any remaining compile work
    for _ in range(int(os.environ.get("REPEATS", "5"))):
        for k, (f, args, _) in progs.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t0)
    result = {}
    for k, (_, _, fl) in progs.items():
        med = statistics.median(times[k])
        result[k] = {"seconds": med, "gflops": fl / med / 1e9}
        print(json.dumps({"program": k, **result[k]}), flush=True)
    print("RESULT " + json.dumps({"peer": "profile", "programs": result}), flush=True)


if __name__ == "__main__":
    main()
