"""The pieces of benchmarks/gpu_check.sh, one JSON line each (run it through the script).

    python benchmarks/gpu_check.py device
    python benchmarks/gpu_check.py workload seed|large float32|bfloat16
    python benchmarks/gpu_check.py roofline

GPU_CHECK_QUICK=1 shrinks every size (a CPU smoke test of the script itself).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
QUICK = os.environ.get("GPU_CHECK_QUICK", "0") not in ("", "0")
SPECS = {
    "seed": os.path.join(ROOT, "experiments", "seed.toml"),
    "large": os.path.join(ROOT, "benchmarks", "large.toml"),
}


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def device() -> None:
    import jax

    d = jax.devices()[0]
    emit(
        {
            "check": "device",
            "devices": [str(x) for x in jax.devices()],
            "kind": d.device_kind,
            "platform": d.platform,
            "jax": jax.__version__,
            "memory_stats": d.memory_stats() if hasattr(d, "memory_stats") else None,
        }
    )


def _plan_estimate(spec) -> dict:
    """The planner's memory estimate, where this checkout has a planner (jaxpipe.plan)."""
    import jaxpipe

    plan_fn = getattr(jaxpipe, "plan", None)
    if plan_fn is None:
        try:
            from jaxpipe.planner import plan as planner

            plan_fn = getattr(planner, "plan", None) or getattr(planner, "make_plan", None)
        except ImportError:
            return {"planner": "absent (no jaxpipe.plan)"}
    if plan_fn is None:
        return {"planner": "absent (no jaxpipe.plan)"}
    try:
        plan = plan_fn(spec)
    except Exception as e:  # noqa: BLE001 - report, do not stop the GPU check
        return {"planner": f"error: {type(e).__name__}: {e}"}
    fields = plan._asdict() if hasattr(plan, "_asdict") else getattr(plan, "__dict__", {})
    if not fields and hasattr(plan, "__dataclass_fields__"):
        fields = {k: getattr(plan, k) for k in plan.__dataclass_fields__}
    numbers = {k: v for k, v in fields.items() if isinstance(v, (int, float)) and "byte" in k}
    return {"planner": "present", "plan_bytes": numbers, "plan": str(plan)[:2000]}


def workload(name: str, precision: str) -> None:
    import jax

    import jaxpipe

    epochs = 3 if QUICK else (8 if name == "seed" else 5)
    sets = [f"training.precision={precision}", f"training.epochs={epochs}"]
    if QUICK:
        sets += [f"data.synthetic.rows={3000 if name == 'seed' else 6000}", "data.validation=500"]
    spec = jaxpipe.load_spec(SPECS[name], sets)
    estimate = _plan_estimate(spec)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        r = jaxpipe.run(spec, out=os.path.join(out, "run"))
        wall = time.perf_counter() - t0
    steady = statistics.median(h["epoch_seconds"] for h in r.history[1:])
    rows = spec.data.synthetic.rows - spec.data.validation
    stats = jax.devices()[0].memory_stats() or {}
    emit(
        {
            "check": "workload",
            "workload": name,
            "precision": precision,
            "train_rows": rows,
            "epochs": epochs,
            "compile_seconds": r.summary["compile_seconds"],
            "first_epoch_seconds": r.history[0]["epoch_seconds"],
            "steady_epoch_seconds": steady,
            "samples_per_second": rows / steady,
            "val_accuracy": r.final["val_accuracy"],
            "wall_seconds": wall,
            "peak_bytes_in_use": stats.get("peak_bytes_in_use"),
            "bytes_limit": stats.get("bytes_limit"),
            **estimate,
        }
    )


def roofline() -> None:
    import jax
    import jax.numpy as jnp

    n = 512 if QUICK else 8192
    for dtype in (jnp.bfloat16, jnp.float32):
        k1, k2 = jax.random.split(jax.random.key(0))
        a = jax.random.normal(k1, (n, n), dtype)
        b = jax.random.normal(k2, (n, n), dtype)
        mm = jax.jit(jnp.matmul)
        mm(a, b).block_until_ready()
        times = []
        for _ in range(3 if QUICK else 20):
            t0 = time.perf_counter()
            mm(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        emit(
            {
                "check": "roofline",
                "dtype": jnp.dtype(dtype).name,
                "n": n,
                "tflops_median": 2 * n**3 / statistics.median(times) / 1e12,
                "tflops_best": 2 * n**3 / min(times) / 1e12,
            }
        )


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "device":
        device()
    elif what == "workload":
        workload(sys.argv[2], sys.argv[3])
    elif what == "roofline":
        roofline()
    else:
        sys.exit(f"unknown check {what!r}: device, workload NAME PRECISION, roofline")
