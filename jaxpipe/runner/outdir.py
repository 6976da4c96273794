"""The run directory before training: the checks that keep a finished or unfinished run
from being overwritten, and its JSON files' writers."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

import jax

from jaxpipe.errors import JaxpipeError
from jaxpipe.files import atomic_write, environment_problem
from jaxpipe.rundir import (
    CHECKPOINTS,
    default_run_name,
    lock_run_dir,
    make_unique_dir,
    refuse_other_run,
)
from jaxpipe.runner import checkpoint as ckpt

__all__ = [
    "prepare_out_dir",
    "write_json",
    "write_lines",
]


def prepare_out_dir(
    name: str,
    out: str | None,
    resume: bool = False,
    stack: contextlib.ExitStack | None = None,
    *,
    sweep: bool = False,
) -> str:
    """Checks (and creates) the run directory before any work, and takes its lock for
    the rest of `stack` (RunDirectoryBusy if another run holds it). Refuses to overwrite
    a finished run, or an unfinished one with checkpoints, unless resuming it. `sweep`:
    the directory is a sweep's (which cannot be resumed: the fix says so). `name`:
    `[experiment] name`, the default directory's stem."""
    given = out is not None
    if out is None:
        if resume:
            raise JaxpipeError("--resume needs --out DIR: the run directory to continue")
        try:
            out = make_unique_dir(default_run_name(name))
        except OSError as e:
            raise environment_problem("runs", e) or JaxpipeError(
                f"runs/: cannot create the default run directory there ({e.strerror}); "
                "pass --out DIR"
            ) from None
    # Blame what the user wrote: --out, or (without it) the default built from the name.
    what = f"--out {out}" if given else f"the default run directory {out} (experiment.name)"
    fix = "choose a writable directory" if given else "pass --out DIR"
    if os.path.exists(out) and not os.path.isdir(out):
        raise JaxpipeError(f"{what}: exists and is not a directory; choose another path")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise environment_problem(out, e) or JaxpipeError(
            f"{what}: cannot write there ({e.strerror}); {fix}"
        ) from None
    # Refused before the lock file is made, so a refused directory gains nothing.
    ckpt.check_store_path(os.path.join(out, CHECKPOINTS))
    # Held before the checks below, so no other run changes them. In a multi-process run
    # the processes share the directory: process 0 holds the lock for all of them.
    if stack is not None and jax.process_index() == 0:
        stack.enter_context(lock_run_dir(out))
    if not resume:
        again = (
            "a sweep cannot be resumed: choose another directory"
            if sweep
            else "continue it with --resume, or choose another directory"
        )
        refuse_other_run(out, what, again)
    if stack is None or jax.process_index() != 0:  # no lock file tested writability
        probe = os.path.join(out, f".write-test-{os.getpid()}")  # processes share `out`
        try:
            atomic_write(probe, b"", what=what)
        finally:
            with contextlib.suppress(OSError):
                os.remove(probe)
    return out


def write_json(path: str, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2) + "\n")  # a reader never sees half a file


def write_lines(path: str, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in rows))
