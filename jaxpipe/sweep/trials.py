"""Many trials in one compiled program: the trials of a sweep group differ only in
values a program can take as inputs (seed, learning rate, optimizer scalars, clip norm,
dropout rate), so their states are stacked on a leading trial axis and `vmap`ped
through init, the scanned epoch and the evaluation, the trial axis sharded over the
devices. Each trial computes exactly what its own run computes (the same optax and flax
code, the same keys); only the batching differs, so results agree to fp32 rounding."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxpipe.core.aot import compiler_options
from jaxpipe.core.model import compute_dtype, make_model, param_count
from jaxpipe.core.optim import make_optimizer
from jaxpipe.core.step import (
    TrainState,
    init_state,
    make_epoch,
    make_evaluate,
    make_probabilities,
    make_task_steps,
)
from jaxpipe.planner.values import Workload
from jaxpipe.runner.programs import EVAL_BATCH
from jaxpipe.spec.sections import ModelSpec, OptimizerSpec

__all__ = [
    "CLASS_WEIGHT",
    "TrialPrograms",
    "is_input_key",
    "group_key",
    "trial_inputs",
    "trial_mesh",
    "compile_trials",
]

SEED, LR, CLIP, DROPOUT = (
    "experiment.seed",
    "optimizer.learning_rate",
    "optimizer.clip_norm",
    "model.dropout",
)
# Not a swept key: cross-validation's folds' own "balanced" weights, [trials, classes].
CLASS_WEIGHT = "training.class_weight"
# Optimizer keys that change the program's structure, not a scalar in it.
_OPTIMIZER_STRUCTURE = ("optimizer.name", "optimizer.schedule")


def is_input_key(key: str, values: Sequence[Any]) -> bool:
    """Whether the swept `key` can be a program input (one compiled program for all its
    `values`) rather than needing a program of its own per value."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if key in (SEED, LR, CLIP, DROPOUT):
        return numeric
    if key.startswith("optimizer.") and key.count(".") == 1:
        return numeric and key not in _OPTIMIZER_STRUCTURE  # an optax scalar: weight_decay
    return False


def group_key(values: Mapping[str, Any], input_keys: set[str]) -> tuple:
    """Trials with equal group keys share one program: equal in every value that is not
    a program input (and a clip norm's presence, which adds a transformation)."""
    fixed = tuple(sorted((k, repr(v)) for k, v in values.items() if k not in input_keys))
    return fixed + ((CLIP, values[CLIP] is None),) if CLIP in values else fixed


def trial_inputs(values: Sequence[Mapping[str, Any]], input_keys: set[str]) -> dict[str, Any]:
    """The per-trial program inputs: float32 [trials] per swept scalar (the seed stays a
    Python list: keys are made exactly as a single run makes them)."""
    h: dict[str, Any] = {}
    for key in sorted(input_keys - {SEED}):
        h[key] = np.asarray([v[key] for v in values], np.float32)
    return h


def _builder(
    opt: OptimizerSpec,
    mdl: ModelSpec,
    precision: str,
    total_steps: int,
    outputs: int,
    task: str,
    dropout_on: bool,
    cw=None,
):
    """build(h) -> (model, tx, train_step, eval_step) with the swept scalars `h` (traced,
    one trial's) in place of the spec's values; the same factories a single run uses."""
    dtype = compute_dtype(precision)

    def build(h: Mapping[str, Any]):
        options = dict(opt.options) | {
            k.split(".", 1)[1]: v
            for k, v in h.items()
            if k not in (LR, CLIP, DROPOUT, CLASS_WEIGHT)
        }
        ocfg = SimpleNamespace(
            name=opt.name,
            learning_rate=h.get(LR, opt.learning_rate),
            clip_norm=h.get(CLIP, opt.clip_norm),
            schedule=opt.schedule,
            options=options,
        )
        tx = make_optimizer(ocfg, total_steps=total_steps)  # type: ignore[arg-type]
        mcfg = SimpleNamespace(
            hidden=mdl.hidden,
            activation=mdl.activation,
            dropout=h.get(DROPOUT, mdl.dropout),
            layer_norm=mdl.layer_norm,
        )
        model = make_model(mcfg, outputs, dtype)  # type: ignore[arg-type]
        train_step, eval_step = make_task_steps(
            model, tx, task, dropout_on, h.get(CLASS_WEIGHT, cw)
        )
        return model, tx, train_step, eval_step

    return build


@dataclass(frozen=True)
class TrialPrograms:
    """The group's compiled programs over the trial axis:
    `epoch(state, x, y, epoch, h, active) -> (state, sums)` (a trial whose `active` is
    false, or whose loss is not finite, keeps its state) and
    `evaluate(params, x, y) -> sums` (-> (sums, probabilities [trials, rows, classes])
    when `scored` names optional metrics); every leaf of state and sums is [trials, ...]."""

    state: TrainState
    epoch: Callable[..., Any]
    evaluate: Callable[..., Any]
    inputs: dict[str, Any]
    mesh: Mesh
    seconds: float
    scored: tuple[str, ...] = ()  # optional validation metrics (OPTIONAL_METRICS) recorded

    def shard(self, a: Any) -> Any:
        """Puts a per-trial host array on the trial axis."""
        return jax.device_put(a, NamedSharding(self.mesh, PartitionSpec("trial")))


def trial_mesh(trials: int, devices: Sequence[Any] | None = None) -> Mesh:
    """A one-axis mesh over as many devices as divide the trial count evenly."""
    devices = list(devices or jax.devices())
    n = max(d for d in range(1, len(devices) + 1) if trials % d == 0)
    return Mesh(np.asarray(devices[:n]), ("trial",))


def _masked_epoch(train_step_of, batch: int):
    def epoch_one(state, x, y, e, h, active):
        new, sums = make_epoch(train_step_of(h), batch)(state, x, y, e)
        # A stopped or diverged trial keeps its last good state while the others go on:
        # its NaN never reaches the parameters the run keeps.
        ok = jnp.logical_and(active, jnp.isfinite(sums.loss_sum))

        def keep(n, o):
            return jnp.where(ok, n, o)

        kept = (keep(new.step, state.step), jax.tree.map(keep, new.params, state.params))
        opt_state = jax.tree.map(keep, new.opt_state, state.opt_state)
        return TrainState(kept[0], kept[1], opt_state, state.key), sums

    return epoch_one


def compile_trials(
    workload: Workload,
    seeds: Sequence[int],
    inputs: dict[str, Any],
    arrays: tuple[jax.Array, ...],
    *,
    mesh: Mesh,
    per_trial_data: bool,
    outputs: int,
    task: str,
    batch: int,
    total_steps: int,
    dropout_on: bool,
    class_weights: tuple[float, ...] | None = None,
    scored: tuple[str, ...] = (),
) -> TrialPrograms:
    """Initialises every trial's state (keys from `seeds`, as a single run makes them)
    on the trial axis of `mesh` (see trial_mesh) and compiles the vmapped epoch and evaluation. `arrays`: (x_train,
    y_train, x_val, y_val), each with a leading trial axis when `per_trial_data` (the
    seed changes the data), else shared by all trials. `scored`: the optional validation
    metrics to record (the evaluation then also returns every row's probabilities).
    `workload`: the sweep's model, optimizer and precision (a trial's `inputs` override
    them)."""
    t0 = time.perf_counter()
    on_trials = NamedSharding(mesh, PartitionSpec("trial"))
    sections = (workload.optimizer, workload.model, workload.training.precision)
    build = _builder(*sections, total_steps, outputs, task, dropout_on, class_weights)
    dax = 0 if per_trial_data else None
    x_tr, y_tr, x_va, y_va = arrays
    example = jnp.zeros((1, x_tr.shape[-1]), x_tr.dtype)
    keys = jax.random.wrap_key_data(
        jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])
    )

    def init_one(key, h):
        model, tx, _, _ = build(h)
        return init_state(model.init, tx, key, example)

    h = {k: jax.device_put(v, on_trials) for k, v in inputs.items()}
    state = jax.jit(jax.vmap(init_one), out_shardings=on_trials)(jax.device_put(keys, on_trials), h)
    epoch_fn = jax.vmap(
        _masked_epoch(lambda hh: build(hh)[2], batch), in_axes=(0, dax, dax, None, 0, 0)
    )
    model, _, _, eval_step = build({})  # evaluation has no dropout: the spec's values serve
    probs = make_probabilities(model.apply) if scored else None
    evaluate = make_evaluate(eval_step, min(EVAL_BATCH, x_va.shape[-2]), probabilities=probs)
    eval_fn = jax.vmap(evaluate, in_axes=(0, dax, dax))
    leaves = jax.tree.leaves(state.params)
    opts = compiler_options(jax.devices()[0].platform, param_count(leaves), batch)
    active = jax.device_put(np.ones(len(seeds), bool), on_trials)
    epoch_c = (
        jax.jit(epoch_fn, donate_argnums=0, out_shardings=(on_trials, on_trials))
        .lower(state, x_tr, y_tr, jnp.zeros((), jnp.int32), h, active)
        .compile(opts)
    )
    eval_c = jax.jit(eval_fn, out_shardings=on_trials).lower(state.params, x_va, y_va).compile(opts)
    return TrialPrograms(state, epoch_c, eval_c, h, mesh, time.perf_counter() - t0, scored)
