"""Where the report goes: `rich` in a terminal (colour, tables that fit its width, a
spinner and a live progress bar), plain stable lines otherwise (logs, CI, pipes, `--plain`,
JAXPIPE_PLAIN=1, TERM=dumb). NO_COLOR turns colour off and keeps the rest."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from jaxpipe import settings

__all__ = ["Console", "fit_line", "format_table", "wants_plain", "plural", "seconds"]


def wants_plain(stream: TextIO) -> bool:
    """Plain lines unless `stream` is a terminal that can take control sequences."""
    if settings.plain_console() or settings.dumb_terminal():
        return True
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.4g}"
    return str(v)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; numeric columns right-aligned."""
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


# Where a line may break: after ", ", "; " or ": ", before " → " or " + ", and at a run of two or
# more spaces (between columns, before "(50 ms)"). Never at the single space inside
# "50 ms", "x3 0.49" or "val_loss 0.4666": those read as one token.
_BREAK = re.compile(r"(?<=[,;:] )|(?= [→+] )|(?<=\S)(?=  +\S)")
# The label column: "  load       " or "  Input             " (indent, words, 2+ spaces).
_LABEL = re.compile(r"^( *)\S+(?: \S+)*? {2,}(?=\S)")
_WORD = re.compile(r"^ +\S+ +(?=\S)")


def fit_line(text: str, width: int) -> list[str]:
    """`text` as lines of at most `width` columns, broken between tokens (`_BREAK`);
    the lines after the first hang under the label column ("  load       ...") or two
    spaces in. A piece longer than a line on its own breaks at single spaces, and a word
    longer than a line (a path) is cut: the only case that splits a token."""
    if len(text) <= width:
        return [text]
    lead = len(text) - len(text.lstrip(" "))
    label = _LABEL.match(text)
    if label is None or label.end() > min(width // 2, 24):
        # "  preprocess train ...": a label as wide as its column, one space after it.
        label = _WORD.match(text) if lead else None
    start = label.end() if label is not None and label.end() <= width // 2 else lead
    indent = start if start > lead else lead + 2
    hang = " " * min(indent, width // 2)  # under the label, half the width at most
    pieces = [p for p in _BREAK.split(text[start:]) if p]
    lines, current = [], text[:start]
    for piece in pieces:
        fits = len(current) + len(piece.rstrip()) <= width
        if fits or not current.strip() or len(hang) + len(piece.strip()) > width:
            current += piece  # a piece too long for any line is broken by words below
            continue
        lines.append(current.rstrip())
        current = hang + piece.lstrip()
    lines.append(current.rstrip())
    return [part for line in lines for part in _by_words(line, len(hang), width)]


def _by_words(line: str, indent: int, width: int) -> list[str]:
    """A line still too long (one long piece): broken at single spaces, then cut."""
    if len(line) <= width:
        return [line]
    hang, out, current = " " * indent, [], ""
    for part in re.split(r"(?<=\S)(?= )", line):  # each part: its spaces, then a word
        word = part.lstrip(" ")
        if len(current) + len(part) > width and current.strip() and indent + len(word) <= width:
            out.append(current.rstrip())
            current = hang + word
        else:
            current += part
        while len(current) > width:  # a word longer than a line
            out.append(current[:width])
            current = hang + current[width:]
    out.append(current.rstrip())
    return out


class Console:
    """One output for the reporter: lines, tables, a status spinner and a progress bar.
    The spinner and the bar exist only in a terminal; in plain mode they are no-ops."""

    def __init__(self, stream: TextIO | None = None, plain: bool | None = None):
        self.stream = stream or sys.stdout
        self.plain = wants_plain(self.stream) if plain is None else plain
        self._rich: Any = None
        self._progress: Any = None
        self._task: Any = None
        # Progress arrives on XLA's callback thread while the run prints on its own.
        self._lock = threading.RLock()
        if not self.plain:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(
                file=self.stream,
                no_color=settings.no_color(),
                highlight=False,
                soft_wrap=False,
            )

    @property
    def width(self) -> int:
        return self._rich.width if self._rich is not None else 100

    def line(self, text: str = "", style: str | None = None) -> None:
        self.stop()  # a spinner or bar gives way to the next line
        if self._rich is None:
            print(text, file=self.stream, flush=True)
            return
        # rich would wrap at any space ("(6 \nms)"): fit each line between tokens first.
        width = self._rich.width
        fitted = [part for line in text.split("\n") for part in fit_line(line, width)]
        self._rich.print("\n".join(fitted), style=style, markup=False, highlight=False)

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[Any]], highlight: int | None = None
    ) -> None:
        """Rows as a table; `highlight` is the index of a row to emphasise (the best)."""
        if self._rich is None:
            self.line(format_table(headers, rows))
            return
        self.stop()
        from rich import box
        from rich.table import Table

        numeric = [all(isinstance(r[i], (int, float)) for r in rows) for i in range(len(headers))]
        t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), show_edge=False)
        for h, num in zip(headers, numeric):
            t.add_column(h, justify="right" if num else "left", overflow="fold")
        for i, r in enumerate(rows):
            t.add_row(*[_cell(v) for v in r], style="bold green" if i == highlight else None)
        self._rich.print(t)

    def status(self, text: str) -> None:
        """A spinner with `text` until the next line, table or progress (terminal only)."""
        self._live(text, None)

    def progress(self, text: str, done: int, total: int, rate: str = "") -> None:
        """A progress bar: `done` of `total`, with `rate` (samples/s) and the ETA."""
        if self._rich is None:
            return
        with self._lock:
            if self._task is None or self._progress.tasks[0].total != total:
                self._live(text, total)
            self._progress.update(self._task, completed=done, description=text, rate=rate)

    def _live(self, text: str, total: int | None) -> None:
        if self._rich is None:
            return
        with self._lock:
            self.stop()
            self._start(text, total)

    def _start(self, text: str, total: int | None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = [SpinnerColumn(), TextColumn("{task.description}")]
        if total is not None:
            columns += [
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
            ]
        self._progress = Progress(*columns, console=self._rich, transient=True)
        self._task = self._progress.add_task(text, total=total, rate="")
        self._progress.start()

    def stop(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = self._task = None


class Stopwatch:
    """Seconds since the run started, for the elapsed total."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.start


def plural(n: int, word: str, many: str | None = None) -> str:
    """ "1 epoch", "5 epochs"; "1 class", "4 classes" with `many`."""
    return f"{n} {word if n == 1 else many or word + 's'}"


def seconds(s: float) -> str:
    """A duration that never reads 0.00s: ms below a tenth of a second."""
    if s < 0.1:
        return f"{s * 1e3:.0f} ms" if s >= 0.0005 else f"{s * 1e3:.2f} ms"
    if s < 60:
        return f"{s:.2f} s"
    m, r = divmod(round(s), 60)
    return f"{m} min {r:02d} s"
