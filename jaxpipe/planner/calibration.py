"""How far to trust the planner on your cards: each run's estimate beside XLA's figure
for the run's own compiled epoch and the peak the device measured (`summary.json`'s
`plan.per_device_bytes`, `plan.xla_epoch_bytes` and `plan.measured_peak_bytes`, from
`memory_stats()['peak_bytes_in_use']`), and the error distribution over the runs that
have a measurement. CPUs report no memory statistics: their runs are listed as having
none, with XLA's figure beside the estimate still. No jax: reads JSON files only."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

from jaxpipe.errors import JaxpipeError
from jaxpipe.files import read_json

__all__ = ["CalibrationRow", "read_calibration", "format_calibration"]


@dataclass(frozen=True)
class CalibrationRow:
    run_dir: str
    device: str | None
    strategy: str | None
    devices: int | None
    estimate_bytes: int | None
    measured_peak_bytes: int | None
    # XLA's per-device figure of the run's compiled epoch: the program alone (the estimate
    # adds the validation arrays, an undonated state's snapshots, a GPU's runtime).
    xla_epoch_bytes: int | None = None

    @property
    def error(self) -> float | None:
        """estimate / measured − 1 (positive: the planner asked for more than was used)."""
        if not self.estimate_bytes or not self.measured_peak_bytes:
            return None
        return self.estimate_bytes / self.measured_peak_bytes - 1.0


def _read(run_dir: str) -> CalibrationRow:
    path = os.path.join(run_dir, "summary.json")
    if not os.path.isdir(run_dir):
        raise JaxpipeError(f"{run_dir}: not a run directory (expected a `jaxpipe run --out` DIR)")
    try:
        summary = read_json(path)
    except FileNotFoundError:
        raise JaxpipeError(f"{path}: no summary.json (the run did not finish)") from None
    plan = summary.get("plan")
    if not isinstance(plan, dict):
        raise JaxpipeError(f"{path}: not a jaxpipe run's summary (no `plan` record)")

    def num(key: str) -> int | None:
        v = plan.get(key)
        return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    return CalibrationRow(
        run_dir,
        plan.get("device") if isinstance(plan.get("device"), str) else None,
        plan.get("strategy") if isinstance(plan.get("strategy"), str) else None,
        num("devices"),
        num("per_device_bytes"),
        num("measured_peak_bytes"),
        num("xla_epoch_bytes"),
    )


def read_calibration(run_dirs: list[str]) -> list[CalibrationRow]:
    """One row per run directory; a directory that is not a finished run is an error."""
    return [_read(d) for d in run_dirs]


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / 2**20:,.1f}"


def summarise(rows: list[CalibrationRow]) -> dict[str, Any]:
    errors = sorted(r.error for r in rows if r.error is not None)
    if not errors:
        return {"measured": 0, "runs": len(rows)}
    absolute = sorted(abs(e) for e in errors)
    p90 = absolute[min(len(absolute) - 1, int(0.9 * len(absolute)))]
    return {
        "measured": len(errors),
        "runs": len(rows),
        "median": statistics.median(errors),
        "mean_abs": statistics.fmean(absolute),
        "p90_abs": p90,
        "min": errors[0],
        "max": errors[-1],
        "under": sum(e < 0 for e in errors),
    }


def format_calibration(rows: list[CalibrationRow]) -> str:
    """The table and the error distribution, for the terminal."""
    head = ["run", "device", "layout", "estimate MiB", "XLA epoch MiB", "peak MiB", "error"]
    body = [
        [
            r.run_dir,
            r.device or "?",
            f"{r.strategy} × {r.devices}" if r.strategy else "?",
            _mib(r.estimate_bytes),
            _mib(r.xla_epoch_bytes),
            _mib(r.measured_peak_bytes),
            f"{r.error:+.1%}" if r.error is not None else "no measurement",
        ]
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in [head, *body]]
    s = summarise(rows)
    if not s["measured"]:
        lines.append(
            f"\nNo run of {s['runs']} has a measured peak (CPU devices report no memory "
            "statistics); run on a GPU to calibrate."
        )
        return "\n".join(lines)
    lines.append(
        f"\n{s['measured']} of {s['runs']} runs measured: error median {s['median']:+.1%}, "
        f"mean |error| {s['mean_abs']:.1%}, p90 |error| {s['p90_abs']:.1%},\n"
        f"range {s['min']:+.1%} … {s['max']:+.1%}; {s['under']} under-estimate(s) "
        "(error = estimate / measured peak − 1)"
    )
    return "\n".join(lines)
