"""Cross-validation as one program against the sequential runs users write by hand, side
by side, in one run of this script.

    python benchmarks/cv.py [--folds 5] [--epochs 5]

experiments/seed.toml (12,000 × 50 synthetic rows, MLP 128-128, batch 128) with
`[data] folds = K`, three ways, on the same K stratified splits:
  cv         one `jaxpipe run --set data.folds=K` process (one compiled program)
  processes  K sequential `jaxpipe run` processes, fold k's training part and held-out
             rows given as npz files (data.path, data.validation)
  in-process K `jaxpipe.fit` calls in one Python process, the fold's rows in memory
  cv_in_process  one `jaxpipe.cross_validate(spec, folds=K)` call in one Python process
The processes write run directories (curves.png and the rest), as `jaxpipe run` does;
the in-process calls write none. Ratios: cv / processes and cv_in_process / in_process.
Each mode gets a fresh, empty compilation cache (JAXPIPE_CACHE_DIR), as a first run
would (within a mode the later folds reuse the first's compiled programs). Prints one
JSON line per mode and the ratios; the issue's target: cv ≤ 0.35 × the sequential runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
SEED_SPEC = os.path.join(ROOT, "experiments", "seed.toml")

IN_PROCESS = """
import sys, time, numpy as np, jaxpipe
spec, tmp, folds = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.perf_counter()
for k in range(folds):
    tr, va = np.load(f"{tmp}/fold{k}-train.npz"), np.load(f"{tmp}/fold{k}-val.npz")
    jaxpipe.fit(spec, data=(tr["x"], tr["y"]), validation=(va["x"], va["y"]))
print(time.perf_counter() - t0)
"""

CV_IN_PROCESS = """
import sys, time, jaxpipe
spec, folds = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
jaxpipe.cross_validate(jaxpipe.load_spec(spec, ["data.validation=0.2"]), folds=folds)
print(time.perf_counter() - t0)
"""

FOLD_SPEC = """
[experiment]
name = "cv-fold-{k}"
seed = 0
[data]
path = "fold{k}-train.npz"
validation = "fold{k}-val.npz"
[model]
hidden = [128, 128]
[training]
epochs = {epochs}
batch_size = 128
"""


def _env(cache: str) -> dict[str, str]:
    return os.environ | {"JAXPIPE_CACHE_DIR": cache, "PYTHONPATH": ROOT}


def _timed(argv: list[str], cache: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=_env(cache), cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _write_folds(tmp: str, folds: int, epochs: int) -> None:
    """Fold k's rows as npz files and a spec naming them: the splits cv makes."""
    from jaxpipe.data.folds import fold_indices
    from jaxpipe.data.load import make_synthetic
    from jaxpipe.spec.experiment import load_spec

    spec = load_spec(SEED_SPEC)
    x, y = make_synthetic(spec.data.synthetic, spec.experiment.seed)
    for k, (train, val) in enumerate(fold_indices(y, folds, 0, stratify=True)):
        np.savez(f"{tmp}/fold{k}-train.npz", x=x[train], y=y[train])
        np.savez(f"{tmp}/fold{k}-val.npz", x=x[val], y=y[val])
        with open(f"{tmp}/fold{k}.toml", "w") as f:
            f.write(FOLD_SPEC.format(k=k, epochs=epochs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="jaxpipe-cv-bench-")
    _write_folds(tmp, a.folds, a.epochs)
    py, times = sys.executable, {}
    times["cv"] = _timed(
        [py, "-m", "jaxpipe", "run", SEED_SPEC, "--out", f"{tmp}/cv", "-q",
         "--set", f"data.folds={a.folds}", "--set", "data.validation=0.2",
         "--set", f"training.epochs={a.epochs}"], f"{tmp}/c1"
    )  # fmt: skip
    total = 0.0
    for k in range(a.folds):
        total += _timed(
            [py, "-m", "jaxpipe", "run", f"{tmp}/fold{k}.toml", "--out", f"{tmp}/p{k}", "-q"],
            f"{tmp}/c2",
        )
    times["processes"] = total
    spec = f"{tmp}/fold0.toml"  # the same model and training; the rows come in memory
    t0 = time.perf_counter()
    subprocess.run(
        [py, "-c", IN_PROCESS, spec, tmp, str(a.folds)],
        check=True, env=_env(f"{tmp}/c3"), cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    times["in_process"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run(
        [py, "-c", CV_IN_PROCESS, SEED_SPEC, str(a.folds)],
        check=True, env=_env(f"{tmp}/c4"), cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    times["cv_in_process"] = time.perf_counter() - t0
    with open(f"{tmp}/cv/summary.json") as f:
        summary = json.load(f)
    for mode, secs in times.items():
        print(json.dumps({"mode": mode, "folds": a.folds, "epochs": a.epochs,
                          "seconds": round(secs, 2)}))  # fmt: skip
    ratios = {
        "cv/processes": round(times["cv"] / times["processes"], 3),
        "cv_in_process/in_process": round(times["cv_in_process"] / times["in_process"], 3),
    }
    check = [json.load(open(f"{tmp}/p{k}/summary.json"))["final"]["val_loss"]
             for k in range(a.folds)]  # fmt: skip
    cv_losses = [m["val_loss"] for m in summary["cv"]["metrics"]]
    print(json.dumps({"ratios": ratios, "programs": summary["programs"],
                      "max_val_loss_difference": float(np.max(np.abs(np.subtract(cv_losses, check)))),
                      "loadavg": os.getloadavg()}))  # fmt: skip


if __name__ == "__main__":
    main()
