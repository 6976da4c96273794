"""jaxpipe against the loops users write by hand, side by side, in one run.

    python benchmarks/harness.py [--repeats N] [--only ...]   # issue 14's target table
    python benchmarks/harness.py --workload seed|large|all [--repeats N] [--quick]

Needs the bench extra (`pip install -e '.[bench]'`: torch, keras, scikit-learn, pandas);
a missing peer is skipped and said so. Writes benchmarks/RESULTS.md (machine, table,
targets) and prints one JSON line per measurement and per aggregate.

Workloads: seed (experiments/seed.toml: 12,000 × 50, MLP 128-128, batch 128, 5 epochs)
and large (benchmarks/large.toml: 200,000 × 50, MLP 512-512, batch 256, 3 epochs). The
harness loads each workload's data once through jaxpipe (same rows, same split) and
writes it to a temporary .npz that every peer reads. Every peer runs as its own process,
so whole-process wall time and peak RSS (os.wait4) are measured alike; peers are
interleaved within each repeat so machine noise hits them all, and each figure is the
median over repeats (steady epoch = median of epochs 2..N of a run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault("KERAS_BACKEND", "jax")  # before any keras import, the peers' too

import numpy as np  # noqa: E402

import jaxpipe  # noqa: E402
from jaxpipe.data.load import load_dataset  # noqa: E402

WORKLOADS = {
    "seed": os.path.join(ROOT, "experiments", "seed.toml"),
    "large": os.path.join(HERE, "large.toml"),
}
PEER_MODULES = {"torch": "torch", "keras": "keras", "sklearn": "sklearn", "csv": "pandas"}


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def machine() -> dict:
    import jax

    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 2**20
    except OSError:
        pass
    versions = {"jax": jax.__version__, "jaxpipe": jaxpipe.__version__, "numpy": np.__version__}
    for mod in ("torch", "keras", "sklearn", "pandas", "pyarrow"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent peers are reported as absent
            versions[mod] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem, 1) if mem else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(jax.devices()[0]),
        "versions": versions,
        "load_average_at_start": os.getloadavg(),
    }


# Runs argv as its child and writes its wall seconds and peak RSS. The meter is a small
# process: a child's ru_maxrss starts at its parent's RSS at fork (Linux keeps the
# forked image's high-water mark across exec), so forking peers straight from this
# harness, which holds the data and jax, would report the harness's size for every peer.
_METER = """
import json, os, signal, subprocess, sys, threading, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[3:])
timer = threading.Timer(float(sys.argv[2]), p.send_signal, (signal.SIGKILL,))
timer.start()
_, status, usage = os.wait4(p.pid, 0)
timer.cancel()
wall = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"wall": wall, "rss_kib": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "status": os.waitstatus_to_exitcode(status)}, f)
"""
PEER_TIMEOUT = 400  # seconds; a peer past it is reported as an error, not waited for


def run_process(argv: list[str], env: dict | None = None, result_file: str | None = None) -> dict:
    """Runs one process; returns its RESULT line's json (or the json in `result_file`)
    plus its wall seconds, peak RSS and CPU seconds (user + system, all its threads)."""
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        with tempfile.NamedTemporaryFile("r", suffix=".json") as m:
            proc = subprocess.run(
                [sys.executable, "-c", _METER, m.name, str(PEER_TIMEOUT), *argv],
                stdout=fo,
                stderr=fe,
                text=True,
                env=env,
                cwd=ROOT,
            )
            measured = json.load(m) if proc.returncode == 0 else {"status": -1}
        fo.seek(0), fe.seek(0)
        out, err = fo.read(), fe.read()
    wall, rss, status = measured.get("wall"), measured.get("rss_kib"), measured["status"]
    result = {}
    if result_file and os.path.exists(result_file):
        with open(result_file) as f:
            result = json.load(f)
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
    if status == -9:
        return {"error": f"killed after {PEER_TIMEOUT} s"}
    if status != 0 or not result:
        tail = (err or out).strip().splitlines()
        return {"error": tail[-1] if tail else f"exit {status}, no output"}
    cpu = measured.get("cpu")
    return {**result, "wall_seconds": wall, "peak_rss_mib": rss / 1024, "cpu_seconds": cpu}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _write_data(spec, folder: str) -> tuple[str, dict]:
    ds = load_dataset(spec)
    path = os.path.join(folder, f"{spec.experiment.name}.npz")
    np.savez(path, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val)
    widths = [ds.num_features, *spec.model.hidden, ds.num_classes]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    info = {
        "train_rows": int(ds.x_train.shape[0]),
        "val_rows": int(ds.x_val.shape[0]),
        "params": params,
        "data_mib": ds.nbytes / 2**20,
        "x": np.concatenate([ds.x_train, ds.x_val]),  # every row, for the CSV read
        "y": np.concatenate([ds.y_train, ds.y_val]),
    }
    return path, info


def _write_csv(info: dict, path: str) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    cols = {f"x{i}": info["x"][:, i] for i in range(info["x"].shape[1])}
    cols["label"] = info["y"]
    pacsv.write_csv(pa.table(cols), path)


def bench_workload(name: str, args, folder: str, env: dict) -> dict:
    spec = jaxpipe.load_spec(WORKLOADS[name], args.set)
    if args.quick:  # a smoke test of the harness itself: tiny data, same code paths
        rows = 3000 if name == "seed" else 6000
        spec = jaxpipe.load_spec(
            WORKLOADS[name], [*args.set, f"data.synthetic.rows={rows}", "data.validation=500"]
        )
    overrides = list(args.set) + (
        [f"data.synthetic.rows={spec.data.synthetic.rows}", "data.validation=500"]
        if args.quick
        else []
    )
    data, info = _write_data(spec, folder)
    t = spec.training
    hidden = ",".join(map(str, spec.model.hidden))
    common = ["--data", data, "--hidden", hidden, "--batch", str(t.batch_size)]
    common += ["--epochs", str(t.epochs), "--lr", str(spec.optimizer.learning_rate)]
    py, peers = sys.executable, os.path.join(HERE, "peers.py")
    sets = [a for o in overrides for a in ("--set", o)]
    cold = {**env, "JAXPIPE_COMPILATION_CACHE": "0"}
    commands: dict[str, tuple[list[str], dict]] = {
        "jaxpipe": ([py, peers, "jaxpipe", "--spec", WORKLOADS[name], *sets], cold),
        "jax_ref": ([py, peers, "jax_ref", *common], env),
    }
    if name == "large":
        steps = -(-info["train_rows"] // t.batch_size)
        chunk = -(-steps // 4) * t.batch_size  # 4 chunks
        commands["jaxpipe_stream"] = (
            [py, peers, "jaxpipe", "--spec", WORKLOADS[name], *sets, "--set"]
            + [f"data.chunk_rows={chunk}"],
            cold,
        )
    for peer in ("torch", "keras", "sklearn"):
        if _have(PEER_MODULES[peer]):
            commands[peer] = ([py, peers, peer, *common], env)
        else:
            emit(
                {
                    "workload": name,
                    "peer": peer,
                    "skipped": "not installed (pip install -e '.[bench]')",
                }
            )
    cache = os.path.join(folder, f"cache-{name}")
    cli_env = {**env, "JAXPIPE_CACHE_DIR": cache, "JAXPIPE_COMPILATION_CACHE": "1"}

    def cli(tag: str) -> dict:
        out = os.path.join(folder, f"cli-{name}-{tag}")
        argv = [py, "-m", "jaxpipe", "run", WORKLOADS[name], "--out", out, *sets]
        res = run_process(argv, cli_env, result_file=os.path.join(out, "summary.json"))
        if "error" not in res:
            res = {
                "peer": "jaxpipe_cli",
                "epoch_seconds": None,
                "compile_seconds": res["compile_seconds"],
                "val_accuracy": res["final"]["val_accuracy"],
                "wall_seconds": res["wall_seconds"],
                "peak_rss_mib": res["peak_rss_mib"],
            }
        return res

    runs: dict[str, list[dict]] = {p: [] for p in commands}
    runs["jaxpipe_cli_cold"] = [cli("cold")]  # empty cache: compiles and stores
    runs["jaxpipe_cli_warm"] = []
    emit({"workload": name, **runs["jaxpipe_cli_cold"][0], "peer": "jaxpipe_cli_cold"})
    roof_runs = []
    for r in range(args.repeats):
        for peer, (argv, penv) in commands.items():
            res = run_process(argv, penv)
            runs[peer].append(res)
            emit({"workload": name, "repeat": r, **res, "peer": peer})
        res = cli(f"warm{r}")
        runs["jaxpipe_cli_warm"].append(res)
        emit({"workload": name, "repeat": r, **res, "peer": "jaxpipe_cli_warm"})
        roof = run_process([py, peers, "roofline", "--n", str(args.matmul_n)], env)
        roof_runs.append(roof)
        emit({"workload": name, "repeat": r, **roof})
    # Where the epoch's time goes, in one process: roofline, matmuls alone, step math,
    # the jaxpipe epoch (Eigen multi/single-threaded) and the streamed epoch, interleaved.
    prof_argv = [py, os.path.join(HERE, "profile_epoch.py"), WORKLOADS[name], *sets]
    profile = run_process(prof_argv, {**env, "REPEATS": "5", "JAXPIPE_COMPILATION_CACHE": "0"})
    emit({"workload": name, **profile})
    return {"spec": spec, "info": info, "runs": runs, "roofline": roof_runs, "profile": profile}


def summarize(name: str, bench: dict) -> dict:
    """Per-peer medians over repeats, achieved GFLOP/s against the roofline, ratios."""
    info = bench["info"]
    roof = _median([r.get("jax_gflops") for r in bench["roofline"] if "error" not in r])
    roof_best = max((r.get("jax_gflops_best", 0) for r in bench["roofline"]), default=None)
    flops = 6 * info["params"] * info["train_rows"]
    rows = {}
    for peer, runs in bench["runs"].items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows[peer] = {"error": runs[0]["error"] if runs else "no runs"}
            continue
        row: dict = {
            "runs": len(ok),
            "wall_seconds": _median([r["wall_seconds"] for r in ok]),
            "peak_rss_mib": _median([r["peak_rss_mib"] for r in ok]),
            "val_accuracy": _median([r["val_accuracy"] for r in ok]),
            "compile_seconds": _median([r.get("compile_seconds") for r in ok]),
        }
        if ok[0].get("epoch_seconds"):
            first = [r["epoch_seconds"][0] + (r.get("compile_seconds") or 0.0) for r in ok]
            steady = [statistics.median(r["epoch_seconds"][1:]) for r in ok]
            row["first_epoch_seconds"] = _median(first)  # compile included, where separate
            row["steady_epoch_seconds"] = s = _median(steady)
            # Best run: noise on a shared machine only ever adds time.
            row["best_steady_epoch_seconds"] = min(steady)
            row["samples_per_second"] = info["train_rows"] / s
            row["gflops"] = flops / s / 1e9
            row["roofline_fraction"] = row["gflops"] / roof if roof else None
        rows[peer] = row
    base = rows.get("jaxpipe", {})
    for row in rows.values():
        if base.get("steady_epoch_seconds") and row.get("steady_epoch_seconds"):
            row["jaxpipe_epoch_ratio"] = base["steady_epoch_seconds"] / row["steady_epoch_seconds"]
        if base.get("best_steady_epoch_seconds") and row.get("best_steady_epoch_seconds"):
            row["jaxpipe_best_epoch_ratio"] = (
                base["best_steady_epoch_seconds"] / row["best_steady_epoch_seconds"]
            )
        if base.get("wall_seconds") and row.get("wall_seconds"):
            row["jaxpipe_process_ratio"] = base["wall_seconds"] / row["wall_seconds"]
    out = {
        "workload": name,
        "train_rows": info["train_rows"],
        "val_rows": info["val_rows"],
        "params": info["params"],
        "data_mib": info["data_mib"],
        "roofline_gflops": roof,
        "roofline_gflops_best": roof_best,
        "torch_matmul_gflops": _median([r.get("torch_gflops") for r in bench["roofline"]]),
        "peers": rows,
        "profile": bench["profile"].get("programs"),
    }
    emit({"aggregate": out})
    return out


def _fmt(v, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


PEER_LABELS = {
    "jaxpipe": "jaxpipe (API, cold compile)",
    "jaxpipe_stream": "jaxpipe streamed (4 chunks)",
    "jaxpipe_cli_cold": "`jaxpipe run` process, empty cache",
    "jaxpipe_cli_warm": "`jaxpipe run` process, warm cache",
    "jax_ref": "hand-written JAX scan (reference)",
    "torch": "PyTorch eager loop",
    "keras": "Keras 3 (JAX) `fit`",
    "sklearn": "scikit-learn MLPClassifier",
}


def profile_table(s: dict) -> list[str]:
    prof = s.get("profile")
    if not prof:
        return []
    roof = prof.get("roofline", {}).get("gflops")
    lines = [
        f"In-process breakdown ({s['workload']}; `python benchmarks/profile_epoch.py`, one "
        "process, programs interleaved, median of 5):",
        "",
        "| program | s/epoch | GFLOP/s | of in-process roofline |",
        "|---|---|---|---|",
    ]
    for k, v in prof.items():
        frac = f"{100 * v['gflops'] / roof:.0f}%" if roof else "—"
        lines.append(f"| {k} | {_fmt(v['seconds'])} | {v['gflops']:.1f} | {frac} |")
    return lines + [""]


def table(s: dict) -> list[str]:
    lines = [
        f"### {s['workload']}: {s['train_rows']:,} training rows (+{s['val_rows']:,} "
        f"validation), {s['params']:,} parameters, {s['data_mib']:.1f} MiB of data",
        "",
        f"fp32 matmul roofline (jax, {s['workload']} run): "
        f"{_fmt(s['roofline_gflops'], '.1f')} GFLOP/s median, "
        f"{_fmt(s['roofline_gflops_best'], '.1f')} best; torch matmul "
        f"{_fmt(s['torch_matmul_gflops'], '.1f')} GFLOP/s.",
        "",
        "| peer | compile + 1st epoch s | steady s/epoch | best run s/epoch | samples/s "
        "| GFLOP/s | of roofline | process s | peak RSS MiB | val acc "
        "| jaxpipe ÷ peer, epoch | jaxpipe ÷ peer, best epoch | jaxpipe ÷ peer, process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for peer, r in s["peers"].items():
        if "error" in r:
            lines.append(f"| {PEER_LABELS.get(peer, peer)} | error: {r['error']} |")
            continue
        first = r.get("first_epoch_seconds")
        if first is None and r.get("compile_seconds") is not None:
            first = r["compile_seconds"]
        lines.append(
            "| "
            + " | ".join(
                [
                    PEER_LABELS.get(peer, peer),
                    _fmt(first),
                    _fmt(r.get("steady_epoch_seconds")),
                    _fmt(r.get("best_steady_epoch_seconds")),
                    _fmt(r.get("samples_per_second"), ",.0f"),
                    _fmt(r.get("gflops"), ".1f"),
                    _fmt(r.get("roofline_fraction") and 100 * r["roofline_fraction"], ".0f")
                    + ("%" if r.get("roofline_fraction") else ""),
                    _fmt(r.get("wall_seconds")),
                    _fmt(r.get("peak_rss_mib"), ".0f"),
                    _fmt(r.get("val_accuracy"), ".3f"),
                    _fmt(r.get("jaxpipe_epoch_ratio"), ".2f"),
                    _fmt(r.get("jaxpipe_best_epoch_ratio"), ".2f"),
                    _fmt(r.get("jaxpipe_process_ratio"), ".2f"),
                ]
            )
            + " |"
        )
    return lines


def targets(summ: dict, csv: dict | None) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, limit, met) for each target of issue 7 that this run measured."""
    out = []

    def peer(w, p, k):
        return summ.get(w, {}).get("peers", {}).get(p, {}).get(k)

    def add(label, value, limit, met, fmt=".2f"):
        if value is not None:
            out.append((label, format(value, fmt), limit, met(value)))

    add(
        "seed: steady epoch, jaxpipe ÷ PyTorch",
        peer("seed", "torch", "jaxpipe_epoch_ratio"),
        "≤ 0.40",
        lambda v: v <= 0.4,
    )
    warm, torch_wall = (
        peer("seed", "jaxpipe_cli_warm", "wall_seconds"),
        peer("seed", "torch", "wall_seconds"),
    )
    if warm and torch_wall:
        add(
            "seed: whole process (warm cache) `jaxpipe run` ÷ PyTorch script",
            warm / torch_wall,
            "≤ 0.80",
            lambda v: v <= 0.8,
        )
    for w in ("seed", "large"):
        cold, hot = (
            peer(w, "jaxpipe_cli_cold", "compile_seconds"),
            peer(w, "jaxpipe_cli_warm", "compile_seconds"),
        )
        if cold and hot is not None:
            add(
                f"{w}: compile seconds, warm cache ÷ empty cache",
                hot / cold,
                "< 1 (cache hit)",
                lambda v: v < 0.5,
            )
    add(
        "large: jaxpipe GFLOP/s ÷ matmul roofline",
        peer("large", "jaxpipe", "roofline_fraction"),
        "≥ 0.85",
        lambda v: v >= 0.85,
    )
    add(
        "large: steady epoch, jaxpipe ÷ PyTorch",
        peer("large", "torch", "jaxpipe_epoch_ratio"),
        "≤ 0.70",
        lambda v: v <= 0.7,
    )
    add(
        "large: steady epoch, jaxpipe ÷ Keras-JAX",
        peer("large", "keras", "jaxpipe_epoch_ratio"),
        "< 1.00",
        lambda v: v < 1.0,
    )
    add(
        "large: steady epoch, jaxpipe ÷ hand-written JAX scan",
        peer("large", "jax_ref", "jaxpipe_epoch_ratio"),
        "≤ 1.10",
        lambda v: v <= 1.1,
    )
    prof = summ.get("large", {}).get("profile") or {}
    if "jaxpipe_multi" in prof and "roofline" in prof:
        add(
            "large: jaxpipe epoch GFLOP/s ÷ matmul roofline, in one process",
            prof["jaxpipe_multi"]["gflops"] / prof["roofline"]["gflops"],
            "≥ 0.85",
            lambda v: v >= 0.85,
        )
    if "jaxpipe_multi" in prof and "streamed_4_chunks" in prof:
        add(
            "large: streamed (4 chunks) ÷ resident throughput, in one process",
            prof["jaxpipe_multi"]["seconds"] / prof["streamed_4_chunks"]["seconds"],
            "≥ 0.80",
            lambda v: v >= 0.8,
        )
    s, r = (
        peer("large", "jaxpipe_stream", "samples_per_second"),
        peer("large", "jaxpipe", "samples_per_second"),
    )
    if s and r:
        add("large: streamed (4 chunks) ÷ resident throughput", s / r, "≥ 0.80", lambda v: v >= 0.8)
    if csv and "error" not in csv:
        add(
            "200,000-row CSV: jaxpipe read ÷ pandas.read_csv",
            csv["jaxpipe_seconds"] / csv["pandas_seconds"],
            "≤ 1.00",
            lambda v: v <= 1.0,
        )
    big, small = summ.get("large"), summ.get("seed")
    if big and small:
        extra = peer("large", "jaxpipe", "peak_rss_mib") - peer("seed", "jaxpipe", "peak_rss_mib")
        add(
            "large: jaxpipe peak RSS beyond the seed run's, in copies of the data set",
            extra / (big["data_mib"] - small["data_mib"]),
            "≲ 2",
            lambda v: v <= 2.5,
        )
    return out


BEGIN, END = "<!-- harness.py: begin -->", "<!-- harness.py: end -->"


def write_results(path: str, mach: dict, summ: dict, csv: dict | None, args, tgts) -> None:
    v = mach["versions"]
    lines = [
        "# Benchmarks",
        "",
        (
            f"Rendered from the log `{os.path.relpath(args.replay, ROOT)}` by "
            f"`python benchmarks/harness.py --replay` on "
            if getattr(args, "replay", None)
            else f"Written by `python benchmarks/harness.py --workload {args.workload} "
            f"--repeats {args.repeats}` on "
        )
        + f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        + (
            " (how each part was run: see the notes at the end)."
            if getattr(args, "replay", None)
            else "."
        ),
        "",
        f"**Machine**: {mach['cpu']}, {mach['cores']} cores, {mach['memory_gib']} GiB; "
        f"{mach['platform']}; Python {mach['python']}; device {mach['device']}. "
        f"Load average at start {', '.join(f'{x:.1f}' for x in mach['load_average_at_start'])} "
        "(a shared machine: ratios within this run are the figures to read).",
        "",
        "**Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".",
        "",
        "Every peer trains the same MLP (ReLU, softmax cross-entropy, Adam) on the same rows, "
        "split and batch size, evaluating on the validation split after every epoch (epoch "
        "seconds include that evaluation), each in its own process; figures are medians over "
        "the interleaved repeats (`runs` in results.jsonl). GFLOP/s = 6 × parameters × training rows ÷ "
        "steady epoch seconds. `compile + 1st epoch` is jaxpipe's compile stage plus its first "
        "epoch, and the first epoch (tracing and compiling included) for the others. "
        "jaxpipe ÷ peer below 1 means jaxpipe is faster.",
        "",
    ]
    for s in summ.values():
        lines += table(s) + [""] + profile_table(s)
    if csv:
        lines += [
            "### Reading the 200,000-row CSV of the large workload",
            "",
            f"jaxpipe.data.load.read_csv (pyarrow): {_fmt(csv.get('jaxpipe_seconds'))} s; "
            f"pandas.read_csv: {_fmt(csv.get('pandas_seconds'))} s (median of "
            f"{args.repeats * 2} interleaved reads, one process; {_fmt(csv.get('mib'), '.1f')} MiB).",
            "",
        ]
    lines += [
        "## Targets (issue 7)",
        "",
        "| target | measured | limit | met |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t} | {m} | {lim} | {'yes' if ok else 'NO'} |" for t, m, lim, ok in tgts]
    lines.append("")
    notes = os.path.join(HERE, "NOTES.md")
    if os.path.exists(notes):
        with open(notes) as f:
            lines += ["", f.read().strip(), ""]
    # Only the harness's block is rewritten: other sections (the planner's) are kept.
    block = (
        f"{BEGIN}\n" + "\n".join(lines).replace("# Benchmarks", "## Benchmarks", 1) + f"\n{END}\n"
    )
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1 :]
    else:
        text = (text.rstrip("\n") + "\n\n" if text else "# Benchmark results\n\n") + block
    with open(path, "w") as f:
        f.write(text)


def replay(path: str) -> tuple[dict, dict, dict | None, int]:
    """Rebuilds the summaries from a harness log (its JSON lines, e.g. of a run that was
    stopped early): returns (machine, summaries, csv, repeats completed)."""
    mach, csv, benches = {}, None, {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if "machine" in d:
                mach = d["machine"]
            elif "csv" in d and isinstance(d["csv"], dict):
                csv = d["csv"]
            elif "workload" in d and "peer" in d:
                b = benches.setdefault(d["workload"], {"runs": {}, "roofline": [], "profile": {}})
                if d["peer"] == "roofline":
                    b["roofline"].append(d)
                elif d["peer"] == "profile":
                    b["profile"] = d
                else:
                    b["runs"].setdefault(d["peer"], []).append(d)
    summ, done = {}, 0
    for name, b in benches.items():
        spec = jaxpipe.load_spec(WORKLOADS[name])
        ds = load_dataset(spec)
        widths = [ds.num_features, *spec.model.hidden, ds.num_classes]
        b["info"] = {
            "train_rows": int(ds.x_train.shape[0]),
            "val_rows": int(ds.x_val.shape[0]),
            "params": sum(a * c + c for a, c in zip(widths[:-1], widths[1:])),
            "data_mib": ds.nbytes / 2**20,
        }
        done = max(done, len(b["roofline"]))
        summ[name] = summarize(name, b)
    return mach, summ, csv, done


def main() -> None:
    if not any(a.startswith(("--workload", "--replay", "--quick")) for a in sys.argv[1:]):
        # Without a workload: issue 14's target table (benchmarks/targets.py), today's
        # figures beside this run's; the peer comparison needs --workload seed|large|all.
        import targets

        targets.main(sys.argv[1:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", choices=["seed", "large", "all"], default="all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--matmul-n", type=int, default=2048, help="size of the roofline matmul")
    p.add_argument("--set", action="append", default=[], help="spec override for jaxpipe")
    p.add_argument("--quick", action="store_true", help="tiny data: check the harness works")
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    p.add_argument("--replay", metavar="LOG", help="write RESULTS.md from a harness log")
    args = p.parse_args()
    if args.replay:
        mach, summ, csv, args.repeats = replay(args.replay)
        tgts = targets(summ, csv)
        write_results(args.results, mach, summ, csv, args, tgts)
        print(f"wrote {args.results} from {args.replay}", file=sys.stderr)
        return
    mach = machine()
    emit({"machine": mach})
    env = {**os.environ, "PYTHONPATH": ROOT, "KERAS_BACKEND": "jax"}
    names = ["seed", "large"] if args.workload == "all" else [args.workload]
    summ, csv = {}, None
    with tempfile.TemporaryDirectory(prefix="jaxpipe-bench-") as folder:
        for name in names:
            bench = bench_workload(name, args, folder, env)
            summ[name] = summarize(name, bench)
            if name == "large":
                if _have("pandas"):
                    path = os.path.join(folder, "large.csv")
                    _write_csv(bench["info"], path)
                    csv = run_process(
                        [sys.executable, os.path.join(HERE, "peers.py"), "csv", "--data", path]
                        + ["--repeats", str(2 * args.repeats)],
                        env,
                    )
                    csv["mib"] = os.path.getsize(path) / 2**20
                    emit({"csv": csv})
                else:
                    emit({"csv": "skipped: pandas not installed (pip install -e '.[bench]')"})
    tgts = targets(summ, csv)
    for t, m, lim, ok in tgts:
        emit({"target": t, "measured": m, "limit": lim, "met": ok})
    write_results(args.results, mach, summ, csv, args, tgts)
    print(f"wrote {args.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
