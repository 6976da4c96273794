"""The public API: what `jaxpipe` re-exports and the CLI calls."""

from __future__ import annotations

import os

from jaxpipe.events import RunResult
from jaxpipe.hardware import LocalDevices, local_devices
from jaxpipe.launch import launch
from jaxpipe.optim import check_optimizer
from jaxpipe.outdir import default_out_dir
from jaxpipe.planner import Plan, make_plan, verify_plan
from jaxpipe.predict import predict_file
from jaxpipe.report import ConsoleReporter, format_plan
from jaxpipe.run import run_experiment
from jaxpipe.sharding import distributed_config, initialize_distributed
from jaxpipe.spec import Spec, load_spec
from jaxpipe.validation import validate

__all__ = [
    "run",
    "validate",
    "predict",
    "load_spec",
    "plan",
    "devices",
    "format_plan",
    "Plan",
    "launch",
    "initialize_distributed",
    "distributed_config",
    "default_out_dir",
]


def run(
    spec: Spec | str | os.PathLike[str],
    out: str | None = None,
    *,
    verbose: bool = False,
    resume: bool = False,
    force: bool = False,
) -> RunResult:
    """Runs an experiment (a `Spec` or a path to its TOML file) and writes its run
    directory (`out`, default runs/<name>-<timestamp>). With `verbose`, prints the
    progress, data flow, trace and chart as `jaxpipe run` does.

    `resume=True` continues the run in `out` from its newest checkpoint (bit-identical
    to an uninterrupted run); `force=True` lets it change the training length.
    Raises `DivergedError` on a non-finite loss and `RunInterrupted` after SIGINT /
    SIGTERM (both after writing summary.json with that status)."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    reporter = ConsoleReporter(verbose=verbose)
    try:
        return run_experiment(spec, out, reporter, resume=resume, force=force)
    finally:
        reporter.close()  # a spinner or bar still live (a failed run) leaves the terminal


def predict(run_dir: str, data: str, out: str | None = None) -> int:
    """Predicts every row of `data` (csv, parquet or npz) with the model saved in the
    finished run directory `run_dir`, writing CSV to `out` (default stdout): the class
    name and its probability, or the regression value. Returns the number of rows."""
    return predict_file(run_dir, data, out)


def plan(
    spec: Spec | str | os.PathLike[str],
    *,
    gpu: str | None = None,
    devices: int | None = None,
    verify: bool = False,
) -> Plan:
    """The memory plan of an experiment on `devices` × the catalog card `gpu` (e.g. "T4",
    "A100-40GB"), or on the local devices when `gpu` is None. Allocates nothing. With
    `verify`, also compiles the epoch program for abstract inputs and records XLA's
    memory and cost analysis in `plan.xla`."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec)
    check_optimizer(spec.optimizer)
    result = make_plan(spec, gpu=gpu, devices=devices)
    return verify_plan(spec, result) if verify else result


def devices(spec: Spec | None = None) -> LocalDevices:
    """The local devices: kind, memory (a GPU's bytes_limit, else host memory), process
    index and count, usable bytes per device."""
    return local_devices(spec)
