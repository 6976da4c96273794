"""What a user feels first (issue 26): fresh processes, interleaved, medians.

    python benchmarks/first_call.py [--reps 5] [--tree DIR]

1. imports: `import jax, optax` against what `jaxpipe run` imports (`jaxpipe.api` and
   the run's shell), each in a fresh interpreter;
2. `jaxpipe run experiments/seed.toml --quiet` as a whole process, warm compilation
   cache (a run before the timed ones), against a hand-written JAX script of the same run
   (min-max scaling, a jitted `lax.scan` epoch of adam steps over shuffled batches, the
   validation loss and accuracy each epoch, `float()` of the metrics), also warm (JAX's
   persistent cache in its own folder), and again against the same script as it is
   usually written, without a persistent cache (it traces and compiles every time);
3. the seed epoch as each side reports it: the run's `epoch_seconds` in its metrics.jsonl
   (the epoch program, the train metrics' host sync and the evaluation's dispatch, as
   `runner/loop.py` times them) against the hand-written script's own per-epoch times
   (the epoch, the evaluation and `float()` of the three metrics), from the same
   interleaved processes as 2; the median epoch of each process, then the median over
   processes (the first epoch, which includes the hand-written side's compile, is
   outside both medians' middle);
4. the run's own stage times (summary.json of the last warm run): train, checkpoint,
   and what the run spends outside its stages;
5. a first `jaxpipe.fit` in a fresh process on a 1,600 × 20 table (20 epochs, hidden
   [64]), warm cache, against scikit-learn's `MLPClassifier` (same rows, 20 epochs) in a
   fresh process; and the same first fit with an empty cache (a fresh JAXPIPE_CACHE_DIR
   each time: every program traced and compiled).

Each pair runs interleaved `--reps` times; the table gives medians and the ratio. Every
process reads bytecode (.pyc) as an installed package's would: PYTHONDONTWRITEBYTECODE is
dropped and PYTHONPYCACHEPREFIX points into the scratch folder, filled by the untimed
warm-up runs (without it, a tree run from source compiles every module each time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HAND_WRITTEN = r"""
import time, sys
t0 = time.perf_counter()
import jax, jax.numpy as jnp, numpy as np, optax
if sys.argv[1] != "-":  # "-": no persistent cache, as a script is usually written
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
rng = np.random.default_rng(0)
x = rng.normal(size=(12000, 50)).astype(np.float32)
y = rng.integers(0, 4, 12000)
xt, yt, xv, yv = x[:10000], y[:10000], x[10000:], y[10000:]
lo, hi = xt.min(0), xt.max(0)
scale = lambda a: (a - lo) / np.where(hi > lo, hi - lo, 1.0)
xt, xv = jax.device_put(scale(xt)), jax.device_put(scale(xv))
yt, yv = jax.device_put(yt), jax.device_put(yv)
def init(key, sizes=(50, 128, 128, 4)):
    keys = jax.random.split(key, len(sizes) - 1)
    return [(jax.random.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros(b))
            for k, a, b in zip(keys, sizes[:-1], sizes[1:])]
def forward(p, x):
    for w, b in p[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = p[-1]
    return x @ w + b
def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(forward(p, x), y).mean()
opt = optax.adam(1e-3)
@jax.jit
def epoch(p, s, key):
    idx = jax.random.permutation(key, 10000)[: 78 * 128].reshape(78, 128)
    def step(c, i):
        p, s = c
        l, g = jax.value_and_grad(loss)(p, xt[i], yt[i])
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), l
    (p, s), ls = jax.lax.scan(step, (p, s), idx)
    return p, s, ls.mean()
@jax.jit
def evaluate(p):
    z = forward(p, xv)
    return optax.softmax_cross_entropy_with_integer_labels(z, yv).mean(), (z.argmax(-1) == yv).mean()
p = init(jax.random.key(0)); s = opt.init(p); key = jax.random.key(1)
seconds = []
for e in range(5):
    t = time.perf_counter()
    key, k = jax.random.split(key)
    p, s, tl = epoch(p, s, k)
    vl, va = evaluate(p)
    float(tl), float(vl), float(va)
    seconds.append(time.perf_counter() - t)
print(*seconds)
"""

FIT = r"""
import time, sys
import numpy as np
rng = np.random.default_rng(0)
x = rng.normal(size=(1600, 20)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 0.5)
if sys.argv[1] == "jaxpipe":
    import jaxpipe
    spec = {"model": {"hidden": [64]}, "training": {"epochs": 20, "batch_size": 64}}
    jaxpipe.fit(spec, x, y)
else:
    from sklearn.neural_network import MLPClassifier
    MLPClassifier(hidden_layer_sizes=(64,), max_iter=20, batch_size=64).fit(x, y)
"""


def _wall(argv: list[str], env: dict | None = None, stdout: list | None = None) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, check=True, env=env, capture_output=True, text=True)
    if stdout is not None:
        stdout.append(done.stdout)
    return time.perf_counter() - t0


def _epochs(run_dir: str) -> float:
    """The median of a run's epoch times as its metrics.jsonl reports them."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return statistics.median(json.loads(line)["epoch_seconds"] for line in f)


def _pair(name, a, b, reps) -> dict:
    """`a` and `b` (callables returning seconds) interleaved `reps` times."""
    xs, ys = [], []
    for _ in range(reps):
        xs.append(a())
        ys.append(b())
    ma, mb = statistics.median(xs), statistics.median(ys)
    print(f"{name:44} {ma:7.3f} s  {mb:7.3f} s  {ma / mb:6.3f}", flush=True)
    return {"name": name, "jaxpipe_s": ma, "baseline_s": mb, "ratio": ma / mb}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tree", default=ROOT, help="the jaxpipe tree measured (default: this one)")
    a = p.parse_args()
    py = sys.executable
    work = tempfile.mkdtemp(prefix="jaxpipe-first-call-")
    env = os.environ | {
        "PYTHONPATH": a.tree,
        "JAXPIPE_CACHE_DIR": os.path.join(work, "jaxpipe-cache"),
        "JAXPIPE_COMPILATION_CACHE": "1",
        # Bytecode as an installed package has it, written by the untimed warm-up runs
        # into a folder of this script's own (no tree's __pycache__ touched).
        "PYTHONPYCACHEPREFIX": os.path.join(work, "pycache"),
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    # Children start in the scratch folder: `python -c` and `-m` put their working
    # directory first on sys.path, which from inside a checkout would import that
    # checkout's jaxpipe, not --tree's.
    os.chdir(work)
    found: list[str] = []
    _wall([py, "-c", "import jaxpipe; print(jaxpipe.__file__)"], env, found)
    tree = os.path.realpath(a.tree)
    if not os.path.realpath(found[0].strip()).startswith(tree + os.sep):
        sys.exit(f"error: the children import jaxpipe from {found[0].strip()}, not {tree}")
    seed = os.path.join(ROOT, "experiments", "seed.toml")
    hand = os.path.join(work, "hand.py")
    with open(hand, "w") as f:
        f.write(HAND_WRITTEN)
    fit = os.path.join(work, "fit.py")
    with open(fit, "w") as f:
        f.write(FIT)
    n = [0]
    epochs: dict[str, list[float]] = {"run": [], "hand": []}

    def run():
        n[0] += 1
        out = os.path.join(work, f"run{n[0]}")
        wall = _wall([py, "-m", "jaxpipe", "run", seed, "--out", out, "--quiet"], env)
        epochs["run"].append(_epochs(out))
        return wall

    def hand_run(cache: str | None = None):
        printed: list[str] = []
        wall = _wall([py, hand, cache or hand_cache], env, printed)
        if cache is None:  # the warm script's epochs (the cold one's first includes compiles)
            epochs["hand"].append(statistics.median(float(v) for v in printed[0].split()))
        return wall

    def cold_fit():
        fresh = env | {"JAXPIPE_CACHE_DIR": tempfile.mkdtemp(prefix="cold-cache", dir=work)}
        return _wall([py, fit, "jaxpipe"], fresh)

    hand_cache = os.path.join(work, "hand-cache")
    run()  # warm the caches (not timed)
    hand_run()
    _wall([py, fit, "jaxpipe"], env)
    _wall([py, fit, "sklearn"], env)
    _wall([py, "-c", "import jaxpipe.api, jaxpipe.runner.shell"], env)
    load = os.getloadavg()[0]
    print(f"{'':44} {'jaxpipe':>9}  {'baseline':>9}  {'ratio':>6}")
    rows = [
        _pair(
            "imports: jaxpipe run's vs `import jax, optax`",
            lambda: _wall([py, "-c", "import jaxpipe.api, jaxpipe.runner.shell"], env),
            lambda: _wall([py, "-c", "import jax, optax"], env),
            a.reps,
        ),
        _pair(
            "seed run, whole process, warm vs hand-written",
            run,
            hand_run,
            a.reps,
        ),  # fmt: skip
        _pair(
            "seed run, warm vs hand-written without a cache",
            run,
            lambda: hand_run("-"),
            a.reps,
        ),  # fmt: skip
        _pair(
            "first fit 1600 × 20, fresh process vs sklearn",
            lambda: _wall([py, fit, "jaxpipe"], env),
            lambda: _wall([py, fit, "sklearn"], env),
            a.reps,
        ),  # fmt: skip
        _pair(
            "first fit, empty cache vs sklearn",
            cold_fit,
            lambda: _wall([py, fit, "sklearn"], env),
            a.reps,
        ),  # fmt: skip
    ]
    ours, theirs = (statistics.median(epochs[k][1:]) for k in ("run", "hand"))  # not the warm-up
    print(f"{'seed epoch as reported vs hand-written':44} {ours:7.4f} s  {theirs:7.4f} s  "
          f"{ours / theirs:6.3f}")  # fmt: skip
    rows.append({"name": "seed epoch", "jaxpipe_s": ours, "baseline_s": theirs,
                 "ratio": ours / theirs})  # fmt: skip
    summary = json.load(open(os.path.join(work, f"run{n[0]}", "summary.json")))
    stages = {s["name"]: s["seconds"] for s in summary["stages"]}
    share = stages.get("checkpoint", 0.0) / stages["train"]
    print(f"seed run stages (last warm run): {json.dumps(stages)}")
    print(f"checkpoint ÷ train: {share:.3f}; load average {load:.2f} → {os.getloadavg()[0]:.2f}")
    rows.append({"name": "checkpoint / train", "ratio": share, "stages": stages})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
