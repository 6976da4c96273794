"""A Parquet data set larger than the host budget, streamed from disk, against the same
files loaded whole, side by side in one run (issue 16).

    python benchmarks/stream_bench.py [--rows 400000] [--features 50] [--budget 32MiB]
                                      [--epochs 3] [--group 5000]
                                      [--hidden 64]

Writes `rows` × `features` synthetic classification rows (jaxpipe.data.make_synthetic)
as Parquet files of `group`-row row groups, then runs three child processes:
  framework  the streamed spec on a tiny set (two row groups): the framework's own RSS
             (imports, compiled programs, runtime) with the same model and budget
  streamed   `jaxpipe.runner.shell` with host_memory = budget (the training split stays on disk)
  in-memory  the same spec with host_memory = 8GiB (loaded whole, resident)
Each child reports its peak RSS (VmHWM) and summary.json's figures. Prints one JSON line
per mode and the checks: streamed peak RSS beyond the framework's ≤ budget + two device
chunks; |accuracy difference| ≤ 0.5 points; streamed throughput (training rows per
second of the train stage) ≥ 0.8 × in-memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

SPEC = """
[experiment]
name = "stream-bench"
seed = 1

[data]
source = "parquet"
path = "data/*.parquet"
label = "y"
validation = 0.02
host_memory = "{budget}"

[model]
hidden = {hidden}

[training]
epochs = {epochs}
batch_size = 256
"""

CHILD = """
import json, sys, time

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

if True:
    import jaxpipe
    t0 = time.perf_counter()
    res = jaxpipe.run(jaxpipe.load_spec(sys.argv[2]), out=sys.argv[3], verbose=False)
    s = res.summary
    stage = {st["name"]: st["seconds"] for st in s["stages"]}
    print(json.dumps({
        "peak_rss": hwm(), "seconds": time.perf_counter() - t0,
        "load_seconds": stage["load"], "train_seconds": stage["train"],
        "train_rows": s["rows"]["train"], "epochs": len(res.history),
        "val_accuracy": res.history[-1]["val_accuracy"], "data": s["data"],
        "chunk_steps": s["chunk_steps"],
    }))
"""


def write_data(folder: str, rows: int, features: int, group: int) -> int:
    """Parquet files of at most 4 row groups each; returns the decoded bytes (float64)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jaxpipe.data.load import make_synthetic
    from jaxpipe.spec.sections import SyntheticSpec

    os.makedirs(folder, exist_ok=True)
    x, y = make_synthetic(SyntheticSpec(rows=rows, features=features, classes=4), 0)
    per_file = 4 * group
    for k, start in enumerate(range(0, rows, per_file)):
        part = slice(start, start + per_file)
        cols = {f"x{j}": x[part, j].astype(np.float64) for j in range(features)}
        table = pa.table(cols | {"y": y[part]})
        pq.write_table(table, os.path.join(folder, f"part{k:03d}.parquet"), row_group_size=group)
    return rows * (features + 1) * 8


def child(mode: str, *args: str) -> dict:
    env = os.environ | {"PYTHONPATH": ROOT, "JAXPIPE_COMPILATION_CACHE": "0"}
    p = subprocess.run(
        [sys.executable, "-c", CHILD, mode, *args], capture_output=True, text=True, env=env
    )
    if p.returncode:
        sys.exit(f"{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--features", type=int, default=50)
    ap.add_argument("--budget", default="32MiB")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--group", type=int, default=5_000)
    ap.add_argument("--hidden", default="64", help="hidden widths, comma-separated")
    a = ap.parse_args()
    sys.path.insert(0, ROOT)
    from jaxpipe.spec.hardware import parse_size

    budget = parse_size(a.budget)
    with tempfile.TemporaryDirectory() as tmp:
        data_bytes = write_data(os.path.join(tmp, "data"), a.rows, a.features, a.group)
        os.makedirs(os.path.join(tmp, "tiny"))
        write_data(os.path.join(tmp, "tiny", "data"), 2 * 1024, a.features, 1024)
        results = {}
        for mode, host, where in (
            ("framework", "1MiB", "tiny"),
            ("streamed", a.budget, ""),
            ("in-memory", "8GiB", ""),
        ):
            spec = os.path.join(tmp, where, f"{mode}.toml")
            with open(spec, "w") as f:
                hidden = [int(w) for w in a.hidden.split(",")]
                f.write(SPEC.format(budget=host, epochs=a.epochs, hidden=hidden))
            results[mode] = child("run", spec, os.path.join(tmp, mode))
    for mode, r in results.items():
        print(json.dumps({"mode": mode} | r))
    s, m, base = results["streamed"], results["in-memory"], results["framework"]["peak_rss"]
    # Two device chunks: chunk_steps batches of 256 rows × features float32 (+ labels).
    chunks = 2 * s["chunk_steps"] * 256 * (a.features + 2) * 4
    beyond = s["peak_rss"] - base
    rate = [r["train_rows"] * r["epochs"] / r["train_seconds"] for r in (s, m)]
    checks = {
        "data_over_budget": round(data_bytes / budget, 2),
        "streamed_rss_beyond_framework_MiB": round(beyond / 2**20, 1),
        "in_memory_rss_beyond_framework_MiB": round((m["peak_rss"] - base) / 2**20, 1),
        "limit_MiB": round((budget + chunks) / 2**20, 1),
        "rss_within_limit": beyond <= budget + chunks,
        "accuracy_difference_points": round(100 * (s["val_accuracy"] - m["val_accuracy"]), 2),
        "throughput_ratio": round(rate[0] / rate[1], 3),
        "stats_pass_seconds": round(s["load_seconds"], 1),
    }
    print(json.dumps(checks))


if __name__ == "__main__":
    main()
