"""Fault injection for jaxpipe's own tests, kept out of the package: a run is killed,
signalled or slowed at a point of an epoch by patching the training loop.

A hook is `<kill|term|int>-<point>:<epoch>` (SIGKILL / SIGTERM / SIGINT to this process
at `point` of that epoch) or `slow-<point>:<seconds>` (a sleep there at every epoch, so a
test can signal the process at a moment of its choosing within a run of tiny epochs).
Points: "epoch" (the epoch and its evaluation have run, nothing of it is written; a run's
or a sweep's), "save" (its checkpoint has just been written) and "predict" (epoch 0:
predict, evaluate or trace has its values, nothing is written yet). Under a hook, `[checkpoint] every_epochs =
"auto"` saves every epoch: a test that kills a run of millisecond epochs at epoch N needs
checkpoints before N to resume from.

In a test: `install(hook, monkeypatch.setattr)`. In a child process: `fault_env(hook)`
puts tests/faultsite (whose sitecustomize.py installs $JAXPIPE_TEST_HOOK) on its
PYTHONPATH. `nudge-resume` makes `jaxpipe check --resume` see an inexact resume (the
resumed run's parameters moved by 1e-3), so the check's failure path can be tested.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SITE = os.path.join(HERE, "faultsite")
SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "int": signal.SIGINT}


def fault_env(hook: str) -> dict[str, str]:
    """Environment entries that make a child `python -m jaxpipe ...` run under `hook`."""
    return {"PYTHONPATH": os.pathsep.join([ROOT, SITE]), "JAXPIPE_TEST_HOOK": hook}


def fire(hook: str, point: str, epoch: int) -> None:
    """Acts out `hook` if it names `point` (and, for a signal, `epoch`)."""
    what, _, at = hook.partition(":")
    action, _, where = what.partition("-")
    if where != point:
        return
    if action == "slow":
        time.sleep(float(at))
    elif at == str(epoch):
        os.kill(os.getpid(), SIGNALS[action])


def install(hook: str, patch: Callable[[Any, str, Any], None] = setattr) -> None:
    """Patches the loop (or, for `nudge-resume`, the resume check) to act out `hook`."""
    if hook == "nudge-resume":
        _nudge_resume(patch)
        return
    from jaxpipe import signals
    from jaxpipe.runner import cadence, loop
    from jaxpipe.sweep import train

    epoch_fn, save_fn, make_cadence = loop._epoch, loop._save, cadence.make_cadence
    row_fn, stop_fn, seen = train._row, signals.SignalCatcher.stop, set()

    def _epoch(programs, placed, prep, state, epoch, times):
        out = epoch_fn(programs, placed, prep, state, epoch, times)
        fire(hook, "epoch", epoch)
        return out

    def _save(store, run, *args, write, copy):
        save_fn(store, run, *args, write=write, copy=copy)
        if write:
            fire(hook, "save", run.epoch)

    def _cadence(every_epochs, every_minutes):
        if every_epochs == "auto":
            return cadence.Cadence(1, 0.0)
        return make_cadence(every_epochs, every_minutes)

    def _row(epoch, *args):  # a sweep's epoch: its first trial's row
        if epoch not in seen:
            seen.add(epoch)
            fire(hook, "epoch", epoch)
        return row_fn(epoch, *args)

    def _stop(self, *args, **kw):  # predict, evaluate, trace: the values are in
        fire(hook, "predict", 0)
        return stop_fn(self, *args, **kw)

    patch(train, "_row", _row)
    patch(signals.SignalCatcher, "stop", _stop)
    patch(loop, "_epoch", _epoch)
    patch(loop, "_save", _save)
    patch(loop, "make_cadence", _cadence)


def _nudge_resume(patch: Callable[[Any, str, Any], None]) -> None:
    import dataclasses

    import jax
    import numpy as np

    # jaxpipe.api's run, which the resume check imports: the check runs in a child
    # (`python -m jaxpipe.check.invariants`), whose __main__ imports it after this patch.
    from jaxpipe import api

    run = api.run

    def nudged(spec, out=None, **kw):
        result = run(spec, out, **kw)
        if not kw.get("resume"):
            return result
        moved = jax.tree.map(lambda p: np.asarray(p) + np.asarray(1e-3, np.asarray(p).dtype),
                             result.params)  # fmt: skip
        return dataclasses.replace(result, params=moved)

    patch(api, "run", nudged)
