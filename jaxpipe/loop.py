"""The imperative shell: runs the five stages, times them, compiles the programs, trains
epoch by epoch and writes the run directory. Everything jitted lives in `step.py` and
`preprocess.py`; clocks, files and printing live here (printing through an Observer)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe import checkpoint as ckpt
from jaxpipe import data as data_lib
from jaxpipe.errors import DivergedError, JaxpipeError, PlanError, RunInterrupted, SpecError
from jaxpipe.hardware import memory_stats
from jaxpipe.memory import compute_dtype
from jaxpipe.metrics import (
    finalize,
    finalize_regression,
    zero_sums,
)
from jaxpipe.model import make_model, param_count
from jaxpipe.optim import check_optimizer, make_optimizer
from jaxpipe.planner import Plan, make_plan
from jaxpipe.predict import save_predictor
from jaxpipe.preprocess import apply_scaler, fit_scaler, fit_standard
from jaxpipe.resume import check_resumable, checkpoint_arrays, start_or_resume
from jaxpipe.sharding import make_layout, measured_bytes_per_device, place_host_array
from jaxpipe.spec import Spec, dump_spec, metric_mode, place_error
from jaxpipe.step import (
    TrainState,
    epoch_batches,
    init_state,
    make_epoch,
    make_evaluate,
    make_task_steps,
)
from jaxpipe.stopping import SIGNAL_EXIT, catch_signals, check_metric_names, fault_hook, outcome
from jaxpipe.stream import chunk_plan, make_chunk_steps, steps_per_chunk, stream_epoch
from jaxpipe.trace import save_trace_rows

__all__ = [
    "Observer",
    "StageRecord",
    "RunResult",
    "run_experiment",
    "enable_compilation_cache",
    "prepare_out_dir",
    "default_out_dir",
    "device_info",
    "plan_run",
    "plan_record",
]

EVAL_BATCH = 1024
CHECKPOINTS = "checkpoints"  # the orbax folder inside a run directory


@dataclass(frozen=True)
class StageRecord:
    """One pipeline stage: what went in, what came out, how long it took."""

    name: str
    input: str
    output: str
    seconds: float


@dataclass
class RunResult:
    """What `jaxpipe.run` returns."""

    history: list[dict[str, Any]]
    final: dict[str, Any]
    params: Any
    run_dir: str
    summary: dict[str, Any]
    stages: list[StageRecord] = field(default_factory=list)


class Observer:
    """Receives the run's events; the default ignores them (see report.ConsoleReporter)."""

    def on_start(self, spec: Spec, run_dir: str) -> None: ...
    def on_stage(self, stage: StageRecord) -> None: ...
    def on_plan(self, plan: Plan) -> None: ...
    def on_model(self, params: Any) -> None: ...
    def on_epoch(self, row: dict[str, Any], epochs: int) -> None: ...
    def on_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None: ...
    def on_finish(self, result: RunResult) -> None: ...
    def on_note(self, text: str) -> None: ...


def enable_compilation_cache(spec: Spec) -> str | None:
    """Turns on JAX's persistent compilation cache (unless the spec or
    JAXPIPE_COMPILATION_CACHE=0 says not to); returns its folder."""
    env = os.environ.get("JAXPIPE_COMPILATION_CACHE", "1").strip().lower()
    if not spec.runtime.compilation_cache or env in ("0", "false", "no", "off"):
        return None
    cache = os.environ.get("JAXPIPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxpipe", "xla"
    )
    jax.config.update("jax_compilation_cache_dir", cache)
    # Our programs compile in well under JAX's default 1 s threshold; cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return cache


def default_out_dir(spec: Spec) -> str:
    """runs/<name>-<timestamp>, relative to the working directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{spec.experiment.name}-{stamp}")


def prepare_out_dir(spec: Spec, out: str | None, resume: bool = False) -> str:
    """Checks (and creates) the run directory before any work. Refuses to overwrite a
    finished run, or an unfinished one with checkpoints, unless resuming it."""
    if out is None:
        if resume:
            raise JaxpipeError("--resume needs --out DIR: the run directory to continue")
        out = default_out_dir(spec)
    if os.path.exists(out) and not os.path.isdir(out):
        raise JaxpipeError(f"--out {out}: exists and is not a directory; choose another path")
    if not resume:
        summary = os.path.join(out, "summary.json")
        if os.path.exists(summary):
            raise JaxpipeError(
                f"--out {out}: already holds a finished run (summary.json, status "
                f"{_read_status(summary)}); continue it with --resume, or choose another "
                "directory"
            )
        saved = ckpt.saved_epochs(os.path.join(out, CHECKPOINTS))
        if saved:
            raise JaxpipeError(
                f"--out {out}: holds an unfinished run (checkpoints up to epoch {saved[-1]}); "
                "continue it with --resume, or choose another directory"
            )
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, f".write-test-{os.getpid()}")  # processes share `out`
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise JaxpipeError(
            f"--out {out}: cannot write there ({e.strerror}); choose a writable directory"
        ) from None
    return out


def _read_status(summary_path: str) -> str:
    try:
        with open(summary_path) as f:
            return str(json.load(f).get("status", "unknown"))
    except (OSError, ValueError, AttributeError):
        return "unreadable"


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
    }


def plan_run(spec: Spec, ds: data_lib.Dataset) -> tuple[Plan, int | None]:
    """The run's plan from the loaded data's exact shapes, and the rows per streamed chunk
    when `data.chunk_rows = "auto"` and only streaming the training split makes the run
    fit one device (else None). Raises PlanError (exit 2, with the plan table) when the
    chosen or forced strategy does not fit."""
    plan = make_plan(spec, dataset=ds)
    if (
        not plan.fits
        and spec.data.chunk_rows == "auto"
        and spec.hardware.strategy
        in (
            "auto",
            "single",
        )
    ):
        single = next((c for c in plan.candidates if c.strategy == "single"), None)
        train = ds.x_train.nbytes + ds.y_train.nbytes
        if single is not None:
            # What stays on the device besides the training rows: model, optimizer,
            # activations, workspace and the (resident) validation split.
            budget = plan.usable_bytes_per_device - (single.per_device_bytes - train)
            if budget > 0:
                rows = chunk_plan(train, budget, ds.x_train.shape[0])
                if rows < ds.x_train.shape[0]:
                    return plan, rows
    if not plan.fits:
        forced = spec.hardware.strategy
        what = f"[hardware] strategy = {forced!r}" if forced != "auto" else "the run"
        raise PlanError(f"{what} {plan.recommendation}", plan=plan)
    return plan, None


def plan_record(plan: Plan, device: Any, placed: Any = None) -> dict[str, Any]:
    """summary.json's `plan`: the prediction, the placed arrays' largest per-device
    footprint read back from their shards, and, where the backend reports it, the
    measured peak."""
    peak = memory_stats(device).get("peak_bytes_in_use")
    return {
        "strategy": plan.strategy,
        "devices": plan.devices,
        "mesh": dict(plan.mesh),
        "per_device_bytes": plan.per_device_bytes,
        "per_device_bytes_no_donation": plan.per_device_bytes_no_donation,
        "usable_bytes_per_device": plan.usable_bytes_per_device,
        "breakdown": dict(plan.breakdown),
        "fits": plan.fits,
        "device": plan.device,
        "measured_per_device_bytes": measured_bytes_per_device(placed) if placed else None,
        "measured_peak_bytes": int(peak) if peak is not None else None,
    }


def _executed(record: dict[str, Any], strategy: str, mesh: dict[str, int]) -> dict[str, Any]:
    """The plan record with what actually ran: a streamed run executes on one device even
    when the plan's (non-fitting) choice was another layout, kept under `planned`."""
    if strategy == record["strategy"] and dict(mesh) == record["mesh"]:
        return record
    planned = {k: record[k] for k in ("strategy", "devices", "mesh")}
    return record | {
        "strategy": strategy,
        "devices": math.prod(mesh.values()),
        "mesh": dict(mesh),
        "planned": planned,
    }


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def _shape(a: Any) -> str:
    return f"{a.shape[0]} rows × {a.shape[1]} columns" if a.ndim == 2 else f"{a.shape[0]} rows"


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def _to_host(tree: Any) -> Any:
    """Host numpy copies of (possibly sharded, possibly multi-process) arrays."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


# Below this many FLOPs per training step (6 × parameters × batch) an XLA:CPU program runs
# faster with Eigen's matmuls on one thread: the seed workload's 128-wide matmuls finish
# before the thread pool's hand-off pays for itself; at 447 MFLOP/step (512-wide, batch
# 256) the pool wins (benchmarks/profile_epoch.py measures both).
_CPU_SINGLE_THREAD_FLOPS = 2e8


def compiler_options(platform: str, params: int, batch: int) -> dict[str, Any]:
    """XLA options for the training programs: single-threaded Eigen for small steps on
    CPU (see _CPU_SINGLE_THREAD_FLOPS); nothing elsewhere. JAXPIPE_CPU_THREADING=multi
    or =single overrides the choice (for benchmarking)."""
    if platform != "cpu":
        return {}
    force = os.environ.get("JAXPIPE_CPU_THREADING", "").strip().lower()
    small = 6 * params * batch < _CPU_SINGLE_THREAD_FLOPS
    single = force == "single" or (force != "multi" and small)
    return {"xla_cpu_multi_thread_eigen": False} if single else {}


def _chunk_steps(chunk_rows: int | str, batch: int, steps: int) -> int:
    """Steps per streamed chunk, or 0 for the resident path ("auto", or a chunk that
    would hold the whole epoch anyway)."""
    if chunk_rows == "auto":
        return 0
    per = steps_per_chunk(int(chunk_rows), batch, steps)
    return 0 if per >= steps else per


def _fit_streamed(spec: Spec, regression: bool, x: np.ndarray, y: np.ndarray):
    """Streamed preprocessing: the scaler (and a regression target's) fitted on the host
    rows by the CPU backend; a regression target is scaled on the host (one column)."""
    cpu = jax.devices("cpu")[0]
    xc, yc = jax.device_put((x, y), cpu)
    scaler = jax.jit(lambda x: fit_scaler(spec.preprocess.normalize, x))(xc)
    target = None
    if regression:
        target = jax.jit(lambda y: fit_standard(y[:, None]))(yc)
        y = np.asarray(jax.jit(lambda t, y: apply_scaler(t, y[:, None])[:, 0])(target, yc))
    return x, y, scaler, target


def _compile_streamed(train_step, state, scaler, x, y, batch: int, chunk: int, opts):
    """The streamed epoch: chunk programs compiled for the full and the last chunk
    length; returns epoch(state, x, y, epoch) with the resident epoch's signature."""
    chunk_jit = jax.jit(make_chunk_steps(train_step), donate_argnums=0)
    rows, steps = x.shape[0], -(-x.shape[0] // batch)
    programs = {}
    for n in {chunk, steps - (steps - 1) // chunk * chunk}:
        shapes = (
            jax.ShapeDtypeStruct((n, batch, x.shape[1]), x.dtype),
            jax.ShapeDtypeStruct((n, batch), y.dtype),
            jax.ShapeDtypeStruct((n, batch), jnp.float32),
        )
        programs[n] = chunk_jit.lower(state, zero_sums(), scaler, *shapes).compile(opts)
    order = jax.jit(lambda key, e: epoch_batches(jax.random.fold_in(key, e), rows, batch))

    def run_chunk(state, sums, scaler, xb, yb, w):
        return programs[xb.shape[0]](state, sums, scaler, xb, yb, w)

    def epoch(state: TrainState, x: np.ndarray, y: np.ndarray, epoch: jax.Array):
        # The resident epoch's batch order, fetched once per epoch to gather on the host.
        idx, weight = jax.device_get(order(state.key, epoch))
        return stream_epoch(run_chunk, state, zero_sums(), scaler, x, y, idx, weight, chunk)

    return epoch


def _regression_summary(ds: Any, target: tuple[float, float] | None) -> dict[str, Any]:
    """The predict-the-training-mean baseline on the validation split, in the target's
    units (float64 on the host, so it is exact), for comparison with val_rmse."""
    if target is None:
        return {}
    mean = float(np.mean(ds.y_train.astype(np.float64)))
    rmse = float(np.sqrt(np.mean(np.square(ds.y_val.astype(np.float64) - mean))))
    return {
        "baseline": {"predicts": "the training-split mean", "val_rmse": rmse},
        "target": {"column": ds.label, "mean": target[0], "scale": target[1]},
    }


def _dataset_info(ds: data_lib.Dataset, target: tuple[float, float] | None) -> dict[str, Any]:
    """What a model needs besides its parameters to be used on new rows (JSON): checked
    on resume, so a run never continues on data encoded differently."""
    info = {
        "task": ds.task,
        "label": ds.label,
        "classes": list(ds.class_names),
        "features": list(ds.feature_names),
        "encoder": ds.encoder.to_json() if ds.encoder is not None else None,
        "target": None if target is None else {"mean": target[0], "scale": target[1]},
    }
    return json.loads(json.dumps(info))  # as it reads back from a checkpoint (lists, not tuples)


def _metric_names(regression: bool) -> list[str]:
    """The columns of metrics.jsonl (besides epoch and epoch_seconds)."""
    if regression:
        return ["train_loss", "val_loss", "val_rmse"]
    return ["train_loss", "train_accuracy", "val_loss", "val_accuracy"]


def _write_lines(path: str, rows: list[dict[str, Any]]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def _best_info(store: ckpt.CheckpointStore, metric: str | None) -> dict[str, Any] | None:
    if metric is None or store.best is None:
        return None
    return {"metric": metric, "value": store.best[0], "epoch": store.best[1]}


def run_experiment(
    spec: Spec,
    out: str | None = None,
    observer: Observer | None = None,
    *,
    resume: bool = False,
    force: bool = False,
) -> RunResult:
    """Runs the experiment end to end and writes the run directory.

    With `resume`, continues from the newest readable checkpoint in `out` (or starts
    there if it has none); a spec that alters the model, optimizer or data is refused,
    and one that changes the training length only with `force`.

    Raises DivergedError (a non-finite loss) or RunInterrupted (SIGINT / SIGTERM) after
    writing summary.json with that status.
    """
    obs = observer or Observer()
    try:  # a bad optimizer section fails before any data is read
        check_optimizer(spec.optimizer)
    except SpecError as e:
        raise place_error(spec, e) from None
    cache_dir = enable_compilation_cache(spec)
    stages: list[StageRecord] = []

    def stage(name: str, inp: str, outp: str, seconds: float) -> None:
        rec = StageRecord(name, inp, outp, seconds)
        stages.append(rec)
        obs.on_stage(rec)

    # 1. Load into host memory. Data errors surface here, before the run directory exists.
    t0 = time.perf_counter()
    ds = data_lib.load_dataset(spec)
    load_s = time.perf_counter() - t0
    try:
        check_metric_names(spec, _metric_names(ds.task == "regression"))
    except SpecError as e:
        raise place_error(spec, e) from None
    # A run that cannot fit stops here, before any compile, unless streaming fits it.
    plan, auto_chunk_rows = plan_run(spec, ds)
    strategy, mesh_shape = plan.strategy, plan.mesh
    batch = spec.training.batch_size
    steps_per_epoch = -(-ds.x_train.shape[0] // batch)
    chunk = _chunk_steps(auto_chunk_rows or spec.data.chunk_rows, batch, steps_per_epoch)
    if chunk and math.prod(mesh_shape.values()) > 1:
        if spec.hardware.strategy != "auto":
            raise place_error(
                spec,
                SpecError(
                    f"streaming the training split in chunks runs on one device, but "
                    f"[hardware] strategy = {spec.hardware.strategy!r} uses "
                    f"{math.prod(mesh_shape.values())}: remove data.chunk_rows or the strategy",
                    key="data.chunk_rows",
                ),
            )
        strategy, mesh_shape = "single", {"data": 1}  # streamed runs use one device
    layout = make_layout(strategy, mesh_shape)  # too few devices: exit 2 here, no files
    run_dir = prepare_out_dir(spec, out, resume)
    resolved = spec
    if spec.data.path is not None:  # the run directory's copy must work from anywhere
        val = spec.data.validation
        resolved = dataclasses.replace(
            spec,
            data=dataclasses.replace(
                spec.data,
                path=spec.resolve_path(spec.data.path),
                validation=spec.resolve_path(val) if isinstance(val, str) else val,
            ),
        )
    if isinstance(spec.hardware.catalog, str):  # so is a catalog file's path
        hw = dataclasses.replace(spec.hardware, catalog=spec.resolve_path(spec.hardware.catalog))
        resolved = dataclasses.replace(resolved, hardware=hw)
    cp = spec.checkpoint
    store = ckpt.CheckpointStore(
        os.path.join(run_dir, CHECKPOINTS),
        keep=cp.keep,
        best_metric=cp.best_metric,
        best_mode=metric_mode(cp.best_metric, cp.best_mode) if cp.best_metric else "min",
    )
    if resume:  # refuse a changed spec before anything is compiled or overwritten
        check_resumable(store, resolved, force)
    # In a multi-process run every process trains and checkpoints (orbax coordinates the
    # shards); process 0 alone writes the run directory's files.
    primary = jax.process_index() == 0
    if primary:
        with open(os.path.join(run_dir, "spec.toml"), "w") as f:
            f.write(dump_spec(resolved))
    obs.on_start(spec, run_dir)
    obs.on_plan(plan)
    stage(
        "load",
        f"{ds.origin}: {ds.raw_rows} rows × {ds.raw_columns} columns",
        f"train {_shape(ds.x_train)} + validation {ds.x_val.shape[0]} rows (host)"
        + (f"; {ds.dropped_rows} rows with missing values dropped" if ds.dropped_rows else ""),
        load_s,
    )

    # 2. Transfer once, onto the plan's mesh (the data set is replicated on every device).
    # Streamed (data.chunk_rows): the validation split only; training rows go in chunks.
    host = (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
    placed = host[2:] if chunk else host
    arrays, secs = _timed(lambda: tuple(place_host_array(a, layout.replicated) for a in placed))
    if chunk:
        (x_va, y_va), (x_tr, y_tr) = arrays, (ds.x_train, ds.y_train)
    else:
        x_tr, y_tr, x_va, y_va = arrays
    device = jax.devices()[0]
    where = (
        f"{device.platform}:{device.id}"
        if layout.mesh.size == 1
        else (f"{layout.mesh.size} {device.platform} devices (replicated)")
    )
    stage(
        "transfer",
        f"{ds.nbytes / 2**20:.2f} MiB host arrays",
        f"{x_va.shape[0] if chunk else x_tr.shape[0] + x_va.shape[0]} rows on {where}"
        + (f"; training rows streamed, {chunk} batches a chunk" if chunk else ""),
        secs,
    )

    # 3. Preprocess on the device, fitted on the training split only. A regression target
    # is standardised too (so one learning rate suits any target's units); RMSE is
    # reported after undoing it.
    # The raw arrays are donated: the scaled ones take their place (one device copy).
    regression = ds.task == "regression"

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2, 3))
    def preprocess(x_tr: jax.Array, x_va: jax.Array, y_tr: jax.Array, y_va: jax.Array):
        scaler = fit_scaler(spec.preprocess.normalize, x_tr)
        target = fit_standard(y_tr[:, None]) if regression else None
        if regression:
            y_tr = apply_scaler(target, y_tr[:, None])[:, 0]
            y_va = apply_scaler(target, y_va[:, None])[:, 0]
        return apply_scaler(scaler, x_tr), apply_scaler(scaler, x_va), y_tr, y_va, scaler, target

    if chunk:  # fitted where the rows are (host memory); x scaled on the device per chunk
        t0 = time.perf_counter()
        x_tr, y_tr, scaler, target = _fit_streamed(spec, regression, x_tr, y_tr)
        x_va, y_va, scaler, target = jax.device_put((x_va, y_va, scaler, target), device)
        if regression:
            y_va = apply_scaler(target, y_va[:, None])[:, 0]
        x_va = jax.block_until_ready(jax.jit(apply_scaler)(scaler, x_va))
        secs = time.perf_counter() - t0
    else:
        (x_tr, x_va, y_tr, y_va, scaler, target), secs = _timed(preprocess, x_tr, x_va, y_tr, y_va)
    target_stats = None
    if regression:
        target_stats = (float(target.offset[0]), float(target.scale[0]))
    stage(
        "preprocess",
        f"train {_shape(x_tr)}",
        f"{spec.preprocess.normalize}-scaled "
        f"train {_shape(x_tr)} + validation {x_va.shape[0]} rows",
        secs,
    )

    # 4. Build and compile the programs (init, epoch, evaluation).
    tx = make_optimizer(spec.optimizer, total_steps=steps_per_epoch * spec.training.epochs)
    hooks = layout.model_hooks(len(spec.model.hidden))  # FSDP's per-layer gather, pinned batch
    model = make_model(spec.model, ds.outputs, compute_dtype(spec), hooks)
    train_step, eval_step = make_task_steps(model, tx, ds.task, spec.model.dropout > 0)
    key = jax.random.key(spec.experiment.seed)
    t0 = time.perf_counter()

    def init_fn(k: jax.Array, x: jax.Array) -> TrainState:
        return init_state(model.init, tx, k, x)

    # Initialised straight into its shardings: an FSDP state never exists whole on one device.
    shardings = layout.state_shardings(jax.eval_shape(init_fn, key, x_tr[:1]), tx)
    state: TrainState = jax.jit(init_fn, out_shardings=shardings)(key, x_tr[:1])
    split = {"multiple": layout.data_parallel}
    constrain = layout.constrain()
    if constrain is not None:
        split["constrain"] = constrain
    eval_fn = make_evaluate(eval_step, min(EVAL_BATCH, len(x_va)), **split)
    epoch_index = jnp.zeros((), jnp.int32)
    opts = compiler_options(device.platform, param_count(state.params), batch)
    if chunk:
        epoch_c = _compile_streamed(train_step, state, scaler, x_tr, y_tr, batch, chunk, opts)
    else:
        epoch_c = (
            jax.jit(
                make_epoch(train_step, batch, **split),
                donate_argnums=0,
                out_shardings=(shardings, layout.replicated),
            )
            .lower(state, x_tr, y_tr, epoch_index)
            .compile(opts)
        )
    eval_c = jax.jit(eval_fn).lower(state.params, x_va, y_va).compile(opts)
    compile_s = time.perf_counter() - t0
    obs.on_model(state.params)
    stage(
        "compile",
        f"MLP {ds.num_features} → {' → '.join(map(str, spec.model.hidden))}"
        f"{' → ' if spec.model.hidden else ''}{ds.outputs}",
        f"epoch program ({steps_per_epoch} steps of {batch}"
        + (f", in chunks of {chunk}" if chunk else "")
        + ") + evaluation",
        compile_s,
    )

    # 5. Train and evaluate, one compiled epoch at a time; metrics fetched once per epoch.
    info = _dataset_info(ds, target_stats)
    run = start_or_resume(spec, store, state, scaler, target, info, resume)
    if run.resumed_from:
        obs.on_note(f"Resumed from the checkpoint of epoch {run.resumed_from}")
    # From here the directory holds a run in progress: an earlier summary (interrupted,
    # or completed before --force extended it) no longer describes it.
    if primary:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(run_dir, "summary.json"))
    state = run.state
    metrics_path = os.path.join(run_dir, "metrics.jsonl") if primary else os.devnull
    if primary:
        _write_lines(metrics_path, run.history)  # on resume: exactly the checkpointed epochs
    meta_base = {"spec": dump_spec(resolved), "dataset": info}
    es = spec.training.early_stopping
    train_s = eval_s = save_s = 0.0
    saves = 0
    with catch_signals() as signals, open(metrics_path, "a") as metrics_file:
        for epoch in range(run.epoch + 1, spec.training.epochs + 1):
            if run.stopper is not None and run.stopper.should_stop:
                break  # a resumed run that had already stopped early
            t0 = time.perf_counter()
            state, train_sums = epoch_c(state, x_tr, y_tr, jnp.asarray(epoch, jnp.int32))
            train = finalize(train_sums)  # the once-per-epoch host sync
            fault_hook("epoch", epoch)
            if not math.isfinite(train["loss"]):
                run.diverged = {"epoch": epoch, "metric": "train_loss", "value": train["loss"]}
                break  # the state is not saved: no NaN parameters reach a checkpoint
            t1 = time.perf_counter()
            val_sums = eval_c(state.params, x_va, y_va)
            t2 = time.perf_counter()
            train_s, eval_s = train_s + t1 - t0, eval_s + t2 - t1
            if regression:
                val = finalize_regression(val_sums, target_stats[1])
                row = {
                    "epoch": epoch,
                    "train_loss": train["loss"],
                    "val_loss": val["loss"],
                    "val_rmse": val["rmse"],
                }
            else:
                val = finalize(val_sums)
                row = {
                    "epoch": epoch,
                    "train_loss": train["loss"],
                    "train_accuracy": train["accuracy"],
                    "val_loss": val["loss"],
                    "val_accuracy": val["accuracy"],
                }
            if not math.isfinite(val["loss"]):
                run.diverged = {"epoch": epoch, "metric": "val_loss", "value": val["loss"]}
                break
            row["epoch_seconds"] = t2 - t0
            run.history.append(row)
            run.epoch = epoch
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            if run.stopper is not None and run.stopper.update(epoch, row) and es.restore_best:
                run.best_params = jax.tree.map(jnp.copy, state.params)  # survives donation
            stopping = run.stopper is not None and run.stopper.should_stop
            last = epoch == spec.training.epochs
            if epoch % spec.checkpoint.every_epochs == 0 or last or stopping or signals.caught:
                meta = meta_base | {
                    "epoch": epoch,
                    "history": run.history,
                    "has_best_params": run.best_params is not None,
                }
                if run.stopper is not None:
                    meta["early_stopping"] = run.stopper.to_dict()
                t3 = time.perf_counter()
                arrays = checkpoint_arrays(state, scaler, target, run.best_params)
                store.save(epoch, arrays, meta, row)
                save_s += time.perf_counter() - t3
                run.saved = epoch
                saves += 1
                fault_hook("save", epoch)
            obs.on_epoch(row, spec.training.epochs)
            if stopping or signals.caught:
                break
    t3 = time.perf_counter()
    store.wait()  # every checkpoint committed before summary.json says anything
    save_s += time.perf_counter() - t3
    run.state = state
    stage(
        "train",
        f"train {_shape(x_tr)}",
        f"{int(state.step)} steps, {len(run.history)} epochs"
        + (f" (resumed after epoch {run.resumed_from})" if run.resumed_from else ""),
        train_s,
    )
    stage(
        "evaluate",
        f"validation {_shape(x_va)}",
        f"loss + {'rmse' if regression else 'accuracy'} × "
        f"{len(run.history) - (run.resumed_from or 0)} epochs",
        eval_s,
    )
    stage(
        "checkpoint",
        f"state + scaler every {spec.checkpoint.every_epochs} epoch(s)",
        f"{saves} saved, {CHECKPOINTS}/ holds epochs {store.epochs() or 'none'}",
        save_s,  # what training waited for: the device-to-host copies and the last write
    )
    if run.history and primary:
        obs.on_artifacts(run_dir, run.history)
    status, stop = outcome(run.diverged, signals, run.stopper, run.epoch, spec.training.epochs)
    if status == "completed" and run.stopper is not None and run.stopper.should_stop:
        obs.on_note(f"Stopped after epoch {run.epoch}: {stop['reason']}")
    params = run.state.params
    params_epoch = run.epoch
    if es is not None and es.restore_best and run.best_params is not None:
        params, params_epoch = run.best_params, run.stopper.best_epoch
    params = _to_host(params)  # a collective in multi-process runs: every process joins
    if status == "completed" and primary:  # a diverged or interrupted run leaves no model
        save_predictor(run_dir, params, spec, ds, scaler, target_stats)
        save_trace_rows(run_dir, ds.x_val, ds.y_val)  # for `jaxpipe trace RUN_DIR`
    summary = {
        "status": status,
        "name": spec.experiment.name,
        "seed": spec.experiment.seed,
        "final": run.history[-1] if run.history else None,
        "stop": stop,
        "params_epoch": params_epoch,
        "resumed_from": run.resumed_from,
        "checkpoints": {
            "directory": CHECKPOINTS,
            "epochs": store.epochs(),
            "best": _best_info(store, cp.best_metric),
        },
        "stages": [
            {"name": s.name, "input": s.input, "output": s.output, "seconds": s.seconds}
            for s in stages
        ],
        "compile_seconds": compile_s,
        "xla_options": opts,
        "chunk_steps": chunk or None,
        "compilation_cache": cache_dir,
        "task": ds.task,
        "classes": list(ds.class_names),
        "features": list(ds.feature_names),
        "rows": {
            "train": int(ds.x_train.shape[0]),
            "validation": int(ds.x_val.shape[0]),
            "dropped_missing": ds.dropped_rows,
        },
        "scaler": {
            "kind": spec.preprocess.normalize,
            "offset": np.asarray(scaler.offset).tolist(),
            "scale": np.asarray(scaler.scale).tolist(),
        },
        **_regression_summary(ds, target_stats),
        "device": device_info(),
        "plan": _executed(
            plan_record(plan, device, (run.state, x_tr, y_tr, x_va, y_va)), strategy, mesh_shape
        ),
        "jax_version": jax.__version__,
    }
    if run.stopper is not None:
        best = next((r for r in run.history if r["epoch"] == run.stopper.best_epoch), None)
        summary["early_stopping"] = run.stopper.to_dict() | {
            "restore_best": es.restore_best,
            "best_row": best,
        }
    if run.diverged:
        summary["diverged"] = run.diverged | {"value": str(run.diverged["value"])}
    store.close()
    if primary:
        _write_json(os.path.join(run_dir, "summary.json"), summary)
    if status == "diverged":
        raise DivergedError(f"training diverged: {stop['reason']}")
    if status == "interrupted":
        raise RunInterrupted(
            f"interrupted by {signals.name} after epoch {run.epoch}; checkpoint saved, "
            f"continue with: jaxpipe run SPEC --out {run_dir} --resume",
            SIGNAL_EXIT[signals.signum],
        )
    history = run.history
    result = RunResult(history, history[-1], params, run_dir, summary, stages)
    obs.on_finish(result)
    return result
