"""What the user sees: the console reporter that listens to the run (stages as they
end, a spinner while compiling, a progress bar inside long epochs, the epoch table, the
chart, the final metrics and the prediction trace), and `format_plan`."""

from __future__ import annotations

import math
import os
import threading
from typing import Any, TextIO

from jaxpipe.core.model import layer_table, param_count
from jaxpipe.core.progress import progress_every
from jaxpipe.events import Observer, RunResult, StageRecord
from jaxpipe.planner.values import format_bytes
from jaxpipe.report.charts import (
    ascii_chart,
    best_epoch,
    condensed,
    import_matplotlib,
    write_curves,
    write_sweep_plot,
)
from jaxpipe.report.console import Console, Stopwatch, format_table, plural, seconds
from jaxpipe.report.trace_view import format_trace, write_trace_png
from jaxpipe.saved.trace import TRACE_ROWS_FILE, run_trace
from jaxpipe.spec.experiment import Spec
from jaxpipe.spec.sections import metric_mode

__all__ = ["ConsoleReporter"]

CONDENSE_AFTER = 12  # longer runs get a condensed epoch table (their lines were printed live)
_NEXT = {  # what runs after a stage, for the spinner (terminal only)
    "load": "planning and placing the data",
    "plan": "placing the data on the devices",
    "place": "preprocessing on the device",
    "transfer": "preprocessing on the device",
    "preprocess": "compiling the epoch and evaluation programs",
}


class ConsoleReporter(Observer):
    """Prints the run for a person. `verbose`: 0 (or False) prints nothing, 1 the report,
    2 also every epoch in the final table. `plain`: None decides from the stream (a
    terminal gets rich output) and JAXPIPE_PLAIN. Writes curves.png and trace.png
    whether or not it prints, unless `files=False` (`jaxpipe.fit` into a temporary
    directory, removed afterwards: no pictures to draw, no folder to name)."""

    def __init__(
        self,
        stream: TextIO | None = None,
        verbose: bool | int = True,
        plain: bool | None = None,
        *,
        files: bool = True,
    ):
        self.level = int(verbose)
        self.files = files
        self.out = Console(stream, plain) if self.level > 0 else None
        self.stages: list[StageRecord] = []
        self.clock = Stopwatch()
        self.spec: Spec | None = None
        self._paths: tuple[str, str] | None = None
        self._steps = 0
        self._epoch_t0 = self.clock.seconds()
        self._epoch = 0
        self._model: list[tuple] | None = None
        self._matplotlib: threading.Thread | None = None
        # Reading the data comes before the first line: say so in a terminal.
        self._status("reading the data ...")

    def _print(self, text: str = "", style: str | None = None) -> None:
        if self.out is not None:
            self.out.line(text, style)

    def close(self) -> None:
        """Ends a spinner or bar that is still live (the run failed or stopped)."""
        if self.out is not None:
            self.out.stop()

    def _status(self, text: str) -> None:
        if self.out is not None:
            self.out.status(text)

    def _metric(self) -> tuple[str, str]:
        es = self.spec.training.early_stopping if self.spec is not None else None
        if es is not None:
            return es.metric, metric_mode(es.metric, es.mode)
        return "val_loss", "min"

    def on_start(self, spec: Spec, run_dir: str) -> None:
        self.spec = spec
        if self.files:  # no pictures (`fit` into a temporary folder): no matplotlib at all
            # matplotlib's import overlaps loading, planning and the compile; it holds the
            # GIL most of the time, so it is done before the first epoch (see on_stage).
            self._matplotlib = threading.Thread(target=import_matplotlib, name="jaxpipe-matplotlib")
            self._matplotlib.start()
        d, m, o, t = spec.data, spec.model, spec.optimizer, spec.training
        if d.source == "synthetic":
            syn = d.synthetic
            src = f"synthetic, {syn.rows} rows × {syn.features} features"
            src += (
                f", {plural(syn.classes, 'class', 'classes')}" if m.task == "classification" else ""
            )
        elif d.path is None:  # rows handed to `fit` in memory
            src = d.source
        else:
            src = f"{d.source} {d.path}"
            # The stages name the file by its absolute path; show it as the spec wrote it.
            self._paths = (spec.resolve_path(d.path), d.path)
        val = d.validation
        held = (
            f"{val:.0%}"
            if isinstance(val, float)
            else val
            if isinstance(val, str)
            else f"{val} rows"
        )
        if d.folds is not None:
            held = f"{d.folds} folds (cross-validation)"
        extras = "".join(
            [
                f", dropout {m.dropout:g}" if m.dropout else "",
                ", layer norm" if m.layer_norm else "",
            ]
        )
        head = "classification (softmax)" if m.task == "classification" else "regression"
        self._print(f"jaxpipe run: {spec.experiment.name} (seed {spec.experiment.seed})", "bold")
        self._print(f"  data       {src}; validation {held}; shuffle {str(d.shuffle).lower()}")
        self._print(
            f"  preprocess {spec.preprocess.normalize}; missing values: {spec.preprocess.missing}"
        )
        self._print(f"  model      MLP hidden {list(m.hidden)}, {m.activation}{extras}; {head}")
        self._print(f"  optimizer  {o.name}, learning rate {o.learning_rate:g}")
        self._print(f"  training   {plural(t.epochs, 'epoch')}, batch {t.batch_size}")
        self._print(f"  output     {run_dir}")

    def on_plan(self, plan: Any) -> None:
        self._print(
            f"  plan       {plan.strategy} over {plural(plan.devices, plan.device + ' device')}, "
            f"mesh {_mesh(plan.mesh)}; {format_bytes(plan.per_device_bytes)} per device "
            f"(estimate) of {format_bytes(plan.usable_bytes_per_device)} usable"
        )

    def on_stage(self, stage: StageRecord) -> None:
        if not self.stages:
            self._print()
            self._print("Data flow", "bold")
        self.stages.append(stage)
        inp, outp = stage.input, stage.output
        if self._paths is not None:
            inp, outp = (x.replace(*self._paths) for x in (inp, outp))
        self._print(f"  {stage.name:<10} {inp} → {outp}  ({seconds(stage.seconds)})")
        if stage.name == "compile":
            if self._matplotlib is not None:  # not beside the epochs: it would slow each
                self._matplotlib.join()  # return from the device by up to a switch interval
            self._show_model()
            self._epoch_t0 = self.clock.seconds()
        if stage.name in _NEXT:
            self._status(_NEXT[stage.name] + " ...")

    def on_model(self, params: Any) -> None:
        m = self.spec.model if self.spec is not None else None
        rows = []
        for name, shape, count in layer_table(params):
            act = ""
            if m is not None and name.startswith("hidden_"):
                act = m.activation
            elif m is not None and name == "output":
                act = "softmax" if m.task == "classification" else "linear"
            rows.append((name, shape, act, count))
        # Shown after the compile stage's line, which the run reports just after this.
        self._model = rows + [("total", "", "", param_count(params))]

    def _show_model(self) -> None:
        if self._model is None:
            return
        rows, self._model = self._model, None
        self._print()
        self._print("Model", "bold")
        if self.out is not None:
            self.out.table(["layer", "shape", "activation", "parameters"], rows)

    def progress_interval(self, steps_per_epoch: int) -> int | None:
        import jax  # loaded already by the run

        if self.out is None or self.out.plain or jax.process_count() > 1:
            # No bar to draw (or processes that must all compile the same program): keep
            # the epoch free of host callbacks.
            return None
        self._steps = steps_per_epoch
        return progress_every(steps_per_epoch)

    def on_progress(self, step: int) -> None:
        if self.out is None or not self._steps or self.spec is None:
            return
        epoch, done = divmod(step - 1, self._steps)
        done += 1
        elapsed = self.clock.seconds() - self._epoch_t0
        rate = done * self.spec.training.batch_size / elapsed if elapsed > 0 else 0.0
        epochs = self.spec.training.epochs
        self.out.progress(
            f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}",
            done,
            self._steps,
            rate=f"{rate:,.0f} samples/s",
        )

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        if self._epoch == 0:
            self._show_model()  # if no stage was called "compile"
            self._print()
            self._print("Training", "bold")
        self._epoch = row["epoch"]
        w = len(str(epochs))
        metric = "val_accuracy" if "val_accuracy" in row else "val_rmse"
        # One more column for a watched metric the line does not show (val_roc_auc).
        watched = self._metric()[0]
        shown = ("train_loss", "val_loss", metric)
        extra = f"{watched} {row[watched]:.4f}  " if watched in row and watched not in shown else ""
        self._print(
            f"  epoch {row['epoch']:>{w}}/{epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  {metric} {row[metric]:.4f}  {extra}"
            f"{seconds(row['epoch_seconds']):>9}"
        )
        self._epoch_t0 = self.clock.seconds()

    def on_note(self, text: str) -> None:
        self._print(f"  {text}")

    def on_trial_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None:
        if self.files:
            write_curves(history, os.path.join(run_dir, "curves.png"))

    def on_sweep(
        self, run_dir: str, table: list[dict[str, Any]], keys: list[str], metric: str
    ) -> None:
        if self.files:
            write_sweep_plot(table, keys, metric, os.path.join(run_dir, "sweep.png"))
        rows = [
            [i + 1, r["trial"], *[r["values"][k] for k in keys], r["status"],
             r["best"][metric] if r["best"] else "-", r["best"]["epoch"] if r["best"] else "-"]
            for i, r in enumerate(table)
        ]  # fmt: skip
        text = format_table(["rank", "trial", *keys, "status", f"best {metric}", "epoch"], rows)
        for line in text.splitlines():
            self.on_note(line)

    def on_cv(self, run_dir: str, cv: dict[str, Any]) -> None:
        """The folds' final metrics, a row each, then their mean ± std."""
        names = list(cv["mean"])
        rows = [
            [k, status, *[(m or {}).get(n, "-") for n in names], m["epoch"] if m else "-"]
            for k, (m, status) in enumerate(zip(cv["metrics"], cv["status"], strict=True))
        ]
        self._print()
        self._print(f"Cross-validation ({cv['folds']} folds)", "bold")
        if self.out is not None:
            self.out.table(["fold", "status", *[n.replace("_", " ") for n in names], "epoch"], rows)
        mean = ", ".join(f"{n} {cv['mean'][n]:.4f} ± {cv['std'][n]:.4f}" for n in names)
        self._print(f"Mean ± std over the folds: {mean or 'no fold finished'}", "bold")
        self._print(f"Wrote {run_dir}/ (summary.json: cv)")

    def on_artifacts(self, run_dir: str, history: list[dict[str, Any]]) -> None:
        if not self.files:
            return
        write_curves(
            history,
            os.path.join(run_dir, "curves.png"),
            best_epoch=best_epoch(history, *self._metric()),
        )

    def _epoch_table(self, h: list[dict[str, Any]]) -> None:
        metric = "val_accuracy" if "val_accuracy" in h[0] else "val_rmse"
        best = best_epoch(h, *self._metric())
        rows = h if len(h) <= CONDENSE_AFTER or self.level >= 2 else condensed(h, best)
        title = (
            "Epochs"
            if rows is h
            else f"Epochs (condensed: first, best, last and every {math.ceil(len(h) / 8)} epochs)"
        )
        self._print()
        self._print(title, "bold")
        if self.out is not None:
            self.out.table(
                ["epoch", "train loss", "val loss", metric.replace("_", " "), "seconds", "note"],
                [
                    (
                        r["epoch"],
                        r["train_loss"],
                        r["val_loss"],
                        r[metric],
                        r["epoch_seconds"],
                        r.get("note", "best" if r["epoch"] == best else ""),
                    )
                    for r in rows
                ],
                highlight=next((i for i, r in enumerate(rows) if r["epoch"] == best), None),
            )

    def _final(self, result: RunResult) -> None:
        def metrics(row: dict[str, Any]) -> str:
            return ", ".join(
                f"{k} {v:.4f}"
                for k, v in row.items()
                if k not in ("epoch", "epoch_seconds") and isinstance(v, float)
            )

        last = result.final["epoch"]
        self._print()
        self._print(f"Final (epoch {last}): {metrics(result.final)}", "bold")
        name, mode = self._metric()
        best = best_epoch(result.history, name, mode)
        row = next((r for r in result.history if r["epoch"] == best), None)
        if row is not None and name in row:
            self._print(f"Best epoch {best} by {name}: {row[name]:.4f}")
        kept = result.summary.get("params_epoch", last)
        if kept != last:
            row = next((r for r in result.history if r["epoch"] == kept), None)
            self._print(
                f"Kept the parameters of epoch {kept} (early_stopping.restore_best)"
                + (f": {metrics(row)}" if row else "")
            )
        else:
            self._print(f"Kept the parameters of epoch {last} (the last)")

    def on_finish(self, result: RunResult) -> None:
        h = result.history
        summary = result.summary
        if "baseline" in summary and self.files:  # the regression baseline joins curves.png
            write_curves(
                h,
                os.path.join(result.run_dir, "curves.png"),
                best_epoch=best_epoch(h, *self._metric()),
                baseline=summary["baseline"]["val_rmse"],
            )
        if self.out is None and not self.files:
            return  # nothing to print and no trace.png: no trace to compute
        trace = _trace_first_row(result.run_dir, png=self.files)
        if self.out is None:
            return
        if len(h) > CONDENSE_AFTER or self.level >= 2:  # shorter: the live lines are it
            self._epoch_table(h)
        self._print()
        self._print("Loss", "bold")
        chart = ascii_chart(
            {"train": [r["train_loss"] for r in h], "validation": [r["val_loss"] for r in h]}
        )
        self._print(chart)
        self._final(result)
        if summary.get("classes"):
            self._print(f"Classes: {', '.join(summary['classes'])}")
        if "baseline" in summary:
            self._print(
                f"Baseline (predict the training mean): val_rmse "
                f"{summary['baseline']['val_rmse']:.4f}"
            )
        dropped = summary.get("rows", {}).get("dropped_missing")
        if dropped:
            self._print(
                f"Dropped {plural(dropped, 'row')} with missing values (preprocess.missing)"
            )
        if trace is not None:
            self._print()
            self._print(format_trace(trace))
        self._print()
        if self.files:
            wrote = [n for n in _WRITTEN if os.path.exists(os.path.join(result.run_dir, n))]
            self._print(f"Wrote {result.run_dir}/: {', '.join(wrote)}")
        self._print(f"Done in {seconds(self.clock.seconds())}", "bold")


# What a run directory may hold, in the order the report names it (a sweep has no
# checkpoints/ but sweep.jsonl, sweep.png and trials/).
_WRITTEN = ("spec.toml", "metrics.jsonl", "model.msgpack", "predictor.json", "summary.json")
_WRITTEN += ("curves.png", "trace.png", "trace_rows.npz", "checkpoints/")
_WRITTEN += ("sweep.jsonl", "sweep.png", "trials/", "tensorboard/")


def _trace_first_row(run_dir: str, png: bool = True) -> dict[str, Any] | None:
    """The trace of the run's first validation row, drawn into trace.png (with `png`);
    None where this process did not write the model (a secondary process of a
    multi-process run)."""
    import jax  # loaded already by the loop

    if jax.process_index() != 0 or not os.path.isfile(os.path.join(run_dir, TRACE_ROWS_FILE)):
        return None
    record = run_trace(run_dir)  # the run's signal contract holds: the run is complete
    if png:
        write_trace_png(record, os.path.join(run_dir, "trace.png"))
    return record


def _mesh(mesh: dict[str, int]) -> str:
    return " × ".join(f"{k}={v}" for k, v in mesh.items())
