"""The issue-14 target table, measured in one run: `python benchmarks/harness.py` (or
`python benchmarks/targets.py`) [--repeats N] [--only NAME,...] [--results PATH].

Every figure is a ratio of two things measured in this run, interleaved, on the same
machine, as medians over repeats; nothing is compared with a number from another run
except the "today" column, which quotes issue 14 (main at a20e57b, same 2-core machine).
Each process is timed whole (wall seconds and peak RSS from os.wait4, as harness.py's
peers are). Rows:

  process_warm / process_cold  `jaxpipe run experiments/seed.toml` (warm / empty
      compilation cache) ÷ the hand-written JAX script (peers.py jax_ref, compiling cold)
  epoch_seed / epoch_large     benchmarks/epoch_ratio.py (one process, interleaved)
  checkpoint                   checkpoint ÷ train stage seconds, default settings, seed
      and digits (`jaxpipe run`, warm cache)
  help                         `jaxpipe --help` and `jaxpipe schema` wall seconds
  memory                       (peak RSS of a 200k-row large run − that of a 3k-row run
      of the same model) ÷ the data set's bytes
  csv                          reading the large workload's 200k-row CSV: jaxpipe ÷ pandas
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from harness import _write_csv, _write_data, emit, machine, run_process  # noqa: E402

import jaxpipe  # noqa: E402

SEED = os.path.join(ROOT, "experiments", "seed.toml")
DIGITS = os.path.join(ROOT, "experiments", "digits.toml")
LARGE = os.path.join(HERE, "large.toml")
PY = sys.executable

# (row, today's figure as issue 14 quotes it, target, True when lower is better)
TODAY = {
    "seed, whole `jaxpipe run` process, warm cache ÷ hand-written JAX script (cold)": ("1.04", 0.5),
    "seed, whole process, empty cache ÷ hand-written JAX script": ("~1.1–1.9", 1.0),
    "seed, steady epoch ÷ hand-written `lax.scan` epoch (same process, interleaved)": ("1.28", 1.0),
    "large (200k × 50, 512-512, batch 256), steady epoch ÷ hand-written scan": ("1.0–1.18", 1.0),
    "checkpoint seconds ÷ training seconds, default settings, seed / digits": ("1.3 / 8", 0.05),
    "`jaxpipe --help` / `jaxpipe schema` wall time, s": ("1.4–3", 0.2),
    "host memory of a run beyond the framework's, in copies of the data set": ("2.3", 1.2),
    "200k-row CSV read ÷ `pandas.read_csv`": ("1.64", 1.0),
}


def _med(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _cli_run(spec: str, out: str, env: dict, *sets: str) -> dict:
    argv = [PY, "-m", "jaxpipe", "run", spec, "--out", out, "--quiet"]
    argv += [a for s in sets for a in ("--set", s)]
    return run_process(argv, env, result_file=os.path.join(out, "summary.json"))


def _stage(res: dict, name: str) -> float | None:
    return next((s["seconds"] for s in res.get("stages", []) if s["name"] == name), None)


def measure_process(folder: str, env: dict, repeats: int) -> dict:
    """Whole seed processes: jaxpipe warm cache, jaxpipe empty cache, the hand-written
    script (cold: it has no cache), interleaved; plus checkpoint ÷ train of the runs."""
    spec = jaxpipe.load_spec(SEED, [])
    data, _ = _write_data(spec, folder)
    ref = [PY, os.path.join(HERE, "peers.py"), "jax_ref", "--data", data, "--hidden", "128,128"]
    ref += ["--batch", "128", "--epochs", str(spec.training.epochs), "--lr", "1e-3"]
    warm_env = {
        **env,
        "JAXPIPE_CACHE_DIR": os.path.join(folder, "cache"),
        "JAXPIPE_COMPILATION_CACHE": "1",
    }
    _cli_run(SEED, os.path.join(folder, "prime"), warm_env)  # fills the warm cache
    out: dict[str, list] = {"warm": [], "cold": [], "ref": [], "ckpt_seed": []}
    cpu: dict[str, list] = {"warm": [], "cold": [], "ref": []}
    for r in range(repeats):
        cold_env = {**warm_env, "JAXPIPE_CACHE_DIR": os.path.join(folder, f"cold{r}")}
        warm = _cli_run(SEED, os.path.join(folder, f"warm{r}"), warm_env)
        cold = _cli_run(SEED, os.path.join(folder, f"cold{r}-run"), cold_env)
        hand = run_process(ref, {**env, "JAXPIPE_COMPILATION_CACHE": "0"})
        for k, v in (("warm", warm), ("cold", cold), ("ref", hand)):
            out[k].append(v.get("wall_seconds"))
            cpu[k].append(v.get("cpu_seconds"))
            emit(
                {
                    "target": "process",
                    "repeat": r,
                    "what": k,
                    "wall": v.get("wall_seconds"),
                    "cpu": v.get("cpu_seconds"),
                    "error": v.get("error"),
                }
            )
        for res in (warm, cold):
            ck, tr = _stage(res, "checkpoint"), _stage(res, "train")
            if ck is not None and tr:
                out["ckpt_seed"].append(ck / tr)
    w, c, h = _med(out["warm"]), _med(out["cold"]), _med(out["ref"])
    # CPU seconds (os.wait4: user + system of every thread) beside the wall: on a loaded
    # machine the wall time mostly measures the scheduler.
    wc, cc, hc = _med(cpu["warm"]), _med(cpu["cold"]), _med(cpu["ref"])
    return {
        "warm_cpu_ratio": wc / hc if wc and hc else None,
        "cold_cpu_ratio": cc / hc if cc and hc else None,
        "warm_s": w,
        "cold_s": c,
        "ref_s": h,
        "warm_ratio": w / h if w and h else None,
        "cold_ratio": c / h if c and h else None,
        "ckpt_seed": _med(out["ckpt_seed"]),
    }


def measure_checkpoint_digits(folder: str, env: dict, repeats: int) -> float | None:
    warm_env = {
        **env,
        "JAXPIPE_CACHE_DIR": os.path.join(folder, "cache"),
        "JAXPIPE_COMPILATION_CACHE": "1",
    }
    ratios = []
    for r in range(repeats + 1):  # the first fills the cache and is not counted
        res = _cli_run(DIGITS, os.path.join(folder, f"digits{r}"), warm_env)
        ck, tr = _stage(res, "checkpoint"), _stage(res, "train")
        emit(
            {
                "target": "checkpoint",
                "spec": "digits",
                "repeat": r,
                "checkpoint": ck,
                "train": tr,
                "error": res.get("error"),
            }
        )
        if r and ck is not None and tr:
            ratios.append(ck / tr)
    return _med(ratios)


def measure_epoch(spec: str, env: dict, repeats: int) -> dict:
    argv = [PY, os.path.join(HERE, "epoch_ratio.py"), spec, "--repeats", str(repeats)]
    res = run_process(argv, {**env, "JAXPIPE_COMPILATION_CACHE": "0"})
    emit({"target": "epoch", **res})
    return res


def measure_help(env: dict, repeats: int) -> dict:
    """Wall seconds of `jaxpipe --help` and `jaxpipe schema` (python -m jaxpipe.cli)."""
    out: dict[str, list] = {"help": [], "schema": []}
    for _ in range(repeats):
        for k, args in (("help", ["--help"]), ("schema", ["schema"])):
            t0 = time.perf_counter()
            proc = subprocess.run(
                [PY, "-m", "jaxpipe", *args], env=env, cwd=ROOT, capture_output=True
            )
            out[k].append(time.perf_counter() - t0 if proc.returncode == 0 else None)
    res = {k: _med(v) for k, v in out.items()}
    emit({"target": "help", **res})
    return res


def measure_memory(folder: str, env: dict) -> dict:
    """Peak RSS of a one-epoch large run minus that of the same model on 3,000 rows, in
    copies of the large data set (its float32 features and int32 labels)."""
    spec = jaxpipe.load_spec(LARGE, [])
    syn = spec.data.synthetic
    data_mib = syn.rows * (syn.features + 1) * 4 / 2**20
    quiet_env = {**env, "JAXPIPE_COMPILATION_CACHE": "0"}
    big = _cli_run(LARGE, os.path.join(folder, "mem-big"), quiet_env, "training.epochs=1")
    small = _cli_run(
        LARGE,
        os.path.join(folder, "mem-small"),
        quiet_env,
        "training.epochs=1",
        "data.synthetic.rows=3000",
        "data.validation=300",
    )
    b, s = big.get("peak_rss_mib"), small.get("peak_rss_mib")
    emit({"target": "memory", "big_mib": b, "small_mib": s, "data_mib": data_mib})
    return {
        "big_mib": b,
        "small_mib": s,
        "data_mib": data_mib,
        "copies": (b - s) / data_mib if b and s else None,
    }


def measure_csv(folder: str, env: dict, repeats: int) -> dict:
    spec = jaxpipe.load_spec(LARGE, [])
    _, info = _write_data(spec, folder)
    path = os.path.join(folder, "large.csv")
    _write_csv(info, path)
    res = run_process(
        [PY, os.path.join(HERE, "peers.py"), "csv", "--data", path, "--repeats", str(repeats)], env
    )
    emit({"target": "csv", **res})
    j, p = res.get("jaxpipe_seconds"), res.get("pandas_seconds")
    return {**res, "ratio": j / p if j and p else None}


def _f(v: float | None, fmt: str = ".2f") -> str:
    return "n/a" if v is None else format(v, fmt)


def table(m: dict) -> list[tuple[str, str, str, str, bool | None]]:
    """(row, today, now, target, met) for each row of issue 14's table."""
    rows = []

    def add(label: str, now: str, value: float | None, limit: float | None = None) -> None:
        today, target = TODAY[label]
        limit = target if limit is None else limit
        rows.append((label, today, now, f"≤ {target}", None if value is None else value <= limit))

    p = m.get("process", {})
    keys = list(TODAY)
    for key, name in ((keys[0], "warm"), (keys[1], "cold")):
        cpu = p.get(f"{name}_cpu_ratio")
        now = _f(p.get(f"{name}_ratio")) + (f" (CPU s {_f(cpu)})" if cpu else "")
        add(key, now, p.get(f"{name}_ratio"))
    for key, name in ((keys[2], "epoch_seed"), (keys[3], "epoch_large")):
        e = m.get(name, {})
        now = _f(e.get("ratio")) + (f" (CPU s {_f(e.get('cpu_ratio'))})" if e else "")
        add(key, now, e.get("ratio"))
    cs, cd = p.get("ckpt_seed"), m.get("ckpt_digits")
    worst = max(v for v in (cs, cd) if v is not None) if (cs or cd) else None
    add(keys[4], f"{_f(cs, '.3f')} / {_f(cd, '.3f')}", worst)
    h = m.get("help", {})
    slowest = max(v for v in h.values() if v is not None) if any(h.values()) else None
    add(keys[5], f"{_f(h.get('help'))} / {_f(h.get('schema'))}", slowest)
    add(keys[6], _f(m.get("memory", {}).get("copies")), m.get("memory", {}).get("copies"))
    add(keys[7], _f(m.get("csv", {}).get("ratio")), m.get("csv", {}).get("ratio"))
    return rows


def render(rows: list, mach: dict, repeats: int, uptime: str) -> str:
    lines = [
        "| measure | today (issue 14) | now | target | met |",
        "|---|---|---|---|---|",
    ]
    for label, today, now, target, met in rows:
        mark = {True: "yes", False: "**no**", None: "not measured"}[met]
        lines.append(f"| {label} | {today} | {now} | {target} | {mark} |")
    head = (
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['device']}; jax "
        f"{mach['versions']['jax']}. `uptime` at start: {uptime}. Medians of {repeats} "
        "interleaved repeats."
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


STEPS = ("process", "epoch_seed", "epoch_large", "checkpoint", "help", "memory", "csv")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="issue 14's target table, measured in one run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default=",".join(STEPS), help=f"some of {','.join(STEPS)}")
    p.add_argument("--results", default=os.path.join(HERE, "RESULTS.md"))
    a = p.parse_args(argv)
    only = set(a.only.split(","))
    uptime = os.popen("uptime").read().strip()
    mach = machine()
    emit({"machine": mach, "uptime": uptime})
    env = {**os.environ, "PYTHONPATH": ROOT}
    m: dict = {}
    with tempfile.TemporaryDirectory(prefix="jaxpipe-targets-") as folder:
        if "process" in only:
            m["process"] = measure_process(folder, env, a.repeats)
        if "checkpoint" in only:
            m["ckpt_digits"] = measure_checkpoint_digits(folder, env, a.repeats)
            m.setdefault("process", {})
        if "epoch_seed" in only:
            m["epoch_seed"] = measure_epoch(SEED, env, max(15, 5 * a.repeats))
        if "epoch_large" in only:
            m["epoch_large"] = measure_epoch(LARGE, env, max(3, a.repeats))
        if "help" in only:
            m["help"] = measure_help(env, max(5, a.repeats))
        if "memory" in only:
            m["memory"] = measure_memory(folder, env)
        if "csv" in only:
            m["csv"] = measure_csv(folder, env, max(4, 2 * a.repeats))
    emit({"measurements": m, "uptime_at_end": os.popen("uptime").read().strip()})
    text = render(table(m), mach, a.repeats, uptime)
    print(text)
    record(a.results, text)


BEGIN, END = "<!-- targets.py: begin -->", "<!-- targets.py: end -->"


def record(path: str, text: str) -> None:
    """Puts the table into `path` between the markers (at the top the first time)."""
    block = f"{BEGIN}\n## Issue 14 targets (`python benchmarks/harness.py`)\n\n{text}{END}\n"
    old = open(path).read() if os.path.exists(path) else ""
    if BEGIN in old and END in old:
        new = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) + 1 :]
    else:
        head, sep, rest = old.partition("\n\n")
        new = f"{head}{sep}{block}\n{rest}" if sep else block + old
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    main()
