"""Charts of a run's history: the ASCII loss chart of the console and `curves.png`.
Functions of plain values; matplotlib loads only to draw the PNG."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

from jaxpipe.files import atomic_write

__all__ = [
    "ascii_chart",
    "write_curves",
    "write_sweep_plot",
    "sweep_figure",
    "log_scale",
    "best_epoch",
    "condensed",
    "save_png",
]

_MARKERS = "*o+x"
_OVERLAP = "#"


def log_scale(values: Sequence[float]) -> bool:
    """A log axis when every value is positive and they span more than a decade (a loss
    falling from 2.3 to 0.05 leaves a linear chart flat after the first epochs)."""
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) > 10


def _tick_epochs(n: int) -> list[int]:
    """About five epochs to tick: every one up to 6, else 1 and the multiples of a round
    step (1, 2, 5, 10, 20, 50, ...), so the ticks stand at equal distances."""
    if n <= 6:
        return list(range(1, n + 1))
    step = 1
    while n // step > 5:
        for factor in (2, 2.5, 2):
            step = int(step * factor)
            if n // step <= 5:
                break
    return sorted({1, *range(step, n + 1, step)})


def _ticks(n: int, cols: int) -> tuple[str, str]:
    """The x axis under the chart: tick marks at `_tick_epochs`, their numbers below."""
    axis, labels = ["─"] * cols, [" "] * (cols + 4)
    for e in _tick_epochs(n):
        x = round((e - 1) * (cols - 1) / max(n - 1, 1))
        axis[x] = "┬"
        text = str(e)
        start = min(max(0, x - len(text) // 2), cols + 4 - len(text))
        if all(c == " " for c in labels[max(0, start - 1) : start + len(text) + 1]):
            labels[start : start + len(text)] = text
    return "".join(axis), "".join(labels).rstrip()


def _columns(n: int, width: int) -> int:
    """The plot's width: the same whole number of columns between every two epochs (so
    equal epoch steps are equal distances), at least 12, at most `width` (a longer run
    shares columns)."""
    if n <= 1:
        return 12
    per = max(math.ceil(11 / (n - 1)), 6)
    per = min(per, (width - 1) // (n - 1))
    return (n - 1) * per + 1 if per >= 1 else width


def _labels(top: float, step: float, height: int, log: bool) -> list[str]:
    """The y axis's labels, top down, all in one precision: as many decimals as tell
    neighbours apart (linear), or three significant digits (log)."""
    values = [top - r * step for r in range(height)]
    if log:
        return [f"{10**v:#.3g}" for v in values]
    decimals = min(max(0, 1 - math.floor(math.log10(abs(step)))), 8) if step else 4
    return [f"{v:.{decimals}f}" for v in values]


def ascii_chart(series: dict[str, Sequence[float]], height: int = 10, width: int = 60) -> str:
    """A line chart of one or more series against epoch, one marker each ("#" where they
    meet), on a log axis when the values span more than a decade, epochs ticked below at
    equal distances, the y labels in one precision."""
    values = [v for s in series.values() for v in s if math.isfinite(v)]
    if not values:
        return ""
    log = log_scale(values)
    f = math.log10 if log else (lambda v: v)
    lo, hi = f(min(values)), f(max(values))
    span = (hi - lo) or 1.0
    n = max(len(s) for s in series.values())
    cols = _columns(n, width)
    grid = [[" "] * cols for _ in range(height)]
    for s, mark in zip(series.values(), _MARKERS):
        for i, v in enumerate(s):
            if not math.isfinite(v):
                continue
            x = round(i * (cols - 1) / max(n - 1, 1))
            y = round((hi - f(v)) / span * (height - 1))
            grid[y][x] = mark if grid[y][x] in (" ", mark) else _OVERLAP
    labels = _labels(hi, span / (height - 1), height, log)
    w = max(9, *(len(t) for t in labels))
    lines = [f"{t:>{w}} │" + "".join(row).rstrip() for t, row in zip(labels, grid)]
    axis, ticks = _ticks(n, cols)
    lines.append(" " * (w + 1) + "└" + axis)
    lines.append(" " * (w + 2) + ticks + "   epoch")
    legend = "   ".join(f"{m} {name}" for name, m in zip(series, _MARKERS))
    scale = "   (log scale)" if log else ""
    lines.append(" " * (w + 2) + legend + f"   {_OVERLAP} overlap" + scale)
    return "\n".join(lines)


def import_matplotlib() -> None:
    """Imports what write_curves and trace.png need; the report runs it on a thread at
    the start of a run, so the import overlaps loading, planning and the compile (and
    waits for it before the first epoch)."""
    from matplotlib import figure  # noqa: F401
    from matplotlib.backends import backend_agg  # noqa: F401


def write_curves(
    history: Sequence[dict[str, Any]],
    path: str,
    *,
    best_epoch: int | None = None,
    baseline: float | None = None,
) -> None:
    """Loss, and accuracy (train and validation) or RMSE per epoch as a PNG: the best
    epoch marked, a regression's baseline (predict the training mean) drawn."""
    # A Figure on an Agg canvas, not pyplot: importing pyplot costs about half a second
    # more (backends, colormaps, the figure manager) for nothing a file needs.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    train_loss = [r["train_loss"] for r in history]
    val_loss = [r["val_loss"] for r in history]
    ax1.plot(epochs, train_loss, marker="o", label="train")
    ax1.plot(epochs, val_loss, marker="o", label="validation")
    if log_scale(train_loss + val_loss):
        ax1.set_yscale("log")
    ax1.set(xlabel="epoch", ylabel="loss", title="Loss")
    if "val_accuracy" in history[0]:
        if "train_accuracy" in history[0]:
            ax2.plot(epochs, [r["train_accuracy"] for r in history], marker="o", label="train")
        ax2.plot(epochs, [r["val_accuracy"] for r in history], marker="o", label="validation")
        ax2.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    else:
        ax2.plot(epochs, [r["val_rmse"] for r in history], marker="o", label="validation")
        if baseline is not None:
            ax2.axhline(baseline, color="tab:gray", linestyle="--", label="baseline (mean)")
        ax2.set(xlabel="epoch", ylabel="RMSE", title="Validation RMSE")
    for ax in (ax1, ax2):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="tab:red", alpha=0.5, linestyle=":", label="best epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 2.5
        ax.grid(alpha=0.3)
        ax.legend()
    # Fixed margins, not tight_layout(): it draws the figure once more to measure it (a
    # third of the PNG's cost, ~0.1 s of CPU on every run) and these labels never vary
    # in size.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.92, wspace=0.22)
    save_png(fig, path)


def save_png(fig: Any, path: str, what: str | None = None) -> None:
    """Writes a matplotlib figure to `path` as a PNG through the one safe writer
    (jaxpipe/files.py: atomic, never through a planted symlink, into a FIFO or device
    rather than over it, a full disk is exit 4). `what`: the option that named `path`
    (`--png P`), for a file the user asked for rather than one in a run directory."""
    png = io.BytesIO()
    # zlib's fastest level: the same pixels, a few per cent more bytes, a quarter less of
    # the encoder's time (trace.png: 21 -> 15 ms of CPU)
    fig.savefig(png, format="png", dpi=100, pil_kwargs={"compress_level": 1})
    atomic_write(path, png.getvalue(), what=what, resume=what is None)


def best_epoch(history: Sequence[dict[str, Any]], metric: str, mode: str) -> int | None:
    rows = [r for r in history if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
    if not rows:
        return None
    pick = min if mode == "min" else max
    return pick(rows, key=lambda r: r[metric])["epoch"]


def condensed(history: Sequence[dict[str, Any]], best: int | None, rows: int = 8) -> list[dict]:
    """The first, best and last epochs and every k-th between, k so that about `rows`
    rows remain; in epoch order, each with a "note"."""
    n = len(history)
    k = max(1, math.ceil(n / rows))
    keep = {0, n - 1} | set(range(k - 1, n, k))
    keep |= {i for i, r in enumerate(history) if r["epoch"] == best}
    notes = {0: "first", n - 1: "last"}
    out = []
    for i in sorted(keep):
        r = history[i]
        note = "best" if r["epoch"] == best else notes.get(i, "")
        out.append(r | {"note": note})
    return out


def sweep_figure(table: list[dict[str, Any]], keys: list[str], metric: str) -> Any:
    """sweep.png's figure: the best `metric` of each completed trial against each swept
    value, titled, the best trial (the leaderboard's first) ringed; a seed, or any value
    that is not a number, on a categorical axis (seed 1 is no nearer seed 2 than 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in table if r["best"] is not None and r["status"] == "completed"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        xs = [r["values"][key] for r in done]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        categorical = not numeric or key.rsplit(".", 1)[-1] == "seed"
        ys = [r["best"][metric] for r in done]
        if categorical:  # as text; the first drawn are the smallest, so the axis is in order
            order = sorted(range(len(xs)), key=lambda i: (str(type(xs[i])), xs[i]))
            ax.scatter([str(xs[i]) for i in order], [ys[i] for i in order])
            xs = [str(x) for x in xs]
        else:
            ax.scatter(xs, ys)
        if done:  # ringed and named (a legend breaks tight_layout on matplotlib 3.11)
            ax.scatter(xs[:1], ys[:1], s=160, facecolors="none", edgecolors="C3", linewidths=2)
            ax.annotate(f"best: trial {done[0]['trial']}", (xs[0], ys[0]), xytext=(8, 8),
                        textcoords="offset points", color="C3", fontsize="small")  # fmt: skip
        if key.endswith("learning_rate") and numeric and xs and min(xs) > 0:
            ax.set_xscale("log")
        ax.margins(x=0.2, y=0.15)  # room for the ring and its name
        ax.set(xlabel=key, ylabel=f"best {metric}")
        ax.grid(alpha=0.3)
    best = (
        f"; best: trial {done[0]['trial']}, {metric} {done[0]['best'][metric]:.4g}" if done else ""
    )
    fig.suptitle(f"Sweep: best {metric} of {len(done)} completed trials{best}")
    fig.tight_layout()
    return fig


def write_sweep_plot(table: list[dict[str, Any]], keys: list[str], metric: str, path: str) -> None:
    """sweep.png (`sweep_figure`)."""
    import matplotlib.pyplot as plt

    fig = sweep_figure(table, keys, metric)
    save_png(fig, path)
    plt.close(fig)
