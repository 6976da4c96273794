"""`jaxpipe check`: what a team's CI asks of every spec in its repository. Each spec
is loaded and validated, its data read, and it is planned on the named hardware; with
`resume` / `sharding`, a shrunk copy of the run (two epochs, a strided slice of the data)
is trained to hold the resume and sharding invariants on simulated CPU devices.

The invariants of every spec run in one child process (jaxpipe.invariants.run_isolated),
so the device count is the one they need whatever this process started with.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxpipe import validate
from jaxpipe.check.invariants import run_isolated, with_overrides
from jaxpipe.data.shapes import data_shapes
from jaxpipe.data.sources import host_record, is_multi_path
from jaxpipe.errors import JaxpipeError
from jaxpipe.planner.plan import make_plan
from jaxpipe.signals import catch_signals
from jaxpipe.spec.experiment import Spec, load_spec

__all__ = ["StepResult", "SpecCheck", "check_specs", "format_checks", "shrink_spec"]

PLAN_ONLY = "# jaxpipe: plan-only"  # first line of a spec that is planned, never trained
STEPS = ("spec", "data", "plan", "resume", "sharding")
_GIB = 2**30


@dataclass(frozen=True)
class StepResult:
    """One check of one spec: status "pass", "fail" or "skip", and why."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SpecCheck:
    """Every check of one spec file, in STEPS order."""

    path: str
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status != "fail" for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "steps": [dataclasses.asdict(s) for s in self.steps],
        }


def _plan_only(path: str) -> bool:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().strip() == PLAN_ONLY


def _stride(rows: int, max_rows: int) -> int:
    return max(1, math.ceil(rows / max_rows))


def _slice_file(path: str, out_dir: str, max_rows: int) -> str:
    """A copy of the data file keeping every k-th row (so a file sorted by class keeps
    every class), at most `max_rows` rows; returns the copy's path."""
    out = os.path.join(out_dir, f"{len(os.listdir(out_dir))}-{os.path.basename(path)}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        pq.write_table(
            table.take(np.arange(0, table.num_rows, _stride(table.num_rows, max_rows))), out
        )
    elif ext == ".npz":
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        n = len(arrays.get("y", next(iter(arrays.values()))))
        k = _stride(n, max_rows)
        np.savez(
            out, **{name: a[::k] if a.ndim and len(a) == n else a for name, a in arrays.items()}
        )
    else:  # csv: through the csv module, so quoted fields survive as written
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        k = _stride(len(rows) - 1, max_rows)
        with open(out, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([rows[0], *rows[1::k]])
    return out


def shrink_spec(spec: Spec, work_dir: str, *, max_rows: int = 400, epochs: int = 2) -> Spec:
    """The spec cut down to check cheaply: `epochs` epochs over at most ~`max_rows` rows
    (synthetic rows capped; a data file replaced by a strided slice of it in `work_dir`).
    Model, optimizer, preprocessing and hardware stay as the spec has them."""
    d = spec.data
    sets = [f"training.epochs={epochs}"]
    if d.source == "synthetic":
        rows = min(d.synthetic.rows, max_rows)
        sets.append(f"data.synthetic.rows={rows}")
        if isinstance(d.validation, int):
            val = max(1, min(d.validation, rows // 4))
            sets.append(f"data.validation={val}")
        else:
            val = round(rows * d.validation)
        train_rows = rows - val
    elif is_multi_path(spec.resolve_path(d.path)):  # a folder or glob of files: kept whole
        train_rows = max_rows // 4
    else:
        path = _slice_file(spec.resolve_path(d.path), work_dir, max_rows)
        sets.append(f'data.path="{_toml_path(path)}"')
        if isinstance(d.validation, str):
            val_path = _slice_file(spec.resolve_path(d.validation), work_dir, max(8, max_rows // 4))
            sets.append(f'data.validation="{_toml_path(val_path)}"')
        train_rows = max_rows // 4  # a safe lower bound on the slice's training split
    if spec.training.batch_size > train_rows:
        sets.append(f"training.batch_size={max(1, train_rows)}")
    return with_overrides(spec, sets)


def _toml_path(path: str) -> str:
    return path.replace("\\", "\\\\").replace('"', '\\"')


def _static_checks(
    path: str, gpu: str | None, devices: int | None
) -> tuple[list[StepResult], Spec | None, bool]:
    """spec, data and plan: what needs no training. The spec is returned when all pass,
    with whether the plan found that its data streams from disk."""
    try:
        spec = load_spec(path)
    except JaxpipeError as e:
        return [StepResult("spec", "fail", str(e))], None, False
    steps = [StepResult("spec", "pass", spec.experiment.name)]
    try:
        notes = validate(spec)
    except JaxpipeError as e:
        return [*steps, StepResult("data", "fail", str(e))], None, False
    steps.append(StepResult("data", "pass", notes[0]))
    try:
        # The closed form alone: one compile per spec would slow a repository-wide check.
        plan = make_plan(spec, data_shapes(spec), gpu=gpu, devices=devices, fit=False, cards=False)
    except JaxpipeError as e:
        return [*steps, StepResult("plan", "fail", str(e))], None, False
    where = f"{plan.devices} × {plan.device}"
    if _plan_only(path) and gpu is None:  # declared too big to train here: reported only
        steps.append(StepResult("plan", "pass", f"plan-only; here: {plan.recommendation}"))
    elif plan.fits:
        need, usable = plan.per_device_bytes / _GIB, plan.usable_bytes_per_device / _GIB
        detail = f"fits {plan.strategy} on {where}: {need:.3g} of {usable:.3g} GiB per device"
        steps.append(StepResult("plan", "pass", detail))
    else:
        steps.append(StepResult("plan", "fail", f"on {where}: {plan.recommendation}"))
        return steps, None, False
    # The planner's plan carries no host record (api.plan adds it): ask the source.
    path = spec.resolve_path(spec.data.path) if spec.data.path else None
    host = host_record(path, spec.data.source, spec.data.host_memory)
    return steps, spec, bool(host.get("streams_from_disk"))


def check_specs(
    paths: Sequence[str],
    *,
    gpu: str | None = None,
    devices: int | None = None,
    resume: bool = False,
    sharding: int | None = None,
    max_rows: int = 400,
) -> list[SpecCheck]:
    """Checks each spec file (see the module docstring); one SpecCheck per path, in
    order. `sharding`: the device count the data and fsdp strategies must agree with
    one device on. Never raises for a bad spec: its failure is in the result. SIGINT /
    SIGTERM: RunInterrupted (exit 130 / 143) once the running check ends."""
    with catch_signals() as signals:
        results = _check_specs(paths, gpu, devices, resume, sharding, max_rows)
        signals.stop("while checking the specs")
    return results


def _check_specs(paths, gpu, devices, resume, sharding, max_rows) -> list[SpecCheck]:
    results = [SpecCheck(p) for p in paths]
    jobs: list[tuple[str, Spec, dict[str, Any]]] = []
    owners: list[tuple[SpecCheck, str]] = []
    needed = max(1, sharding or 1)
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as work:
        for result in results:
            result.steps, spec, streams = _static_checks(result.path, gpu, devices)
            wanted = [("resume", resume), ("sharding", bool(sharding))]
            for name, on in wanted:
                if not on:
                    continue
                why = _skip_reason(result, spec, streams, name)
                if why:
                    result.steps.append(StepResult(name, "skip", why))
                    continue
                small = shrink_spec(spec, work, max_rows=max_rows)
                kw = {"kill_after_epoch": 1} if name == "resume" else {"devices": sharding}
                jobs.append((name, small, kw))
                owners.append((result, name))
                own = small.hardware.devices
                needed = max(needed, own if isinstance(own, int) else 1)
        if jobs:
            for (result, name), out in zip(owners, run_isolated(jobs, needed)):
                error, secs = out["error"], out["seconds"]
                detail = error or _passed(name, sharding)
                result.steps.append(StepResult(name, "fail" if error else "pass", detail, secs))
    for result in results:
        result.steps.sort(key=lambda s: STEPS.index(s.name))
    return results


def _skip_reason(result: SpecCheck, spec: Spec | None, streams: bool, name: str) -> str:
    if spec is None:
        return "an earlier check failed"
    if _plan_only(result.path):
        return "plan-only spec: not trained"
    if spec.sweep is not None:  # trials keep no checkpoints and share one program's layout
        if name == "resume":
            return "a sweep is not resumable: an interrupted sweep is run again"
        return "a sweep lays its trials over the devices; run its trials' specs alone to check"
    if name == "sharding" and streams:
        return "streamed from disk: the row order depends on the device count"
    return ""


def _passed(name: str, sharding: int | None) -> str:
    if name == "resume":
        return "stopped after epoch 1 and resumed: bit-identical to the uninterrupted run"
    return f"data and fsdp over {sharding} devices match one device"


def format_checks(results: Sequence[SpecCheck]) -> str:
    """The results as a table (one row per spec, one column per check) followed by the
    reason for every failure."""
    names = [n for n in STEPS if any(s.name == n for r in results for s in r.steps)]
    width = max([4, *(len(r.path) for r in results)])
    mark = {"pass": "ok", "fail": "FAIL", "skip": "skip"}
    timed = any(s.seconds for r in results for s in r.steps)
    lines = ["spec".ljust(width) + "".join(f"  {n:<8}" for n in names) + ("  seconds" * timed)]
    for r in results:
        cells = {s.name: mark[s.status] for s in r.steps}
        row = r.path.ljust(width) + "".join(f"  {cells.get(n, '-'):<8}" for n in names)
        lines.append(row + (f"  {sum(s.seconds for s in r.steps):7.1f}" if timed else ""))
    lines = [line.rstrip() for line in lines]
    for r in results:
        for s in r.steps:
            if s.status == "fail":
                lines.append(f"FAIL {r.path} {s.name}: {s.detail}")
    passed = sum(r.ok for r in results)
    lines.append(f"{passed} of {len(results)} specs pass")
    return "\n".join(lines)
