"""Issue 11: hostile input and concurrent use. Two runs into one directory, SIGINT at
drawn moments, planted symlinks, FIFOs, tampered predictor files, closed pipes, changed
data on resume. Each test names the defect it holds; the table-shaped ones live in
test_bad_input.py."""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT
from faults import fault_env

import jaxpipe
import jaxpipe.data.load
from jaxpipe import files
from jaxpipe.cli.main import main
from jaxpipe.errors import EnvironmentProblem, JaxpipeError, RunDirectoryBusy
from jaxpipe.rundir import LOCK_FILE, default_run_name, lock_run_dir, make_unique_dir

TINY = """
[experiment]
name = "tiny"
seed = 3

[data]
source = "synthetic"
validation = 20

[data.synthetic]
rows = 100
features = 4
classes = 2

[model]
hidden = [8]

[training]
epochs = 2
batch_size = 16
"""

# One simulated device is enough here and starts faster than conftest's eight.
ENV = os.environ | {"PYTHONPATH": ROOT, "XLA_FLAGS": "", "JAXPIPE_COMPILATION_CACHE": "0"}


def _cli(*args: str, **kw) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jaxpipe", *args]
    return subprocess.Popen(cmd, env=kw.pop("env", ENV), text=True, **kw)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (in this process) and a CSV of rows to predict."""
    d = tmp_path_factory.mktemp("finished")
    (d / "spec.toml").write_text(TINY)
    jaxpipe.run(str(d / "spec.toml"), out=str(d / "run"))
    rows = np.random.default_rng(0).normal(size=(5, 4))
    (d / "rows.csv").write_text(
        "x0,x1,x2,x3\n" + "".join(",".join(f"{v:.4f}" for v in r) + "\n" for r in rows)
    )
    return d


def _one_error_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# Defect 1: the run directory's lock and default names.


def test_defect_01_lock_refuses_a_second_holder_naming_the_pid(tmp_path):
    with lock_run_dir(str(tmp_path)):
        assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
        with pytest.raises(RunDirectoryBusy, match=f"pid {os.getpid()}"):
            with lock_run_dir(str(tmp_path)):
                pass
    with lock_run_dir(str(tmp_path)):  # released: free again
        pass


def test_defect_01_default_run_directories_are_unique(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = default_run_name("x")
    assert len(os.path.basename(name).split("-")) == 4  # x-date-time-microseconds
    made = {make_unique_dir(name) for _ in range(5)}  # the same name five times
    assert len(made) == 5 and all(os.path.isdir(d) for d in made)


def _coherent(out: str) -> int:
    """The run directory is one run's: spec, metrics, summary and model agree. Returns
    its seed."""
    summary = json.loads(open(os.path.join(out, "summary.json")).read())
    spec = jaxpipe.load_spec(os.path.join(out, "spec.toml"))
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert summary["status"] == "completed" and summary["seed"] == spec.experiment.seed
    assert rows and rows[-1] == summary["final"] and len(rows) == spec.training.epochs
    assert summary["checkpoints"]["epochs"][-1] == spec.training.epochs
    from jaxpipe.saved.predict import load_predictor

    assert load_predictor(out).meta["features"] == summary["features"]
    names = set(os.listdir(out))
    assert not {n for n in names if n.endswith(".tmp") or n.startswith(".write")}, names
    return spec.experiment.seed


# Runs `jaxpipe.cli.main.main(argv)` in forked children of one process that has imported
# jaxpipe but not started a backend (so forking is safe): each child is a separate
# process with its own lock descriptor, as two `jaxpipe run` commands are, without paying
# the imports (most of a tiny run) forty times. The CLI imports lazily, so what a run
# loads (jax, flax, optax, orbax, matplotlib) is imported here, before the forks.
# Prints [exit status, stderr] per job.
FORK_RUNNER = r"""
import json, os, sys, tempfile
import matplotlib.pyplot
import orbax.checkpoint
import jaxpipe.api, jaxpipe.runner.checkpoint, jaxpipe.saved.predict, jaxpipe.report.observer, jaxpipe.runner.shell
from jax._src.xla_bridge import backends_are_initialized
from jaxpipe.cli.main import main

assert not backends_are_initialized(), "a backend before fork() is unsafe in the children"

results = []
for group in json.load(sys.stdin):
    children = []
    for argv in group:
        err = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.dup2(err.fileno(), 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            code = 1
            try:
                code = main(argv)
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append((pid, err))
    for pid, err in children:
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        results.append([os.waitstatus_to_exitcode(status), err.read().decode()])
print(json.dumps(results))
"""


def test_defect_01_two_runs_into_one_directory(tmp_path):
    """Two runs (different seeds, so a mixed directory shows) started together into one
    --out, 20 times: one finishes with a coherent directory, the other exits 2 with one
    line and writes nothing there."""
    (tmp_path / "spec.toml").write_text(TINY.replace("epochs = 2", "epochs = 1"))
    spec = str(tmp_path / "spec.toml")
    jobs = [
        [
            [
                "run",
                spec,
                "--out",
                str(tmp_path / f"out{rep}"),
                "--quiet",
                "--set",
                f"experiment.seed={seed}",
            ]
            for rep in pair
            for seed in (1, 2)
        ]
        for pair in zip(range(0, 20, 2), range(1, 20, 2))  # two pairs at a time
    ]
    # The compilation cache (warm after the first pair) keeps each run to a fraction.
    env = ENV | {"JAXPIPE_COMPILATION_CACHE": "1", "JAXPIPE_CACHE_DIR": str(tmp_path / "xla")}
    p = subprocess.run(
        [sys.executable, "-c", FORK_RUNNER],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    results = json.loads(p.stdout)
    busy = sum("another run is using" in err for _, err in results)
    assert busy >= 1, results  # the lock, not only the finished-run check, turned one away
    for rep in range(20):
        pair = results[2 * rep : 2 * rep + 2]
        outcome = [(code, seed, err) for (code, err), seed in zip(pair, (1, 2))]
        assert sorted(code for code, _, _ in outcome) == [0, 2], (rep, outcome)
        winner = next(seed for code, seed, _ in outcome if code == 0)
        loser_err = next(err for code, _, err in outcome if code == 2)
        _one_error_line(loser_err, f"--out {tmp_path / f'out{rep}'}")
        assert "another run is using" in loser_err or "finished run" in loser_err
        assert _coherent(str(tmp_path / f"out{rep}")) == winner


# Defect 5: the signal contract from the first line of a run to the last.


def _contract_installed(pid: int) -> bool:
    """jaxpipe run catches SIGTERM from its first line (Python alone does not)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


def _sigint_after(spec: str, out: str, delay: float, env: dict) -> subprocess.Popen:
    p = _cli("run", spec, "--out", out, "--quiet", stderr=subprocess.PIPE, env=env)
    start = time.monotonic()
    while not _contract_installed(p.pid) and p.poll() is None:
        assert time.monotonic() - start < 120
        time.sleep(0.005)
    time.sleep(delay)
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
    return p


def _check_interrupted_outcome(code: int, err: str, out: str) -> str:
    assert "Traceback" not in err and code in (0, 130), (code, err)
    if code == 0:
        assert json.load(open(os.path.join(out, "summary.json")))["status"] == "completed"
        return "finished"
    _one_error_line(err, "interrupted by SIGINT")
    if "before" in err:  # not started: nothing that looks like a run
        assert not os.path.exists(os.path.join(out, "summary.json"))
        ckpts = os.path.join(out, "checkpoints")
        assert not os.path.isdir(ckpts) or not [n for n in os.listdir(ckpts) if n.isdigit()]
        return "not started"
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["status"] == "interrupted" and summary["checkpoints"]["epochs"], summary
    return "resumable"


MOMENTS = 8


def test_defect_05_sigint_at_drawn_moments(tmp_path):
    """SIGINT at 8 moments drawn over a whole run, one in each eighth of its span
    (compilation and the slowed-down saves included): every outcome is a finished run
    (exit 0) or exit 130, not started or resumable; never a segfault, a traceback or
    exit 1. One resumable directory is then resumed to the end. (20 moments, then 12,
    until the suite neared CI's 15 minutes: 97 s of one worker's 600 at 12; the strata
    still cover the whole run.)"""
    (tmp_path / "spec.toml").write_text(TINY.replace("epochs = 2", "epochs = 4"))
    spec = str(tmp_path / "spec.toml")
    env = ENV | fault_env("slow-save:0.5")  # saves take a visible share
    # The span of a run as the trials run: two at a time (the machine's load included).
    t0 = time.monotonic()
    refs = [
        _cli("run", spec, "--out", str(tmp_path / f"ref{i}"), "--quiet", env=env) for i in (0, 1)
    ]
    assert [p.wait(timeout=300) for p in refs] == [0, 0]
    span = time.monotonic() - t0
    rng = random.Random(11)
    delays = [(i + rng.random()) / MOMENTS * span * 1.2 for i in range(MOMENTS)]  # strata
    seen, resumable = [], None
    for i in range(0, MOMENTS, 2):
        procs = [
            (str(tmp_path / f"s{j}"), _sigint_after(spec, str(tmp_path / f"s{j}"), delays[j], env))
            for j in (i, i + 1)
        ]
        for out, p in procs:
            _, err = p.communicate(timeout=300)
            kind = _check_interrupted_outcome(p.returncode, err, out)
            seen.append(kind)
            resumable = resumable or (out if kind == "resumable" else None)
    assert len(seen) == MOMENTS and len(set(seen)) >= 2, seen  # the draws span the run
    if resumable is not None:
        p = _cli("run", spec, "--out", resumable, "--quiet", "--resume", stderr=subprocess.PIPE)
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


# Defect 10: spec and catalog paths are read like data paths.


def test_defect_10_fifo_spec_and_catalog_fail_fast(tmp_path):
    fifo = tmp_path / "spec.toml"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    code = main(["validate", str(fifo)])
    assert code == 2 and time.monotonic() - t0 < 10
    spec = tmp_path / "real.toml"
    spec.write_text(TINY + '\n[hardware]\ncatalog = "cat.toml"\n')
    os.mkfifo(tmp_path / "cat.toml")
    with pytest.raises(JaxpipeError, match="FIFO"):
        jaxpipe.validate(jaxpipe.load_spec(str(spec)))


def test_defect_10_read_input_file_refuses_oversized_and_special_files(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * 101)
    with pytest.raises(JaxpipeError, match="larger than"):
        files.read_input_file(str(big), "spec file", limit=100)
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    with pytest.raises(JaxpipeError, match="a device"):
        files.read_input_file(str(tmp_path / "zero.toml"), "spec file")
    with pytest.raises(FileNotFoundError):
        files.read_input_file(str(tmp_path / "none.toml"), "spec file")


# Defect 11: one atomic-write helper, no predictable temporaries.


def test_defect_11_atomic_write_never_follows_a_planted_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out.csv"
    (tmp_path / "out.csv.tmp").symlink_to(victim)  # what the old code wrote through
    files.atomic_write(str(out), "new\n")
    assert out.read_text() == "new\n" and victim.read_text() == "keep me"
    out.unlink()
    out.symlink_to(victim)  # a symlink at the target itself is replaced, not followed
    files.atomic_write(str(out), "again\n")
    assert not out.is_symlink() and victim.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "out.csv.tmp", "victim.txt"]


def test_defect_11_predict_out_with_planted_symlink(finished, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "p.csv.tmp").symlink_to(victim)
    code = main(
        [
            "predict",
            str(finished / "run"),
            str(finished / "rows.csv"),
            "--out",
            str(tmp_path / "p.csv"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert victim.read_text() == "keep me"
    assert (tmp_path / "p.csv").read_text().startswith("prediction,probability\n")


def test_defect_11_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    (tmp_path / "s.json").write_text("old")
    with pytest.raises(EnvironmentProblem, match="disk is full") as e:
        files.atomic_write(str(tmp_path / "s.json"), "new")
    assert e.value.exit_code == 4 and str(tmp_path / "s.json") in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    assert (tmp_path / "s.json").read_text() == "old"
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(PermissionError(13, "no")))
    with pytest.raises(JaxpipeError, match="cannot write there"):
        files.atomic_write(str(tmp_path / "s.json"), "new", what="--out s.json")
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


# Defect 12: predictor.json is validated on load.


@pytest.mark.parametrize(
    "tamper, needle",
    [
        (lambda m: m["scaler"]["scale"].__setitem__(0, 0), "scaler.scale"),
        (lambda m: m.pop("model"), "'model'"),
        (lambda m: m["model"].__setitem__("hidden", [9]), "does not hold the parameters"),
        (lambda m: m.__setitem__("features", m["features"][:3]), "scaler.offset"),
        (lambda m: m["model"].__setitem__("outputs", 5), "model.outputs"),
        (lambda m: m["scaler"].__setitem__("offset", "x"), "scaler.offset"),
    ],
    ids=["zero-scale", "no-model", "wrong-shapes", "features", "outputs", "offset-type"],
)
def test_defect_12_tampered_predictor_json(finished, tmp_path, capsys, tamper, needle):
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    meta = json.loads((run / "predictor.json").read_text())
    tamper(meta)
    (run / "predictor.json").write_text(json.dumps(meta))
    assert main(["predict", str(run), str(finished / "rows.csv")]) == 2
    _one_error_line(capsys.readouterr().err, "predictor.json", needle)


# Defect 18: a closed pipe never kills the work.


def test_defect_18_closed_stdout_ends_run_and_predict_cleanly(finished, tmp_path):
    (tmp_path / "spec.toml").write_text(TINY)
    out = str(tmp_path / "run")
    cmds = {
        "run": ["run", str(tmp_path / "spec.toml"), "--out", out],
        "predict": ["predict", str(finished / "run"), str(finished / "rows.csv")],
    }
    # Block-buffered, as a shell gives it: with PYTHONUNBUFFERED (set in some CI and
    # dev environments) each write fails at once; without it, a short output waited in
    # the buffer and failed at the interpreter's final flush (exit 120).
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}
    for name, args in cmds.items():
        p = _cli(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        p.stdout.close()  # the reader left before the first line (`| head -0`)
        with p.stderr:
            err = p.stderr.read()
        assert p.wait(timeout=300) == 0 and "Traceback" not in err, (name, err)
    assert json.load(open(os.path.join(out, "summary.json")))["status"] == "completed"


def test_defect_18_no_stdout_at_all_ends_the_run_cleanly(tmp_path):
    """Descriptor 1 closed before the start (`jaxpipe run >&-`): Python's sys.stdout is
    None; the run still finishes and says nothing, rather than an internal error half-way
    through its run directory."""
    (tmp_path / "spec.toml").write_text(TINY)
    out = str(tmp_path / "run")
    run = [sys.executable, "-m", "jaxpipe", "run", str(tmp_path / "spec.toml"), "--out", out]
    p = subprocess.run(
        ["sh", "-c", 'exec "$0" "$@" >&-', *run], env=ENV, stderr=subprocess.PIPE, text=True
    )
    assert p.returncode == 0 and "Traceback" not in p.stderr and "error" not in p.stderr, p.stderr
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["status"] == "completed"


# Defect 3 in predict, 21 on resume, 23's predict messages.


def test_defect_03_predict_refuses_inf(finished, tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("x0,x1,x2,x3\n1,2,3,4\n1,inf,3,4\n")
    assert main(["predict", str(finished / "run"), str(tmp_path / "rows.csv")]) == 2
    _one_error_line(capsys.readouterr().err, "column 'x1'", "inf", "row 2")


def test_defect_23_predict_messages(finished, tmp_path, capsys):
    (tmp_path / "rows.csv").write_text("x0,x1,x2,x3\n1,a,3,4\n1,b,3,4\n")
    assert main(["predict", str(finished / "run"), str(tmp_path / "rows.csv")]) == 2
    _one_error_line(capsys.readouterr().err, "column 'x1'", "numeric column in the training")
    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    for name in ("model.msgpack", "predictor.json"):
        (run / name).unlink()
    assert main(["predict", str(run), str(finished / "rows.csv")]) == 2
    _one_error_line(capsys.readouterr().err, "interrupted run", "--resume")


def test_defect_21_resume_refuses_relabelled_rows(tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(40, 3))
    labels = np.where(rows[:, 0] > 0, "cat", "dog")

    def write(y):
        body = "".join(f"{a:.4f},{b:.4f},{c:.4f},{t}\n" for (a, b, c), t in zip(rows, y))
        (tmp_path / "d.csv").write_text("a,b,c,y\n" + body)

    write(labels)
    (tmp_path / "spec.toml").write_text(
        '[experiment]\nname = "csv"\n\n[data]\nsource = "csv"\npath = "d.csv"\n'
        'label = "y"\nvalidation = 10\n\n[model]\nhidden = [8]\n\n'
        "[training]\nepochs = 3\nbatch_size = 8\n"
    )
    out = str(tmp_path / "run")
    env = fault_env("int-epoch:1")
    p = _cli(
        "run",
        str(tmp_path / "spec.toml"),
        "--out",
        out,
        "--quiet",
        stderr=subprocess.PIPE,
        env=ENV | env,
    )
    assert p.wait(timeout=300) == 130, p.stderr.read()
    write(labels[::-1])  # same classes, same features: only the labels moved
    assert main(["run", str(tmp_path / "spec.toml"), "--out", out, "--resume", "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "--resume", "rows (their labels or features)")


def test_defect_04_large_integer_labels_keep_their_identity(tmp_path):
    big = 2**53
    rows = "".join(f"{i % 5},{big + i % 2}\n" for i in range(20))
    (tmp_path / "d.csv").write_text("a,y\n" + rows)
    (tmp_path / "spec.toml").write_text(
        '[data]\nsource = "csv"\npath = "d.csv"\nlabel = "y"\nvalidation = 4\n'
        "[training]\nbatch_size = 4\n"
    )
    ds = jaxpipe.data.load.load_dataset(jaxpipe.load_spec(str(tmp_path / "spec.toml")))
    assert ds.class_names == (str(big), str(big + 1))
    y = np.concatenate([ds.y_train, ds.y_val])
    assert sorted(np.bincount(y).tolist()) == [10, 10]


def test_a_scratch_folder_is_written_atomically_without_fsync(tmp_path, monkeypatch):
    # fit without `out` writes its run directory into a temporary folder it then removes:
    # nothing reads those files from the disk, so they are not synced (6 fsyncs a fit).
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    scratch, kept = tmp_path / "scratch", tmp_path / "scratch-kept"
    scratch.mkdir(), kept.mkdir()
    with files.scratch_folder(str(scratch)):
        files.atomic_write(str(scratch / "a.json"), "{}")
        files.atomic_write(str(kept / "b.json"), "{}")  # a sibling sharing the prefix
    files.atomic_write(str(scratch / "c.json"), "{}")
    assert len(synced) == 2 and (scratch / "a.json").read_text() == "{}"
    assert sorted(os.listdir(scratch)) == ["a.json", "c.json"]  # no temporaries left
    with files.scratch_folder(None):  # `out` given: everything synced
        files.atomic_write(str(scratch / "a.json"), "[]")
    assert len(synced) == 3
