"""`jaxpipe plan` cold, warm and with the cache off, in CPU seconds, in one run of this
script (issue 24 item 8).

    python benchmarks/plan_speed.py [--repeat 1]

Two specs, each planned by the real command line (`jaxpipe.cli.main`, `--json`) in a
fresh process:
  seed   experiments/seed.toml on the local devices
  16gb   experiments/too_big_for_16gb.toml --gpu T4 (no --verify)
three ways:
  off    JAXPIPE_COMPILATION_CACHE=0: nothing kept, every figure compiled (as before the
         planner kept its figures)
  cold   a fresh, empty JAXPIPE_CACHE_DIR: compiled, and kept
  warm   the same folder again: read back, nothing compiled
Two CPU figures per run: the whole process (user + system of the process and every
child it waited for, i.e. the interpreter, the imports, and the simulated-device child
that compiles the FSDP layouts), and the `jaxpipe.plan` call alone (this process's CPU
plus its children's, around the call; the imports of jax and jaxpipe fall outside it).
Also wall seconds and the machine's load average, and whether the plan's JSON is byte
for byte the same as the cache-off run's (the `host` record aside: it reads the host's
free memory afresh). Targets: seed warm ≤ 1 s of CPU, 16gb ≤ 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SPECS = {
    "seed": [os.path.join(ROOT, "experiments", "seed.toml")],
    "16gb": [os.path.join(ROOT, "experiments", "too_big_for_16gb.toml"), "--gpu", "T4"],
}

# The command line with `jaxpipe.plan` timed: CPU of this process and its children.
CLI = """
import json, resource, sys, time
import jaxpipe

def cpu():
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime

plan, timed = jaxpipe.plan, {}  # the attribute imports jaxpipe.api (and jax) here

def plan_timed(*args, **kwargs):
    t = cpu()
    try:
        return plan(*args, **kwargs)
    finally:
        timed["plan_cpu_s"] = cpu() - t

jaxpipe.plan = plan_timed
from jaxpipe.cli.main import main
rc = main(["plan", *sys.argv[2:], "--json"])
with open(sys.argv[1], "w") as f:
    json.dump(timed | {"rc": rc}, f)
"""


def _children_cpu() -> float:
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return c.ru_utime + c.ru_stime


def plan_once(args: list[str], env: dict[str, str]) -> dict:
    """One `jaxpipe plan ... --json` process: its CPU and wall seconds, the plan call's
    CPU, the load average before it, and its JSON (less the host record)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as timed:
        load = os.getloadavg()[0]
        cpu, wall = _children_cpu(), time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", CLI, timed.name, *args],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
        inner = json.load(open(timed.name))
    plan = json.loads(done.stdout)
    plan.pop("host", None)
    return {
        "process_cpu_s": round(cpu, 2),
        "plan_cpu_s": round(inner["plan_cpu_s"], 2),
        "wall_s": round(wall, 2),
        "load": round(load, 2),
        "json": json.dumps(plan, indent=2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the three modes")
    repeat = parser.parse_args().repeat
    env = os.environ | {"PYTHONPATH": ROOT}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's shell has
    rows = []
    for _ in range(repeat):
        for name, args in SPECS.items():
            with tempfile.TemporaryDirectory() as cache:
                on = env | {"JAXPIPE_COMPILATION_CACHE": "1", "JAXPIPE_CACHE_DIR": cache}
                runs = {
                    "off": plan_once(args, env | {"JAXPIPE_COMPILATION_CACHE": "0"}),
                    "cold": plan_once(args, on),
                    "warm": plan_once(args, on),
                }
            for mode, r in runs.items():
                same = r["json"] == runs["off"]["json"]
                row = {"spec": name, "mode": mode} | {k: v for k, v in r.items() if k != "json"}
                rows.append(row | {"json_same_as_off": same})
                print(json.dumps(rows[-1]), flush=True)
    print()
    print("| spec | mode | process CPU s | plan() CPU s | wall s | load | JSON = off |")
    print("|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['spec']} | {r['mode']} | {r['process_cpu_s']:.2f} | {r['plan_cpu_s']:.2f} "
            f"| {r['wall_s']:.2f} | {r['load']:.2f} | {'yes' if r['json_same_as_off'] else 'NO'} |"
        )
    for name in SPECS:
        off = [r for r in rows if r["spec"] == name and r["mode"] == "off"]
        for mode in ("cold", "warm"):
            got = [r for r in rows if r["spec"] == name and r["mode"] == mode]
            ratio = sum(r["process_cpu_s"] for r in got) / sum(r["process_cpu_s"] for r in off)
            print(f"{name}: {mode} / off, process CPU: {ratio:.3f}")


if __name__ == "__main__":
    main()
