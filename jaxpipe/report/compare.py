"""`jaxpipe compare`: finished runs and sweeps side by side. One row per run (a sweep
gives one per trial): the spec keys that differ between them, the final and best value
of a metric, the epochs, the training time and the device; and compare.png with the
metric's curve of every run. Reads only the run directories' files (no jax)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import tomllib

from jaxpipe.errors import JaxpipeError
from jaxpipe.files import read_input_file, read_json, read_jsonl
from jaxpipe.report.charts import save_png
from jaxpipe.report.console import format_table
from jaxpipe.spec.sections import metric_mode

__all__ = ["compare_runs", "comparison_figure", "format_comparison", "write_comparison_plot"]


def _read(run_dir: str) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(summary, spec table, metrics rows) of a finished run directory."""
    paths = [os.path.join(run_dir, n) for n in ("summary.json", "spec.toml", "metrics.jsonl")]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not os.path.isdir(run_dir) or missing:
        raise JaxpipeError(
            f"{run_dir}: not a finished run or sweep directory "
            f"({'missing ' + ', '.join(os.path.basename(p) for p in missing) if missing else 'not found'}); "
            "pass directories written by jaxpipe run"
        )
    summary, rows = read_json(paths[0]), read_jsonl(paths[2])
    try:
        spec = tomllib.loads(read_input_file(paths[1], "spec file").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise JaxpipeError(f"{paths[1]}: damaged ({e}); the run's spec copy was changed") from None
    return summary, spec, rows


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and not key.startswith("sweep.values"):
            out |= _flat(v, key)
        else:
            out[key] = v
    return out


def _runs(run_dirs: Sequence[str]) -> list[tuple[str, dict, dict, list]]:
    runs = []
    for d in run_dirs:
        summary, spec, rows = _read(d)
        if summary.get("kind") == "sweep":
            trials = os.path.join(d, "trials")
            if not os.path.isdir(trials):
                raise JaxpipeError(f"{d}: a sweep directory without trials/; pass a finished sweep")
            for k in sorted(os.listdir(trials), key=lambda s: (len(s), s)):
                runs.append((os.path.join(d, "trials", k), *_read(os.path.join(trials, k))))
        else:
            runs.append((d, summary, spec, rows))
    return runs


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare_runs(run_dirs: Sequence[str], metric: str = "val_loss") -> list[dict[str, Any]]:
    """One record per run (a sweep: per trial): {"run", "differences": {key: value},
    "status", "epochs", "final", "best", "best_epoch", "seconds", "device", "task",
    "history"}.
    `metric` is a metrics.jsonl column; "best" is its best value (min for losses)."""
    if not run_dirs:
        raise JaxpipeError("compare needs at least one run directory")
    runs = _runs(run_dirs)
    mode = metric_mode(metric, "auto")
    flat = [_flat({k: v for k, v in spec.items() if k != "sweep"}) for _, _, spec, _ in runs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]
    differ = [k for k in differ if not k.startswith("data.path")] or differ
    out = []
    for (d, summary, _, rows), f in zip(runs, flat, strict=True):
        have = [r for r in rows if _number(r.get(metric)) and _number(r.get("epoch"))]
        if rows and not have:
            cols = ", ".join(c for c in rows[0] if c not in ("epoch", "epoch_seconds"))
            raise JaxpipeError(
                f"{d}: metrics.jsonl has no column {metric!r}; --metric one of {cols}"
            )
        best = (min if mode == "min" else max)(have, key=lambda r: r[metric]) if have else None
        dev = summary.get("device") if isinstance(summary.get("device"), dict) else {}
        out.append({
            "run": d,
            "differences": {k: f.get(k) for k in differ},
            "status": summary.get("status"),
            "epochs": len(rows),
            "final": have[-1][metric] if have else None,
            "best": best[metric] if best else None,
            "best_epoch": best["epoch"] if best else None,
            "seconds": round(sum(r.get("epoch_seconds", 0.0) for r in rows if _number(r.get("epoch_seconds"))), 3),
            "device": f"{dev.get('count', '?')}× {dev.get('kind') or dev.get('platform', '?')}",
            "task": summary.get("task") or f.get("model.task"),
            "history": [{"epoch": r["epoch"], metric: r[metric]} for r in have],
        })  # fmt: skip
    return out


def format_comparison(records: list[dict[str, Any]], metric: str) -> str:
    """The console table: a row per run, a column per differing spec key."""
    keys = list(records[0]["differences"]) if records else []
    rows = [
        [r["run"], *[r["differences"][k] for k in keys], r["status"], r["epochs"], r["final"],
         r["best"], r["best_epoch"], f"{r['seconds']:.2f}", r["device"]]
        for r in records
    ]  # fmt: skip
    head = ["run", *keys, "status", "epochs", f"final {metric}", f"best {metric}", "best epoch"]
    return format_table([*head, "train s", "device"], rows)


def write_comparison_plot(records: list[dict[str, Any]], metric: str, path: str) -> None:
    """compare.png: `comparison_figure(records, metric)` saved to `path`."""
    save_png(comparison_figure(records, metric), path, what=f"--plot {path}")


def comparison_figure(records: list[dict[str, Any]], metric: str) -> Any:
    """`metric` per epoch, one line per run, on whole-epoch ticks. Runs of different tasks
    get a panel each: a classification loss (cross-entropy) and a regression loss (mean
    squared error on the scaled target) are different quantities, not one axis."""
    # A Figure on an Agg canvas, not pyplot (as trace.png): nothing global to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    tasks = list(dict.fromkeys(r.get("task") for r in records)) or [None]
    fig = Figure(figsize=(7 if len(tasks) == 1 else 5 * len(tasks), 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        runs = [r for r in records if r.get("task") == task]
        for r in runs:
            h = r["history"]
            ax.plot([x["epoch"] for x in h], [x[metric] for x in h], marker="o", label=r["run"])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no epoch 1.5
        title = f"{metric} per run" + (f": {task}" if len(tasks) > 1 and task else "")
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
        ax.grid(alpha=0.3)
        if len(runs) <= 12:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
