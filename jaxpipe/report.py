"""What the user sees: tables, an ASCII chart, the PNG curves and the console reporter
that listens to the loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from jaxpipe.loop import Observer, RunResult, StageRecord
from jaxpipe.model import layer_table, param_count
from jaxpipe.planner import Plan, format_bytes
from jaxpipe.spec import Spec
from jaxpipe.trace import TRACE_ROWS_FILE, trace_run
from jaxpipe.trace_view import format_trace, write_trace_png

__all__ = ["format_table", "ascii_chart", "write_curves", "ConsoleReporter", "format_plan"]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)
        ).rstrip()

    return "\n".join(
        [line(cells[0]), line(["-" * w for w in widths])] + [line(r) for r in cells[1:]]
    )


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


def ascii_chart(series: dict[str, Sequence[float]], height: int = 10, width: int = 50) -> str:
    """A line chart of one or more series against epoch, drawn with one marker each."""
    markers = "*o+x#"
    values = [v for s in series.values() for v in s]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    n = max(len(s) for s in series.values())
    cols = min(width, max(6 * n, 12))  # a few columns per epoch, so points stand apart
    grid = [[" "] * cols for _ in range(height)]
    for s, mark in zip(series.values(), markers):
        for i, v in enumerate(s):
            x = round(i * (cols - 1) / max(n - 1, 1))
            y = round((hi - v) / span * (height - 1))
            grid[y][x] = mark
    lines = []
    for r, row in enumerate(grid):
        label = hi - r * span / (height - 1)
        lines.append(f"{label:9.4f} |" + "".join(row))
    lines.append(" " * 10 + "+" + "-" * cols)
    lines.append(" " * 11 + f"epoch 1 … {n}")
    legend = "   ".join(f"{m} {name}" for name, m in zip(series, markers))
    lines.append(" " * 11 + legend)
    return "\n".join(lines)


def write_curves(history: Sequence[dict[str, Any]], path: str) -> None:
    """Loss and accuracy per epoch as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train")
    ax1.plot(epochs, [r["val_loss"] for r in history], marker="o", label="validation")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax1.legend()
    metric = "val_accuracy" if "val_accuracy" in history[0] else "val_rmse"
    ax2.plot(epochs, [r[metric] for r in history], marker="o", color="tab:green")
    ax2.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " "))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


class ConsoleReporter(Observer):
    """Prints the run for a person: spec in brief, progress, data flow, model, trace,
    chart, final metrics. Writes curves.png whether or not it prints."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = True):
        self.stream = stream or sys.stdout
        self.verbose = verbose
        self.stages: list[StageRecord] = []

    def _print(self, text: str = "") -> None:
        if self.verbose:
            print(text, file=self.stream, flush=True)

    def on_start(self, spec: Spec, run_dir: str) -> None:
        d, m, o, t = spec.data, spec.model, spec.optimizer, spec.training
        src = (
            d.path
            if d.source != "synthetic"
            else (
                f"synthetic {d.synthetic.rows} × {d.synthetic.features}, {d.synthetic.classes} classes"
            )
        )
        self._print(f"jaxpipe run: {spec.experiment.name} (seed {spec.experiment.seed})")
        self._print(
            f"  data       {d.source}: {src}; validation {d.validation}; "
            f"shuffle {str(d.shuffle).lower()}"
        )
        self._print(
            f"  preprocess {spec.preprocess.normalize}; missing values: {spec.preprocess.missing}"
        )
        extras = "".join(
            [
                f", dropout {m.dropout:g}" if m.dropout else "",
                ", layer norm" if m.layer_norm else "",
            ]
        )
        self._print(f"  model      {m.task} MLP hidden {list(m.hidden)}, {m.activation}{extras}")
        self._print(f"  optimizer  {o.name}, learning rate {o.learning_rate:g}")
        self._print(f"  training   {t.epochs} epochs, batch {t.batch_size}")
        self._print(f"  output     {run_dir}")
        self._print()

    def on_stage(self, stage: StageRecord) -> None:
        self.stages.append(stage)

    def on_plan(self, plan: Any) -> None:
        gib = 2**30
        self._print(
            f"Plan: {plan.strategy} over {plan.devices} {plan.device} device(s), "
            f"mesh {plan.mesh}, {plan.per_device_bytes / gib:.3f} GiB per device (estimate) "
            f"of {plan.usable_bytes_per_device / gib:.2f} GiB usable"
        )
        self._print()

    def on_model(self, params: Any) -> None:
        rows = layer_table(params)
        self._print("Model")
        self._print(
            format_table(
                ["layer", "shape", "parameters"], rows + [("total", "", param_count(params))]
            )
        )
        self._print()
        self._print("Training")

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        done = row["epoch"]
        bar = "#" * round(20 * done / epochs) + "-" * (20 - round(20 * done / epochs))
        metric = (
            ("val_accuracy", row["val_accuracy"])
            if "val_accuracy" in row
            else ("val_rmse", row["val_rmse"])
        )
        self._print(
            f"  [{bar}] epoch {done}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  {metric[0]} {metric[1]:.4f}  "
            f"{row['epoch_seconds']:.2f}s"
        )

    def on_note(self, text: str) -> None:
        self._print(f"  {text}")

    def on_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None:
        write_curves(history, os.path.join(run_dir, "curves.png"))

    def on_finish(self, result: RunResult) -> None:
        self._print()
        self._print("Data flow")
        self._print(
            format_table(
                ["stage", "input", "output", "seconds"],
                [(s.name, s.input, s.output, s.seconds) for s in self.stages],
            )
        )
        self._print()
        h = result.history
        metric = "val_accuracy" if "val_accuracy" in h[0] else "val_rmse"
        self._print("Epochs")
        self._print(
            format_table(
                ["epoch", "train loss", "val loss", metric.replace("_", " "), "seconds"],
                [
                    (r["epoch"], r["train_loss"], r["val_loss"], r[metric], r["epoch_seconds"])
                    for r in h
                ],
            )
        )
        self._print()
        self._print("Loss")
        self._print(
            ascii_chart(
                {"train": [r["train_loss"] for r in h], "validation": [r["val_loss"] for r in h]}
            )
        )
        self._print()
        final = ", ".join(
            f"{k} {v:.4f}"
            for k, v in result.final.items()
            if k not in ("epoch", "epoch_seconds") and isinstance(v, float)
        )
        self._print(f"Final (epoch {result.final['epoch']}): {final}")
        summary = result.summary
        if summary.get("classes"):
            self._print(f"Classes: {', '.join(summary['classes'])}")
        if "baseline" in summary:
            self._print(
                f"Baseline (predict the training mean): val_rmse "
                f"{summary['baseline']['val_rmse']:.4f}"
            )
        dropped = summary.get("rows", {}).get("dropped_missing")
        if dropped:
            self._print(f"Dropped {dropped} rows with missing values (preprocess.missing)")
        trace = _trace_first_row(result.run_dir)
        if trace is not None:
            self._print()
            self._print(format_trace(trace))
        self._print()
        self._print(
            f"Wrote {result.run_dir}/: spec.toml, metrics.jsonl, model.msgpack, "
            "predictor.json, summary.json, curves.png, trace.png, checkpoints/"
        )


def _trace_first_row(run_dir: str) -> dict[str, Any] | None:
    """The trace of the run's first validation row, drawn into trace.png; None where this
    process did not write the model (a secondary process of a multi-process run)."""
    import jax  # loaded already by the loop

    if jax.process_index() != 0 or not os.path.isfile(os.path.join(run_dir, TRACE_ROWS_FILE)):
        return None
    record = trace_run(run_dir)
    write_trace_png(record, os.path.join(run_dir, "trace.png"))
    return record


def _mesh(mesh: dict[str, int]) -> str:
    return " × ".join(f"{k}={v}" for k, v in mesh.items())


def format_plan(plan: Plan) -> str:
    """The plan as the terminal shows it (`jaxpipe plan`, and a run that does not fit)."""
    s = plan.shapes
    pool = format_bytes(plan.nominal_bytes_per_device)
    how = (
        f"{pool} × {plan.memory_fraction:g} (XLA_PYTHON_CLIENT_MEM_FRACTION) − "
        f"{format_bytes(plan.reserve_bytes)} runtime reserve"
    )
    lines = [
        f"Plan on {plan.device}: usable {format_bytes(plan.usable_bytes_per_device)} per device = {how}"
        f" [memory from {plan.memory_source}]",
        f"  data: {s.train_rows} train + {s.val_rows} validation rows × {s.features} features, "
        f"{f'{s.classes} classes' if s.task == 'classification' else 'regression'} "
        f"({s.source}); batch {plan.batch_size}, {plan.precision}",
        "",
        f"Per device under {plan.strategy} over {plan.devices} ({_mesh(plan.mesh)}):",
    ]
    for name, value in plan.breakdown.items():
        lines.append(f"  {name:<12} {format_bytes(value):>12}")
    lines.append(
        f"  {'total':<12} {format_bytes(plan.per_device_bytes):>12}   "
        f"(without donation: {format_bytes(plan.per_device_bytes_no_donation)})"
    )
    lines += ["", "Candidates (bytes per device):"]
    lines += [
        "  " + r
        for r in format_table(
            ["strategy", "devices", "mesh", "per device", "fits", "headroom"],
            [
                [
                    c.strategy,
                    str(c.devices),
                    _mesh(c.mesh),
                    format_bytes(c.per_device_bytes),
                    "yes" if c.fits else "no",
                    ("" if c.fits else "-") + format_bytes(abs(c.headroom_bytes)),
                ]
                for c in plan.candidates
            ],
        ).splitlines()
    ]
    fewest = ", ".join(f"{k} {v if v is not None else '—'}" for k, v in plan.min_devices.items())
    lines += ["", f"Fewest devices that fit: {fewest}"]
    r = plan.roofline
    if r is not None:
        lines.append(
            f"Estimated time on {r.device} (roofline lower bound, an estimate; no communication):"
            f" step {r.step_seconds * 1e3:.3g} ms, epoch {r.epoch_seconds:.3g} s, {r.bound}-bound"
            f" ({r.flops_per_step:.3g} FLOP and {format_bytes(r.bytes_per_step)} per step per device)"
        )
    x = plan.xla
    if x is not None:
        lines += [
            "",
            "XLA, compiled epoch on this backend (one device): "
            f"argument {format_bytes(x['argument'])} + output {format_bytes(x['output'])} + temp {format_bytes(x['temp'])}"
            f" − alias {format_bytes(x['alias'])} = {format_bytes(x['total'])}; with the validation arrays "
            f"{format_bytes(x['total_with_validation'])}",
            f"  estimate (single) {format_bytes(x['estimate'])}: {x['relative_difference']:+.1%} against XLA",
        ]
        if x.get("flops_per_step"):
            lines.append(
                f"  FLOPs per step: XLA {x['flops_per_step']:.4g}, estimate "
                f"{x['estimate_flops_per_step']:.4g} (XLA counts the scanned body once)"
            )
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    lines += ["", f"{verdict}: {plan.recommendation}"]
    return "\n".join(lines)
