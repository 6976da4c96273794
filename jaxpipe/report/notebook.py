"""The run in a Jupyter notebook: one live display updated in place (IPython's
`display(..., display_id=True)`, no ipywidgets): the stage the run is in, then a bar of
epochs with the latest metrics and the time left; at the end a one-screen summary (status,
why it stopped, final metrics, the model). Nothing names a temporary run directory."""

from __future__ import annotations

import html
import sys
import time
from typing import Any

from jaxpipe.events import Observer, RunResult, StageRecord
from jaxpipe.report.console import seconds

__all__ = ["NotebookProgress", "in_notebook"]

_NEXT = {  # what the run does after a stage ends, as the bar's caption
    "load": "planning and placing the data",
    "transfer": "preprocessing",
    "preprocess": "compiling the epoch and evaluation programs",
    "compile": "training",
}
_EVERY = 0.25  # seconds between display updates (a fast run must not flood the notebook)


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (IPython's ZMQ shell) with a display."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


class _View:
    """What the display shows: text for plain front ends, HTML for Jupyter."""

    def __init__(self, text: str, markup: str):
        self.text, self.markup = text, markup

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return self.markup


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / max(total, 1))
    return "█" * filled + "░" * (width - filled)


def _metrics(row: dict[str, Any]) -> list[tuple[str, float]]:
    return [
        (k, v)
        for k, v in row.items()
        if k not in ("epoch", "epoch_seconds") and isinstance(v, (int, float))
    ]


class NotebookProgress(Observer):
    """Progress and a summary of one run (`jaxpipe.fit` in a notebook shows it unless
    told `progress=False`). `keep_dir`: the run directory outlives the call (`out=`),
    so the summary may name it."""

    def __init__(self, keep_dir: bool = False):
        from IPython.display import display

        self._keep_dir = keep_dir
        self._t0 = time.perf_counter()
        self._shown = 0.0
        self._caption = "reading the data"
        self._handle = display(self._view(), display_id=True)

    def _view(self, row: dict[str, Any] | None = None, epochs: int = 0) -> _View:
        elapsed = time.perf_counter() - self._t0
        if row is None:
            text = f"jaxpipe: {self._caption} ... ({seconds(elapsed)})"
            return _View(text, f"<code>{html.escape(text)}</code>")
        done = row["epoch"]
        left = elapsed / done * (epochs - done) if done else 0.0
        metrics = "  ".join(f"{k} {v:.4f}" for k, v in _metrics(row))
        text = (
            f"epoch {done}/{epochs} {_bar(done, epochs)} {metrics}  "
            f"{seconds(elapsed)} elapsed, {seconds(left)} left"
        )
        markup = (
            f"<code>epoch {done}/{epochs}</code> "
            f'<progress value="{done}" max="{epochs}" style="width:16em"></progress> '
            f"<code>{html.escape(metrics)}</code> "
            f"<small>{seconds(elapsed)} elapsed, {seconds(left)} left</small>"
        )
        return _View(text, markup)

    def _show(self, view: _View, force: bool = False) -> None:
        now = time.perf_counter()
        if force or now - self._shown >= _EVERY:
            self._handle.update(view)
            self._shown = now

    def on_stage(self, stage: StageRecord) -> None:
        if stage.name in _NEXT:
            self._caption = _NEXT[stage.name]
            self._show(self._view(), force=True)

    def on_epoch(self, row: dict[str, Any], epochs: int) -> None:
        self._show(self._view(row, epochs), force=row["epoch"] in (1, epochs))

    def on_finish(self, result: RunResult) -> None:
        from IPython.display import display

        if result.history:
            self._show(self._view(result.history[-1], len(result.history)), force=True)
        display(_summary(result, time.perf_counter() - self._t0, self._keep_dir))


def _summary(result: RunResult, elapsed: float, keep_dir: bool) -> _View:
    """The one-screen summary: status and stop reason, the final metrics, the classes
    and, when the directory is kept, where it is."""
    s = result.summary
    stop = s.get("stop") or {}
    head = f"{s.get('status', 'completed')} after epoch {stop.get('epoch', '?')}"
    head += f" ({stop.get('reason', '')}) in {seconds(elapsed)}"
    final = _metrics(result.final or {})
    lines = [f"jaxpipe: {head}", *(f"  {k:<16} {v:.4f}" for k, v in final)]
    if s.get("classes"):
        lines.append(f"  classes          {', '.join(s['classes'])}")
    if keep_dir:
        lines.append(f"  run directory    {result.run_dir}")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in final)
    extra = ""
    if s.get("classes"):
        extra += f"<p>classes: {html.escape(', '.join(s['classes']))}</p>"
    if keep_dir:
        extra += f"<p>run directory: <code>{html.escape(result.run_dir)}</code></p>"
    markup = f"<p><b>jaxpipe</b>: {html.escape(head)}</p><table>{rows}</table>{extra}"
    return _View("\n".join(lines), markup)
