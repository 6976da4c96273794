"""Where a run's device peak happens (issue 12, the GPU calibration's unexplained excess):
one drawn configuration of benchmarks/gpu_calibration.py run by `jaxpipe.runner.shell` in its own
process, with the device's bytes_in_use / peak_bytes_in_use read after each stage.

    python benchmarks/gpu_stage_peaks.py --configs 4 16 19 20 22 --out DIR   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def child(i: int, out: str) -> None:
    import importlib

    import jax

    import jaxpipe

    runmod = importlib.import_module("jaxpipe.runner.shell")
    from jaxpipe.spec.experiment import parse_spec

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from gpu_calibration import draw, spec_text

    dev = jax.local_devices()[0]
    marks = []

    def mark(name: str) -> None:
        s = dev.memory_stats() or {}
        marks.append((name, s.get("bytes_in_use"), s.get("peak_bytes_in_use")))

    def wrap(name: str):
        fn = getattr(runmod, name)

        def wrapped(*a, **k):
            mark("before " + name)
            r = fn(*a, **k)
            jax.effects_barrier()
            mark("after " + name)
            return r

        setattr(runmod, name, wrapped)

    for name in (
        "place_data",
        "preprocess_data",
        "compile_programs",
        "train",
        "_save",
        "save_predictor",
        "save_trace_rows",
        "_report_checkpoints",
    ):
        wrap(name)
    cfg = draw(i, 0, False)
    jaxpipe.run(parse_spec(spec_text(cfg)), out=out)
    mark("end")
    print(json.dumps({"i": i, "config": cfg, "marks": marks}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", type=int, nargs="+", default=[4, 16, 19, 20, 22])
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/stage_peaks"))
    ap.add_argument("--child", type=int)
    a = ap.parse_args()
    if a.child is not None:
        child(a.child, a.out)
        return
    env = os.environ | {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONPATH": ROOT}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                str(i),
                "--out",
                os.path.join(a.out, "runs", str(i)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in a.configs
    ]
    mib = 2**20
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "stage_peaks.jsonl"), "w") as f:
        for p in procs:
            o, e = p.communicate(timeout=300)
            if p.returncode:
                print("failed:", e.strip().splitlines()[-1:])
                continue
            row = json.loads(o.strip().splitlines()[-1])
            f.write(json.dumps(row) + "\n")
            print(
                f"config {row['i']}: {row['config']['hidden']} {row['config']['optimizer']} "
                f"{row['config']['precision']} batch {row['config']['batch']}"
            )
            for name, use, peak in row["marks"]:
                u = f"{use / mib:8.1f}" if use is not None else "     n/a"
                pk = f"{peak / mib:8.1f}" if peak is not None else "     n/a"
                print(f"   {name:32} in use {u} MiB  peak {pk} MiB")


if __name__ == "__main__":
    main()
