"""Stage 2, plan: everything derived about a run, decided once from the spec and the
loaded data's exact shapes. Downstream stages read it; none re-decides it.

The planner's `Plan` says what fits; the `RunPlan` adds what executes: a run that only
fits by streaming its training rows ("auto") runs on one device even where the planner's
(non-fitting) choice was another layout; a run streamed by `data.chunk_rows` or from
disk keeps the chosen layout (its chunks are split over the mesh as batches are), and
the steps per epoch and per chunk follow from the batch and the rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from jaxpipe.core.step import steps_per_epoch
from jaxpipe.data.diskrows import DiskRows
from jaxpipe.data.load import Dataset
from jaxpipe.data.roworder import epoch_steps, lane_batch
from jaxpipe.data.shapes import data_shapes
from jaxpipe.errors import PlanError
from jaxpipe.parallel.sharding import Layout, make_layout, measured_bytes_per_device
from jaxpipe.planner.hardware import memory_stats
from jaxpipe.planner.options import recommendation
from jaxpipe.planner.plan import make_plan
from jaxpipe.planner.values import Plan, format_bytes
from jaxpipe.runner.cadence import held_in_memory
from jaxpipe.runner.stream import chunk_plan, steps_per_chunk
from jaxpipe.spec.experiment import Spec
from jaxpipe.spec.sections import CheckpointSpec, TrainingSpec
from jaxpipe.spec.strategy import Strategy

__all__ = [
    "RunPlan",
    "plan_run",
    "plan_record",
    "chunk_steps",
    "auto_chunk_rows",
    "undonated",
    "check_compiled",
]


@dataclass(frozen=True)
class RunPlan:
    """The resolved run: the planner's estimate and choice (`plan`), and what executes.

    `chunk` is the steps per streamed chunk of training rows, 0 when the training split
    stays resident on the device."""

    plan: Plan
    strategy: Strategy
    mesh: dict[str, int]
    layout: Layout
    batch: int
    steps_per_epoch: int
    epochs: int
    chunk: int
    precision: str
    lanes: int = 0  # a training split streamed from disk: its readers (roworder.py)
    donates: bool = True  # the epoch consumes its input state (`undonated`)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    @property
    def compute_dtype(self) -> Any:
        """The matmuls' dtype (`precision`)."""
        from jaxpipe.core.model import compute_dtype  # flax: not for `plan`'s import

        return compute_dtype(self.precision)


def auto_chunk_rows(chunk_rows: int | str, strategy: str, ds: Dataset, plan: Plan) -> int | None:
    """Rows per streamed chunk when `data.chunk_rows = "auto"` and only streaming the
    training split makes the run fit one device; else None. `chunk_rows`: `[data]
    chunk_rows`; `strategy`: `[hardware] strategy` (only "auto" or single streams)."""
    if plan.fits or chunk_rows != "auto":
        return None
    if strategy not in ("auto", Strategy.SINGLE):
        return None
    single = plan.single
    if single is None:
        return None
    train = ds.x_train.nbytes + ds.y_train.nbytes
    # What stays on the device besides the training rows: model, optimizer, activations,
    # workspace and the (resident) validation split.
    budget = plan.usable_bytes_per_device - (single.per_device_bytes - train)
    if budget <= 0:
        return None
    rows = chunk_plan(train, budget, ds.x_train.shape[0])
    return rows if rows < ds.x_train.shape[0] else None


def chunk_steps(chunk_rows: int | str, batch: int, steps: int) -> int:
    """Steps per streamed chunk, or 0 for the resident path ("auto", or a chunk that
    would hold the whole epoch anyway)."""
    if chunk_rows == "auto":
        return 0
    per = steps_per_chunk(int(chunk_rows), batch, steps)
    return 0 if per >= steps else per


def plan_run(spec: Spec, ds: Dataset) -> RunPlan:
    """The run's plan from the loaded data's exact shapes. Raises PlanError (exit 2, with
    the plan table) when the chosen or forced strategy does not fit and streaming cannot
    rescue it. Builds the mesh: too few devices fail here, before the run directory
    exists."""
    plan = make_plan(spec, data_shapes(spec, ds), cards=False)
    if isinstance(ds.x_train, DiskRows):
        return _plan_disk(spec.training, spec.checkpoint, spec.data.chunk_rows, ds, plan)
    rows = auto_chunk_rows(spec.data.chunk_rows, spec.hardware.strategy, ds, plan)
    if not plan.fits and rows is None:
        forced = spec.hardware.strategy
        what = f"[hardware] strategy = {forced!r}" if forced != "auto" else "the run"
        raise PlanError(f"{what} {plan.recommendation}", plan=plan)
    batch = spec.training.batch_size
    steps = steps_per_epoch(ds.x_train.shape[0], batch)
    chunk = chunk_steps(rows or spec.data.chunk_rows, batch, steps)
    strategy, mesh = plan.strategy, dict(plan.mesh)
    if rows is not None and math.prod(mesh.values()) > 1:
        strategy, mesh = (
            Strategy.SINGLE,
            Strategy.SINGLE.mesh(),
        )  # the budget was the one-device candidate's
    return _run_plan(spec.training, spec.checkpoint, plan, strategy, mesh, steps, chunk)


def undonated(plan: Plan, keep: int) -> Plan | None:
    """The plan of a run whose epoch keeps its input state (not donated), or None when
    the epoch should donate it. A small state (`keep` snapshots of it within the
    checkpoints' in-memory budget, cadence.py) is kept: checkpoints then hold the states
    themselves, no copies. The device holds more than the donated program needs, and the
    plan says so: the epoch's fresh output state (the no-donation figure) and
    up to `keep` snapshots (a bound: one of them is the epoch's input when the cadence
    snapshots every epoch; at most the 64 MiB budget). Where that would not fit, the
    state is donated and its snapshots go to host memory instead."""
    b = plan.breakdown
    state = b.get("params", 0) + b.get("optimizer", 0)
    if not held_in_memory(state, keep):
        return None
    extra = {
        "output state": max(state, plan.per_device_bytes_no_donation - plan.per_device_bytes),
        "snapshots": keep * state,
    }
    need = plan.per_device_bytes + sum(extra.values())
    if need > plan.usable_bytes_per_device:
        return None
    return _restated(replace(plan, per_device_bytes=need, breakdown=dict(b) | extra), plan)


def _restated(kept: Plan, plan: Plan) -> Plan:
    """`kept` with every figure of the chosen layout saying the run's need: its candidate
    row, its option (and the cheapest/fastest copies), the recommendation. Other layouts
    keep their programs' figures (3.0 MiB in the table beside a 4.1 MiB verdict: "the
    plan says 3.0 MiB and the run header 4.1 MiB")."""
    need, usable = kept.per_device_bytes, kept.usable_bytes_per_device

    def chosen(x: Any, device: bool = False) -> bool:
        same = x.strategy is plan.strategy and x.devices == plan.devices
        return same and (not device or (x.device == plan.device and x.nodes == 1))

    candidates = tuple(
        replace(c, per_device_bytes=need, fits=need <= usable, headroom_bytes=usable - need)
        if chosen(c)
        else c
        for c in plan.candidates
    )
    options = tuple(
        replace(o, per_device_bytes=need, fits=need <= o.usable_bytes_per_device)
        if chosen(o, device=True)
        else o
        for o in plan.options
    )
    again = {id(o): n for o, n in zip(plan.options, options)}
    # The estimate's sentence, made again on the run's need. One about XLA's figure
    # (--verify, settle) or a layout that does not exist quotes no estimate: it stays.
    text = plan.recommendation
    if plan.verify is None and plan.no_layout is None:
        text = recommendation(plan.strategy, plan.devices, need, usable, plan.device, options)
    return replace(
        kept,
        candidates=candidates,
        options=options,
        recommendation=text,
        cheapest=again.get(id(plan.cheapest), plan.cheapest),
        fastest=again.get(id(plan.fastest), plan.fastest),
    )


def _run_plan(
    training: TrainingSpec,
    checkpoint: CheckpointSpec,
    plan: Plan,
    strategy: Strategy,
    mesh: dict,
    steps: int,
    chunk: int,
    lanes=0,
):
    kept = None if chunk else undonated(plan, checkpoint.keep)  # streamed: donated
    return RunPlan(
        plan=kept or plan,
        strategy=strategy,
        mesh=mesh,
        layout=make_layout(strategy, mesh),
        batch=training.batch_size,
        steps_per_epoch=steps,
        epochs=training.epochs,
        chunk=chunk,
        precision=training.precision,
        lanes=lanes,
        donates=kept is None,
    )


def _plan_disk(
    training: TrainingSpec,
    checkpoint: CheckpointSpec,
    chunk_rows: int | str,
    ds: Dataset,
    plan: Plan,
) -> RunPlan:
    """A training split on disk always streams, on the plan's layout. The plan counted
    it resident: without it, the model, validation rows and two chunks must fit."""
    rows: DiskRows = ds.x_train
    # One lane per device of the mesh, however many processes share it.
    lanes = max(1, math.prod(plan.mesh.values()))
    per_lane = lane_batch(training.batch_size, lanes)
    steps = epoch_steps(rows.lane_rows(lanes), per_lane)
    if chunk_rows == "auto":  # two chunks within the smaller of both budgets
        devices = max(1, math.prod(plan.mesh.values()))
        budget = plan.usable_bytes_per_device - (plan.per_device_bytes - rows.nbytes // devices)
        width = per_lane * lanes * (rows.shape[1] + 2) * 4  # one global batch's bytes
        budget = min(budget * devices, max(rows.chunk_budget(), 2 * width))
        if budget <= 0:
            raise PlanError(f"the run {plan.recommendation}", plan=plan)
        chunk_rows = chunk_plan(rows.nbytes, budget, rows.shape[0])
    per = steps_per_chunk(int(chunk_rows), per_lane * lanes, steps)
    return _run_plan(training, checkpoint, plan, plan.strategy, dict(plan.mesh), steps, per, lanes)


def plan_record(
    rp: RunPlan, device: Any, placed: Any = None, xla_bytes: int | None = None
) -> dict[str, Any]:
    """summary.json's `plan`: the prediction, the placed arrays' largest per-device
    footprint read back from their shards, XLA's per-device figure of the run's own
    compiled epoch (`xla_epoch_bytes`: the program alone, without the validation arrays,
    snapshots or a GPU's runtime), where the backend reports it the measured peak, and
    what executed where it differs from the plan's choice (under `planned`)."""
    plan = rp.plan
    peak = memory_stats(device).get("peak_bytes_in_use")
    record = {
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
        "xla_epoch_bytes": xla_bytes,
        "donated": rp.donates,
    }
    if rp.strategy == record["strategy"] and rp.mesh == record["mesh"]:
        return record
    planned = {k: record[k] for k in ("strategy", "devices", "mesh")}
    return record | {
        "strategy": rp.strategy,
        "devices": math.prod(rp.mesh.values()),
        "mesh": dict(rp.mesh),
        "planned": planned,
    }


def check_compiled(rp: RunPlan, xla_bytes: int | None) -> None:
    """The run's go/no-go on a held figure: XLA's per-device bytes of the epoch it just
    compiled, plus what lives beside the program (the validation arrays, an undonated
    state's snapshots, a GPU's runtime), against the usable memory, before the first
    step. Raises PlanError (exit 2) naming what would fit when it does not fit; nothing
    for a streamed run (its chunks are not one program's arguments)."""
    plan = rp.plan
    if xla_bytes is None or rp.chunk:
        return
    s, b = plan.shapes, plan.breakdown
    beside = s.val_rows * (s.features + 1) * 4 + b.get("snapshots", 0) + b.get("runtime", 0)
    need = xla_bytes + beside
    usable = plan.usable_bytes_per_device
    if need <= usable:
        return
    fits = [o for o in plan.options if o.fits and o.per_device_bytes < need]
    where = (
        "; would fit: " + "; ".join(f"{o.strategy} over {o.devices} × {o.device}" for o in fits[:3])
        if fits
        else "; lower training.batch_size or the model's widths"
    )
    refused = replace(plan, fits=False, per_device_bytes=need, source="xla")
    raise PlanError(
        f"the compiled epoch does not fit {rp.strategy} over {math.prod(rp.mesh.values())}: "
        f"XLA needs {format_bytes(need)} per device (the program {format_bytes(xla_bytes)} and "
        f"{format_bytes(beside)} beside it) of {format_bytes(usable)} usable per {plan.device}, where the "
        f"plan estimated {format_bytes(plan.per_device_bytes)}{where}",
        plan=refused,
    )
