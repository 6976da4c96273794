"""A sweep as one program against the loops users write by hand, side by side, in one run.

    python benchmarks/sweep_bench.py [--seeds 4] [--lrs 4] [--epochs 5] [--skip-processes]

16 trials of experiments/seed.toml (4 seeds × 4 learning rates) three ways:
  sweep      one `jaxpipe run` process with a [sweep] section (one compiled program)
  processes  16 sequential `jaxpipe run` processes (--set seed / learning rate)
  in-process 16 `jaxpipe.runner.shell` calls in one Python process (one program per trial)
Each mode gets a fresh, empty compilation cache (JAXPIPE_CACHE_DIR), as a first sweep
would. Prints one JSON line per mode and the ratios; the issue's targets on the 2-core
CPU: sweep ≤ 0.35 × processes and ≤ 0.6 × in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEED_SPEC = os.path.join(ROOT, "experiments", "seed.toml")
LRS = [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-4, 3e-1, 1e-4]

IN_PROCESS = """
import sys, time, jaxpipe
spec, out, trials = sys.argv[1], sys.argv[2], eval(sys.argv[3])
t0 = time.perf_counter()
for k, (seed, lr, epochs) in enumerate(trials):
    s = jaxpipe.load_spec(spec, {"experiment.seed": seed, "optimizer.learning_rate": lr,
                                 "training.epochs": epochs})
    jaxpipe.run(s, f"{out}/{k}", verbose=False)
print(time.perf_counter() - t0)
"""


def _env(cache: str) -> dict[str, str]:
    return os.environ | {"JAXPIPE_CACHE_DIR": cache, "PYTHONPATH": ROOT}


def _timed(argv: list[str], cache: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=_env(cache), cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--lrs", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--skip-processes", action="store_true")
    a = ap.parse_args()
    seeds, lrs = list(range(a.seeds)), LRS[: a.lrs]
    trials = [(s, lr, a.epochs) for s in seeds for lr in lrs]
    tmp = tempfile.mkdtemp(prefix="jaxpipe-sweep-bench-")
    spec = os.path.join(tmp, "sweep.toml")
    with open(SEED_SPEC) as f:
        text = f.read().replace('name = "seed-tabular"', 'name = "seed-sweep"')
    with open(spec, "w") as f:
        f.write(text + f'\n[sweep]\n[sweep.values]\n"experiment.seed" = {seeds}\n')
        f.write(f'"optimizer.learning_rate" = {lrs}\n')
    py, times = sys.executable, {}
    times["sweep"] = _timed(
        [py, "-m", "jaxpipe", "run", spec, "--out", f"{tmp}/sweep", "-q",
         "--set", f"training.epochs={a.epochs}"], f"{tmp}/c1"
    )  # fmt: skip
    if not a.skip_processes:
        total = 0.0
        for k, (s, lr, e) in enumerate(trials):
            total += _timed(
                [py, "-m", "jaxpipe", "run", SEED_SPEC, "--out", f"{tmp}/p{k}", "-q",
                 "--set", f"experiment.seed={s}", "--set", f"optimizer.learning_rate={lr}",
                 "--set", f"training.epochs={e}"], f"{tmp}/c2"
            )  # fmt: skip
        times["processes"] = total
    t0 = time.perf_counter()
    subprocess.run(
        [py, "-c", IN_PROCESS, SEED_SPEC, f"{tmp}/inproc", repr(trials)],
        check=True, env=_env(f"{tmp}/c3"), cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    times["in_process"] = time.perf_counter() - t0
    with open(f"{tmp}/sweep/summary.json") as f:
        programs = json.load(f)["programs"]
    load = os.getloadavg()
    for mode, secs in times.items():
        print(
            json.dumps(
                {"mode": mode, "trials": len(trials), "epochs": a.epochs, "seconds": round(secs, 2)}
            )
        )
    ratios = {f"sweep/{m}": round(times["sweep"] / s, 3) for m, s in times.items() if m != "sweep"}
    print(json.dumps({"ratios": ratios, "programs": programs, "loadavg": load}))


if __name__ == "__main__":
    main()
