"""The imperative shell: runs the five stages, times them, compiles the programs, trains
epoch by epoch and writes the run directory. Everything jitted lives in `step.py` and
`preprocess.py`; clocks, files and printing live here (printing through an Observer)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe import data as data_lib
from jaxpipe.errors import JaxpipeError, SpecError
from jaxpipe.losses import cross_entropy, squared_error
from jaxpipe.metrics import classification_sums, finalize, finalize_regression, regression_sums
from jaxpipe.model import make_model
from jaxpipe.optim import check_optimizer, make_optimizer
from jaxpipe.predict import save_predictor
from jaxpipe.preprocess import apply_scaler, fit_scaler, fit_standard
from jaxpipe.spec import Spec, dump_spec, place_error
from jaxpipe.step import (
    TrainState,
    init_state,
    make_epoch,
    make_eval_step,
    make_evaluate,
    make_train_step,
)

__all__ = [
    "Observer",
    "StageRecord",
    "RunResult",
    "run_experiment",
    "enable_compilation_cache",
    "prepare_out_dir",
    "device_info",
]

EVAL_BATCH = 1024


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
    def on_model(self, params: Any) -> None: ...
    def on_epoch(self, row: dict[str, Any], epochs: int) -> None: ...
    def on_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None: ...
    def on_finish(self, result: RunResult) -> None: ...


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


def prepare_out_dir(spec: Spec, out: str | None) -> str:
    """Checks (and creates) the run directory before any work; refuses to overwrite a
    finished run."""
    if out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = os.path.join("runs", f"{spec.experiment.name}-{stamp}")
    if os.path.exists(out) and not os.path.isdir(out):
        raise JaxpipeError(f"--out {out}: exists and is not a directory; choose another path")
    summary = os.path.join(out, "summary.json")
    if os.path.exists(summary):
        raise JaxpipeError(
            f"--out {out}: already holds a finished run (summary.json); "
            "choose another directory or remove it"
        )
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise JaxpipeError(
            f"--out {out}: cannot write there ({e.strerror}); choose a writable directory"
        ) from None
    return out


def device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {
        "platform": devices[0].platform,
        "kind": devices[0].device_kind,
        "count": len(devices),
        "process_count": jax.process_count(),
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


def run_experiment(
    spec: Spec, out: str | None = None, observer: Observer | None = None
) -> RunResult:
    """Runs the experiment end to end and writes the run directory."""
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
    run_dir = prepare_out_dir(spec, out)
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
    with open(os.path.join(run_dir, "spec.toml"), "w") as f:
        f.write(dump_spec(resolved))
    obs.on_start(spec, run_dir)
    stage(
        "load",
        f"{ds.origin}: {ds.raw_rows} rows × {ds.raw_columns} columns",
        f"train {_shape(ds.x_train)} + validation {ds.x_val.shape[0]} rows (host)"
        + (f"; {ds.dropped_rows} rows with missing values dropped" if ds.dropped_rows else ""),
        load_s,
    )

    # 2. Transfer once.
    host = (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
    (x_tr, y_tr, x_va, y_va), secs = _timed(jax.device_put, host)
    device = jax.devices()[0]
    stage(
        "transfer",
        f"{ds.nbytes / 2**20:.2f} MiB host arrays",
        f"{x_tr.shape[0] + x_va.shape[0]} rows on {device.platform}:{device.id}",
        secs,
    )

    # 3. Preprocess on the device, fitted on the training split only. A regression target
    # is standardised too (so one learning rate suits any target's units); RMSE is
    # reported after undoing it.
    regression = ds.task == "regression"

    @jax.jit
    def preprocess(x_tr: jax.Array, x_va: jax.Array, y_tr: jax.Array, y_va: jax.Array):
        scaler = fit_scaler(spec.preprocess.normalize, x_tr)
        target = fit_standard(y_tr[:, None]) if regression else None
        if regression:
            y_tr = apply_scaler(target, y_tr[:, None])[:, 0]
            y_va = apply_scaler(target, y_va[:, None])[:, 0]
        return apply_scaler(scaler, x_tr), apply_scaler(scaler, x_va), y_tr, y_va, scaler, target

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
    batch = spec.training.batch_size
    steps_per_epoch = -(-x_tr.shape[0] // batch)
    tx = make_optimizer(spec.optimizer, total_steps=steps_per_epoch * spec.training.epochs)
    dtype = jnp.bfloat16 if spec.training.precision == "bfloat16" else jnp.float32
    model = make_model(spec.model, ds.outputs, dtype)
    loss_fn, sums_fn = (
        (squared_error, regression_sums) if regression else (cross_entropy, classification_sums)
    )
    key = jax.random.key(spec.experiment.seed)
    t0 = time.perf_counter()
    init = jax.jit(lambda k, x: init_state(model.init, tx, k, x))
    state: TrainState = init(key, x_tr[:1])
    train_step = make_train_step(
        model.apply,
        loss_fn,
        tx,
        sums_fn=sums_fn,
        train_apply_fn=model.train_apply if spec.model.dropout > 0 else None,
    )
    epoch_fn = make_epoch(train_step, batch)
    eval_fn = make_evaluate(
        make_eval_step(model.apply, loss_fn, sums_fn=sums_fn), min(EVAL_BATCH, len(x_va))
    )
    epoch_index = jnp.zeros((), jnp.int32)
    epoch_c = jax.jit(epoch_fn, donate_argnums=0).lower(state, x_tr, y_tr, epoch_index).compile()
    eval_c = jax.jit(eval_fn).lower(state.params, x_va, y_va).compile()
    compile_s = time.perf_counter() - t0
    obs.on_model(state.params)
    stage(
        "compile",
        f"MLP {ds.num_features} → {' → '.join(map(str, spec.model.hidden))}"
        f"{' → ' if spec.model.hidden else ''}{ds.outputs}",
        f"epoch program ({steps_per_epoch} steps of {batch}) + evaluation",
        compile_s,
    )

    # 5. Train and evaluate, one compiled epoch at a time; metrics fetched once per epoch.
    history: list[dict[str, Any]] = []
    train_s = eval_s = 0.0
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    with open(metrics_path, "w") as metrics_file:
        for epoch in range(1, spec.training.epochs + 1):
            t0 = time.perf_counter()
            state, train_sums = epoch_c(state, x_tr, y_tr, jnp.asarray(epoch, jnp.int32))
            train = finalize(train_sums)
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
            row["epoch_seconds"] = t2 - t0
            history.append(row)
            metrics_file.write(json.dumps(row) + "\n")
            metrics_file.flush()
            obs.on_epoch(row, spec.training.epochs)
    stage(
        "train",
        f"train {_shape(x_tr)}",
        f"{int(state.step)} steps, {spec.training.epochs} epochs",
        train_s,
    )
    stage(
        "evaluate",
        f"validation {_shape(x_va)}",
        f"loss + {'rmse' if regression else 'accuracy'} × {spec.training.epochs} epochs",
        eval_s,
    )

    obs.on_artifacts(run_dir, history)
    save_predictor(run_dir, state.params, spec, ds, scaler, target_stats)
    final = history[-1]
    summary = {
        "status": "completed",
        "name": spec.experiment.name,
        "seed": spec.experiment.seed,
        "final": final,
        "stages": [
            {"name": s.name, "input": s.input, "output": s.output, "seconds": s.seconds}
            for s in stages
        ],
        "compile_seconds": compile_s,
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
        "jax_version": jax.__version__,
    }
    _write_json(os.path.join(run_dir, "summary.json"), summary)
    result = RunResult(history, final, jax.device_get(state.params), run_dir, summary, stages)
    obs.on_finish(result)
    return result
