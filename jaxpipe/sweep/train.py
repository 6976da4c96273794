"""One sweep group end to end: its data loaded, placed and scaled once per distinct seed,
its trials compiled into one program (trials.py), and the imperative shell around it:
epochs, per-trial NaN checks and early stopping (a stopped or diverged trial is masked,
the others go on), one metrics row per trial and epoch."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxpipe.core.evaluation import epoch_scores, metric_names
from jaxpipe.core.metrics import epoch_row, finalize
from jaxpipe.data.diskrows import DiskRows
from jaxpipe.data.fitted import Preprocessing
from jaxpipe.data.load import Dataset, load_dataset
from jaxpipe.errors import SpecError
from jaxpipe.planner.sweep import TrialSplit, split_trials
from jaxpipe.planner.values import Workload
from jaxpipe.runner.place import Placed
from jaxpipe.runner.plan import RunPlan, plan_run
from jaxpipe.runner.preprocess import preprocess_data
from jaxpipe.runner.stopping import (
    EarlyStopper,
    check_metric_names,
    outcome,
    requested_metrics,
)
from jaxpipe.signals import SignalCatcher
from jaxpipe.spec.experiment import Spec
from jaxpipe.sweep.trials import (
    CLASS_WEIGHT,
    SEED,
    TrialPrograms,
    compile_trials,
    trial_inputs,
    trial_mesh,
)

__all__ = ["TrialRun", "GroupRun", "train_group", "costliest"]


@dataclass
class TrialRun:
    """One trial's outcome: its metrics rows, status, kept parameters (host arrays)."""

    index: int
    spec: Spec
    values: dict[str, Any]
    prep: Preprocessing | None = None
    dataset: Dataset | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"
    stop: dict[str, Any] | None = None
    diverged: dict[str, Any] | None = None
    stopper: EarlyStopper | None = None
    best_params: Any = None
    params: Any = None
    params_epoch: int = 0


@dataclass
class GroupRun:
    """A group's trials and how its one program ran."""

    trials: list[TrialRun]
    devices: int
    compile_seconds: float
    train_seconds: float
    per_trial_data: bool

    def record(self, members: str) -> dict[str, Any]:
        """summary.json's `programs` entry: its trials' indices under `members` ("trials"
        in a sweep, "folds" in a cross-validation), its devices and its times."""
        return {
            members: [t.index for t in self.trials],
            "devices": self.devices,
            "compile_seconds": self.compile_seconds,
            "train_seconds": self.train_seconds,
        }


def _data_key(per_trial: bool, seed_varies: bool):
    """Which trials share a data set: each its own (cross-validation's folds, preset on
    the TrialRun), one per distinct seed (a seed draws synthetic rows and the split), or
    one for the group."""

    def key(t: TrialRun) -> Any:
        return t.index if per_trial else t.spec.experiment.seed if seed_varies else None

    return key


def _host_data(t: TrialRun, hosts: dict[int, Dataset]) -> Dataset:
    if t.dataset is not None:  # a fold: loaded with its split by the cross-validation shell
        return t.dataset
    if t.spec.experiment.seed not in hosts:
        hosts[t.spec.experiment.seed] = load_dataset(t.spec)
    return hosts[t.spec.experiment.seed]


def _load(trials: list[TrialRun], key, hosts: dict[int, Dataset]):
    """Each distinct data set (see _data_key), loaded on the host once per group
    (`hosts`, by seed), placed replicated on the chunk's mesh, and scaled: the scaler is
    fitted on that set's own training rows."""
    loaded: dict[Any, tuple[Dataset, Preprocessing, Placed]] = {}
    n = trials[0].spec.hardware.devices  # "auto": every local device
    mesh = trial_mesh(len(trials), jax.devices()[:n] if isinstance(n, int) else None)
    replicated = NamedSharding(mesh, PartitionSpec())
    for t in trials:
        if key(t) in loaded:
            continue
        ds, s = _host_data(t, hosts), t.spec
        host = (ds.x_train, ds.y_train, ds.x_val, ds.y_val)
        arrays = [jax.device_put(a, replicated) for a in host]
        placed = Placed(*arrays, device=jax.devices()[0], where=f"{mesh.size} devices")
        cw = s.training.class_weight
        prep, scaled, _ = preprocess_data(ds, placed, s.preprocess.normalize, False, cw)
        loaded[key(t)] = (ds, prep, scaled)
    for t in trials:
        t.dataset, t.prep, _ = loaded[key(t)]
    return loaded, mesh


def _stack(trials, loaded, key, per_trial: bool, mesh) -> tuple[jax.Array, ...]:
    if not per_trial:
        return next(iter(loaded.values()))[2].arrays
    shapes = {v[2].x_train.shape + v[2].x_val.shape for v in loaded.values()}
    if len(shapes) > 1:
        raise SpecError(
            "the swept seeds give training/validation splits of different sizes; sweep "
            "experiment.seed only where the split has a fixed size",
            key='sweep.values."experiment.seed"',
        )
    on_trials = NamedSharding(mesh, PartitionSpec("trial"))
    per = [loaded[key(t)][2].arrays for t in trials]
    return tuple(jax.device_put(jnp.stack(col), on_trials) for col in zip(*per, strict=True))


def _row(epoch: int, train: Any, val: Any, prep: Preprocessing, scores=None) -> dict[str, Any]:
    """metrics.jsonl's row, as a single run writes it (core.metrics.epoch_row)."""
    scale = prep.target_stats[1] if prep.regression else None
    return epoch_row(epoch, finalize(train), val, scale, scores)


def _scores(tp: TrialPrograms, probs: Any, y_val: np.ndarray | None, k: int):
    """Trial k's optional validation metrics (None when none are recorded). probs:
    [trials, rows, classes]; y_val: [rows], or [trials, rows] when each has its own."""
    if not tp.scored:
        return None
    y = y_val[k] if y_val.ndim == 2 else y_val
    return epoch_scores(probs[k], y, tp.scored)


def _take(tree: Any, k: int) -> Any:
    return jax.tree.map(lambda a: np.asarray(a[k]), tree)


def _record(t: TrialRun, row: dict[str, Any], params: Any, k: int) -> bool:
    """Records one trial's epoch; False when it diverged or stopped (mask it)."""
    for metric in ("train_loss", "val_loss"):
        if not math.isfinite(row[metric]):
            t.status = "diverged"
            t.diverged = {"epoch": row["epoch"], "metric": metric, "value": row[metric]}
            return False
    t.history.append(row)
    es = t.spec.training.early_stopping
    if t.stopper is not None and t.stopper.update(row["epoch"], row) and es.restore_best:
        t.best_params, t.params_epoch = _take(params, k), row["epoch"]
    return not (t.stopper is not None and t.stopper.should_stop)


def _epochs(tp: TrialPrograms, arrays, trials, epochs: int, on_epoch, signals) -> float:
    """The group's epochs; after each, a SIGINT / SIGTERM stops every trial still
    training (status "interrupted", its epochs so far kept)."""
    x_tr, y_tr, x_va, y_va = arrays
    active = np.ones(len(trials), bool)
    state, seconds = tp.state, 0.0
    y_host = np.asarray(jax.device_get(y_va)) if tp.scored else None
    for epoch in range(1, epochs + 1):
        if signals.caught:
            break  # before this epoch: what is done is written, promptly
        t0 = time.perf_counter()
        e = np.int32(epoch)  # a host scalar: jnp.asarray compiles a conversion first
        state, sums = tp.epoch(state, x_tr, y_tr, e, tp.inputs, tp.shard(active))
        val, probs = tp.evaluate(state.params, x_va, y_va), None
        if tp.scored:
            val, probs = val
        sums, val, probs = jax.device_get((sums, val, probs))  # the once-per-epoch host sync
        dt = time.perf_counter() - t0
        seconds += dt
        for k, t in enumerate(trials):
            if not active[k]:
                continue
            scores = _scores(tp, probs, y_host, k)
            row = _row(epoch, _take(sums, k), _take(val, k), t.prep, scores)
            row["epoch_seconds"] = dt
            active[k] = _record(t, row, state.params, k)
        on_epoch(epoch, epochs, [t for k, t in enumerate(trials) if active[k]])
        if not active.any():
            break
    params = jax.device_get(state.params)
    for k, t in enumerate(trials):
        # How it ended, worded as a single run's summary words it.
        status, t.stop = outcome(t.diverged, signals, t.stopper, len(t.history), epochs)
        t.status = status
        if t.best_params is None:
            t.params, t.params_epoch = _take(params, k), len(t.history)
        else:
            t.params = t.best_params
    return seconds


def costliest(trials: Sequence[TrialRun]) -> Spec:
    """The trial spec whose memory the group's program needs per trial: the largest
    dropout rate (the vmapped program draws dropout bits for every trial if any drops)."""
    return max(trials, key=lambda t: t.spec.model.dropout).spec


def _class_weights(trials: Sequence[TrialRun], per_trial: bool):
    """The group's class weights: (one set for all, None), or with `per_trial` data
    (folds) whose "balanced" weights differ, (None, [trials, classes] float32) as a
    program input."""
    weights = {t.prep.class_weights for t in trials}
    if len(weights) == 1:
        return weights.pop(), None
    if per_trial:
        return None, np.asarray([t.prep.class_weights for t in trials], np.float32)
    raise SpecError(
        '"balanced" fits each swept seed\'s split its own weights, and a group shares '
        "one program; give a table {label = weight}, or do not sweep experiment.seed",
        key="training.class_weight",
    )


def _device_count(n: int | str) -> int:
    """`[hardware] devices` as a count ("auto": every local device)."""
    return min(n, len(jax.devices())) if isinstance(n, int) else len(jax.devices())


def _refuse_streaming(chunk_rows: int | str, ds: Dataset) -> None:
    """A sweep keeps every trial's data on the device: a streamed run is refused, naming
    the key that made it stream (`chunk_rows`: `[data] chunk_rows`)."""
    if isinstance(chunk_rows, int):
        raise SpecError("a sweep keeps the data on the device; remove it", key="data.chunk_rows")
    if isinstance(ds.x_train, DiskRows):  # out of core: streamed from disk
        raise SpecError(
            "a sweep keeps the data on the device, and this set is larger than the host "
            "budget (streamed from disk); raise it or sweep on a sample of the files",
            key="data.host_memory",
        )
    raise SpecError(
        "a sweep keeps the data on the device, and the training split does not fit it "
        "beside a trial's state; sweep on fewer rows or larger devices",
        key="data.chunk_rows",
    )


def train_group(
    trials: list[TrialRun],
    input_keys: set[str],
    on_epoch: Callable[[int, int, Sequence[TrialRun]], None],
    on_split: Callable[[TrialSplit], None] | None = None,
    signals: SignalCatcher | None = None,
) -> tuple[TrialSplit, list[GroupRun]]:
    """Trains the group's trials in the fewest chunks whose trials × per-trial memory fit
    the devices (sweepplan.py), each chunk one program, one after another; fills in each
    TrialRun. Raises PlanError before any compile when one trial alone does not fit.
    Trials with a preset `dataset` (cross-validation's folds) each train on their own.
    `signals`: the sweep's catcher; once it has caught one, no further chunk starts (the
    chunks run are returned) and the running one stops after its epoch."""
    signals = signals or SignalCatcher()
    spec = trials[0].spec
    hosts: dict[int, Dataset] = {}
    ds = _host_data(trials[0], hosts)
    check_metric_names(
        spec.training, spec.checkpoint, spec.sweep, metric_names(ds.task == "regression")
    )
    # The program draws dropout bits when any trial drops out: plan the costliest trial.
    rp = plan_run(costliest(trials), ds)  # one trial's breakdown and steps per epoch
    # A data set's key per trial (a seed, a fold), or None when the trials share one.
    preset = all(t.dataset is not None for t in trials)
    seeds = [
        t.index if preset else t.spec.experiment.seed if SEED in input_keys else None
        for t in trials
    ]
    split = split_trials(rp.plan, seeds, _device_count(spec.hardware.devices))
    if rp.chunk:
        _refuse_streaming(spec.data.chunk_rows, ds)
    if on_split is not None:
        on_split(split)
    runs = []
    for c in split.chunks:
        if signals.caught:
            break
        runs.append(_train_chunk([trials[i] for i in c], input_keys, on_epoch, rp, hosts, signals))
    return split, runs


def _train_chunk(
    trials: list[TrialRun], input_keys: set[str], on_epoch, rp: RunPlan, hosts: dict, signals
) -> GroupRun:
    """One chunk of a group as one program (the trials share every shape). Trials whose
    `dataset` is preset (folds) each train on their own."""
    spec = trials[0].spec
    preset = all(t.dataset is not None for t in trials)
    seed_varies = SEED in input_keys and len({t.spec.experiment.seed for t in trials}) > 1
    per_trial = preset or seed_varies
    key = _data_key(preset, seed_varies)
    loaded, mesh = _load(trials, key, hosts)
    ds = trials[0].dataset
    arrays = _stack(trials, loaded, key, per_trial, mesh)
    es = spec.training.early_stopping
    for t in trials:
        t.stopper = EarlyStopper.from_spec(es) if es else None
    shared, each = _class_weights(trials, per_trial)
    inputs = trial_inputs([t.values for t in trials], input_keys)
    if each is not None:
        inputs[CLASS_WEIGHT] = each
    tp = compile_trials(
        Workload.of(spec),
        [t.spec.experiment.seed for t in trials],
        inputs,
        arrays,
        mesh=mesh,
        per_trial_data=per_trial,
        outputs=ds.outputs,
        task=ds.task,
        batch=rp.batch,
        total_steps=rp.total_steps,
        dropout_on=any(t.spec.model.dropout > 0 for t in trials),
        class_weights=shared,
        scored=requested_metrics(spec.model.task, spec.training, spec.checkpoint, spec.sweep)
        if ds.task == "classification"
        else (),
    )
    seconds = _epochs(tp, arrays, trials, spec.training.epochs, on_epoch, signals)
    return GroupRun(trials, tp.mesh.size, tp.seconds, seconds, per_trial)
