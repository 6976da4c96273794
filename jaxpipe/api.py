"""The public API: what `jaxpipe` re-exports and the CLI calls."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

# Each function imports the rooms it uses when it is called: `jaxpipe compare` loads no
# jax, `predict` no planner, sweep or report, `run` no sweep unless the spec has one
# (tests/test_cli_conventions.py holds which command imports what).
from jaxpipe.data.frames import frame_rows, is_dataframe, is_path, to_columns
from jaxpipe.errors import DataError, JaxpipeError, SpecError
from jaxpipe.events import Observers, RunResult
from jaxpipe.rundir import default_run_name
from jaxpipe.signals import catch_signals
from jaxpipe.spec.experiment import Spec, load_spec
from jaxpipe.spec.sections import no_rows_error, source_of

if TYPE_CHECKING:
    from jaxpipe.planner.hardware import LocalDevices
    from jaxpipe.planner.timing import Profile
    from jaxpipe.planner.values import Plan
    from jaxpipe.saved.model import Model
    from jaxpipe.spec.sweep import LoggingSpec
    from jaxpipe.sweep.cv import CVResult

__all__ = [
    "fit",
    "cross_validate",
    "compare",
    "evaluate",
    "run",
    "predict",
    "plan",
    "devices",
    "launch_file",
    "calibrate",
    "default_out_dir",
]


def default_out_dir(spec: Spec) -> str:
    """`runs/<name>-<timestamp to the microsecond>`, relative to the working directory."""
    return default_run_name(spec.experiment.name)


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
    TOML file) and writes its run directory (`out`, default `runs/<name>-<timestamp>`).
    Prints the progress, data flow, trace and chart as `jaxpipe run` does unless
    `verbose=False`. `callbacks`: objects with any of the `Observer` methods (on_epoch,
    on_stage, ...), called as the run goes.

    `resume=True` continues the run in `out` from its newest checkpoint (bit-identical
    to an uninterrupted run); `force=True` lets it change the training length.
    Raises `DivergedError` on a non-finite loss and `RunInterrupted` after SIGINT /
    SIGTERM (both after writing summary.json with that status). A spec with `[sweep]`
    runs every trial and returns a `SweepResult` (ranked `table`, `trials`, `best`);
    there `force=True` allows more than 256 trials. A spec with `[data] folds = K`
    cross-validates and returns a `CVResult` (`.cv`: each fold's metrics, mean, std)."""
    from jaxpipe.report.observer import ConsoleReporter
    from jaxpipe.report.tracking import tracking_observers
    from jaxpipe.runner.shell import run_experiment

    spec = _as_spec(spec)
    reporter = ConsoleReporter(verbose=verbose)
    observer = Observers(
        [reporter, *tracking_observers(spec.logging, spec.base_dir, reporter.on_note), *callbacks]
    )
    try:
        if spec.data.folds is not None:
            if resume:
                raise JaxpipeError("a cross-validation cannot be resumed; start it again")
            from jaxpipe.sweep.cv import run_cv

            return run_cv(spec, out, observer)
        if spec.sweep is not None:  # a SweepResult; force: more than sweepspec.MAX_TRIALS
            if resume:
                raise JaxpipeError("a sweep cannot be resumed; start it again in a new --out")
            from jaxpipe.sweep.shell import run_sweep

            return run_sweep(spec, out, observer, force=force)
        return run_experiment(spec, out, observer, resume=resume, force=force)
    finally:
        reporter.close()  # a spinner or bar still live (a failed run) leaves the terminal


def _in_memory(spec: Spec, data: Any, validation: Any, what: str = "fit"):
    """The spec and rows `fit` (or `plan`) trains on: a path becomes the spec's data file;
    anything else in-memory columns (source "memory"), with its validation rows if given.
    No data and a spec that names none is a SpecError: synthetic rows are never a default."""
    if data is None:
        if validation is not None:
            raise DataError(f"{what}: validation= needs data= as well")
        if spec.data.source is None:
            raise spec.origin.place(no_rows_error(f"jaxpipe.{what}(spec)"))
        return spec, None
    if is_path(data) and validation is None:
        path = os.path.abspath(os.fspath(data))
        cfg = dataclasses.replace(spec.data, source=source_of(path), path=path)
        return dataclasses.replace(spec, data=cfg), None
    label = spec.data.label or "y"
    columns, origin = to_columns(data, label, f"{what} data")
    val = validation
    if val is None and isinstance(spec.data.validation, str):
        val = spec.resolve_path(spec.data.validation)
    val_columns = to_columns(val, label, f"{what} validation")[0] if val is not None else None
    cfg = dataclasses.replace(spec.data, source="memory", path=None)
    spec = dataclasses.replace(spec, data=cfg)
    from jaxpipe.data.load import load_dataset

    with frame_rows(data if validation is None else None):  # a validation frame: positions
        return spec, load_dataset(spec, columns, val_columns, origin)


def _data_with_target(data: Any, y: Any, label: str | None) -> Any:
    """`fit(spec, X, y)`: X and y as one data value, the label column named as the spec's
    `[data] label` (a DataFrame keeps its columns and gains the label)."""
    if y is None:
        return data
    if is_dataframe(data):
        label = label or "y"
        if label in data.columns:
            raise DataError(
                f"fit: X already has the label column {label!r}; pass it as data= alone, "
                "or drop it from X"
            )
        return data.assign(**{label: np.asarray(y)})
    return (data, y)


def _with_class_weight(spec: Spec, class_weight: Any) -> Spec:
    """`fit(..., class_weight=)` in place of `[training] class_weight` (labels as strings,
    as a TOML table's keys are: {0: 2.0} weighs the class "0")."""
    if class_weight is None:
        return spec
    if isinstance(class_weight, Mapping):
        class_weight = {str(k): v for k, v in class_weight.items()}
    training = dataclasses.replace(spec.training, class_weight=class_weight)
    return dataclasses.replace(spec, training=training)


def _check_spec_first(spec: Any) -> None:
    """`jaxpipe.fit(X, y)` as scikit-learn writes it: say exactly how to call it."""
    if isinstance(spec, (Spec, dict, str, os.PathLike)):
        return
    raise TypeError(
        f"jaxpipe.fit takes the spec first, then the rows; found {type(spec).__name__} "
        "where the spec goes. Call jaxpipe.fit(spec, X, y), jaxpipe.fit(spec, data=(X, y)) "
        "or jaxpipe.fit(spec, data=df) (spec: a Spec, a dict such as "
        '{"training": {"epochs": 5}} or a TOML path; {} takes every default), or, '
        "scikit-learn style, jaxpipe.sklearn.MLPClassifier().fit(X, y)"
    )


def fit(
    spec: Spec | str | os.PathLike[str] | dict[str, Any],
    data: Any = None,
    y: Any = None,
    *,
    validation: Any = None,
    out: str | None = None,
    callbacks: Iterable[Any] = (),
    verbose: bool = False,
    class_weight: str | Mapping[Any, float] | None = None,
    progress: bool | None = None,
) -> Model:
    """Trains the spec's model on `data` and returns the `Model`.

    `data`: a pandas DataFrame, a pyarrow Table, `(X, y)` arrays or a file path (None:
    the spec's own [data]); the label column is `data.label` ("y" for arrays). The rows
    go through the same checks and encoders as a file's. `validation`: held-out rows of
    the same kinds (default: split as `data.validation` says). `out`: also write the run
    directory there, as `run` does (default: a temporary one, removed afterwards).
    `callbacks`: objects with any of the `Observer` methods; one may stop training after
    an epoch (see `events.StopTraining`). `class_weight`: "balanced" or {label: weight},
    in place of the spec's `[training] class_weight`. `progress`: a live display of the
    epochs and a one-screen summary in a Jupyter notebook (None: in a notebook unless
    `verbose`; needs IPython). `y`: targets beside `data` = X
    (`fit(spec, X, y)`, as `data=(X, y)`). No `data` and a spec that names no rows (no
    `path`, no `source = "synthetic"`) is a `SpecError`."""
    from jaxpipe.runner.shell import run_experiment
    from jaxpipe.runner.validation import check_before_data
    from jaxpipe.saved.model import Model

    _check_spec_first(spec)
    spec = _with_class_weight(_as_spec(spec), class_weight)
    if spec.data.folds is not None:
        raise spec.origin.place(SpecError(
            "fit trains one model, and folds train one per fold; cross-validate with "
            "jaxpipe.cross_validate(spec, data) (or jaxpipe.run), or remove data.folds",
            key="data.folds",
        ))  # fmt: skip
    # A bad optimizer section fails before the data is read.
    check_before_data(spec.optimizer, spec.origin)
    spec, dataset = _in_memory(spec, _data_with_target(data, y, spec.data.label), validation)
    callbacks = [*_progress(progress, verbose, out), *callbacks]
    if spec.sweep is not None:
        return _fit_sweep(spec, dataset, out, callbacks, verbose)
    with _observed(spec.logging, spec.base_dir, out, callbacks, verbose) as (observer, directory):
        # A temporary directory is removed at the end: no checkpoints to keep or write.
        result = run_experiment(
            spec, directory, observer, dataset=dataset, checkpoints=out is not None
        )
    outputs = 1 if result.preprocessing.regression else len(result.preprocessing.classes)
    model = Model.from_run(result, spec.model, outputs)
    model.run_dir = out
    return model


def cross_validate(
    spec: Spec | str | os.PathLike[str] | dict[str, Any],
    data: Any = None,
    y: Any = None,
    *,
    folds: int | None = None,
    out: str | None = None,
    callbacks: Iterable[Any] = (),
    verbose: bool = False,
) -> CVResult:
    """K-fold cross-validation of the spec on `data` (forms as `fit` takes them; None:
    the spec's [data]), the folds trained as one program. `folds`: K in place of the
    spec's `[data] folds`. Returns a `CVResult`: `.cv` = {"folds", "metrics" (each
    fold's final metrics), "mean", "std"}, `.folds` (each fold's history and
    parameters). `out`: also keep the directory (default: a temporary one, removed)."""
    from jaxpipe.runner.validation import check_before_data
    from jaxpipe.sweep.cv import run_cv

    _check_spec_first(spec)
    spec = _as_spec(spec)
    if folds is not None:
        # replace checks the sections as a file's are (a fold count > the rows, ...)
        spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, folds=folds))
    if spec.data.folds is None:
        raise SpecError("needs K ≥ 2 folds: give folds=K or [data] folds", key="data.folds")
    check_before_data(spec.optimizer, spec.origin)
    columns, origin = None, "<memory>"
    data = _data_with_target(data, y, spec.data.label)
    if data is not None and is_path(data):
        path = os.path.abspath(os.fspath(data))
        spec = dataclasses.replace(
            spec, data=dataclasses.replace(spec.data, source=source_of(path), path=path)
        )
    elif data is not None:
        columns, origin = to_columns(data, spec.data.label or "y", "cross_validate data")
        spec = dataclasses.replace(
            spec, data=dataclasses.replace(spec.data, source="memory", path=None)
        )
    elif spec.data.source is None:
        raise spec.origin.place(no_rows_error("jaxpipe.cross_validate(spec)"))
    with _observed(spec.logging, spec.base_dir, out, callbacks, verbose) as (observer, directory):
        with frame_rows(data):
            result = run_cv(spec, directory, observer, columns=columns, origin=origin)
    if out is None:
        result.run_dir = None  # type: ignore[assignment]  # removed: nothing to point at
    return result


@contextlib.contextmanager
def _observed(
    logging: LoggingSpec, base_dir: str, out: str | None, callbacks: Iterable[Any], verbose: bool
):
    """What `fit`, `cross_validate` and a sweep's `fit` work under: one observer (the
    console, the trackers `logging` names, the callbacks) and the directory they write,
    `out` or a temporary one removed at the end; the console closed either way (a spinner
    still live after a failure leaves the terminal). `base_dir`: the spec's folder."""
    from jaxpipe.report.observer import ConsoleReporter
    from jaxpipe.report.tracking import tracking_observers

    tmp = tempfile.mkdtemp(prefix="jaxpipe-fit-") if out is None else None
    reporter = ConsoleReporter(verbose=verbose, files=out is not None)
    try:
        from jaxpipe.files import scratch_folder

        trackers = tracking_observers(logging, base_dir, reporter.on_note)
        with scratch_folder(tmp):  # removed below: its files need no fsync
            yield Observers([reporter, *trackers, *callbacks]), out or tmp
    finally:
        reporter.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _progress(progress: bool | None, verbose: bool, out: str | None) -> list[Any]:
    """The notebook's live display, when asked for or (None) in a notebook, not verbose."""
    from jaxpipe.report.notebook import NotebookProgress, in_notebook

    if progress is False or (progress is None and (verbose or not in_notebook())):
        return []
    return [NotebookProgress(keep_dir=out is not None)]


def _fit_sweep(spec: Spec, dataset: Any, out: str | None, callbacks, verbose: bool) -> Model:
    """fit on a sweep spec: the best trial's Model, with the ranked table as `.sweep`."""
    if dataset is not None:
        raise DataError("fit: a [sweep] spec trains on its own [data]; pass data=None or a path")
    from jaxpipe.saved.model import Model
    from jaxpipe.sweep.shell import run_sweep

    with _observed(spec.logging, spec.base_dir, out, callbacks, verbose) as (observer, directory):
        result = run_sweep(spec, directory, observer)
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
    from jaxpipe.report.compare import compare_runs, write_comparison_plot

    records = compare_runs(list(run_dirs), metric)
    if plot:
        write_comparison_plot(records, metric, plot)
    return records


def evaluate(run_dir: str, data: Any) -> dict[str, Any]:
    """Metrics of the model in `run_dir` (a finished run or a saved model) on labelled
    rows `data` (a file path, DataFrame, Table or (X, y)); see `Model.evaluate`."""
    from jaxpipe.saved.model import load_model

    with catch_signals() as signals:
        metrics = load_model(run_dir).evaluate(data)
        signals.stop("while evaluating")
    return metrics


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
    from jaxpipe.saved.predict import predict_file

    return predict_file(run_dir, data, out, probabilities=probabilities, keep=tuple(keep))


def plan(
    spec: Spec | str | os.PathLike[str] | dict[str, Any],
    data: Any = None,
    *,
    validation: Any = None,
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
    epoch (~1-3 s; kept beside the compilation cache, so a plan made again does not
    compile, unless JAXPIPE_COMPILATION_CACHE=0 or `[runtime] compilation_cache =
    false`; see `plan.fit`); False: the closed form alone.

    `have`: cards owned, "T4x2" or "T4x2@0.10" (USD an hour each), beside `[hardware]
    owned`; `prices`: "KIND=USD" (or {KIND: USD}) over the catalog's hourly prices;
    `rank`: "auto" (cost when prices are known), "cost", "time" or "devices"; `budget`
    (USD a run) and `deadline` (seconds a run) leave out the options past them.
    `data` (and `validation`): the rows `fit` would train on, in the same forms (a
    DataFrame, pyarrow Table, (X, y) arrays or a path); None: the spec's own [data]."""
    from jaxpipe.core.aot import enable_compilation_cache
    from jaxpipe.planner.hardware import load_catalog
    from jaxpipe.planner.options import make_market
    from jaxpipe.runner.validation import check_before_data

    spec = _as_spec(spec)
    # The fit's and the layouts' compiled figures are kept beside the compilation cache
    # (core/aot.py), as a run's programs are: a plan made again does not compile.
    enable_compilation_cache(spec.runtime)
    with catch_signals() as signals:  # fit and verify compile: the signal contract holds
        check_before_data(spec.optimizer, spec.origin)
        spec, dataset = _in_memory(spec, data, validation, "plan")
        catalog = load_catalog(spec.hardware, spec.base_dir)
        held = prices if isinstance(prices, dict) else tuple(prices)
        market = make_market(spec.hardware, catalog, tuple(have), held, rank, budget, deadline)
        result = _plan(spec, dataset, gpu, devices, verify, fit, market)
        signals.stop("while planning")
    return result


def _plan(
    spec: Spec,
    dataset: Any,
    gpu: str | None,
    devices: int | None,
    verify: bool,
    fit: bool,
    market: Any,
) -> Plan:
    from jaxpipe.data.shapes import data_shapes
    from jaxpipe.data.sources import host_record
    from jaxpipe.planner.plan import make_plan
    from jaxpipe.planner.search import UNVERIFIED
    from jaxpipe.planner.values import Workload
    from jaxpipe.planner.verify import settle, verify_plan
    from jaxpipe.runner.plan import undonated

    shapes = data_shapes(spec, dataset)
    result = make_plan(spec, shapes, gpu=gpu, devices=devices, fit=fit, market=market)
    path = spec.resolve_path(spec.data.path) if spec.data.path else None
    host = host_record(path, spec.data.source, spec.data.host_memory)
    result = dataclasses.replace(result, host=host)
    if spec.sweep is not None:  # trials × per-trial memory, in chunks that fit
        from jaxpipe.sweep.shell import sweep_plan

        result = sweep_plan(spec, result, gpu, devices)
    if verify:
        result = verify_plan(Workload.of(spec), result)
    elif fit:
        # FSDP's closed form is not held to XLA (search.UNVERIFIED): its quoted layouts
        # are compiled, bounded in time (never for a run's plan, which passes fit=False).
        work = Workload.of(spec)
        result = settle(work, result, UNVERIFIED)
    # Plan and run agree on donation: a run that keeps a small state undonated (its
    # checkpoints hold the states themselves, runner.plan.undonated) needs more, and the
    # plan quotes that need; a streamed run donates. After verify and settle: those hold
    # the program's estimate to XLA's program, and what the run adds comes on top.
    resident = spec.data.chunk_rows == "auto" and not (host or {}).get("streams_from_disk")
    if spec.sweep is None and resident and result.fits:
        result = undonated(result, spec.checkpoint.keep) or result
    return result


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
    from jaxpipe.planner.hardware import load_catalog
    from jaxpipe.report.launch import launch_file as write_launch_file

    catalog = load_catalog(spec.hardware, spec.base_dir)
    names = {n: k.skypilot for n, k in catalog.items() if k.skypilot}
    return write_launch_file(
        spec.experiment.name, plan, kind, spec_path, index, tuple(run_args), names
    )


def calibrate(
    out: str | None = None, *, quick: bool = False, log: Any = None
) -> tuple[Profile, str]:
    """Measures the local default device's time profile (step floor over its kernels,
    matmul rates, memory bandwidth, collectives per mesh size, compile; fitted to a few
    real epochs) and keeps it for `plan`: in `out`, or under the device kind in the
    profile folder (JAXPIPE_PROFILE_DIR, default ~/.cache/jaxpipe/profiles). Returns the
    profile and where it went. `log(line)` hears each measurement."""
    from jaxpipe.planner.profiles import measure_profile
    from jaxpipe.planner.timing import save_profile

    profile = measure_profile(quick=quick, log=log or (lambda _: None))
    return profile, save_profile(profile, out)


def devices(spec: Spec | None = None) -> LocalDevices:
    """The local devices: kind, memory (a GPU's bytes_limit, else host memory), process
    index and count, usable bytes per device."""
    from jaxpipe.planner.hardware import local_devices

    return local_devices(spec.hardware if spec is not None else None)
