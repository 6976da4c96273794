"""Issue 23: sweeps, the Python API and the writers under hostile use. Each test names
the defect it holds (N1 ... N13, F9, F13); the run's own contracts are in
test_reliability.py."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from faults import fault_env

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.errors import DivergedError, JaxpipeError, RunDirectoryBusy, SpecError
from jaxpipe.rundir import lock_run_dir

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

# One simulated device is enough here and starts faster than conftest's eight.
ENV = os.environ | {"PYTHONPATH": ROOT, "XLA_FLAGS": "", "JAXPIPE_COMPILATION_CACHE": "0"}

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
epochs = {epochs}
batch_size = 16

[hardware]
devices = 1
"""

SWEEP = """
[sweep]
metric = "{metric}"
[sweep.values]
"optimizer.learning_rate" = [{lrs}]
"""


def _sweep_text(epochs=2, metric="val_loss", lrs="0.001, 0.01"):
    return TINY.format(epochs=epochs) + SWEEP.format(metric=metric, lrs=lrs)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jaxpipe", *args]
    return subprocess.run(cmd, env=env or ENV, text=True, capture_output=True, timeout=300)


def _one_error_line(err: str, *needles: str) -> None:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def _summary(run_dir) -> dict:
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (in this process) and a CSV of rows to predict."""
    d = tmp_path_factory.mktemp("finished")
    (d / "spec.toml").write_text(TINY.format(epochs=2))
    jaxpipe.run(str(d / "spec.toml"), out=str(d / "run"), verbose=False)
    rows = np.random.default_rng(0).normal(size=(5, 4))
    (d / "rows.csv").write_text(
        "x0,x1,x2,x3\n" + "".join(",".join(f"{v:.4f}" for v in r) + "\n" for r in rows)
    )
    return d


# N1: a sweep follows the run's signal contract.


@pytest.mark.parametrize("sig, code", [("term", 143), ("int", 130)])
def test_n1_sweep_honours_sigterm_and_sigint(tmp_path, sig, code):
    (tmp_path / "sweep.toml").write_text(_sweep_text(epochs=6))
    out = tmp_path / "sw"
    env = ENV | fault_env(f"{sig}-epoch:2")  # the signal during epoch 2
    p = _cli("run", str(tmp_path / "sweep.toml"), "--out", str(out), "--quiet", env=env)
    assert p.returncode == code, p.stderr
    name = {"term": "SIGTERM", "int": "SIGINT"}[sig]
    _one_error_line(p.stderr, f"interrupted by {name}", "cannot be resumed")
    summary = _summary(out)
    assert summary["status"] == "interrupted" and summary["stop"]["epoch"] == 2
    for k in (0, 1):  # what was done is written: two epochs of each trial, no model
        trial = out / "trials" / str(k)
        assert _summary(trial)["status"] == "interrupted"
        assert len((trial / "metrics.jsonl").read_text().splitlines()) == 2
        assert not (trial / "model.msgpack").exists()
    assert not (out / "model.msgpack").exists()  # an unfinished sweep ranks no best model
    p = _cli("predict", str(out), str(tmp_path / "sweep.toml"))
    assert p.returncode == 2 and "interrupted sweep" in p.stderr, p.stderr


def test_n1_check_resume_on_a_sweep_says_sweeps_are_not_resumable(tmp_path, capsys):
    (tmp_path / "sweep.toml").write_text(_sweep_text())
    assert main(["check", "--resume", str(tmp_path / "sweep.toml")]) == 0
    out = capsys.readouterr().out
    assert "skip" in out and "FAIL" not in out, out
    (result,) = jaxpipe.check_specs([str(tmp_path / "sweep.toml")], resume=True)
    step = next(s for s in result.steps if s.name == "resume")
    assert step.status == "skip" and "not resumable" in step.detail


# N2: sweeps and Model.save take the run directory's lock.


def test_n2_sweep_takes_the_run_directory_lock(tmp_path):
    spec = jaxpipe.load_spec(_write(tmp_path, "sweep.toml", _sweep_text()))
    out = tmp_path / "sw"
    out.mkdir()
    with lock_run_dir(str(out)):  # another run holds it
        with pytest.raises(RunDirectoryBusy, match="another run is using"):
            jaxpipe.run(spec, out=str(out), verbose=False)
    assert sorted(os.listdir(out)) == [".lock"]  # nothing written there


def test_n2_sweep_refuses_a_finished_directory_without_advising_resume(tmp_path, capsys):
    path = _write(tmp_path, "sweep.toml", _sweep_text())
    out = str(tmp_path / "sw")
    assert main(["run", path, "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", path, "--out", out, "--quiet"]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "already holds a finished run", "a sweep cannot be resumed")
    assert "--resume" not in err


def test_n2_model_save_takes_the_lock_and_refuses_checkpoints(finished, tmp_path):
    model = jaxpipe.load_model(str(finished / "run"))
    busy = tmp_path / "busy"
    busy.mkdir()
    with lock_run_dir(str(busy)):  # a run trains there
        with pytest.raises(RunDirectoryBusy, match="another run is using"):
            model.save(busy)
    assert not (busy / "summary.json").exists()
    unfinished = tmp_path / "unfinished"
    (unfinished / "checkpoints" / "3").mkdir(parents=True)  # an unfinished run's
    with pytest.raises(JaxpipeError, match="holds an unfinished run"):
        model.save(unfinished)
    assert not (unfinished / "summary.json").exists()
    with pytest.raises(JaxpipeError, match="already holds a finished run"):
        model.save(_copy_summary(finished, tmp_path))
    saved = model.save(tmp_path / "fresh")
    assert jaxpipe.load_model(saved).classes == model.classes


def _copy_summary(finished, tmp_path):
    d = tmp_path / "other"
    d.mkdir()
    (d / "summary.json").write_text((finished / "run" / "summary.json").read_text())
    return d


def _write(tmp_path, name: str, text: str) -> str:
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


# N4: the sweep's metric is one its runs record.


def test_n4_sweep_metric_is_checked_against_the_recorded_metrics(tmp_path, capsys):
    path = _write(tmp_path, "a.toml", _sweep_text(metric="val_thing"))
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "sweep.metric", "unknown metric 'val_thing'")
    assert "set mode" not in err
    # A known metric of the other task, with mode set: refused before any work.
    text = _sweep_text(metric="val_rmse").replace(
        'metric = "val_rmse"', 'metric = "val_rmse"\nmode = "min"'
    )
    path = _write(tmp_path, "b.toml", text)
    out = tmp_path / "b"
    assert main(["run", path, "--out", str(out)]) == 2
    _one_error_line(capsys.readouterr().err, "sweep.metric", "unknown metric 'val_rmse'")
    assert not out.exists()
    assert main(["validate", path]) == 2
    _one_error_line(capsys.readouterr().err, "sweep.metric", "val_rmse")
    with pytest.raises(SpecError, match="sweep.metric"):
        jaxpipe.load_spec(_write(tmp_path, "c.toml", _sweep_text(metric="val_f1")))


# N5: a sweep whose every trial diverged exits 3, as a diverged run does.


def test_n5_sweep_whose_every_trial_diverged_exits_3(tmp_path, capsys):
    path = _write(tmp_path, "sweep.toml", _sweep_text(lrs="1e30, 1e31"))
    out = tmp_path / "sw"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 3
    _one_error_line(capsys.readouterr().err, "every trial of the sweep diverged")
    assert _summary(out)["status"] == "diverged"
    with pytest.raises(DivergedError):
        jaxpipe.fit(path, out=str(tmp_path / "fit"))


# N6: fit(data=(X, y)) reads labels as the file and DataFrame paths do.

ARRAY_SPEC = {
    "data": {"validation": 4},
    "model": {"hidden": [4]},
    "training": {"epochs": 1, "batch_size": 4},
}


def _classes(data) -> tuple:
    from jaxpipe.api import _in_memory

    _, ds = _in_memory(jaxpipe.Spec.from_dict(ARRAY_SPEC), data, None)
    return ds.class_names


def test_n6_fit_arrays_keep_label_identity():
    import pandas as pd

    x = np.random.default_rng(0).normal(size=(24, 2))
    big = np.array([2**53, 2**53 + 1, 1] * 8, np.int64)
    want = ("1", str(2**53), str(2**53 + 1))
    assert _classes((x, big)) == want  # was two classes: 2**53 and 2**53 + 1 merged
    frame = pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "y": big})
    assert _classes(frame) == want
    unsigned = np.array([2**64 - 1, 1, 2] * 8, np.uint64)  # was refused as a float
    assert _classes((x, unsigned)) == ("1", "2", str(2**64 - 1))
    flags = np.array([True, False, True] * 8)
    assert _classes((x, flags)) == ("False", "True") == _classes(frame.assign(y=flags))
    gap = np.array([1, None, 2] * 8, dtype=object)  # None is a missing label, not a class
    with pytest.raises(jaxpipe.DataError, match="without a label"):
        _classes((x, gap))
    with pytest.raises(jaxpipe.DataError, match="complex"):
        _classes((x + 1j, big))
    with pytest.raises(jaxpipe.DataError, match="complex"):
        _classes(frame.assign(x0=x[:, 0] + 1j))


def test_n6_fit_with_bool_labels_predicts_their_names(tmp_path):
    x = np.random.default_rng(1).normal(size=(32, 2))
    y = x[:, 0] > 0
    model = jaxpipe.fit(ARRAY_SPEC, data=(x, y))
    assert model.classes == ("False", "True")
    assert set(model.predict_classes(x)) <= {"False", "True"}
    assert model.evaluate((x, y))["accuracy"] >= 0.0


# N3: every file goes through the one safe writer; special files are written into.


def test_n3_writers_never_follow_planted_symlinks(finished, tmp_path):
    from jaxpipe import files

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    model = jaxpipe.load_model(str(finished / "run"))
    target = tmp_path / "saved"
    target.mkdir()
    for name in ("summary.json.tmp", "metrics.jsonl.tmp"):  # Model.save's old temporaries
        (target / name).symlink_to(victim)
    model.save(target)
    assert victim.read_text() == "keep me"
    assert jaxpipe.load_model(str(target)).classes == model.classes
    sweep = tmp_path / "sw"
    sweep.mkdir()
    (sweep / "spec.toml").symlink_to(victim)  # a sweep wrote its spec.toml with open("w")
    path = _write(tmp_path, "sweep.toml", _sweep_text())
    assert main(["run", path, "--out", str(sweep), "--quiet"]) == 0
    assert victim.read_text() == "keep me" and not (sweep / "spec.toml").is_symlink()
    with pytest.raises(JaxpipeError, match="is a directory"):
        files.atomic_write(str(tmp_path), "x", what="--out DIR")


def test_n3_predict_out_writes_into_a_fifo_and_stdout(finished, tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    args = ["predict", str(finished / "run"), str(finished / "rows.csv"), "--out", str(fifo)]
    code, got, err = _through_fifo(fifo, args)
    assert code == 0, err
    got = got.decode()
    assert got.startswith("prediction,probability\n") and len(got.splitlines()) == 6
    assert stat_is_fifo(fifo)
    p = _cli("predict", str(finished / "run"), str(finished / "rows.csv"), "--out", "/dev/stdout")
    assert p.returncode == 0 and p.stdout.startswith("prediction,probability\n"), p.stderr
    os.symlink("/dev/stdout", tmp_path / "link")
    p = _cli(
        "predict",
        str(finished / "run"),
        str(finished / "rows.csv"),
        "--out",
        str(tmp_path / "link"),
    )
    assert p.returncode == 0 and p.stdout.startswith("prediction,probability\n"), p.stderr
    assert (tmp_path / "link").is_symlink()


def test_n3_trace_png_and_compare_plot_write_into_a_fifo(finished, tmp_path):
    for i, args in enumerate(
        (
            ["trace", str(finished / "run"), "--png"],
            ["compare", str(finished / "run"), "--quiet", "--plot"],
        )
    ):
        fifo = tmp_path / f"png{i}.fifo"
        os.mkfifo(fifo)
        code, got, err = _through_fifo(fifo, [*args, str(fifo)])
        assert code == 0, err
        assert got.startswith(b"\x89PNG") and stat_is_fifo(fifo), args


def _through_fifo(fifo, args: list[str]) -> tuple[int, bytes, str]:
    """Runs `jaxpipe ARGS` while reading the FIFO `fifo` (opened first, non-blocking, so
    a writer that replaced it instead leaves this reader with nothing, never a hang)."""
    import time

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    cmd = [sys.executable, "-m", "jaxpipe", *args]
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    got = b""
    try:
        while True:
            done = p.poll() is not None
            try:
                while chunk := os.read(fd, 1 << 16):
                    got += chunk
            except BlockingIOError:
                pass
            if done:
                break
            time.sleep(0.05)
    finally:
        os.close(fd)
    return p.wait(timeout=300), got, p.stderr.read().decode()


def stat_is_fifo(path) -> bool:
    import stat

    return stat.S_ISFIFO(os.lstat(path).st_mode)


# N7: files keep the umask's mode.


def test_n7_written_files_keep_the_umask_mode(finished, tmp_path):
    from jaxpipe import files

    old = os.umask(0o022)
    try:
        files.atomic_write(str(tmp_path / "a.txt"), "x")
        assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o644
        os.chmod(tmp_path / "a.txt", 0o640)  # an existing file keeps its own
        files.atomic_write(str(tmp_path / "a.txt"), "y")
        assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == 0o640
        os.umask(0o027)
        files.atomic_write(str(tmp_path / "b.txt"), "x")
        assert os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o640
        os.umask(0o022)
        saved = jaxpipe.load_model(str(finished / "run")).save(tmp_path / "m")
        for name in ("model.msgpack", "predictor.json", "summary.json", "metrics.jsonl"):
            assert os.stat(os.path.join(saved, name)).st_mode & 0o777 == 0o644, name
    finally:
        os.umask(old)
    for name in ("model.msgpack", "predictor.json", "summary.json", "spec.toml"):
        mode = os.stat(finished / "run" / name).st_mode & 0o777
        assert mode == 0o666 & ~old, (name, oct(mode))


# N9: plausible input never makes an internal error.


def test_n9_init_onto_a_file_or_read_only_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").write_text("a file")
    assert main(["init", "demo"]) == 2
    _one_error_line(capsys.readouterr().err, "demo", "not a folder")
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: a read-only directory is writable")
        monkeypatch.chdir(ro)
        assert main(["init", "demo"]) == 2
        _one_error_line(capsys.readouterr().err, "demo", "cannot create")
    finally:
        os.chmod(ro, 0o755)


def test_n9_init_refuses_a_read_only_directory_as_root_too(tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "makedirs", refuse)
    assert main(["init", "demo"]) == 2
    _one_error_line(capsys.readouterr().err, "demo", "cannot create the folder")


@pytest.mark.parametrize(
    "name, damage",
    [
        ("summary.json", lambda t: t[: len(t) // 2]),
        ("summary.json", lambda t: "[1, 2]"),
        ("metrics.jsonl", lambda t: t[: len(t) - 7]),
        ("predictor.json", lambda t: t[:40]),
    ],
    ids=["summary-cut", "summary-list", "metrics-cut", "predictor-cut"],
)
def test_n9_damaged_run_files_are_one_error_line(finished, tmp_path, capsys, name, damage):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    (run / name).write_text(damage((run / name).read_text()))
    commands = [
        ["evaluate", str(run), str(_labelled(finished, tmp_path))],
        ["compare", str(run)],
        ["predict", str(run), str(finished / "rows.csv")],
    ]
    if name == "metrics.jsonl":
        commands = commands[:2]
    if name == "predictor.json":
        commands = commands[::2]
    for args in commands:
        assert main(args) == 2, args
        _one_error_line(capsys.readouterr().err, name)
    with pytest.raises(JaxpipeError, match=name):
        jaxpipe.load_model(str(run))


def _labelled(finished, tmp_path):
    path = tmp_path / "labelled.csv"
    if not path.exists():
        lines = (finished / "rows.csv").read_text().splitlines()
        body = [f"{r},{i % 2}" for i, r in enumerate(lines[1:])]
        path.write_text("\n".join([lines[0] + ",y", *body]) + "\n")
    return path


def test_n9_model_save_onto_a_file_or_read_only_path(finished, tmp_path, monkeypatch):
    model = jaxpipe.load_model(str(finished / "run"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(JaxpipeError, match="not a directory"):
        model.save(tmp_path / "file")

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "makedirs", refuse)
    with pytest.raises(JaxpipeError, match="cannot create the directory"):
        model.save(tmp_path / "ro" / "m")


def test_n9_spec_from_dict_with_a_non_text_key():
    with pytest.raises(SpecError, match="key 1 .int. is not text"):
        jaxpipe.Spec.from_dict({"model": {1: 2}})
    with pytest.raises(SpecError, match="not text"):
        jaxpipe.Spec.from_dict({1: {}})


# N10: predict, evaluate and trace follow the signal contract.


@pytest.mark.parametrize(
    "command, sig, code",
    [("predict", "int", 130), ("evaluate", "term", 143), ("trace", "int", 130)],
)
def test_n10_predict_evaluate_trace_honour_signals(finished, tmp_path, command, sig, code):
    out = tmp_path / "p.csv"
    args = {
        "predict": [
            "predict",
            str(finished / "run"),
            str(finished / "rows.csv"),
            "--out",
            str(out),
        ],
        "evaluate": ["evaluate", str(finished / "run"), str(_labelled(finished, tmp_path))],
        "trace": ["trace", str(finished / "run"), "--png", str(out)],
    }[command]
    env = ENV | fault_env(f"{sig}-predict:0")  # the signal once it has its values
    p = _cli(*args, env=env)
    assert p.returncode == code, p.stderr
    _one_error_line(p.stderr, "interrupted by SIG", "nothing was written")
    assert p.stdout == "" and not out.exists()


@pytest.mark.parametrize("command", ["predict", "plan"])
def test_n10_sigint_at_the_start_is_exit_130_without_output(finished, tmp_path, command):
    import time

    out = tmp_path / "p.csv"
    args = {
        "predict": [
            "predict",
            str(finished / "run"),
            str(finished / "rows.csv"),
            "--out",
            str(out),
        ],
        "plan": ["plan", str(finished / "spec.toml")],
    }[command]
    p = subprocess.Popen(
        [sys.executable, "-m", "jaxpipe", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    start = time.monotonic()
    while not _catches_sigint(p.pid) and p.poll() is None:
        assert time.monotonic() - start < 60
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)  # while jax imports: recorded, acted on at a safe point
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 130, err
    _one_error_line(err, "interrupted by SIGINT")
    assert not out.exists() and stdout == ""


def _catches_sigint(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1)


# N8: the trackers are checked before any work, in one line and bounded time.


def _refused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


@pytest.mark.parametrize("kind", ["refused", "scheme", "file", "unwritable", "sqlite"])
def test_n8_bad_mlflow_uri_is_refused_before_any_work(tmp_path, capsys, kind):
    import time

    pytest.importorskip("mlflow")
    (tmp_path / "a-file").write_text("x")
    uri = {
        "refused": f"http://127.0.0.1:{_refused_port()}",
        "scheme": "nonsense://x",
        "file": str(tmp_path / "a-file"),
        "unwritable": "/proc/no-store-here",
        "sqlite": f"sqlite:///{tmp_path}/no/such/folder/mlflow.db",  # MLflow's default store
    }[kind]
    path = _write(tmp_path, "spec.toml", TINY.format(epochs=1) + f'[logging]\nmlflow = "{uri}"\n')
    t0 = time.monotonic()
    assert main(["validate", path]) == 2
    _one_error_line(capsys.readouterr().err, "[logging] mlflow", uri)
    out = tmp_path / "run"
    assert main(["run", path, "--out", str(out), "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "[logging] mlflow", uri)
    assert not out.exists()  # no half-made run directory
    assert time.monotonic() - t0 < 60  # was 252 s of retries for a refused port


# F9: a full disk or a file-size limit during a save: one line, exit 4, true words.

BIG = TINY.format(epochs=3).replace("hidden = [8]", "hidden = [256, 256]")


def test_f9_file_size_limit_during_a_save_is_exit_4_in_one_line(tmp_path):
    path = _write(tmp_path, "spec.toml", BIG)
    out = tmp_path / "run"
    # 128 blocks (64 or 128 KiB, as the shell counts them): the spec and metrics fit, a
    # 1.5 MiB checkpoint does not. Through the shell: no fork of this (threaded) process.
    cmd = [sys.executable, "-m", "jaxpipe", "run", path, "--out", str(out), "--quiet"]
    limited = ["sh", "-c", 'ulimit -f 128 && exec "$@"', "sh", *cmd]
    # No bytecode written: CPython's .pyc writer does not retry a short write, so under
    # the limit a module's first import would leave a .pyc cut at 64 KiB in the
    # PYTHONPYCACHEPREFIX this worker's other children share (they then died of
    # "EOFError: marshal data too short" importing orbax's google.protobuf.text_format).
    env = ENV | {"PYTHONDONTWRITEBYTECODE": "1"}
    p = subprocess.run(limited, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 4, p.stderr  # was 1, "internal error"
    _one_error_line(p.stderr, "ulimit -f", "--resume", "no checkpoint was written yet")
    assert not (out / "summary.json").exists()


def test_f9_full_disk_without_earlier_checkpoints_says_so(tmp_path, capsys, monkeypatch):
    from jaxpipe.runner.checkpoint import CheckpointStore

    def full(self, epoch, args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(CheckpointStore, "_write", full)
    path = _write(tmp_path, "spec.toml", TINY.format(epochs=2))
    assert main(["run", path, "--out", str(tmp_path / "run"), "--quiet"]) == 4
    err = capsys.readouterr().err
    _one_error_line(err, "disk is full", "no checkpoint was written yet")
    assert "intact" not in err  # there were none to be intact


# F13: only the newest checkpoint damaged: one warning line, whatever the damage.


@pytest.mark.parametrize("damage", ["garbage", "half", "empty"])
def test_f13_damaged_newest_checkpoint_is_one_warning_line(tmp_path, damage):
    import shutil

    text = BIG.replace("epochs = 3", "epochs = 4") + "[checkpoint]\nevery_epochs = 1\n"
    path = _write(tmp_path, "spec.toml", text)
    out = tmp_path / "run"
    p = _cli("run", path, "--out", str(out), "--quiet", env=ENV | fault_env("term-epoch:3"))
    assert p.returncode == 143, p.stderr
    for root, _, names in os.walk(out / "checkpoints" / "3" / "arrays"):
        for name in names:
            f = os.path.join(root, name)
            size = os.path.getsize(f)
            with open(f, "r+b") as fh:
                if damage == "garbage":
                    fh.write(b"garbage")
                fh.truncate({"garbage": max(size, 7), "half": size // 2, "empty": 0}[damage])
    p = _cli("run", path, "--out", str(out), "--quiet", "--resume")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoint "), p.stderr
    assert os.path.isdir(out / "checkpoints.unreadable" / "3")
    shutil.rmtree(out)


# N11: a device count above the planner's ceiling is refused, not planned as one device.


def test_n11_devices_above_the_search_ceiling_are_refused(tmp_path, capsys):
    path = _write(tmp_path, "spec.toml", TINY.format(epochs=1))
    assert main(["plan", path, "--gpu", "A100-40GB", "--devices", "5000"]) == 2
    _one_error_line(capsys.readouterr().err, "--devices 5000", "4096")
    text = TINY.format(epochs=1).replace("devices = 1", "devices = 5000")
    path = _write(tmp_path, "many.toml", text)
    assert main(["plan", path, "--gpu", "A100-40GB"]) == 2
    _one_error_line(capsys.readouterr().err, "hardware.devices", "4096")
    assert (
        main(
            [
                "plan",
                _write(tmp_path, "ok.toml", TINY.format(epochs=1)),
                "--gpu",
                "A100-40GB",
                "--devices",
                "4096",
                "--quiet",
            ]
        )
        == 0
    )


# N12: errors in data streamed from disk name the file's row.


@pytest.mark.parametrize("bad, needle", [(np.nan, "first at row 138"), (np.inf, "at row 138")])
def test_n12_streamed_errors_name_the_files_row(tmp_path, capsys, bad, needle):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    (tmp_path / "parts").mkdir()
    for i in range(2):
        x = rng.normal(size=(200, 4))
        if i == 1:
            x[137, 1] = bad  # row 138 of part-1.parquet, in its third row group
        cols = {c: x[:, j] for j, c in enumerate("abcd")} | {"label": (x[:, 0] > 0) * 1}
        pq.write_table(pa.table(cols), tmp_path / "parts" / f"part-{i}.parquet", row_group_size=50)
    text = (
        '[data]\nsource = "parquet"\npath = "parts"\nlabel = "label"\nvalidation = 40\n'
        'host_memory = "8KiB"\n[model]\nhidden = [8]\n[training]\nbatch_size = 16\n'
    )
    assert main(["validate", _write(tmp_path, "disk.toml", text)]) == 2
    _one_error_line(capsys.readouterr().err, "part-1.parquet", "column 'b'", needle)


# N13: messages give the right reason and the right fix.


def test_n13_model_task_cannot_be_swept_gives_its_own_reason(tmp_path, capsys):
    text = (
        TINY.format(epochs=1) + '[sweep.values]\n"model.task" = ["classification", "regression"]\n'
    )
    assert main(["validate", _write(tmp_path, "s.toml", text)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "model.task cannot be swept", "metrics")
    assert "[data]" not in err and "data is" not in err


def test_n13_evaluate_on_a_missing_label_gives_no_training_option(finished, tmp_path, capsys):
    rows = (finished / "rows.csv").read_text().splitlines()
    body = [f"{r},{'' if i == 2 else i % 2}" for i, r in enumerate(rows[1:])]
    (tmp_path / "na.csv").write_text("\n".join([rows[0] + ",y", *body]) + "\n")
    assert main(["evaluate", str(finished / "run"), str(tmp_path / "na.csv")]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "without a label", "row 3", "remove those rows")
    assert "[preprocess]" not in err


def test_n13_trace_and_evaluate_on_an_interrupted_run_do_not_say_predict(
    finished, tmp_path, capsys
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    for args in (["trace", str(run)], ["evaluate", str(run), str(_labelled(finished, tmp_path))]):
        assert main(args) == 2
        err = capsys.readouterr().err
        _one_error_line(err, "interrupted run", "--resume")
        assert "predict" not in err, err


def test_n13_validation_rows_in_memory_are_not_called_file_none():
    x = np.random.default_rng(0).normal(size=(24, 2))
    y = (x[:, 0] > 0).astype(int)
    spec = {"model": {"hidden": [4]}, "training": {"epochs": 1, "batch_size": 4}}
    with pytest.raises(jaxpipe.DataError) as e:
        jaxpipe.fit(spec, data=(x, y), validation=(x[:4, :1], y[:4]))
    assert "None" not in str(e.value) and "training data" in str(e.value)


def test_n13_tiny_host_budgets_are_not_zero_mib(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = np.random.default_rng(0).normal(size=(200, 4))
    cols = {c: x[:, j] for j, c in enumerate("abcd")} | {"label": (x[:, 0] > 0) * 1}
    pq.write_table(pa.table(cols), tmp_path / "one.parquet")
    text = (
        '[data]\nsource = "parquet"\npath = "one.parquet"\nlabel = "label"\n'
        'host_memory = "1KiB"\n[training]\nbatch_size = 16\n'
    )
    assert main(["validate", _write(tmp_path, "s.toml", text)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "host budget", "KiB")
    assert "0.0 MiB" not in err


def test_n13_a_damaged_model_file_names_its_reason(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished / "run", run)
    (run / "model.msgpack").write_bytes(b"")
    assert main(["predict", str(run), str(finished / "rows.csv")]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "model.msgpack")
    assert "()" not in err, err
