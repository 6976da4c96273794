"""What must hold of any experiment, as functions over a spec that raise AssertionError
with a readable diff: a resume is exact, sharding changes nothing, the memory plan
matches the compiler, a run repeats itself, predict agrees with evaluate.

They run real (small) trainings through the public API, so give them shrunk specs
(`jaxpipe check` shrinks for you). An invariant that needs more devices than this
process has runs in a child process on simulated CPU devices: XLA fixes the device
count when jax starts, so it cannot be raised in a process that already has one.
No hypothesis here: `jaxpipe check` works without the `testing` extra.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxpipe import settings
from jaxpipe.api import plan as plan_run
from jaxpipe.api import run
from jaxpipe.data.load import load_dataset
from jaxpipe.errors import RunInterrupted
from jaxpipe.saved.predict import load_predictor, predict_rows
from jaxpipe.spec.experiment import Spec, dump_spec, load_spec, parse_spec

__all__ = [
    "check_resume_exact",
    "check_sharding_equivalent",
    "check_plan_matches_compiler",
    "check_deterministic",
    "check_predict_matches_evaluate",
    "with_overrides",
    "run_isolated",
]

SpecLike = Spec | str | os.PathLike
_MAX_LINES = 12


def _spec(spec: SpecLike) -> Spec:
    return spec if isinstance(spec, Spec) else load_spec(spec)


def with_overrides(spec: SpecLike, overrides: Sequence[str]) -> Spec:
    """The spec with `--set`-style `KEY=VALUE` items applied (checked as `--set` is)."""
    spec = _spec(spec)
    return parse_spec(
        dump_spec(spec), file=spec.source or "<spec>", base_dir=spec.base_dir, overrides=overrides
    )


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "epoch_seconds"} for row in history]


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= atol + rtol * abs(b))


def diff_histories(got: list, want: list, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
    """One line per metric that differs: `epoch 2 val_loss: 0.41 != 0.40 (expected)`."""
    got, want = _strip(got), _strip(want)
    if [r.get("epoch") for r in got] != [r.get("epoch") for r in want]:
        return [f"epochs {[r.get('epoch') for r in got]} != {[r.get('epoch') for r in want]}"]
    lines = []
    for g, w in zip(got, want):
        for key in sorted(set(g) | set(w)):
            a, b = g.get(key), w.get(key)
            if a is None or b is None or not _close(float(a), float(b), rtol, atol):
                lines.append(f"epoch {w['epoch']} {key}: {a!r} != {b!r} (expected)")
    return lines


def diff_trees(got: Any, want: Any, rtol: float = 0.0, atol: float = 0.0) -> list[str]:
    """One line per leaf that differs: its path, how many elements, the largest gap."""
    got, want = jax.device_get(got), jax.device_get(want)
    if jax.tree.structure(got) != jax.tree.structure(want):
        return [f"tree structure {jax.tree.structure(got)} != {jax.tree.structure(want)}"]
    lines = []
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        a, b = np.asarray(a), np.asarray(b)
        where = jax.tree_util.keystr(path)
        if a.shape != b.shape or a.dtype != b.dtype:
            lines.append(f"{where}: {a.shape} {a.dtype} != {b.shape} {b.dtype} (expected)")
            continue
        bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if bad.any():
            gap = np.abs(a.astype(np.float64) - b.astype(np.float64))
            i = tuple(int(v) for v in np.unravel_index(np.argmax(np.where(bad, gap, -1)), a.shape))
            lines.append(
                f"{where}: {int(bad.sum())} of {a.size} elements differ; largest at {list(i)}: "
                f"{a[i].item()!r} != {b[i].item()!r} (expected)"
            )
    return lines


def _fail_if(lines: list[str], title: str) -> None:
    if lines:
        more = f"\n  ... and {len(lines) - _MAX_LINES} more" if len(lines) > _MAX_LINES else ""
        raise AssertionError(f"{title}\n  " + "\n  ".join(lines[:_MAX_LINES]) + more)


def _devices_needed(spec: Spec, devices: int = 1) -> int:
    own = spec.hardware.devices
    return max(devices, own if isinstance(own, int) else 1)


def _isolate_if_needed(
    name: str, spec: Spec, needed: int, kwargs: dict[str, Any], *, signals: bool = False
) -> bool:
    """Runs the check in a child process when this one has fewer than `needed` devices
    (or, for a check that signals itself, when this is not the main thread: only there
    does a run catch SIGTERM); True when it did (and it passed)."""
    off_main = signals and threading.current_thread() is not threading.main_thread()
    if jax.device_count() >= needed and not off_main:
        return False
    (result,) = run_isolated([(name, spec, kwargs)], needed)
    if result["error"]:
        raise AssertionError(result["error"])
    return True


class _TermAfter:
    """Sends this process SIGTERM once epoch `epoch` has run, as a scheduler would: the
    run writes its checkpoint and ends interrupted."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        if row["epoch"] == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


def check_resume_exact(spec: SpecLike, kill_after_epoch: int = 1) -> None:
    """A run stopped after epoch `kill_after_epoch` (SIGTERM: its checkpoint written, the
    run ended) and resumed reproduces the uninterrupted run bit for bit: every metric of
    every epoch and every final parameter."""
    spec = _spec(spec)
    if not 1 <= kill_after_epoch < spec.training.epochs:
        raise ValueError(
            f"kill_after_epoch must lie in [1, {spec.training.epochs - 1}] for a run of "
            f"{spec.training.epochs} epochs, found {kill_after_epoch}"
        )
    kwargs = {"kill_after_epoch": kill_after_epoch}
    if _isolate_if_needed("resume", spec, _devices_needed(spec), kwargs, signals=True):
        return
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as tmp:
        ref = run(spec, out=os.path.join(tmp, "ref"))
        out = os.path.join(tmp, "resumed")
        try:
            run(spec, out=out, callbacks=[_TermAfter(kill_after_epoch)])
        except RunInterrupted:
            pass
        else:
            raise AssertionError(f"the run was not interrupted after epoch {kill_after_epoch}")
        resumed = run(spec, out=out, resume=True)
    params = resumed.params
    title = f"resume after epoch {kill_after_epoch} is not exact (resumed != uninterrupted):"
    _fail_if(diff_histories(resumed.history, ref.history) + diff_trees(params, ref.params), title)


def check_sharding_equivalent(
    spec: SpecLike,
    strategies: Sequence[str] = ("data", "fsdp"),
    devices: int = 2,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> None:
    """The run under each of `strategies` over `devices` devices learns what the
    single-device run learns: metrics and final parameters within `rtol`/`atol` (fp32
    sums reduced across devices in another order differ by a few ulps a step)."""
    spec = _spec(spec)
    kwargs = {"strategies": list(strategies), "devices": devices, "rtol": rtol, "atol": atol}
    if _isolate_if_needed("sharding", spec, devices, kwargs):
        return
    one = ['hardware.strategy="single"', "hardware.devices=1"]
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as tmp:
        ref = run(with_overrides(spec, one), out=os.path.join(tmp, "single"))
        lines = []
        for s in strategies:
            on = [f'hardware.strategy="{s}"', f"hardware.devices={devices}"]
            got = run(with_overrides(spec, on), out=os.path.join(tmp, s.replace("+", "-")))
            found = diff_histories(got.history, ref.history, rtol, atol)
            found += diff_trees(got.params, ref.params, rtol, atol)
            lines += [f"{s} × {devices}: {line}" for line in found]
    _fail_if(lines, f"sharding changes the run (vs single device, rtol {rtol}, atol {atol}):")


def check_plan_matches_compiler(
    spec: SpecLike, strategy: str = "single", devices: int = 1, tolerance: float = 0.10
) -> None:
    """The planner's per-device memory estimate lies within `tolerance` (relative) of
    what XLA reports for the compiled epoch program (`jaxpipe plan --verify`)."""
    spec = _spec(spec)
    kwargs = {"strategy": strategy, "devices": devices, "tolerance": tolerance}
    if _isolate_if_needed("plan", spec, devices, kwargs):
        return
    on = [f'hardware.strategy="{strategy}"', f"hardware.devices={devices}"]
    plan = plan_run(with_overrides(spec, on), devices=devices, verify=True)
    estimate, xla, error = _verify_record(plan)
    if not abs(error) <= tolerance:
        raise AssertionError(
            f"memory estimate {estimate:,} B is {error:+.1%} off XLA's {xla:,} B for "
            f"{strategy} × {devices} (tolerance ±{tolerance:.0%}); estimate breakdown "
            f"{plan.breakdown}"
        )


def _verify_record(plan: Any) -> tuple[int, int, float]:
    """(estimate, XLA's bytes, relative error) from a verified plan: the planner's
    `verify` record when it has one, else the `xla` figures of the one-device compile."""
    rec = getattr(plan, "verify", None)
    if isinstance(rec, dict) and "xla_bytes" in rec:
        return int(rec["estimate_bytes"]), int(rec["xla_bytes"]), float(rec["error"])
    x = plan.xla
    return int(x["estimate"]), int(x["total_with_validation"]), float(x["relative_difference"])


def check_deterministic(spec: SpecLike) -> None:
    """Two runs of the same spec give bit-identical metrics and parameters."""
    spec = _spec(spec)
    if _isolate_if_needed("deterministic", spec, _devices_needed(spec), {}):
        return
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as tmp:
        a = run(spec, out=os.path.join(tmp, "a"))
        b = run(spec, out=os.path.join(tmp, "b"))
    lines = diff_histories(b.history, a.history) + diff_trees(b.params, a.params)
    _fail_if(lines, "two runs of the same spec differ (second != first):")


def check_predict_matches_evaluate(spec: SpecLike, *, rtol: float = 1e-5) -> None:
    """The saved model, applied by the predictor to the validation rows, scores what the
    run's own evaluation reported for the last epoch (accuracy or RMSE). A bfloat16 run
    evaluates in bfloat16 while the predictor computes in float32: a regression RMSE then
    differs by ~1e-4 relative, so give such specs a looser `rtol`."""
    spec = _spec(spec)
    if spec.training.early_stopping is not None and spec.training.early_stopping.restore_best:
        spec = with_overrides(spec, ["training.early_stopping.restore_best=false"])
    if _isolate_if_needed("predict", spec, _devices_needed(spec), {"rtol": rtol}):
        return
    ds = load_dataset(spec)  # the run's own split: the same seed and rows
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as tmp:
        result = run(spec, out=os.path.join(tmp, "run"))
        out = predict_rows(load_predictor(result.run_dir), ds.x_val)
    if ds.task == "regression":
        name, got = "val_rmse", float(np.sqrt(np.mean((out - ds.y_val) ** 2)))
    else:
        name, got = "val_accuracy", float(np.mean(np.argmax(out, axis=-1) == ds.y_val))
    want = result.final[name]
    if not _close(got, want, rtol, 1e-6):
        raise AssertionError(
            f"predict disagrees with evaluate on the {len(ds.y_val)} validation rows: "
            f"{name} {got!r} from predict != {want!r} from the run (rtol {rtol})"
        )


_CHECKS = {
    "resume": check_resume_exact,
    "sharding": check_sharding_equivalent,
    "plan": check_plan_matches_compiler,
    "deterministic": check_deterministic,
    "predict": check_predict_matches_evaluate,
}


def run_isolated(
    jobs: Sequence[tuple[str, Spec, dict[str, Any]]], devices: int
) -> list[dict[str, Any]]:
    """Runs (check name, spec, keyword arguments) jobs in one child process on `devices`
    simulated CPU devices; per job {"error": "" when it held else the failure,
    "seconds": its time in the child}."""
    payload = [
        {"check": name, "spec": dump_spec(s), "file": s.source, "base": s.base_dir, "kw": kw}
        for name, s, kw in jobs
    ]
    flags = [f for f in settings.xla_flags().split() if "device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    env = settings.environment() | {"XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    with tempfile.TemporaryDirectory(prefix="jaxpipe-check-") as tmp:
        # The runs of one check compile the same programs: a private compilation cache
        # compiles each once (a cached executable is the compiled one: results are equal).
        env |= {"JAXPIPE_COMPILATION_CACHE": "1", "JAXPIPE_CACHE_DIR": os.path.join(tmp, "xla")}
        jobs_path, out_path = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "out.json")
        with open(jobs_path, "w") as f:
            json.dump(payload, f)
        cmd = [sys.executable, "-m", "jaxpipe.check.invariants", jobs_path, out_path]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if p.returncode != 0 or not os.path.exists(out_path):
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-5:])
            error = f"the check process failed (exit {p.returncode}): {tail}"
            return [{"error": error, "seconds": 0.0} for _ in jobs]
        with open(out_path) as f:
            return json.load(f)


def _main(jobs_path: str, out_path: str) -> None:
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        spec = parse_spec(job["spec"], file=job["file"] or "<spec>", base_dir=job["base"])
        t0 = time.perf_counter()
        try:
            _CHECKS[job["check"]](spec, **job["kw"])
            error = ""
        except AssertionError as e:
            error = str(e)
        except Exception as e:  # a run that fails is a failed check, with its reason
            error = f"{type(e).__name__}: {e}"
        results.append({"error": error, "seconds": time.perf_counter() - t0})
    with open(out_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
