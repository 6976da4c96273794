"""The planner against the card (issue 12, part 5): drawn single-device configurations,
each trained for one epoch by `jaxpipe.runner.shell` in its own process (so the allocator's
`peak_bytes_in_use` is that run's), then planned with `verify=True` on the same device.
Per configuration: the closed-form estimate (`summary.json`'s `plan.per_device_bytes`),
XLA's compiled per-device figure for the same device, and the measured peak.

    python benchmarks/gpu_calibration.py --n 24 --jobs 4 --out DIR   # GPU, ~3 min on an H100
    python benchmarks/gpu_calibration.py --n 4 --quick --out DIR      # CPU smoke test

Writes DIR/gpu_calibration.jsonl (one JSON line per configuration) and DIR/runs/<i>/ (the
run directories `jaxpipe calibration DIR/runs/*` reads), prints a table and the error
distribution. Configurations are drawn by a seeded RNG across activations, dropout,
layer_norm, precision (fp32 and bf16 alternate), the documented optimizers and both tasks;
sizes up to a few GiB. Children share the card: by default each allocates on demand
(XLA_PYTHON_CLIENT_PREALLOCATE=false), whose growing regions round big buffers up (the
H200 session measured the placed data set at 1.7x its bytes that way); `--mem-fraction F`
gives each child a preallocated pool of F of the card instead, as a run sees by default.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import random
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "softplus")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lion", "adafactor", "lamb")


def draw(i: int, seed: int, quick: bool) -> dict:
    """Configuration i: a reproducible draw (the same i and seed give the same MLP)."""
    rng = random.Random(seed * 10_007 + i)
    widths = (16, 64, 128) if quick else (64, 256, 1024, 2048, 4096, 8192)
    depth = rng.choice((1, 2, 3, 4))
    width = rng.choice(widths)
    if width >= 8192:
        depth = min(depth, 3)  # ~0.2 G parameters, ~3 GiB with adam: "a few GiB"
    batch = rng.choice((8, 32) if quick else (32, 128, 512, 2048, 4096))
    features = rng.choice((5, 12) if quick else (8, 50, 256, 1024, 2000))
    rows = max(4 * batch, min(20_000, 40_000_000 // features))
    if quick:
        rows = min(rows, 400)
    return {
        "i": i,
        "hidden": [width] * depth,
        "activation": rng.choice(ACTIVATIONS),
        "dropout": rng.choice((0.0, 0.0, 0.1)),
        "layer_norm": rng.random() < 0.3,
        "task": rng.choice(("classification",) * 3 + ("regression",)),
        "optimizer": rng.choice(OPTIMIZERS),
        "precision": "bfloat16" if i % 2 else "float32",
        "batch": batch,
        "features": features,
        "classes": rng.choice((2, 10, 100, 1000)),
        "rows": rows,
    }


def spec_text(c: dict) -> str:
    return f"""
[experiment]
name = "calib-{c["i"]}"
seed = {c["i"]}
[data]
source = "synthetic"
validation = 0.1
[data.synthetic]
rows = {c["rows"]}
features = {c["features"]}
classes = {c["classes"]}
[model]
hidden = {c["hidden"]}
activation = "{c["activation"]}"
dropout = {c["dropout"]}
layer_norm = {str(c["layer_norm"]).lower()}
task = "{c["task"]}"
[optimizer]
name = "{c["optimizer"]}"
learning_rate = 1e-3
[training]
epochs = 1
batch_size = {c["batch"]}
precision = "{c["precision"]}"
[hardware]
devices = 1
"""


def child(config: dict, out: str) -> dict:
    """In this process: run one epoch, read the run's plan record, then verify the plan."""
    sys.path.insert(0, ROOT)
    import jax

    import jaxpipe
    from jaxpipe.spec.experiment import parse_spec

    spec = parse_spec(spec_text(config))
    t0 = time.perf_counter()
    jaxpipe.run(spec, out=out)
    seconds = time.perf_counter() - t0
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    plan = summary["plan"]
    checked = jaxpipe.plan(spec, verify=True)
    xla = (checked.xla or {}).get("total_with_validation")
    est, peak = plan["per_device_bytes"], plan["measured_peak_bytes"]
    return config | {
        "chunk_steps": summary.get("chunk_steps"),
        "xla": {k: v for k, v in (checked.xla or {}).items() if isinstance(v, (int, float))},
        "estimate_bytes": est,
        "xla_bytes": xla,
        "peak_bytes": peak,
        "estimate_vs_xla": est / xla - 1 if xla else None,
        "estimate_vs_peak": est / peak - 1 if peak else None,
        "xla_vs_peak": xla / peak - 1 if (xla and peak) else None,
        "run_seconds": seconds,
        "device": jax.devices()[0].device_kind,
        "platform": jax.devices()[0].platform,
    }


def _child_process(config: dict, out: str, timeout: int, cache: str | None) -> dict:
    env = os.environ | {"PYTHONPATH": ROOT}
    fraction = os.environ.get("GPU_CALIBRATION_MEM_FRACTION")
    if fraction:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = fraction
    else:
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if cache:
        env["JAXPIPE_CACHE_DIR"] = cache
    cmd = [sys.executable, __file__, "--child", json.dumps(config), "--out", out]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return config | {"failed": f"timed out after {timeout} s"}
    if p.returncode != 0:
        return config | {"failed": p.stderr.strip().splitlines()[-1:]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _one(args: tuple[dict, str, int, bool]) -> dict:
    """One configuration; with `warm`, run it twice on one fresh compilation cache: the
    first (cold) peak includes XLA:GPU's autotuning buffers, the second (warm) does not."""
    config, out, timeout, warm = args
    if not warm:
        return _child_process(config, out, timeout, None)
    cache = out + "-cache"
    cold = _child_process(config, out + "-cold", timeout, cache)
    if "failed" in cold:
        return cold
    row = _child_process(config, out, timeout, cache)
    return row | {"cold_peak_bytes": cold["peak_bytes"], "cold_run_seconds": cold["run_seconds"]}


def _table(rows: list[dict]) -> None:
    mib = 2**20
    print(
        f"{'i':>3} {'hidden':18} {'act':10} {'opt':9} {'prec':5} {'batch':>5} "
        f"{'est MiB':>9} {'XLA MiB':>9} {'peak MiB':>9} {'est/XLA':>8} {'est/peak':>8}"
    )
    for r in rows:
        if "failed" in r:
            print(f"{r['i']:>3} failed: {r['failed']}")
            continue
        peak = f"{r['peak_bytes'] / mib:9.1f}" if r["peak_bytes"] else f"{'n/a':>9}"
        vp = f"{r['estimate_vs_peak']:+8.1%}" if r["estimate_vs_peak"] is not None else "     n/a"
        xla = f"{r['xla_bytes'] / mib:9.1f}" if r["xla_bytes"] else f"{'n/a':>9}"
        vx = f"{r['estimate_vs_xla']:+8.1%}" if r["estimate_vs_xla"] is not None else "     n/a"
        print(
            f"{r['i']:>3} {str(r['hidden']):18} {r['activation']:10} {r['optimizer']:9} "
            f"{r['precision'][:4]:5} {r['batch']:>5} {r['estimate_bytes'] / mib:9.1f} "
            f"{xla} {peak} {vx} {vp}"
        )
    for key in ("estimate_vs_xla", "estimate_vs_peak", "xla_vs_peak"):
        errs = [r[key] for r in rows if r.get(key) is not None]
        if errs:
            absd = sorted(abs(e) for e in errs)
            print(
                f"{key}: n={len(errs)} median {statistics.median(errs):+.1%} "
                f"median|err| {statistics.median(absd):.1%} worst {max(errs, key=abs):+.1%} "
                f"within 10%: {sum(a <= 0.10 for a in absd)}/{len(errs)}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--timeout", type=int, default=150, help="seconds per configuration")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke test)")
    ap.add_argument("--warm", action="store_true", help="a cold then a warm run per config")
    ap.add_argument(
        "--mem-fraction",
        help="each child preallocates this fraction of the card (default: on demand)",
    )
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/gpu_calibration"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child), a.out)), flush=True)
        return
    os.makedirs(os.path.join(a.out, "runs"), exist_ok=True)
    if a.mem_fraction:
        os.environ["GPU_CALIBRATION_MEM_FRACTION"] = a.mem_fraction
    configs = [draw(i, a.seed, a.quick) for i in range(a.n)]
    jobs = [(c, os.path.join(a.out, "runs", f"{c['i']:02d}"), a.timeout, a.warm) for c in configs]
    rows = []
    with (
        open(os.path.join(a.out, "gpu_calibration.jsonl"), "w") as f,
        cf.ThreadPoolExecutor(a.jobs) as pool,
    ):
        for r in pool.map(_one, jobs):
            rows.append(r)
            f.write(json.dumps(r) + "\n")
            f.flush()
    _table(rows)


if __name__ == "__main__":
    main()
