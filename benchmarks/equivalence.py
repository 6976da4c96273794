"""Behaviour unchanged between two revisions: the same runs, byte for byte (issue 22).

    python benchmarks/equivalence.py --before REV [--after REV] [--jobs a,b,...] [--keep]

Each revision is extracted (`git archive REV | tar -x`) into a temporary folder; without
`--after` the "after" tree is the working tree this script lives in (uncommitted edits
included). Every job then runs once per tree, in a fresh `python -m jaxpipe run`
subprocess with that tree alone on PYTHONPATH (checked), JAX_PLATFORMS=cpu,
JAXPIPE_COMPILATION_CACHE=0 and PYTHONHASHSEED=0 (and, for the 4-device job,
XLA_FLAGS=--xla_force_host_platform_device_count=4). Both revisions get the same spec files: those of the "after" tree, or
generated once in the scratch folder, so only the code differs.

Jobs (2 epochs unless stated; each 10-35 s wall on a busy 2-core CPU, mostly start-up):
  seed       experiments/seed.toml
  penguins   experiments/penguins.toml (5 epochs)
  diabetes   experiments/diabetes.toml (5 epochs)
  fsdp       seed.toml, hardware.strategy = "fsdp" on 4 simulated devices
  chunks     seed.toml, data.chunk_rows = 2560 (the training split streamed in chunks)
  disk       digits.toml on digits.csv split into 6 CSV files, data.host_memory = "1MiB",
             data.chunk_rows = 320 (the training split streamed from disk)
  sweep      seed.toml + a [sweep] of 4 trials (2 learning rates × 2 model shapes)

Compared per job, for every metrics.jsonl, predictor.json, model.msgpack and sweep.jsonl
in the run directory (a sweep's trials/<k>/ included; checkpoints are not): JSON Lines
parsed with every key containing "seconds" or "time" removed, predictor.json parsed and
exact, model.msgpack by sha256. Prints a table job × file → same / DIFFERENT (with the
first difference below it); exit 0 if everything is the same, 1 if anything differs or
a job failed. `--keep` keeps the scratch folder (trees, specs, run directories, logs).
Run `--before X --after X` to see whether a job is deterministic at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
COMPARED = ("metrics.jsonl", "predictor.json", "model.msgpack", "sweep.jsonl")
FOUR_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
JOB_TIMEOUT_S = 600
JOB_NAMES = ("seed", "penguins", "diabetes", "fsdp", "chunks", "disk", "sweep")

SWEEP = """
[sweep]
method = "grid"
metric = "val_loss"
[sweep.values]
"optimizer.learning_rate" = [1e-3, 1e-2]
"model.hidden" = [[32], [64, 32]]
"""


@dataclass
class Job:
    """One `jaxpipe run`: a spec path, its --set overrides and extra environment."""

    name: str
    spec: str
    sets: list[str]
    env: dict[str, str] = field(default_factory=dict)


def make_jobs(after_tree: str, scratch: str) -> list[Job]:
    """The jobs, their specs taken from `after_tree` or written under `scratch`."""
    exp = os.path.join(after_tree, "experiments")
    seed = os.path.join(exp, "seed.toml")
    short = ["training.epochs=2"]
    return [
        Job("seed", seed, short),
        Job("penguins", os.path.join(exp, "penguins.toml"), ["training.epochs=5"]),
        Job("diabetes", os.path.join(exp, "diabetes.toml"), ["training.epochs=5"]),
        Job("fsdp", seed, short + ["hardware.strategy=fsdp", "hardware.devices=4"], FOUR_DEVICES),
        Job("chunks", seed, short + ["data.chunk_rows=2560"]),
        Job(
            "disk",
            os.path.join(exp, "digits.toml"),
            short
            + [
                f'data.path="{split_csv(exp, scratch)}"',
                'data.host_memory="1MiB"',
                "data.chunk_rows=320",
            ],
        ),
        Job("sweep", sweep_spec(seed, scratch), short),
    ]


def split_csv(exp: str, scratch: str, parts: int = 6) -> str:
    """digits.csv cut into `parts` CSV files (each with the header) in a folder; its path."""
    folder = os.path.join(scratch, "digits-parts")
    if os.path.isdir(folder):
        return folder
    os.makedirs(folder)
    with open(os.path.join(exp, "data", "digits.csv")) as f:
        header, *rows = f.read().splitlines()
    size = -(-len(rows) // parts)
    for i in range(parts):
        with open(os.path.join(folder, f"part{i}.csv"), "w") as f:
            f.write("\n".join([header] + rows[i * size : (i + 1) * size]) + "\n")
    return folder


def sweep_spec(seed_spec: str, scratch: str) -> str:
    """seed.toml (synthetic data, so no relative paths) with a [sweep] section added."""
    path = os.path.join(scratch, "sweep.toml")
    with open(seed_spec) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.rstrip("\n") + "\n" + SWEEP)
    return path


def git(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", ROOT, *args], check=True, **kw)


def extract(rev: str, dest: str) -> str:
    """The tree of `rev` under `dest` (git archive | tar -x); returns its full hash."""
    full = git(
        "rev-parse", "--verify", f"{rev}^{{commit}}", capture_output=True, text=True
    ).stdout.strip()
    os.makedirs(dest)
    archive = subprocess.Popen(["git", "-C", ROOT, "archive", full], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", dest], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"error: git archive {rev} failed")
    return full


def job_env(tree: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment every job gets, with `tree` alone on PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "XLA_FLAGS") and not k.startswith(("JAX_", "JAXPIPE_"))
    }
    env.update(
        PYTHONPATH=tree, JAX_PLATFORMS="cpu", JAXPIPE_COMPILATION_CACHE="0", PYTHONHASHSEED="0"
    )
    env.update(extra)
    return env


def run_job(job: Job, tree: str, out: str) -> tuple[bool, float]:
    """Runs `job` with `tree`'s jaxpipe into `out` (log beside it); (succeeded, seconds)."""
    cmd = [sys.executable, "-m", "jaxpipe", "run", job.spec, "--out", out, "--plain", "-q"]
    for s in job.sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    with open(out + ".log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        try:
            rc = subprocess.run(
                cmd,
                env=job_env(tree, job.env),
                cwd=os.path.dirname(out),
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=JOB_TIMEOUT_S,
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    if rc != 0:
        with open(out + ".log") as log:
            tail = log.read().splitlines()[-15:]
        print(f"  {job.name}: FAILED ({rc}) with {tree}:\n    " + "\n    ".join(tail))
    return rc == 0, time.perf_counter() - t0


def untimed(value):
    """`value` with every dict key containing "seconds" or "time" removed, at any depth."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if "seconds" not in k and "time" not in k}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def content(path: str):
    """What is compared of one file: parsed (timings dropped) JSON Lines, parsed JSON,
    or the sha256 of anything else."""
    if path.endswith(".jsonl"):
        with open(path) as f:
            return [untimed(json.loads(line)) for line in f if line.strip()]
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    with open(path, "rb") as f:
        return "sha256:" + hashlib.sha256(f.read()).hexdigest()


def compared_files(run_dir: str) -> set[str]:
    """Paths (relative to `run_dir`) of the files compared, checkpoints left out."""
    found = set()
    for here, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if d != "checkpoints")
        found |= {os.path.relpath(os.path.join(here, f), run_dir) for f in files if f in COMPARED}
    return found


def first_difference(a, b, where: str = "") -> str:
    """A short description of where `a` and `b` first differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'after' if k not in a else 'before'}"
            if a[k] != b[k]:
                return first_difference(a[k], b[k], f"{where}.{k}")
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} items before, {len(b)} after"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{where}[{i}]")
    return f"{where or 'file'}: {str(a)[:80]} before, {str(b)[:80]} after"


def compare_job(before: str, after: str) -> list[tuple[str, str, str]]:
    """(file, "same" | "DIFFERENT" | "MISSING ...", detail) for each compared file."""
    rows = []
    mine, theirs = compared_files(before), compared_files(after)
    for rel in sorted(mine | theirs, key=lambda p: (p.count(os.sep), p)):
        if rel not in mine or rel not in theirs:
            side = "before" if rel not in mine else "after"
            rows.append((rel, f"MISSING in {side}", ""))
            continue
        a, b = content(os.path.join(before, rel)), content(os.path.join(after, rel))
        rows.append((rel, "same", "") if a == b else (rel, "DIFFERENT", first_difference(a, b)))
    return rows or [("(no files)", "MISSING in both", "")]


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """The job × file table in Markdown, then the first difference of each DIFFERENT row."""
    w_job = max(len("job"), *(len(r[0]) for r in rows))
    w_file = max(len("file"), *(len(r[1]) for r in rows))
    print(f"| {'job':<{w_job}} | {'file':<{w_file}} | result |")
    print(f"|{'-' * (w_job + 2)}|{'-' * (w_file + 2)}|--------|")
    for job, rel, result, _ in rows:
        print(f"| {job:<{w_job}} | {rel:<{w_file}} | {result} |")
    for job, rel, _result, detail in rows:
        if detail:
            print(f"  {job} {rel}: {detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", required=True, help="git revision run first")
    p.add_argument("--after", help="git revision (default: this working tree)")
    p.add_argument("--jobs", help="comma-separated subset of: " + ", ".join(JOB_NAMES))
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = p.parse_args(argv)
    args.jobs = args.jobs.split(",") if args.jobs else list(JOB_NAMES)
    unknown = [j for j in args.jobs if j not in JOB_NAMES]
    if unknown:
        p.error(f"unknown job(s) {', '.join(unknown)}; choose from {', '.join(JOB_NAMES)}")
    return args


def check_tree(tree: str) -> None:
    """Stops unless `import jaxpipe` in a job's environment loads `tree`'s copy."""
    found = subprocess.run(
        [sys.executable, "-c", "import jaxpipe; print(jaxpipe.__file__)"],
        env=job_env(tree, {}),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
    ).stdout.strip()
    if not found.startswith(os.path.join(tree, "jaxpipe") + os.sep):
        raise SystemExit(f"error: jaxpipe imports from {found or '(nowhere)'}, not {tree}")


def trees(args: argparse.Namespace, scratch: str) -> dict[str, str]:
    """{"before": folder, "after": folder}, each revision extracted into `scratch`."""
    out = {}
    for side in ("before", "after"):
        rev = getattr(args, side)
        if rev is None:
            out[side] = ROOT
            print(f"{side}: the working tree {ROOT}")
        else:
            out[side] = os.path.join(scratch, f"tree-{side}")
            print(f"{side}: {rev} = {extract(rev, out[side])}")
        check_tree(out[side])
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = tempfile.mkdtemp(prefix="jaxpipe-equivalence-")
    try:
        tree = trees(args, scratch)
        jobs = [j for j in make_jobs(tree["after"], scratch) if j.name in args.jobs]
        rows, failed = [], False
        for job in jobs:
            outs = {}
            for side in ("before", "after"):
                outs[side] = os.path.join(scratch, side, job.name)
                os.makedirs(os.path.dirname(outs[side]), exist_ok=True)
                ok, secs = run_job(job, tree[side], outs[side])
                failed |= not ok
                print(f"  {job.name:<9} {side:<6} {'ok' if ok else 'FAILED'} {secs:5.1f} s")
            rows += [(job.name, *r) for r in compare_job(outs["before"], outs["after"])]
        print()
        print_table(rows)
        same = not failed and all(r[2] == "same" for r in rows)
        print("\nall the same" if same else "\nsomething DIFFERS (or a job failed)")
        return 0 if same else 1
    finally:
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
