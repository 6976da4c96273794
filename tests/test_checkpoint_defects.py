"""The checkpoint cadence and the checkpoint defects of issue 11: a full disk (9),
damaged checkpoints flooding the terminal (13), a file named `checkpoints` (14)."""

import errno
import json
import os
import shutil
import subprocess
import sys
import uuid

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, SMALL_SPEC, cached_env
from faults import fault_env, install

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.errors import EnvironmentProblem
from jaxpipe.runner import loop
from jaxpipe.runner.cadence import make_cadence
from jaxpipe.runner.checkpoint import CheckpointStore, abstract_like, saved_epochs

# Runs here repeat a few small specs: each program compiles once per test process
# (conftest.compile_once; a cached executable is the compiled one).
pytestmark = pytest.mark.usefixtures("compile_once")

EVERY_EPOCH = SMALL_SPEC.replace("epochs = 2", "epochs = 3") + "[checkpoint]\nevery_epochs = 1\n"


def _cli(*args, env=None):
    full = dict(os.environ) | {"PYTHONPATH": ROOT, **(env or {})}
    full = cached_env(full)  # the runs here repeat a few specs: compile each once
    cmd = [sys.executable, "-m", "jaxpipe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full, timeout=300)


def test_cadence_by_wall_time_unless_every_epochs_is_set(monkeypatch):
    auto = make_cadence("auto", 5.0)
    assert auto.every_epochs is None and auto.every_seconds == 300.0
    assert not auto.due(7, 299.0) and auto.due(1, 300.0)
    every3 = make_cadence(3, 5.0)
    assert [e for e in range(1, 10) if every3.due(e, 0.0)] == [3, 6, 9]
    # Fault injection (tests/faults.py) names epochs to kill at: those need checkpoints
    # before, so under it the loop's "auto" cadence saves every epoch; the product's not.
    install("kill-epoch:3", monkeypatch.setattr)
    assert loop.make_cadence("auto", 5.0).every_epochs == 1
    assert make_cadence("auto", 5.0).every_epochs is None


def test_default_run_saves_at_the_end_and_every_minutes_zero_saves_each_epoch(
    write_spec, tmp_path, monkeypatch
):
    spec = write_spec(SMALL_SPEC.replace("epochs = 2", "epochs = 3"))
    tiny = jaxpipe.run(spec, out=str(tmp_path / "a"))
    assert tiny.summary["checkpoints"]["epochs"] == [3]
    spec = write_spec(
        SMALL_SPEC.replace("epochs = 2", "epochs = 3") + "[checkpoint]\nevery_minutes = 0.0\n",
        name="zero.toml",
    )
    each = jaxpipe.run(spec, out=str(tmp_path / "b"))
    assert each.summary["checkpoints"]["epochs"] == [1, 2, 3]
    strip = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in each.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in tiny.history]


def test_saves_are_asynchronous_and_survive_donation(tmp_path):
    """`save` returns before the write; the arrays it was given may change meanwhile."""
    store = CheckpointStore(str(tmp_path / "ck"))
    x = jnp.arange(6.0)
    store.save(1, {"x": x}, {"epoch": 1}, None)
    x.delete()  # what donation to the next epoch does to the caller's buffer
    assert store.epochs() == [1]  # waits for the write
    restored = store.restore(lambda m: abstract_like({"x": jnp.ones(6)}), print)
    np.testing.assert_array_equal(restored.arrays["x"], np.arange(6.0))
    store.close()


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_defect_09_full_disk_in_the_store_is_an_environment_problem(tmp_path, monkeypatch):
    path = str(tmp_path / "ck")
    store = CheckpointStore(path)
    store.save(1, {"x": jnp.ones(3)}, {"epoch": 1}, None)
    store.wait()
    monkeypatch.setattr(store._manager, "save", _disk_full)
    store.save(2, {"x": jnp.ones(3)}, {"epoch": 2}, None)  # the write fails in the background
    with pytest.raises(EnvironmentProblem, match="disk is full") as info:
        store.wait()
    assert info.value.exit_code == 4 and "--resume" in str(info.value)
    assert saved_epochs(path) == [1]  # the earlier checkpoint is intact


def test_defect_09_full_disk_during_a_run_exits_4_in_one_line(
    write_spec, tmp_path, capsys, monkeypatch
):
    """Simulated where every machine can: the write raises ENOSPC (the real tmpfs case is
    the next test). One line, exit 4, no summary, and --resume then finishes the run."""
    spec = write_spec(EVERY_EPOCH)
    out = str(tmp_path / "run")
    real = CheckpointStore._write

    def write(self, epoch, args):
        if epoch == 2:
            _disk_full()
        real(self, epoch, args)

    monkeypatch.setattr(CheckpointStore, "_write", write)
    assert main(["run", spec, "--out", out, "--quiet"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "disk is full" in err and err.count("\n") == 1, err
    assert not os.path.exists(os.path.join(out, "summary.json"))
    monkeypatch.setattr(CheckpointStore, "_write", real)
    assert main(["run", spec, "--out", out, "--quiet", "--resume"]) == 0
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["resumed_from"] == 1


def _mount_tmpfs(path: str, size: str) -> bool:
    os.makedirs(path, exist_ok=True)
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path]
    try:
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False


def test_defect_09_a_really_full_disk_exits_4_and_stays_resumable(write_spec, tmp_path):
    disk = str(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
    if os.geteuid() != 0 or not _mount_tmpfs(disk, "600k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        # 2 × 256² weights with Adam's two moments: a 1.5 MiB checkpoint on a 600 KiB disk.
        spec = write_spec(EVERY_EPOCH.replace("hidden = [16]", "hidden = [256, 256]"))
        out = os.path.join(disk, "run")
        p = _cli("run", spec, "--out", out, "--quiet")
        assert p.returncode == 4, p.stderr
        assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
        assert "disk is full" in p.stderr and "--resume" in p.stderr
        assert not os.path.exists(os.path.join(out, "summary.json"))
        subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
        p = _cli("run", spec, "--out", out, "--quiet", "--resume")
        assert p.returncode == 0, p.stderr
    finally:
        subprocess.run(["umount", disk], capture_output=True)


def _damage(run_dir: str, epoch: int) -> None:
    """Garbage in every array file of a checkpoint (its JSON metadata stays readable)."""
    for root, _, files in os.walk(os.path.join(run_dir, "checkpoints", str(epoch), "arrays")):
        if os.sep + "d" in root:
            for name in files:
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")


def test_defect_13_damaged_checkpoints_give_one_warning_line_each(write_spec, tmp_path):
    spec = write_spec(EVERY_EPOCH.replace("epochs = 3", "epochs = 4"))
    out = str(tmp_path / "run")
    p = _cli("run", spec, "--out", out, "--quiet", env=fault_env("term-epoch:3"))
    assert p.returncode == 143, p.stderr
    assert saved_epochs(os.path.join(out, "checkpoints")) == [1, 2, 3]

    every = str(tmp_path / "every")
    shutil.copytree(out, every)
    for epoch in (1, 2, 3):
        _damage(every, epoch)
    p = _cli("run", spec, "--out", every, "--quiet", "--resume")
    lines = p.stderr.splitlines()
    assert p.returncode == 2, p.stderr
    assert [ln.split(" ")[0] for ln in lines] == ["warning:"] * 3 + ["error:"], p.stderr
    assert "Traceback" not in p.stderr

    _damage(out, 3)  # the newest only: one warning, then the previous one resumes
    p = _cli("run", spec, "--out", out, "--quiet", "--resume")
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: checkpoint "), p.stderr


def test_defect_13_importing_changes_no_logging_configuration():
    code = (
        "import logging; import jaxpipe.runner.checkpoint, jaxpipe.runner.loop; "
        "a = logging.getLogger('absl'); print(a.level, a.propagate, len(a.handlers))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=120,
    )
    assert p.stdout.split() == ["0", "True", "0"], p.stdout + p.stderr


def test_defect_14_a_file_named_checkpoints_exits_2_in_one_line(write_spec, tmp_path):
    spec = write_spec(SMALL_SPEC)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoints").write_text("not a folder")
    p = _cli("run", spec, "--out", str(out), "--quiet")
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and p.stderr.count("\n") == 1, p.stderr
    assert "checkpoints: exists and is not a directory" in p.stderr
    assert sorted(os.listdir(out)) == ["checkpoints"]  # nothing written beside it
