"""The public API: what `jaxpipe` re-exports and the CLI calls."""

from __future__ import annotations

import os

from jaxpipe.loop import RunResult, run_experiment
from jaxpipe.optim import check_optimizer
from jaxpipe.report import ConsoleReporter
from jaxpipe.spec import Spec, load_spec

__all__ = ["run", "validate", "load_spec"]


def run(
    spec: Spec | str | os.PathLike[str], out: str | None = None, *, verbose: bool = False
) -> RunResult:
    """Runs an experiment (a `Spec` or a path to its TOML file) and writes its run
    directory (`out`, default runs/<name>-<timestamp>). With `verbose`, prints the
    progress, data flow, trace and chart as `jaxpipe run` does."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    return run_experiment(spec, out, ConsoleReporter(verbose=verbose))


def validate(spec: Spec) -> list[str]:
    """Checks what can be checked without training: names optax must know and the data
    file's existence. Returns notes for the user; raises a JaxpipeError on a problem."""
    from jaxpipe.errors import DataError

    check_optimizer(spec.optimizer)
    notes = []
    if spec.data.source != "synthetic":
        path = spec.resolve_path(spec.data.path)
        if not os.path.isfile(path):
            raise DataError(
                f"{path}: data file not found; check [data] path (relative to the spec file)"
            )
        notes.append(f"data file {path}: {os.path.getsize(path)} bytes")
    return notes
