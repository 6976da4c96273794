"""The public API: what `jaxpipe` re-exports and the CLI calls."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable
from typing import Any

from jaxpipe.core.evaluation import format_metrics
from jaxpipe.data.frames import is_path, source_of, to_columns
from jaxpipe.data.load import load_dataset
from jaxpipe.data.shapes import data_shapes
from jaxpipe.data.sources import host_record
from jaxpipe.errors import DataError, DivergedError, JaxpipeError
from jaxpipe.events import Observers, RunResult
from jaxpipe.parallel.launch import launch
from jaxpipe.parallel.sharding import distributed_config, initialize_distributed
from jaxpipe.planner.hardware import LocalDevices, load_catalog, local_devices
from jaxpipe.planner.options import make_market
from jaxpipe.planner.plan import make_plan
from jaxpipe.planner.profiles import measure_profile, save_profile
from jaxpipe.planner.search import UNVERIFIED
from jaxpipe.planner.timing import Profile
from jaxpipe.planner.values import Plan
from jaxpipe.planner.verify import settle, verify_plan
from jaxpipe.report.compare import compare_runs, format_comparison, write_comparison_plot
from jaxpipe.report.launch import launch_file as write_launch_file
from jaxpipe.report.observer import ConsoleReporter
from jaxpipe.report.tracking import tracking_observers
from jaxpipe.report.verdict import format_plan
from jaxpipe.runner.outdir import default_out_dir
from jaxpipe.runner.plan import undonated
from jaxpipe.runner.shell import check_before_data, run_experiment
from jaxpipe.runner.validation import validate
from jaxpipe.saved.model import Model, load_model
from jaxpipe.saved.predict import predict_file
from jaxpipe.spec.experiment import Spec, load_spec
from jaxpipe.sweep.shell import SweepResult, run_sweep, sweep_plan

__all__ = [
    "fit",
    "SweepResult",
    "compare",
    "format_comparison",
    "evaluate",
    "format_metrics",
    "Model",
    "load_model",
    "run",
    "validate",
    "predict",
    "load_spec",
    "plan",
    "devices",
    "format_plan",
    "launch_file",
    "calibrate",
    "Plan",
    "launch",
    "initialize_distributed",
    "distributed_config",
    "default_out_dir",
]


def _as_spec(spec: Spec | str | os.PathLike[str] | dict[str, Any]) -> Spec:
    if isinstance(spec, Spec):
        return spec
    if isinstance(spec, dict):
        return Spec.from_dict(spec)
    return load_spec(spec)


def run(
    spec: Spec | str | os.PathLike[str] | dict[str, Any],
    out: str | None = None,
    *,
    callbacks: Iterable[Any] = (),
    verbose: bool = True,
    resume: bool = False,
    force: bool = False,
) -> RunResult:
    """Runs an experiment (a `Spec`, a dict as `Spec.from_dict` takes, or a path to its
    TOML file) and writes its run directory (`out`, default runs/<name>-<timestamp>).
    Prints the progress, data flow, trace and chart as `jaxpipe run` does unless
    `verbose=False`. `callbacks`: objects with any of the `Observer` methods (on_epoch,
    on_stage, ...), called as the run goes.

    `resume=True` continues the run in `out` from its newest checkpoint (bit-identical
    to an uninterrupted run); `force=True` lets it change the training length.
    Raises `DivergedError` on a non-finite loss and `RunInterrupted` after SIGINT /
    SIGTERM (both after writing summary.json with that status). A spec with `[sweep]`
    runs every trial and returns a `SweepResult` (ranked `table`, `trials`, `best`);
    there `force=True` allows more than 256 trials."""
    spec = _as_spec(spec)
    reporter = ConsoleReporter(verbose=verbose)
    observer = Observers([reporter, *tracking_observers(spec), *callbacks])
    try:
        if spec.sweep is not None:  # a SweepResult; force: more than sweepspec.MAX_TRIALS
            if resume:
                raise JaxpipeError("a sweep cannot be resumed; start it again in a new --out")
            return run_sweep(spec, out, observer, force=force)
        return run_experiment(spec, out, observer, resume=resume, force=force)
    finally:
        reporter.close()  # a spinner or bar still live (a failed run) leaves the terminal


def _in_memory(spec: Spec, data: Any, validation: Any):
    """The spec and rows `fit` trains on: a path becomes the spec's data file; anything
    else in-memory columns (source "memory"), with its validation rows if given."""
    if data is None:
        if validation is not None:
            raise DataError("fit: validation= needs data= as well")
        return spec, None
    if is_path(data) and validation is None:
        path = os.path.abspath(os.fspath(data))
        cfg = dataclasses.replace(spec.data, source=source_of(path), path=path)
        return dataclasses.replace(spec, data=cfg), None
    label = spec.data.label or "y"
    columns, origin = to_columns(data, label, "fit data")
    val = validation
    if val is None and isinstance(spec.data.validation, str):
        val = spec.resolve_path(spec.data.validation)
    val_columns = to_columns(val, label, "fit validation")[0] if val is not None else None
    cfg = dataclasses.replace(spec.data, source="memory", path=None)
    spec = dataclasses.replace(spec, data=cfg)
    return spec, load_dataset(spec, columns, val_columns, origin)


def fit(
    spec: Spec | str | os.PathLike[str] | dict[str, Any],
    data: Any = None,
    *,
    validation: Any = None,
    out: str | None = None,
    callbacks: Iterable[Any] = (),
    verbose: bool = False,
) -> Model:
    """Trains the spec's model on `data` and returns the `Model`.

    `data`: a pandas DataFrame, a pyarrow Table, `(X, y)` arrays or a file path (None:
    the spec's own [data]); the label column is `data.label` ("y" for arrays). The rows
    go through the same checks and encoders as a file's. `validation`: held-out rows of
    the same kinds (default: split as `data.validation` says). `out`: also write the run
    directory there, as `run` does (default: a temporary one, removed afterwards).
    `callbacks`: objects with any of the `Observer` methods."""
    spec = _as_spec(spec)
    check_before_data(spec)  # a bad optimizer section fails before the data is read
    spec, dataset = _in_memory(spec, data, validation)
    if spec.sweep is not None:
        return _fit_sweep(spec, dataset, out, callbacks, verbose)
    tmp = tempfile.mkdtemp(prefix="jaxpipe-fit-") if out is None else None
    reporter = ConsoleReporter(verbose=verbose)
    try:
        observer = Observers([reporter, *tracking_observers(spec), *callbacks])
        result = run_experiment(spec, out or tmp, observer, dataset=dataset)
    finally:
        reporter.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    outputs = 1 if result.preprocessing.regression else len(result.preprocessing.classes)
    model = Model.from_run(result, spec.model, outputs)
    model.run_dir = out
    return model


def _fit_sweep(spec: Spec, dataset: Any, out: str | None, callbacks, verbose: bool) -> Model:
    """fit on a sweep spec: the best trial's Model, with the ranked table as `.sweep`."""
    if dataset is not None:
        raise DataError("fit: a [sweep] spec trains on its own [data]; pass data=None or a path")
    tmp = tempfile.mkdtemp(prefix="jaxpipe-fit-") if out is None else None
    reporter = ConsoleReporter(verbose=verbose)
    try:
        result = run_sweep(
            spec, out or tmp, Observers([reporter, *tracking_observers(spec), *callbacks])
        )
    finally:
        reporter.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if result.best is None:
        raise DivergedError("every trial of the sweep diverged")
    best = result.trials[result.summary["best_trial"]]
    model = Model.from_run(result.best, best.spec.model, best.dataset.outputs)
    model.run_dir, model.sweep = out, result.table
    return model


def compare(
    run_dirs: Iterable[str], metric: str = "val_loss", plot: str | None = None
) -> list[dict[str, Any]]:
    """Finished runs and sweeps side by side (a sweep: one record per trial): the spec
    keys that differ, final and best `metric`, epochs, time, device. With `plot`, also
    writes that PNG with every run's `metric` curve."""
    records = compare_runs(list(run_dirs), metric)
    if plot:
        write_comparison_plot(records, metric, plot)
    return records


def evaluate(run_dir: str, data: Any) -> dict[str, Any]:
    """Metrics of the model in `run_dir` (a finished run or a saved model) on labelled
    rows `data` (a file path, DataFrame, Table or (X, y)); see `Model.evaluate`."""
    return load_model(run_dir).evaluate(data)


def predict(
    run_dir: str,
    data: Any,
    out: str | None = None,
    *,
    probabilities: bool = False,
    keep: Iterable[str] = (),
) -> int:
    """Predicts every row of `data` (a csv, parquet or npz path, or a DataFrame, pyarrow
    Table or array) with the model saved in the finished run directory `run_dir`,
    writing CSV to `out` (default stdout): the `keep` columns as they are, then the class
    name and its probability (with `probabilities`, one column per class, named by the
    class), or the regression value. Returns the number of rows. For the values
    themselves, `load_model(run_dir).predict`."""
    return predict_file(run_dir, data, out, probabilities=probabilities, keep=tuple(keep))


def plan(
    spec: Spec | str | os.PathLike[str],
    *,
    gpu: str | None = None,
    devices: int | None = None,
    verify: bool = False,
    fit: bool = True,
    have: Iterable[str] = (),
    prices: Iterable[str] | dict[str, float] = (),
    rank: str = "auto",
    budget: float | None = None,
    deadline: float | None = None,
) -> Plan:
    """The memory plan of an experiment on `devices` × the catalog card `gpu` (e.g. "T4",
    "A100-40GB"), or on the local devices when `gpu` is None, with what would fit ranked
    by its time and cost. Allocates nothing. With `verify`, also compiles the epoch
    program for abstract inputs and records XLA's memory and cost analysis in
    `plan.xla`. `fit` (default): the estimate fitted to XLA's compile of the one-device
    epoch (~1-3 s, kept on disk after; see `plan.fit`); False: the closed form alone.

    `have`: cards owned, "T4x2" or "T4x2@0.10" (USD an hour each), beside `[hardware]
    owned`; `prices`: "KIND=USD" (or {KIND: USD}) over the catalog's hourly prices;
    `rank`: "auto" (cost when prices are known), "cost", "time" or "devices"; `budget`
    (USD a run) and `deadline` (seconds a run) leave out the options past them."""
    spec = _as_spec(spec)
    check_before_data(spec)
    catalog = load_catalog(spec.hardware, spec.base_dir)
    market = make_market(
        spec.hardware,
        catalog,
        tuple(have),
        prices if isinstance(prices, dict) else tuple(prices),
        rank,
        budget,
        deadline,
    )
    result = make_plan(spec, data_shapes(spec), gpu=gpu, devices=devices, fit=fit, market=market)
    path = spec.resolve_path(spec.data.path) if spec.data.path else None
    host = host_record(path, spec.data.source, spec.data.host_memory)
    result = dataclasses.replace(result, host=host)
    # Plan and run agree on donation: a run that keeps a small state undonated (its
    # checkpoints hold the states themselves, runner.plan.undonated) needs more, and the
    # plan quotes that need; a streamed run donates.
    resident = spec.data.chunk_rows == "auto" and not (host or {}).get("streams_from_disk")
    if spec.sweep is None and resident and result.fits:
        result = undonated(result, spec.checkpoint.keep) or result
    if spec.sweep is not None:  # trials × per-trial memory, in chunks that fit
        result = sweep_plan(spec, result, gpu, devices)
    if verify:
        return verify_plan(spec, result)
    # FSDP's closed form is not held to XLA (search.UNVERIFIED): its quoted layouts are
    # compiled, bounded in time (never for a run's plan, which passes fit=False).
    return settle(spec, result, UNVERIFIED) if fit else result


def launch_file(
    spec: Spec,
    plan: Plan,
    kind: str,
    spec_path: str,
    index: int = 1,
    run_args: Iterable[str] = (),
) -> str:
    """A launch file for the plan's `index`-th ranked option that fits: "skypilot" (a
    SkyPilot task YAML) or "slurm" (an sbatch script with srun), running `jaxpipe run
    spec_path` with that option's layout and `run_args` (e.g. the plan's `--set`s)."""
    catalog = load_catalog(spec.hardware, spec.base_dir)
    names = {n: k.skypilot for n, k in catalog.items() if k.skypilot}
    return write_launch_file(spec, plan, kind, spec_path, index, tuple(run_args), names)


def calibrate(
    out: str | None = None, *, quick: bool = False, log: Any = None
) -> tuple[Profile, str]:
    """Measures the local default device's time profile (step floor over its kernels,
    matmul rates, memory bandwidth, collectives per mesh size, compile; fitted to a few
    real epochs) and keeps it for `plan`: in `out`, or under the device kind in the
    profile folder (JAXPIPE_PROFILE_DIR, default ~/.cache/jaxpipe/profiles). Returns the
    profile and where it went. `log(line)` hears each measurement."""
    profile = measure_profile(quick=quick, log=log or (lambda _: None))
    return profile, save_profile(profile, out)


def devices(spec: Spec | None = None) -> LocalDevices:
    """The local devices: kind, memory (a GPU's bytes_limit, else host memory), process
    index and count, usable bytes per device."""
    return local_devices(spec)
