"""Early stopping, signal catching and the verdict on how a run ended."""

import os
import signal

import pytest
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
