"""Stage 5, compile: the model, the optimizer, the initial state in its shardings and
the compiled programs (the epoch, resident or streamed in chunks, and the evaluation),
with the XLA options chosen for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxpipe.core.aot import cached_compile, compiler_options
from jaxpipe.core.metrics import zero_sums
from jaxpipe.core.model import make_model, param_count
from jaxpipe.core.optim import make_optimizer
from jaxpipe.core.progress import with_progress
from jaxpipe.core.step import (
    TrainState,
    epoch_batches,
    init_state,
    make_epoch,
    make_evaluate,
    make_probabilities,
    make_task_steps,
)
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.runner.place import ChunkFeed, Placed, chunk_feed
from jaxpipe.runner.plan import RunPlan
from jaxpipe.runner.stopping import requested_metrics
from jaxpipe.runner.stream import make_chunk_steps, stream_chunks
from jaxpipe.spec.experiment import Spec, dump_spec

__all__ = ["Programs", "compile_programs", "EVAL_BATCH"]

EVAL_BATCH = 1024


@dataclass
class Programs:
    """The compiled run: `epoch(state, x, y, epoch) -> (state, sums)` and
    `evaluate(params, x, y) -> sums` (-> (sums, probabilities [rows, classes]) when
    `scored` names optional metrics, scored on the host against `y_val`), the fresh
    state they were compiled for (handed over once, `take_state`), and the XLA options."""

    state: TrainState | None
    epoch: Callable[..., Any]
    evaluate: Callable[..., Any]
    options: dict[str, Any]
    seconds: float
    donates: bool = True  # the epoch consumes its input state (checkpoints copy it first)
    xla_bytes: int | None = None  # XLA's per-device figure of this epoch (`compiled_bytes`)
    scored: tuple[str, ...] = ()  # optional validation metrics (OPTIONAL_METRICS) recorded
    y_val: np.ndarray | None = None  # the validation labels on the host, when scored

    def take_state(self) -> TrainState:
        """The fresh state, which the programs then forget: an undonated state (or, on
        resume, the fresh one the checkpoint replaces) would otherwise stay on the
        device for the whole run beside the one training."""
        state, self.state = self.state, None
        if state is None:
            raise RuntimeError("the fresh state was already taken")
        return state


def _compile_streamed(train_step, state, scaler, feed: ChunkFeed, x, y, batch: int, opts):
    """The streamed epoch: chunk programs compiled for the full and the last chunk
    length; returns epoch(state, x, y, epoch) with the resident epoch's signature."""
    chunk_jit = jax.jit(make_chunk_steps(train_step), donate_argnums=0)
    rows, programs, scaler = x.shape[0], {}, feed.replicate(scaler)
    for n in {b - a for a, b in feed.bounds}:
        sx, sy, sw = feed.shardings  # the chunks' batch axis split as batches are
        shapes = (
            jax.ShapeDtypeStruct((n, feed.width, x.shape[1]), x.dtype, sharding=sx),
            jax.ShapeDtypeStruct((n, feed.width), y.dtype, sharding=sy),
            jax.ShapeDtypeStruct((n, feed.width), jnp.float32, sharding=sw),
        )
        programs[n] = chunk_jit.lower(state, zero_sums(), scaler, *shapes).compile(opts)
    width = feed.width  # batch widened to split evenly over the data axis
    order = jax.jit(lambda k, e: epoch_batches(jax.random.fold_in(k, e), rows, batch, width))

    def run_chunk(state, sums, scaler, xb, yb, w):
        return programs[xb.shape[0]](state, sums, scaler, xb, yb, w)

    def epoch(state: TrainState, x: Any, y: Any, epoch: jax.Array):
        # Host rows: the resident epoch's batch order, fetched once per epoch to gather.
        idx, weight = jax.device_get(order(state.key, epoch)) if feed.ordered else (None, None)
        chunks = feed.chunks(epoch, idx, weight)
        sums = feed.replicate(zero_sums())
        return stream_chunks(run_chunk, state, sums, scaler, chunks, feed.put)

    return epoch


def _describe(spec_toml: str, rp: RunPlan, prep: Preprocessing, outputs: int) -> str:
    """What the programs are a function of beyond jaxpipe's source and their arguments'
    shapes: the resolved spec (`spec_toml`, its `dump_spec`: model, optimizer, schedule,
    precision, batch) and plan, and the fitted class weights (constants of the program:
    "balanced" fits them to the data, which the spec's text does not show)."""
    plan = (rp.strategy, rp.mesh, rp.batch, rp.steps_per_epoch, rp.epochs, rp.chunk)
    fitted = f"{prep.task} {outputs} {prep.class_weights!r}"
    return f"{spec_toml}\n{plan} {rp.precision} {rp.layout!r}\n{fitted}"


def _init(init_fn, seed: int, x1: np.ndarray, rp: RunPlan, tx, describe: str):
    """The initial state, made by one program straight into its shardings. The key of
    `seed` (which `describe`, the resolved spec, names) is made inside it: an eager
    `jax.random.key` would compile and run a program of its own in a fresh process."""

    def init(x: jax.Array) -> TrainState:
        return init_fn(jax.random.key(seed), x)

    def lower(x: np.ndarray):
        shardings = rp.layout.state_shardings(jax.eval_shape(init, x), tx)
        return jax.jit(init, out_shardings=shardings).lower(x)

    return cached_compile("init", lower, (x1,), {}, describe)(x1)


def _compile_resident(epoch, state, placed: Placed, rp: RunPlan, opts, describe, donates, progress):
    """The resident epoch for the state's and placed arrays' exact shardings."""

    def lower(*args: Any):
        shardings = jax.tree.map(lambda a: a.sharding, state)
        return jax.jit(
            epoch,
            donate_argnums=0 if donates else (),
            out_shardings=(shardings, rp.layout.replicated),
        ).lower(*args)

    args = (state, placed.x_train, placed.y_train, jax.ShapeDtypeStruct((), jnp.int32))
    if progress:  # its host callback does not survive serialization
        return lower(*args).compile(opts)
    return cached_compile("epoch" if donates else "epoch-kept", lower, args, opts, describe)


def compile_programs(
    spec: Spec,
    rp: RunPlan,
    placed: Placed,
    prep: Preprocessing,
    outputs: int,
    progress: tuple[int, Callable[[int], None]] | None = None,
) -> Programs:
    """Builds the model (`spec.model`, `outputs` wide) and optimizer (`spec.optimizer`,
    over the plan's total steps), initialises the state from `spec.experiment.seed`
    straight into its shardings (an FSDP state never exists whole on one device) and
    compiles the epoch and evaluation programs for the placed arrays' exact shapes
    (or loads them from the compilation cache's folder, aot.py: no tracing either).
    `progress` = (every, report): the resident epoch calls report(step) every `every`
    steps (a live progress bar; see progress.py)."""
    t0 = time.perf_counter()
    tx = make_optimizer(spec.optimizer, total_steps=rp.total_steps)
    hooks = rp.layout.model_hooks(len(spec.model.hidden))  # FSDP's per-layer gather, pinned batch
    model = make_model(spec.model, outputs, rp.compute_dtype, hooks)
    train_step, eval_step = make_task_steps(
        model, tx, prep.task, spec.model.dropout > 0, prep.class_weights
    )
    x_tr, y_tr, x_va, y_va = placed.arrays
    describe = _describe(dump_spec(spec), rp, prep, outputs)

    def init_fn(k: jax.Array, x: jax.Array) -> TrainState:
        return init_state(model.init, tx, k, x)

    layout = rp.layout
    # Only the example's shape matters to init; a host array needs no slicing program.
    x1 = np.zeros((1, x_tr.shape[1]), x_tr.dtype)
    state = _init(init_fn, spec.experiment.seed, x1, rp, tx, describe)
    split: dict[str, Any] = {"multiple": layout.data_parallel}
    constrain = layout.constrain()
    if constrain is not None:
        split["constrain"] = constrain
    opts = compiler_options(placed.device.platform, param_count(state.params), rp.batch)
    donates = rp.donates  # runplan.undonated: small states are kept, and the plan counts it
    if rp.chunk:
        feed = chunk_feed(rp, x_tr, y_tr)
        epoch_c = _compile_streamed(
            train_step, state, prep.scaler, feed, x_tr, y_tr, rp.batch, opts
        )
    else:
        step = with_progress(train_step, *progress) if progress else train_step
        epoch = make_epoch(step, rp.batch, **split)
        epoch_c = _compile_resident(epoch, state, placed, rp, opts, describe, donates, progress)
    scored = (
        requested_metrics(spec.model.task, spec.training, spec.checkpoint, spec.sweep)
        if prep.task == "classification"
        else ()
    )
    eval_c = _compile_evaluate(eval_step, model.apply, scored, split, state, placed, opts, describe)
    seconds = time.perf_counter() - t0
    xla = None if rp.chunk else compiled_bytes(epoch_c)
    y_val = np.asarray(jax.device_get(y_va)) if scored else None
    return Programs(state, epoch_c, eval_c, opts, seconds, donates, xla, scored=scored, y_val=y_val)


def _compile_evaluate(eval_step, apply_fn, scored, split, state, placed: Placed, opts, describe):
    """The evaluation over the validation split; with `scored` (optional metrics asked
    for) it also returns every row's probabilities, which the default run never fetches."""
    probs = make_probabilities(apply_fn) if scored else None
    x_va, y_va = placed.x_val, placed.y_val
    eval_fn = make_evaluate(eval_step, min(EVAL_BATCH, len(x_va)), probabilities=probs, **split)
    return cached_compile(
        "evaluate-scored" if scored else "evaluate",
        lambda *a: jax.jit(eval_fn).lower(*a),
        (state.params, x_va, y_va),
        opts,
        describe,
    )


def compiled_bytes(compiled: Any) -> int | None:
    """XLA's per-device figure of a compiled program (argument + output + temp − alias,
    as `verify.xla_figures`), None where the executable does not say: what the run's own
    epoch needs, recorded beside the plan's estimate in summary.json."""
    try:
        ma = compiled.memory_analysis()
        parts = ("argument", "output", "temp", "alias")
        arg, out, temp, alias = (int(getattr(ma, f"{k}_size_in_bytes")) for k in parts)
    except Exception:  # noqa: BLE001 - a backend or loaded executable without the analysis
        return None
    return arg + out + temp - alias
