"""The planner's estimate against XLA's figure and the measured peak, for a few MLP sizes.

For each size, in a fresh process (so `peak_bytes_in_use` belongs to that size alone):
the estimate (`jaxpipe.plan`, one device), XLA's `memory_analysis()` of the compiled
epoch (argument + output + temp − alias, plus the resident validation arrays), and the
measured `memory_stats()['peak_bytes_in_use']` after one real epoch (n/a where the
backend does not report it, as on CPU). Prints a table and one JSON line per size.

    python benchmarks/plan_gpu_check.py            # GPU: three sizes, well under 2 minutes
    python benchmarks/plan_gpu_check.py --sizes small,medium
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

SIZES = {  # name -> (hidden, batch, rows, features, optimizer)
    "small": ([128, 128], 128, 12000, 50, "adam"),
    "medium": ([2048, 2048], 512, 16384, 256, "adam"),
    "large": ([8192, 8192, 8192], 1024, 8192, 1024, "adamw"),
}


def _spec(name: str):
    import jaxpipe

    hidden, batch, rows, features, opt = SIZES[name]
    text = f"""
[experiment]
name = "plan-check-{name}"
[data]
source = "synthetic"
validation = 0.1
[data.synthetic]
rows = {rows}
features = {features}
classes = 10
[model]
hidden = {hidden}
[optimizer]
name = "{opt}"
[training]
epochs = 1
batch_size = {batch}
[hardware]
devices = 1
"""
    from jaxpipe.spec.experiment import parse_spec

    return jaxpipe, parse_spec(text)


def measure(name: str) -> dict:
    """One size, in this process: estimate, XLA's figure, one real epoch's peak."""
    import jax
    import jax.numpy as jnp

    from jaxpipe.core.losses import cross_entropy
    from jaxpipe.core.model import compute_dtype, make_model
    from jaxpipe.core.step import init_state, make_epoch, make_train_step
    from jaxpipe.data.load import load_dataset

    jaxpipe, spec = _spec(name)
    plan = jaxpipe.plan(spec, verify=True)
    ds = load_dataset(spec)
    x_tr, y_tr, x_va, y_va = jax.device_put((ds.x_train, ds.y_train, ds.x_val, ds.y_val))
    steps = -(-len(ds.x_train) // spec.training.batch_size)
    from jaxpipe.core.optim import make_optimizer

    tx = make_optimizer(spec.optimizer, total_steps=steps)
    model = make_model(spec.model, ds.num_classes, compute_dtype(spec.training.precision))
    state = jax.jit(lambda k, x: init_state(model.init, tx, k, x))(jax.random.key(0), x_tr[:1])
    epoch = jax.jit(
        make_epoch(make_train_step(model.apply, cross_entropy, tx), spec.training.batch_size),
        donate_argnums=0,
    )
    t0 = time.perf_counter()
    state, sums = epoch(state, x_tr, y_tr, jnp.zeros((), jnp.int32))
    jax.block_until_ready((state, sums))
    seconds = time.perf_counter() - t0
    device = jax.devices()[0]
    try:
        peak = (device.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # CPU: no memory_stats
        peak = None
    x = plan.xla
    return {
        "size": name,
        "hidden": list(spec.model.hidden),
        "batch": spec.training.batch_size,
        "optimizer": spec.optimizer.name,
        "estimate_bytes": x["estimate"],
        "xla_bytes": x["total_with_validation"],
        "peak_bytes": int(peak) if peak is not None else None,
        "estimate_vs_xla": x["estimate"] / x["total_with_validation"] - 1,
        "estimate_vs_peak": (x["estimate"] / peak - 1) if peak else None,
        "first_epoch_seconds_incl_compile": seconds,
        "device": device.device_kind,
        "platform": device.platform,
        "jax_version": jax.__version__,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="small,medium,large")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for name in args.sizes.split(","):
        env = os.environ | {"JAXPIPE_COMPILATION_CACHE": "0"}
        out = subprocess.run(
            [sys.executable, __file__, "--one", name], capture_output=True, text=True, env=env
        )
        if out.returncode != 0:
            print(f"{name}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    mib = 2**20
    print(
        f"{'size':8} {'hidden':22} {'estimate MiB':>13} {'XLA MiB':>10} {'peak MiB':>10} "
        f"{'est/XLA':>8} {'est/peak':>9}  device"
    )
    for r in rows:
        peak = f"{r['peak_bytes'] / mib:10.1f}" if r["peak_bytes"] else f"{'n/a':>10}"
        vs_peak = (
            f"{r['estimate_vs_peak']:+9.1%}"
            if r["estimate_vs_peak"] is not None
            else (f"{'n/a':>9}")
        )
        print(
            f"{r['size']:8} {str(r['hidden']):22} {r['estimate_bytes'] / mib:13.1f} "
            f"{r['xla_bytes'] / mib:10.1f} {peak} {r['estimate_vs_xla']:+8.1%} {vs_peak}  "
            f"{r['device']}"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
