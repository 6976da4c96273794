"""Early stopping, signal catching and the verdict on how a run ended."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import ROOT, SMALL_SPEC
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.runner.stopping import EarlyStopper, outcome
from jaxpipe.signals import SignalCatcher, catch_signals
from jaxpipe.spec.sections import EarlyStoppingSpec

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

values = st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=12)


@given(values, st.integers(1, 4), st.sampled_from([0.0, 0.1]))
def test_early_stopper_counts_epochs_without_improvement(vals, patience, delta):
    spec = EarlyStoppingSpec(metric="val_loss", patience=patience, min_delta=delta)
    stopper = EarlyStopper.from_spec(spec)
    mirror = EarlyStopper.from_spec(
        EarlyStoppingSpec(metric="val_accuracy", patience=patience, min_delta=delta)
    )
    assert (stopper.mode, mirror.mode) == ("min", "max")
    best, since = None, 0
    for epoch, v in enumerate(vals, 1):
        improved = stopper.update(epoch, {"val_loss": v})
        assert improved == mirror.update(epoch, {"val_accuracy": -v})
        if best is None or v < best - delta:
            best, since = v, 0
        else:
            since += 1
        assert improved == (since == 0)
        assert stopper.best == best and stopper.wait == since
        assert stopper.should_stop == (since >= patience)
        # What a checkpoint stores brings back the same bookkeeping.
        again = EarlyStopper.from_spec(spec, stopper.to_dict())
        assert again == stopper


def test_catch_signals_defers_then_restores_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with catch_signals() as caught:
        assert not caught.caught
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode
        assert caught.caught and caught.name == "SIGTERM"
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert {s: signal.getsignal(s) for s in before} == before


def test_outcome_names_status_and_reason():
    quiet, term = SignalCatcher(), SignalCatcher()
    term.signum = signal.SIGTERM
    nan = {"epoch": 3, "metric": "train_loss", "value": float("nan")}
    assert outcome(nan, term, None, 2, 5) == (
        "diverged",
        {"epoch": 3, "reason": "loss is nan at epoch 3"},
    )
    assert outcome(None, term, None, 2, 5) == (
        "interrupted",
        {"epoch": 2, "reason": "SIGTERM received"},
    )
    # A signal during the last epoch interrupts nothing.
    assert outcome(None, term, None, 5, 5)[0] == "completed"
    assert outcome(None, quiet, None, 5, 5) == (
        "completed",
        {"epoch": 5, "reason": "all 5 epochs run"},
    )
    stopper = EarlyStopper("val_loss", "min", patience=1, best=0.5, best_epoch=1, wait=1)
    status, stop = outcome(None, term, stopper, 2, 5)
    assert status == "completed" and stop["reason"].startswith("early stopping: val_loss")
    with pytest.raises(AssertionError):
        outcome(None, quiet, None, 2, 5)


def test_outcome_of_a_callbacks_request_to_stop():
    quiet = SignalCatcher()
    assert outcome(None, quiet, None, 2, 5, "enough") == (
        "completed",
        {"epoch": 2, "reason": "callback: enough"},
    )
    # At the last epoch a request changes nothing: every epoch ran.
    assert outcome(None, quiet, None, 5, 5, "enough")[1]["reason"] == "all 5 epochs run"


def test_observers_ask_every_listener_and_return_the_first_reason():
    from jaxpipe.events import Observers, StopTraining

    heard = []

    class Raises:
        def on_epoch_end(self, row, epochs):
            heard.append("raises")
            raise StopTraining("target reached")

    class Answers:
        def on_epoch_end(self, row, epochs):
            heard.append("answers")
            return True

    class Quiet:
        def on_epoch(self, row, epochs):
            heard.append("on_epoch")

    observers = Observers([Quiet(), Raises(), Answers()])
    assert observers.on_epoch_end({"epoch": 1}, 3) == "target reached"
    assert Observers([Answers()]).on_epoch_end({"epoch": 1}, 3) == "Answers.on_epoch_end asked"
    assert Observers([Quiet()]).on_epoch_end({"epoch": 1}, 3) is None
    assert heard == ["raises", "answers", "answers"]


def _cli_run(spec: str, out) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": ROOT, "JAXPIPE_COMPILATION_CACHE": "0"}
    argv = [sys.executable, "-m", "jaxpipe", "run", spec, "--out", str(out)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_early_stopping_on_val_roc_auc_from_the_command_line(write_spec, tmp_path):
    # No AUC improves by 1.0: the run stops after its first two epochs, on that metric.
    text = SMALL_SPEC.replace("epochs = 2", "epochs = 5") + (
        'metrics = ["val_f1_macro"]\n'
        '[training.early_stopping]\nmetric = "val_roc_auc"\npatience = 1\nmin_delta = 1.0\n'
        '[checkpoint]\nbest_metric = "val_pr_auc"\n'
    )
    p = _cli_run(write_spec(text), tmp_path / "run")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:  # listed, watched by early stopping, watched by the best checkpoint
        assert 0.0 <= r["val_roc_auc"] <= 1.0 and 0.0 <= r["val_pr_auc"] <= 1.0
        assert 0.0 <= r["val_f1_macro"] <= 1.0 and "val_log_loss" not in r
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "val_roc_auc did not improve" in summary["stop"]["reason"]
    assert summary["final"]["val_roc_auc"] == rows[-1]["val_roc_auc"]
    epoch_line = next(ln for ln in p.stdout.splitlines() if "epoch 1/5" in ln)
    assert f"val_roc_auc {rows[0]['val_roc_auc']:.4f}" in epoch_line  # the watched one


def test_a_misspelt_epoch_metric_exits_2_naming_the_key_and_the_choices(write_spec, tmp_path):
    text = SMALL_SPEC + '[training.early_stopping]\nmetric = "val_auc"\n'
    p = _cli_run(write_spec(text), tmp_path / "run")
    assert p.returncode == 2
    error = p.stderr.strip().splitlines()[-1]
    assert "training.early_stopping.metric" in error and "val_roc_auc" in error, error
    p = _cli_run(write_spec(SMALL_SPEC + 'metrics = ["val_f1"]\n'), tmp_path / "run2")
    assert p.returncode == 2 and "training.metrics[0]" in p.stderr and "val_f1_macro" in p.stderr
