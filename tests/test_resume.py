"""Runs that survive: killed (SIGKILL, SIGTERM, SIGINT) at chosen points and resumed to
the bit-identical result; a corrupted checkpoint; a changed spec refused; early stopping,
divergence and the run-directory checks. Subprocesses are few: each pays jax's import
and a compile."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import jax
import jax._src.compilation_cache as compilation_cache
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import SMALL_SPEC, assert_trees_close
from faults import fault_env, install

import jaxpipe
from jaxpipe.cli.main import main

EPOCHS = 4
SPEC = SMALL_SPEC.replace("epochs = 2", f"epochs = {EPOCHS}")


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def _checkpoint_arrays(run_dir, epoch):
    """A checkpoint's arrays as saved on disk, read back without a template."""
    args = ocp.args.Composite(arrays=ocp.args.StandardRestore())
    path = os.path.join(os.path.abspath(run_dir), "checkpoints")
    return jax.device_get(ocp.CheckpointManager(path).restore(epoch, args=args)["arrays"])


def _exact(a, b):
    assert_trees_close(a, b, rtol=0, atol=0)


def _same_run(run_dir, reference):
    """Metrics (timings aside), returned parameters and the last checkpoint's arrays all
    bit-identical to the uninterrupted reference run."""
    ref_dir, ref_result = reference
    assert _strip(_metrics(run_dir)) == _strip(_metrics(ref_dir))
    assert [r["epoch"] for r in _metrics(run_dir)] == list(range(1, EPOCHS + 1))
    _exact(_checkpoint_arrays(run_dir, EPOCHS), _checkpoint_arrays(ref_dir, EPOCHS))
    assert _summary(run_dir)["status"] == "completed"


@pytest.fixture(scope="module", autouse=True)
def shared_compilation_cache(tmp_path_factory):
    """Every run here compiles the same few programs: a compilation cache in a temporary
    folder, shared with the subprocesses, compiles them once. A cached executable is the
    compiled one, so results do not change."""
    mp = pytest.MonkeyPatch()
    mp.setenv("JAXPIPE_COMPILATION_CACHE", "1")
    mp.setenv("JAXPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("xla")))
    compilation_cache.reset_cache()  # earlier tests may have started jax without one
    yield
    mp.undo()
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return str(path)


@pytest.fixture(scope="module")
def reference(spec_path, tmp_path_factory):
    """The uninterrupted run every resumed one must reproduce exactly."""
    out = str(tmp_path_factory.mktemp("ref") / "run")
    return out, jaxpipe.run(spec_path, out=out)


def _cli_process(spec_path, out, hook, *extra):
    env = os.environ | fault_env(hook)
    cmd = [sys.executable, "-m", "jaxpipe", "run", spec_path, "--out", out, "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


# Kill points: after epoch 3 ran (its metrics line and checkpoint not yet written), and
# while epoch 2's checkpoint is being written. Saves finish in the background, so the
# newest committed checkpoint may be older than the newest save started (`latest`).
@pytest.mark.parametrize("hook, latest", [("kill-epoch:3", 2), ("kill-save:2", 2)])
def test_sigkill_then_resume_is_bit_identical(spec_path, reference, tmp_path, hook, latest):
    out = str(tmp_path / "run")
    p = _cli_process(spec_path, out, hook)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not os.path.exists(os.path.join(out, "summary.json"))
    ckpts = sorted(int(n) for n in os.listdir(os.path.join(out, "checkpoints")) if n.isdigit())
    assert ckpts and 1 <= ckpts[-1] <= latest, ckpts

    result = jaxpipe.run(spec_path, out=out, resume=True)
    assert _summary(out)["resumed_from"] == ckpts[-1]
    _same_run(out, reference)
    _exact(result.params, reference[1].params)


def test_sigkill_at_a_random_moment_then_resume_is_bit_identical(spec_path, reference, tmp_path):
    """SIGKILL from outside at a moment drawn anew each run (reported on failure): after
    the first metrics line, plus a random delay, so it lands anywhere in an epoch, an
    evaluation or a save (each epoch is slowed to ~0.1 s so that the run is still going)."""
    out = str(tmp_path / "run")
    rng = random.Random()
    lines, delay = rng.randint(1, EPOCHS - 1), rng.uniform(0.0, 0.12)
    env = os.environ | fault_env("slow-epoch:0.1")
    cmd = [sys.executable, "-m", "jaxpipe", "run", spec_path, "--out", out, "--quiet"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= lines:
            break
        time.sleep(0.005)
    time.sleep(delay)
    proc.kill()
    proc.communicate(timeout=60)
    where = f"drawn point: {lines} metrics lines + {delay:.3f} s"
    assert proc.returncode == -signal.SIGKILL, where  # killed before it finished

    result = jaxpipe.run(spec_path, out=out, resume=True)
    assert len(_metrics(out)) == EPOCHS, where
    _same_run(out, reference)
    _exact(result.params, reference[1].params)


def test_sigterm_checkpoints_and_exits_143_then_resumes(spec_path, reference, tmp_path):
    out = str(tmp_path / "run")
    p = _cli_process(spec_path, out, "term-epoch:2")
    assert p.returncode == 143, p.stderr
    assert (
        p.stderr.startswith("error: interrupted by SIGTERM after epoch 2")
        and "--resume" in p.stderr
    )
    summary = _summary(out)
    assert summary["status"] == "interrupted" and summary["stop"]["epoch"] == 2
    assert summary["checkpoints"]["epochs"][-1] == 2 and len(_metrics(out)) == 2

    code = main(["run", spec_path, "--out", out, "--quiet"])  # not without --resume
    assert code == 2
    result = jaxpipe.run(spec_path, out=out, resume=True)
    _same_run(out, reference)
    _exact(result.params, reference[1].params)


def test_sigint_in_process_raises_after_checkpoint_and_restores_handlers(
    spec_path, reference, tmp_path, monkeypatch
):
    out = str(tmp_path / "run")
    before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as mp:
        install("int-epoch:3", mp.setattr)
        with pytest.raises(jaxpipe.RunInterrupted) as info:
            jaxpipe.run(spec_path, out=out)
    assert info.value.exit_code == 130 and signal.getsignal(signal.SIGINT) is before
    assert _summary(out)["status"] == "interrupted"

    # The newest checkpoint is corrupted: the resume warns and redoes epoch 3 from 2.
    with open(os.path.join(out, "checkpoints", "3", "meta", "metadata"), "w") as f:
        f.write('{"epoch": 3, "hist')
    code = main(["run", spec_path, "--out", out, "--quiet", "--resume"])
    assert code == 0
    assert _summary(out)["resumed_from"] == 2
    _same_run(out, reference)


REGRESSION = """
[data]
source = "synthetic"
[data.synthetic]
rows = 300
features = 5
[model]
task = "regression"
hidden = [8]
dropout = 0.2
[training]
epochs = 3
batch_size = 32
[training.early_stopping]
metric = "val_rmse"
patience = 5
"""


def test_regression_with_dropout_resumes_exactly(write_spec, tmp_path, monkeypatch):
    """The target's normaliser, dropout's keys and a val_rmse stopper survive a resume."""
    spec = write_spec(REGRESSION)
    ref = jaxpipe.run(spec, out=str(tmp_path / "ref"))
    out = str(tmp_path / "run")
    with monkeypatch.context() as mp:
        install("int-epoch:2", mp.setattr)
        with pytest.raises(jaxpipe.RunInterrupted):
            jaxpipe.run(spec, out=out)
    assert "target" in _checkpoint_arrays(out, 2)
    result = jaxpipe.run(spec, out=out, resume=True)
    assert _strip(result.history) == _strip(ref.history) and result.history[-1]["val_rmse"] > 0
    _exact(result.params, ref.params)
    assert result.summary["early_stopping"]["mode"] == "min"


def test_resume_refuses_a_changed_spec_and_force_extends(spec_path, reference, tmp_path, capsys):
    out = str(tmp_path / "run")
    import shutil

    shutil.copytree(reference[0], out)
    base = ["run", spec_path, "--out", out, "--quiet", "--resume"]
    before = open(os.path.join(out, "spec.toml")).read()

    assert main(base + ["--set", "model.hidden=[8]", "--set", "optimizer.learning_rate=0.1"]) == 2
    err = capsys.readouterr().err
    assert "error: --resume: the spec differs" in err and err.count("\n") == 1
    assert "model.hidden, optimizer.learning_rate" in err
    assert main(base + ["--set", "training.epochs=6"]) == 2
    assert "training.epochs; add --force" in capsys.readouterr().err
    assert open(os.path.join(out, "spec.toml")).read() == before  # nothing overwritten
    assert main(["run", spec_path, "--out", out, "--quiet", "--force"]) == 2  # needs --resume

    assert main(base + ["--force", "--set", "training.epochs=3"]) == 2
    assert "past training.epochs = 3" in capsys.readouterr().err
    assert open(os.path.join(out, "spec.toml")).read() == before
    assert main(base + ["--force", "--set", "training.epochs=6", "--set", "experiment.name=x"]) == 0
    rows = _metrics(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert _strip(rows[:EPOCHS]) == _strip(_metrics(reference[0]))
    assert (
        _summary(out)["resumed_from"] == EPOCHS
        and "epochs = 6" in open(os.path.join(out, "spec.toml")).read()
    )


def test_run_directory_checks(spec_path, reference, tmp_path, capsys):
    assert main(["run", spec_path, "--out", reference[0]]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["run", spec_path, "--out", str(blocker / "sub")]) == 2
    assert "cannot write there" in capsys.readouterr().err
    assert main(["run", spec_path, "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err

    # --resume on an empty directory starts from scratch, with a warning.
    out = str(tmp_path / "fresh")
    result = jaxpipe.run(spec_path, out=out, resume=True)
    assert "no checkpoint" in capsys.readouterr().err
    _exact(result.params, reference[1].params)


PLATEAU = """
[optimizer]
learning_rate = 1e-9
[training.early_stopping]
patience = 2
min_delta = 1e-4
restore_best = true
"""


def test_early_stopping_on_a_plateau_restores_best(write_spec, tmp_path):
    text = SMALL_SPEC.replace("epochs = 2", "epochs = 20") + PLATEAU
    result = jaxpipe.run(write_spec(text), out=str(tmp_path / "run"))
    summary = result.summary
    assert [r["epoch"] for r in result.history] == [1, 2, 3]  # best at 1, then 2 flat
    assert summary["status"] == "completed" and summary["stop"]["epoch"] == 3
    assert (
        "early stopping: val_loss did not improve by more than 0.0001 for 2 epochs"
        in (summary["stop"]["reason"])
    )
    assert summary["params_epoch"] == 1 and summary["early_stopping"]["best_epoch"] == 1
    assert summary["early_stopping"]["best_row"] == result.history[0]
    assert summary["checkpoints"]["epochs"][-1] == 3
    # The returned parameters are epoch 1's: those of a one-epoch run (constant rate).
    one = jaxpipe.run(
        write_spec(text.replace("epochs = 20", "epochs = 1")), out=str(tmp_path / "one")
    )
    _exact(result.params, one.params)
    # Resuming a run that stopped early does not train on.
    again = jaxpipe.run(write_spec(text), out=str(tmp_path / "run"), resume=True)
    assert len(again.history) == 3
    _exact(again.params, result.params)


DIVERGE = """
[optimizer]
name = "sgd"
learning_rate = 0.1
[optimizer.schedule]
name = "exponential"
transition_steps = 13
decay_rate = 1e8
"""


def test_divergence_exits_3_keeps_last_good_checkpoint(write_spec, tmp_path, capsys):
    out = tmp_path / "run"
    text = SMALL_SPEC.replace("epochs = 2", "epochs = 6") + DIVERGE  # ×1e8 per epoch
    assert main(["run", write_spec(text), "--out", str(out), "--quiet"]) == 3
    err = capsys.readouterr().err
    assert err == "error: training diverged: loss is nan at epoch 5\n"
    summary = _summary(out)
    assert summary["status"] == "diverged" and summary["diverged"]["epoch"] == 5
    assert summary["final"]["epoch"] == 4 and len(_metrics(out)) == 4
    assert summary["checkpoints"]["epochs"] == [2, 3, 4]
    for epoch in summary["checkpoints"]["epochs"]:
        for leaf in jax.tree.leaves(_checkpoint_arrays(out, epoch)["state"]["params"]):
            assert np.isfinite(leaf).all()


@pytest.mark.parametrize(
    "extra, needle",
    [
        ("[training.early_stopping]\nmetric = 'val_f1'\n", "unknown metric 'val_f1'"),
        ("[checkpoint]\nbest_metric = 'loss'\n", "'loss' is not a metric name"),
        ("[checkpoint]\nbest_metric = 'val_thing'\n", "set mode"),
    ],
)
def test_bad_stopping_and_checkpoint_keys_exit_2(write_spec, tmp_path, capsys, extra, needle):
    assert main(["run", write_spec(SMALL_SPEC + extra), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "r")


def test_sigkill_of_a_donating_run_then_resume_is_bit_identical(spec_path, reference, tmp_path):
    """A state whose `keep` snapshots exceed the in-memory budget is donated each epoch
    and snapshotted into pinned host memory (issue 12: never a second copy on the
    device); killed after epoch 3 and resumed, it ends bit-identical to the reference
    (which keeps its small state undonated). keep = 100000 makes a 2 KB state "big"."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC + "\n[checkpoint]\nkeep = 100000\n")
    out = str(tmp_path / "run")
    p = _cli_process(str(spec), out, "kill-epoch:3")
    assert p.returncode == -signal.SIGKILL, p.stderr
    ckpts = sorted(int(n) for n in os.listdir(os.path.join(out, "checkpoints")) if n.isdigit())
    assert ckpts and 1 <= ckpts[-1] <= 2, ckpts  # epoch 2's save may be unfinished
    result = jaxpipe.run(str(spec), out=out, resume=True)
    assert _summary(out)["resumed_from"] == ckpts[-1] and _summary(out)["plan"]["donated"]
    _same_run(out, reference)
    _exact(result.params, reference[1].params)
