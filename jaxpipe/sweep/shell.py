"""A sweep: the spec's `[sweep]` expanded into trials, the trials grouped by the program
they need (one compiled program per group, trials vmapped in it: see trials.py), and the
sweep directory written:

    DIR/trials/<k>/   a normal run directory per trial (spec.toml with its values,
                      metrics.jsonl, curves.png, model, summary.json)
    DIR/sweep.jsonl   {"trial": k, "values": {...}, "final": {...}, "best": {...}}
    DIR/summary.json  the leaderboard; DIR/sweep.png the metric against each value
    DIR/model.msgpack, predictor.json: the best trial's model (predict/evaluate/trace)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jaxpipe.core.aot import enable_compilation_cache
from jaxpipe.core.evaluation import metric_names
from jaxpipe.core.optim import check_optimizer
from jaxpipe.data.shapes import data_shapes
from jaxpipe.errors import DivergedError, PlanError, RunInterrupted, SpecError
from jaxpipe.events import Observer, RunResult
from jaxpipe.files import atomic_write
from jaxpipe.planner.plan import make_plan
from jaxpipe.planner.sweep import TrialSplit, split_trials
from jaxpipe.planner.values import Plan, format_bytes
from jaxpipe.runner.outdir import prepare_out_dir, write_json, write_lines
from jaxpipe.runner.stopping import check_metric_names
from jaxpipe.runner.summary import device_info
from jaxpipe.saved.predict import save_predictor
from jaxpipe.saved.trace import save_trace_rows
from jaxpipe.signals import SIGNAL_EXIT, SignalCatcher, catch_signals
from jaxpipe.spec import schema
from jaxpipe.spec.experiment import Spec, dump_spec
from jaxpipe.spec.sections import OPTIONAL_METRICS
from jaxpipe.spec.sweep import SweepSpec, expand_trials, value_key
from jaxpipe.sweep.train import GroupRun, TrialRun, costliest, train_group
from jaxpipe.sweep.trials import SEED, group_key, is_input_key

__all__ = [
    "SweepResult",
    "run_sweep",
    "trial_spec",
    "plan_trials",
    "leaderboard",
    "sweep_plan",
]


@dataclass
class SweepResult:
    """What `run_sweep` returns: the ranked table (best first), every trial, the best
    trial as a RunResult (its model is also saved at the sweep directory's top)."""

    run_dir: str
    table: list[dict[str, Any]]
    trials: list[TrialRun]
    best: RunResult | None
    summary: dict[str, Any]


def _set(table: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = table
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError(f"{part} is a value, not a table", key=value_key(key))
    node[parts[-1]] = schema.plain(value)


def trial_spec(spec: Spec, values: dict[str, Any]) -> Spec:
    """The spec of one trial: `spec` without [sweep], with `values` filled in, checked as
    a file is; an error names the swept key (sweep.values."optimizer.lr"). An optional
    metric that ranks the trials (val_roc_auc) joins `[training] metrics`, so each
    trial, and the same trial run alone, records it."""
    table = schema.to_dict(spec)
    table.pop("sweep", None)
    ranked = spec.sweep.metric if spec.sweep is not None else None
    training = table.setdefault("training", {})
    listed = list(training.get("metrics", ()))
    if ranked in OPTIONAL_METRICS[spec.model.task] and ranked not in listed:
        training["metrics"] = [*listed, ranked]
    for key, value in values.items():
        _set(table, key, value)
    try:
        trial = Spec.from_dict(table, base_dir=spec.base_dir)
        check_optimizer(trial.optimizer)
    except SpecError as e:
        bad = next((k for k in values if e.key and (e.key == k or e.key.startswith(k))), None)
        bad = bad or next((k for k in values if k.startswith("optimizer")), next(iter(values)))
        raise SpecError(
            f"value {values[bad]!r}: {e.key or 'spec'}: {e.detail}",
            key=value_key(bad),
            file=spec.source,
        ) from None
    return trial


def plan_trials(spec: Spec, force: bool = False) -> tuple[list[list[TrialRun]], set[str]]:
    """The trials, grouped by program (input keys vary within a group), and the swept
    keys that are program inputs. Every trial's spec is checked before any work."""
    try:
        values = expand_trials(spec.sweep, force)
    except SpecError as e:
        raise SpecError(e.detail, key=e.key, file=spec.source) from None
    trials = [TrialRun(k, trial_spec(spec, v), v) for k, v in enumerate(values)]
    keys = set(spec.sweep.values)
    inputs = {k for k in keys if is_input_key(k, [v[k] for v in values])}
    groups: dict[tuple, list[TrialRun]] = {}
    for t in trials:
        groups.setdefault(group_key(t.values, inputs), []).append(t)
    return list(groups.values()), inputs


def sweep_plan(spec: Spec, plan: Plan, gpu: str | None, devices: int | None) -> Plan:
    """`plan` for a [sweep] spec: `plan` (the base spec's) with the trial count and, over
    every group, the chunks and the largest chunk's per-device need (sweepplan.py); it
    fits when one trial of every group fits one device."""
    groups, inputs = plan_trials(spec, force=True)
    info = {"trials": sum(len(g) for g in groups), "groups": len(groups), "chunks": 0,
            "largest_chunk_trials": 0, "per_device_bytes": 0, "fits": True}  # fmt: skip
    for group in groups:
        trial = costliest(group)
        p = make_plan(trial, data_shapes(trial), gpu=gpu, devices=devices, cards=False)
        seeds = [t.spec.experiment.seed if SEED in inputs else None for t in group]
        try:
            split = split_trials(p, seeds, p.available_devices or 1)
        except PlanError:
            info["fits"] = False
            one = p.single.per_device_bytes
            info["per_device_bytes"] = max(info["per_device_bytes"], one)  # one trial alone
            continue
        info["chunks"] += len(split.chunks)
        info["largest_chunk_trials"] = max(info["largest_chunk_trials"], len(split.chunks[0]))
        info["per_device_bytes"] = max(info["per_device_bytes"], split.per_device_bytes)
    return dataclasses.replace(plan, sweep=info, fits=plan.fits and info["fits"])


def _best_row(history: Sequence[dict[str, Any]], metric: str, mode: str) -> dict | None:
    rows = [r for r in history if metric in r]
    if not rows:
        return None
    pick = min if mode == "min" else max
    return pick(rows, key=lambda r: r[metric])


def leaderboard(trials: Sequence[TrialRun], metric: str, mode: str) -> list[dict[str, Any]]:
    """sweep.jsonl's rows, ranked: best `metric` first, diverged trials last."""
    rows = []
    for t in trials:
        best = _best_row(t.history, metric, mode)
        final = t.history[-1] if t.history else None
        rows.append(
            {"trial": t.index, "values": t.values, "status": t.status, "final": final, "best": best}
        )
    sign = 1.0 if mode == "min" else -1.0

    def rank(r: dict[str, Any]) -> tuple:
        ok = r["status"] == "completed" and r["best"] is not None
        return (not ok, sign * r["best"][metric] if ok else 0.0, r["trial"])

    return sorted(rows, key=rank)


def _trial_summary(t: TrialRun, metric: str, mode: str, group: GroupRun) -> dict[str, Any]:
    prep, ds = t.prep, t.dataset
    return {
        "status": t.status,
        "name": t.spec.experiment.name,
        "seed": t.spec.experiment.seed,
        "trial": t.index,
        "values": t.values,
        "final": t.history[-1] if t.history else None,
        "best": _best_row(t.history, metric, mode),
        "stop": t.stop,
        "params_epoch": t.params_epoch,
        "diverged": t.diverged and t.diverged | {"value": str(t.diverged["value"])},
        "task": prep.task,
        "classes": list(prep.classes),
        "features": list(prep.features),
        "rows": {"train": int(ds.x_train.shape[0]), "validation": int(ds.x_val.shape[0])},
        "scaler": prep.scaler_json(),
        "sweep": {"trials_in_program": len(group.trials), "devices": group.devices},
        "device": device_info(),
    }


def _write_trial(t: TrialRun, run_dir: str, metric: str, mode: str, group: GroupRun) -> None:
    os.makedirs(run_dir, exist_ok=True)
    atomic_write(os.path.join(run_dir, "spec.toml"), dump_spec(t.spec.resolved()))
    write_lines(os.path.join(run_dir, "metrics.jsonl"), t.history)
    if t.status == "completed":
        save_predictor(run_dir, t.params, t.spec.model, t.prep, t.dataset.outputs)
        save_trace_rows(run_dir, t.dataset.x_val, t.dataset.y_val)
    write_json(os.path.join(run_dir, "summary.json"), _trial_summary(t, metric, mode, group))


def _on_epoch(obs: Observer, total: int):
    def report(epoch: int, epochs: int, active: Sequence[TrialRun]) -> None:
        obs.on_note(f"  epoch {epoch}/{epochs}: {len(active)} trial(s) still training")

    return report


def run_sweep(
    spec: Spec, out: str | None = None, observer: Observer | None = None, *, force: bool = False
) -> SweepResult:
    """Runs every trial of `spec.sweep` and writes the sweep directory (see the module
    docstring). Bad sweeps raise SpecError naming the key before any work.

    The run's contracts hold: the directory's lock for the whole sweep (RunDirectoryBusy
    if another run holds it; a directory holding another run is refused); SIGINT /
    SIGTERM only recorded, and acted on after the current epoch: the trials so far are
    written, summary.json says "interrupted", and RunInterrupted (exit 130 / 143) is
    raised. Every trial diverged: summary.json says "diverged", DivergedError (exit 3)."""
    with catch_signals() as signals, contextlib.ExitStack() as stack:
        return _sweep(spec, out, observer or Observer(), force, signals, stack)


def _sweep(spec: Spec, out, obs: Observer, force: bool, signals: SignalCatcher, stack):
    t0 = time.perf_counter()
    groups, inputs = plan_trials(spec, force)
    try:  # the ranking metric is one this task records (val_rmse: regression only)
        check_metric_names(
            spec.training,
            spec.checkpoint,
            spec.sweep,
            metric_names(spec.model.task == "regression"),
        )
    except SpecError as e:
        raise spec.origin.place(e) from None
    enable_compilation_cache(spec.runtime)
    sweep = spec.sweep
    signals.check("while planning the sweep")
    run_dir = prepare_out_dir(spec.experiment.name, out, stack=stack, sweep=True)
    text = spec.text if spec.text is not None else dump_spec(spec)
    atomic_write(os.path.join(run_dir, "spec.toml"), text)
    n = sum(len(g) for g in groups)
    obs.on_start(spec, run_dir)
    obs.on_note(f"Sweep: {n} trials in {len(groups)} program(s) → {run_dir}")
    runs: list[GroupRun] = []
    splits: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        if signals.caught:
            break
        indices = [t.index for t in group]
        note = _split_note(obs, i, len(groups), indices, splits)
        split, chunk_runs = train_group(group, inputs, _on_epoch(obs, n), note, signals)
        for run in chunk_runs:
            for t in run.trials:
                if t.status == "interrupted" and not t.history:
                    continue  # stopped before its first epoch: nothing of it to write
                _write_trial(t, os.path.join(run_dir, "trials", str(t.index)), sweep.metric,
                             sweep.better, run)  # fmt: skip
                obs.on_trial(t.index, t.values, t.history)
                if t.history:  # curves.png
                    obs.on_trial_artifacts(os.path.join(run_dir, "trials", str(t.index)), t.history)
        runs += chunk_runs
    if signals.caught and not any(t.history for g in runs for t in g.trials):
        signals.check("before the first epoch of the sweep")  # nothing trained: no summary
    every = sorted((t for g in groups for t in g), key=lambda t: t.index)
    return _finish(
        spec.experiment.name,
        spec.sweep,
        run_dir,
        runs,
        every,
        time.perf_counter() - t0,
        obs,
        splits,
        signals,
    )


def _split_note(obs: Observer, i: int, count: int, indices: list[int], splits: list):
    """The one console line about a group's split, and its summary.json record."""

    def note(split: TrialSplit) -> None:
        splits.append(split.record(indices))
        k = len(split.chunks)
        how = f"in {k} chunks of ≤{len(split.chunks[0])}, one after another" if k > 1 else ""
        obs.on_note(
            f"program {i + 1}/{count}: {len(indices)} trials {how}".rstrip()
            + f" ({format_bytes(split.per_device_bytes)} per device, "
            f"{format_bytes(split.usable_bytes_per_device)} usable)"
        )

    return note


def _finish(
    name: str,
    sweep: SweepSpec,
    run_dir: str,
    runs: list[GroupRun],
    every: list[TrialRun],
    seconds: float,
    obs: Observer,
    splits: list,
    signals: SignalCatcher,
):
    """The sweep's end: the table, the best trial's model and summary.json. `name`:
    `[experiment] name`."""
    ran = {t.index for g in runs for t in g.trials}
    for t in every:
        if t.index not in ran:  # its group never started: a signal came first
            t.status, t.stop = "interrupted", {"epoch": 0, "reason": f"{signals.name} received"}
    trials = every
    table = leaderboard(trials, sweep.metric, sweep.better)
    write_lines(os.path.join(run_dir, "sweep.jsonl"), [
        {k: r[k] for k in ("trial", "values", "final", "best")} for r in table
    ])  # fmt: skip
    interrupted = any(t.status == "interrupted" for t in trials)
    best = next((trials[r["trial"]] for r in table if r["status"] == "completed"), None)
    if interrupted:
        best = None  # an unfinished sweep ranks no best model: its trials' are in trials/
    if best is not None:
        save_predictor(run_dir, best.params, best.spec.model, best.prep, best.dataset.outputs)
        save_trace_rows(run_dir, best.dataset.x_val, best.dataset.y_val)  # jaxpipe trace DIR
        write_lines(os.path.join(run_dir, "metrics.jsonl"), best.history)
        obs.on_artifacts(run_dir, best.history)  # curves.png (and trackers' artifacts)
    else:
        write_lines(os.path.join(run_dir, "metrics.jsonl"), [])  # `compare` reads one
    status = "interrupted" if interrupted else "completed" if best is not None else "diverged"
    summary = _sweep_summary(name, sweep, status, best, table, runs, splits, seconds)
    if interrupted:
        done = max((len(t.history) for t in trials), default=0)
        summary["stop"] = {"epoch": done, "reason": f"{signals.name} received"}
    write_json(os.path.join(run_dir, "summary.json"), summary)
    obs.on_sweep(run_dir, table, list(sweep.values), sweep.metric)  # sweep.png, the table
    if interrupted:
        finished = sum(t.status != "interrupted" for t in trials)
        raise RunInterrupted(
            f"interrupted by {signals.name}: {finished} of {len(trials)} trials finished, "
            f"written to {run_dir}/trials/ (summary.json status interrupted); a sweep "
            "cannot be resumed: run it again with another --out",
            SIGNAL_EXIT[signals.signum],
        )
    if best is None:
        raise DivergedError(
            f"every trial of the sweep diverged (see {run_dir}/summary.json); lower the "
            "learning rate or check the data"
        )
    obs.on_note(f"Best: trial {best.index} {best.values}; its model is in {run_dir}/")
    result = RunResult(best.history, best.history[-1], best.params, run_dir, summary, [],
                       best.prep.to_host())  # fmt: skip
    obs.on_finish(result)  # the best trial's epochs and trace; trackers close
    return SweepResult(run_dir, table, trials, result, summary)


def _sweep_summary(
    name: str, sweep: SweepSpec, status: str, best: TrialRun | None, table, runs, splits, seconds
):
    """The sweep directory's summary.json: the leaderboard, each program's trials and
    times; the best trial's task, classes, features, rows and scaler (for predict)."""
    summary = {
        "status": status,
        "kind": "sweep",
        "name": name,
        "metric": sweep.metric,
        "mode": sweep.better,
        "best_trial": best.index if best else None,
        "final": best.history[-1] if best else None,
        "leaderboard": table,
        "programs": [g.record("trials") for g in runs],
        "sweep": {"groups": splits},
        "seconds": seconds,
        "device": device_info(),
    }
    if best is not None:
        summary |= {k: v for k, v in _trial_summary(best, sweep.metric, sweep.better, runs[0]).items()
                    if k in ("task", "classes", "features", "rows", "scaler")}  # fmt: skip
    return summary
