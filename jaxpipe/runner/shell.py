"""The run, top to bottom: a short composition of the stage functions

    load → plan → place → preprocess → compile → train → evaluate → save

each taking values and returning values. Clocks, files and checkpoints are here and in
the train stage; the console and other listeners hear the run through one Observer."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxpipe.core.aot import enable_compilation_cache
from jaxpipe.data.diskrows import DiskRows
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.data.load import Dataset, load_dataset
from jaxpipe.errors import DivergedError, RunInterrupted
from jaxpipe.events import (
    CheckpointStage,
    CompileStage,
    EvaluateStage,
    LoadStage,
    Observer,
    PreprocessStage,
    RunResult,
    StageRecord,
    TrainStage,
    TransferStage,
)
from jaxpipe.files import atomic_write
from jaxpipe.rundir import CHECKPOINTS
from jaxpipe.runner import checkpoint as ckpt
from jaxpipe.runner.loop import TrainTimes, train
from jaxpipe.runner.outdir import prepare_out_dir, write_json, write_lines
from jaxpipe.runner.place import Placed, place_data
from jaxpipe.runner.plan import RunPlan, check_compiled, plan_record, plan_run
from jaxpipe.runner.preprocess import preprocess_data
from jaxpipe.runner.programs import Programs, compile_programs
from jaxpipe.runner.resume import RunProgress, check_resumable, data_fingerprint, start_or_resume
from jaxpipe.runner.stopping import outcome
from jaxpipe.runner.stream import trim_host_heap
from jaxpipe.runner.summary import Finished, build_summary
from jaxpipe.runner.validation import check_before_data, check_run_metrics, check_schedule
from jaxpipe.saved.predict import save_predictor
from jaxpipe.saved.trace import save_trace_rows
from jaxpipe.signals import SIGNAL_EXIT, SignalCatcher, catch_signals
from jaxpipe.spec.experiment import Spec, dump_spec
from jaxpipe.spec.sections import (
    CheckpointSpec,
    PreprocessSpec,
    TrainingSpec,
    metric_mode,
)

__all__ = ["run_experiment"]


def _to_host(tree: Any) -> Any:
    """Host numpy copies of (possibly sharded, possibly multi-process) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


@dataclass
class _Stages:
    """Records each stage as it ends and tells the observer at once."""

    observer: Observer
    records: list[StageRecord]

    def add(self, rec: StageRecord) -> None:
        self.records.append(rec)
        self.observer.on_stage(rec)


def _prepare(spec, rp, out, resume, force, obs, stack, checkpoints=True):
    """The locked run directory, checkpoint store, spec copy; a changed spec fails resume."""
    run_dir = prepare_out_dir(spec.experiment.name, out, resume, stack)
    resolved = spec.resolved()
    cp = spec.checkpoint
    store = ckpt.CheckpointStore(
        os.path.join(run_dir, CHECKPOINTS),
        keep=cp.keep,
        best_metric=cp.best_metric,
        best_mode=metric_mode(cp.best_metric, cp.best_mode) if cp.best_metric else "min",
        enabled=checkpoints,
    )
    stack.callback(store.close)  # its threads end before the process does, however it ends
    if resume:
        check_resumable(store, resolved, force)
    # In a multi-process run every process trains and checkpoints (orbax coordinates the
    # shards); process 0 alone writes the run directory's files.
    if jax.process_index() == 0:
        atomic_write(os.path.join(run_dir, "spec.toml"), dump_spec(resolved))
    obs.on_start(spec, run_dir)
    obs.on_plan(rp.plan)
    return run_dir, resolved, store


def _place(preprocess: PreprocessSpec, training: TrainingSpec, ds, rp, stages, load_s):
    """Stages place and preprocess, each reported as it ends."""
    stages.add(LoadStage(
        load_s, ds.origin, ds.raw_rows, ds.raw_columns, tuple(ds.x_train.shape),
        on_disk=isinstance(ds.x_train, DiskRows),  # not in host memory: say where it is
        val_rows=ds.x_val.shape[0], dropped_rows=ds.dropped_rows,
    ))  # fmt: skip
    placed, secs = place_data(ds, rp)
    n = placed.x_val.shape[0] + (0 if rp.chunk else placed.x_train.shape[0])
    stages.add(TransferStage(secs, ds.nbytes, n, placed.where, rp.chunk))
    normalize = preprocess.normalize
    prep, placed, secs = preprocess_data(ds, placed, normalize, rp.chunk > 0, training.class_weight)
    train, val_rows = tuple(placed.x_train.shape), placed.x_val.shape[0]
    stages.add(PreprocessStage(secs, normalize, train, val_rows))
    return placed, prep


def _compile(spec, ds, rp, placed, prep, stages):
    """Stage compile, reported as it ends."""
    every = stages.observer.progress_interval(rp.steps_per_epoch)
    progress = (every, stages.observer.on_progress) if every else None
    programs = compile_programs(spec, rp, placed, prep, ds.outputs, progress)
    stages.observer.on_model(programs.state.params)
    stages.add(CompileStage(
        programs.seconds, ds.num_features, tuple(spec.model.hidden), ds.outputs,
        rp.steps_per_epoch, rp.batch, rp.chunk,
    ))  # fmt: skip
    return programs


def _release_training_rows(ds: Dataset, placed: Placed) -> Dataset:
    """`ds` without its host training features once the device holds their scaled copy (a
    zero-strided stand-in keeps their shape, dtype and nbytes), and the heap trimmed."""
    if placed.x_train is ds.x_train or not isinstance(ds.x_train, np.ndarray):
        return ds  # streamed: the host rows are the training rows
    stand_in = np.broadcast_to(np.zeros((), ds.x_train.dtype), ds.x_train.shape)
    return dataclasses.replace(ds, x_train=stand_in)


def _train(spec, run_dir, resolved, store, placed, prep, programs, resume, obs, info):
    """Stage train: from scratch or the newest checkpoint, epochs written as they end.
    `info`: the checkpoint's dataset record (prep's, with the rows' fingerprint)."""
    state = programs.take_state()  # on resume the restored state replaces it: freed below
    run = start_or_resume(
        spec.training.early_stopping, store, state, prep.scaler, prep.target, info, resume
    )
    del state
    if run.resumed_from:
        obs.on_note(f"Resumed from the checkpoint of epoch {run.resumed_from}")
    primary = jax.process_index() == 0
    # From here the directory holds a run in progress: an earlier summary (interrupted,
    # or completed before --force extended it) no longer describes it.
    if primary:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, "summary.json"))
    metrics_path = os.path.join(run_dir, "metrics.jsonl") if primary else os.devnull
    if primary:
        write_lines(metrics_path, run.history)  # on resume: exactly the checkpointed epochs
    meta_base = {"spec": dump_spec(resolved), "dataset": info}
    with open(metrics_path, "a") as metrics_file:
        return train(
            programs,
            placed,
            prep,
            run,
            epochs=spec.training.epochs,
            checkpoint=spec.checkpoint,
            early_stopping=spec.training.early_stopping,
            store=store,
            meta_base=meta_base,
            metrics_file=metrics_file,
            observer=obs,
        )


def _report_training(stages, placed, prep, run: RunProgress, times: TrainTimes):
    train, epochs = tuple(placed.x_train.shape), len(run.history)
    stages.add(TrainStage(times.train, train, int(run.state.step), epochs, run.resumed_from))
    evaluated = epochs - (run.resumed_from or 0)
    stages.add(EvaluateStage(times.evaluate, tuple(placed.x_val.shape), prep.regression, evaluated))


def _report_checkpoints(stages, cp: CheckpointSpec, times: TrainTimes, store) -> None:
    """Waits for the last save (written while the PNG was drawn); records all the loop
    waited for: host copies, hand-offs and this wait."""
    t0 = time.perf_counter()
    store.wait()  # every checkpoint committed before summary.json says anything
    times.save += time.perf_counter() - t0
    kept = tuple(store.epochs())
    every = cp.every_epochs, cp.every_minutes
    stages.add(CheckpointStage(times.save, *every, times.saves, CHECKPOINTS, kept))


def _finish(
    run: RunProgress, signals: SignalCatcher, training: TrainingSpec, obs: Observer
) -> Finished:
    """Stage evaluate: how the epochs ended and which parameters the run keeps."""
    epochs = training.epochs
    status, stop = outcome(run.diverged, signals, run.stopper, run.epoch, epochs, run.requested)
    early = run.stopper is not None and run.stopper.should_stop
    if status == "completed" and (early or (run.requested and run.epoch < epochs)):
        obs.on_note(f"Stopped after epoch {run.epoch}: {stop['reason']}")
    es = training.early_stopping
    if es is not None and es.restore_best and run.best_params is not None:
        return Finished(status, stop, run.stopper.best_epoch, best_params=True)
    return Finished(status, stop, run.epoch)


def _save(
    spec: Spec,
    ds: Dataset,
    rp: RunPlan,
    plan: dict[str, Any],
    prep: Preprocessing,
    programs: Programs,
    run: RunProgress,
    finished: Finished,
    *,
    run_dir: str,
    store: ckpt.CheckpointStore,
    stages: list[StageRecord],
    cache_dir: str | None,
) -> tuple[Any, dict[str, Any]]:
    """Stage save: the model files (a completed run only) and summary.json. Returns the
    kept parameters (host arrays) and the summary."""
    params = run.best_params if finished.best_params else run.state.params
    params = _to_host(params)  # a collective in multi-process runs: every process joins
    primary = jax.process_index() == 0
    if finished.status == "completed" and primary:  # diverged, interrupted: no model
        save_predictor(run_dir, params, spec.model, prep, ds.outputs)
        save_trace_rows(run_dir, ds.x_val, ds.y_val)  # for `jaxpipe trace RUN_DIR`
    es = spec.training.early_stopping
    summary = build_summary(
        spec.experiment,
        ds,
        prep,
        programs,
        run,
        finished,
        store=store,
        stages=stages,
        rp=rp,
        plan=plan,
        cache_dir=cache_dir,
        best_metric=spec.checkpoint.best_metric,
        restore_best=es is not None and es.restore_best,
    )
    store.close()
    if primary:
        write_json(os.path.join(run_dir, "summary.json"), summary)
    return params, summary


def _raise_unfinished(finished: Finished, signals: SignalCatcher, run_dir: str, epoch: int):
    if finished.status == "diverged":
        raise DivergedError(f"training diverged: {finished.stop['reason']}")
    if finished.status == "interrupted":
        raise RunInterrupted(
            f"interrupted by {signals.name} after epoch {epoch}; checkpoint saved, "
            f"continue with: jaxpipe run SPEC --out {run_dir} --resume",
            SIGNAL_EXIT[signals.signum],
        )


def run_experiment(
    spec: Spec,
    out: str | None = None,
    observer: Observer | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    dataset: Dataset | None = None,
    checkpoints: bool = True,
) -> RunResult:
    """Runs the experiment end to end and writes the run directory.

    With `resume`, continues from the newest readable checkpoint in `out` (or starts
    there if it has none); a spec that alters the model, optimizer or data is refused,
    and one that changes the training length only with `force`. `dataset`: rows already
    loaded (`jaxpipe.fit` on data in memory) instead of the spec's. `checkpoints=False`:
    none kept or written (a directory thrown away afterwards; `summary.json` lists none).

    Raises DivergedError (a non-finite loss) or RunInterrupted (SIGINT / SIGTERM) after
    writing summary.json with that status; RunInterrupted too for a signal before
    training started (nothing saved). RunDirectoryBusy if another run holds `out`.
    """
    # The signal contract and the directory lock hold from the run's first line to its
    # last: a signal is only recorded, and acted on at the safe points below (and after
    # each epoch, in the train stage, which shares this catcher).
    with catch_signals() as signals, contextlib.ExitStack() as stack:
        return _run(spec, out, observer, resume, force, dataset, signals, stack, checkpoints)


def _run(spec, out, observer, resume, force, dataset, signals, stack, checkpoints) -> RunResult:
    obs = observer or Observer()
    check_before_data(spec.optimizer, spec.origin)
    cache_dir = enable_compilation_cache(spec.runtime)
    stages = _Stages(obs, [])
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(spec)  # data errors: no files yet
    load_s = time.perf_counter() - t0
    check_run_metrics(spec.training, spec.checkpoint, spec.sweep, ds.task, spec.origin)
    rp = plan_run(spec, ds)  # a run that cannot fit stops here, before any compile
    check_schedule(spec.optimizer, rp.total_steps, spec.origin)
    signals.check("while loading the data")
    run_dir, resolved, store = _prepare(spec, rp, out, resume, force, obs, stack, checkpoints)
    fp = data_fingerprint(ds.x_train, ds.y_train, ds.x_val, ds.y_val)  # resume refuses new labels
    placed, prep = _place(spec.preprocess, spec.training, ds, rp, stages, load_s)
    ds = _release_training_rows(ds, placed)  # the host copy, once the device holds it
    trim_host_heap()
    programs = _compile(spec, ds, rp, placed, prep, stages)
    check_compiled(rp, programs.xla_bytes)  # the held figure, before the first step
    signals.check("while compiling")
    info = prep.dataset_info() | {"fingerprint": fp}
    run, signals, times = _train(
        spec, run_dir, resolved, store, placed, prep, programs, resume, obs, info
    )
    _report_training(stages, placed, prep, run, times)
    plan = plan_record(rp, placed.device, (run.state, *placed.arrays), programs.xla_bytes)
    del placed  # the device's copy of the data set: the rest needs none (peak memory)
    trim_host_heap()
    if run.history and jax.process_index() == 0:
        obs.on_artifacts(run_dir, run.history)
    finished = _finish(run, signals, spec.training, obs)
    _report_checkpoints(stages, spec.checkpoint, times, store)
    params, summary = _save(
        spec, ds, rp, plan, prep, programs, run, finished,
        run_dir=run_dir, store=store, stages=stages.records, cache_dir=cache_dir,
    )  # fmt: skip
    _raise_unfinished(finished, signals, run_dir, run.epoch)
    result = RunResult(
        run.history, run.history[-1], params, run_dir, summary, stages.records, prep.to_host()
    )
    obs.on_finish(result)
    return result
