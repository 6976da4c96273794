"""What each command imports, in fresh processes (issue 26): CPU and wall medians of
interleaved runs, one source tree or several side by side (`--trees A,B`: e.g. main's
checkout and this one; each process gets PYTHONPATH=tree and runs from a neutral folder,
so `-c` imports the tree's jaxpipe, not the current directory's).

    python benchmarks/command_imports.py [--reps 7] [--trees A,B] [--bytecode]

Rows: `import jax, optax` (the baseline), `import jax, optax, flax.linen` (the floor of
anything that builds the model), `import jaxpipe.api`, what `jaxpipe run` imports
(`jaxpipe.api` and the run's shell); then `jaxpipe plan` of the seed spec (made once
before, so its figures are stored), `devices` and `compare` of two hand-written run
directories; then the run's two pictures (curves.png, trace.png) drawn once in a fresh
process, as a run draws them, from a finished seed run. CPU is the child's user + sys
time (what the machine's other load disturbs least); ratios are to the baseline's CPU.

`--bytecode`: with Python's bytecode cache (as an installed package has it; kept in a
folder of its own, never in the trees). Without it, the environment's
PYTHONDONTWRITEBYTECODE (if set) makes every process compile jaxpipe from source.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IMPORTS = [
    ("import jax, optax", "import jax, optax"),
    ("import jax, optax, flax.linen", "import jax, optax, flax.linen"),
    ("import jaxpipe.api", "import jaxpipe.api"),
    ("jaxpipe run's imports", "import jaxpipe.api, jaxpipe.runner.shell"),
]

PICTURES = r"""
import json, os, sys, time
from jaxpipe.report.charts import import_matplotlib, write_curves
from jaxpipe.report.trace_view import write_trace_png
from jaxpipe.saved.trace import trace_run
run, out = sys.argv[1], sys.argv[2]
history = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
record = trace_run(run)
import_matplotlib()
t0 = time.process_time()
write_curves(history, os.path.join(out, "curves.png"), best_epoch=len(history))
t1 = time.process_time()
write_trace_png(record, os.path.join(out, "trace.png"))
print(json.dumps([t1 - t0, time.process_time() - t1]))
"""


def _child(argv: list[str], env: dict, cwd: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys) and stdout of one fresh process."""
    r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime, p.stdout


def _run_dirs(work: str) -> list[str]:
    """Two run directories with the files `compare` reads (no training)."""
    dirs = []
    for name, losses in (("a", [1.0, 0.6, 0.5]), ("b", [0.9, 0.7, 0.6])):
        d = os.path.join(work, name)
        os.makedirs(d)
        summary = {"status": "completed", "task": "classification"}
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump(summary, f)
        with open(os.path.join(d, "spec.toml"), "w") as f:
            f.write("[training]\nepochs = 3\n")
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            f.writelines(
                json.dumps({"epoch": e, "val_loss": v}) + "\n" for e, v in enumerate(losses, 1)
            )
        dirs.append(d)
    return dirs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--trees", default=ROOT, help="comma-separated source trees")
    p.add_argument("--bytecode", action="store_true", help="with a bytecode cache")
    a = p.parse_args()
    trees = a.trees.split(",")
    work = tempfile.mkdtemp(prefix="jaxpipe-command-imports-")
    py, seed = sys.executable, os.path.join(ROOT, "experiments", "seed.toml")
    base = os.environ | {"JAXPIPE_CACHE_DIR": os.path.join(work, "cache")}
    base |= {"JAXPIPE_COMPILATION_CACHE": "1"}
    if a.bytecode:
        base.pop("PYTHONDONTWRITEBYTECODE", None)
        base["PYTHONPYCACHEPREFIX"] = os.path.join(work, "bytecode")
    env = {t: base | {"PYTHONPATH": t} for t in trees}
    dirs = _run_dirs(work)
    cases = [(name, [py, "-c", code]) for name, code in IMPORTS]
    plot = ["--plot", os.path.join(work, "compare.png"), "-q"]
    cases += [
        ("jaxpipe plan seed.toml (made before)", [py, "-m", "jaxpipe", "plan", seed, "-q"]),
        ("jaxpipe devices", [py, "-m", "jaxpipe", "devices", "-q"]),
        ("jaxpipe compare A B --plot P", [py, "-m", "jaxpipe", "compare", *dirs, *plot]),
    ]
    run = os.path.join(work, "seed-run")
    for i, t in enumerate(trees):  # the plan's figures stored, the bytecode written
        for _, argv in cases:
            _child(argv, env[t], work)
        if i == 0:  # a finished seed run to draw the pictures of
            _child([py, "-m", "jaxpipe", "run", seed, "-q", "--out", run], env[t], work)
    pictures = [py, "-c", PICTURES, run, work]
    found: dict[tuple[str, str], list] = {}
    load = os.getloadavg()
    for _ in range(a.reps):
        for name, argv in cases:
            for t in trees:
                found.setdefault((name, t), []).append(_child(argv, env[t], work)[:2])
        for t in trees:
            drawn = json.loads(_child(pictures, env[t], work)[2])
            found.setdefault(("curves.png, first draw (CPU)", t), []).append((0, drawn[0]))
            found.setdefault(("trace.png, after it (CPU)", t), []).append((0, drawn[1]))
    floor = statistics.median(c for _, c in found[(IMPORTS[0][0], trees[0])])
    print(f"load average {load[0]:.2f} → {os.getloadavg()[0]:.2f}; bytecode {a.bytecode}")
    print(f"{'':38} {'tree':>14} {'wall s':>8} {'CPU s':>7} {'÷ base':>7}")
    for (name, t), xs in found.items():
        wall, cpu = (statistics.median(x[i] for x in xs) for i in (0, 1))
        tree = os.path.basename(t.rstrip("/"))
        print(f"{name:38} {tree:>14} {wall:8.3f} {cpu:7.3f} {cpu / floor:7.3f}")


if __name__ == "__main__":
    main()
