"""The run directory's lock and its default name.

One run at a time per directory: `lock_run_dir` takes an exclusive `flock` on
`<run_dir>/.lock` for the whole run, so a second run into the same `--out` stops with
RunDirectoryBusy (exit 2) naming the holder's pid before it writes anything there. The
kernel drops the lock when the holder exits, however it exits (even SIGKILL), so a stale
lock never needs cleaning up. Default names carry microseconds and are created with
O_EXCL semantics (`os.mkdir`), so two runs started in the same second never share one.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from jaxpipe.errors import JaxpipeError, RunDirectoryBusy
from jaxpipe.files import environment_problem, read_json

__all__ = [
    "LOCK_FILE",
    "CHECKPOINTS",
    "lock_run_dir",
    "default_run_name",
    "make_unique_dir",
    "checkpoint_epochs",
    "refuse_other_run",
]

LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"  # the orbax folder inside a run directory


def default_run_name(name: str) -> str:
    """runs/<name>-<YYYYmmdd-HHMMSS-ffffff>: to the microsecond (and `make_unique_dir`
    adds a suffix if even that collides)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    return os.path.join("runs", f"{name}-{stamp}")


def make_unique_dir(path: str) -> str:
    """Creates `path`, or `path-2`, `path-3`, ... if it exists; returns the one created.
    mkdir is atomic, so two processes never get the same directory."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    for n in range(1, 1000):
        candidate = path if n == 1 else f"{path}-{n}"
        try:
            os.mkdir(candidate)
            return candidate
        except FileExistsError:
            continue
    raise JaxpipeError(f"{path}: 999 run directories of this name exist; give --out DIR")


def checkpoint_epochs(run_dir: str) -> list[int]:
    """Epochs with a committed checkpoint in `run_dir`/checkpoints, from the folder names
    alone (cheap; orbax's temporary folders of unfinished saves are not counted)."""
    directory = os.path.join(run_dir, CHECKPOINTS)
    try:
        return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    except (NotADirectoryError, FileNotFoundError):
        return []


def _status(summary_path: str) -> str:
    try:
        return str(read_json(summary_path).get("status", "unknown"))
    except (OSError, JaxpipeError):
        return "unreadable"


def refuse_other_run(run_dir: str, what: str, fix: str) -> None:
    """Raises JaxpipeError when `run_dir` already holds a run (summary.json: finished,
    interrupted or diverged) or an unfinished one (checkpoints); `what` names the
    directory as the user gave it, `fix` ends the message ("choose another directory")."""
    summary = os.path.join(run_dir, "summary.json")
    if os.path.lexists(summary):
        raise JaxpipeError(
            f"{what}: already holds a finished run (summary.json, status {_status(summary)}); {fix}"
        )
    saved = checkpoint_epochs(run_dir)
    if saved:
        raise JaxpipeError(
            f"{what}: holds an unfinished run (checkpoints up to epoch {saved[-1]}); {fix}"
        )


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read(32).strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


@contextmanager
def lock_run_dir(run_dir: str, what: str | None = None) -> Iterator[str]:
    """Holds the exclusive lock on `run_dir` (which must exist) within the block; raises
    RunDirectoryBusy at once if another process (or another run in this one) holds it.
    The lock file keeps the holder's pid for that message. `what` names the directory
    in messages (default "--out DIR"). Runs, sweeps and `Model.save` all take it."""
    what = what or f"--out {run_dir}"
    other = "--out" if what.startswith("--out") else "directory"
    path = os.path.join(run_dir, LOCK_FILE)
    try:
        # O_NOFOLLOW: a symlink planted as the lock file is refused, not written through.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise environment_problem(path, e) or JaxpipeError(
            f"{what}: cannot write there ({e.strerror}); choose a writable directory"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusy(
                f"{what}: another run is using this directory ({_holder(path)}); "
                f"wait for it to finish, or choose another {other}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield run_dir
        finally:
            # Emptied before unlocking: a pid left behind would name a finished process.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
