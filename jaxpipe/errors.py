"""Typed errors. User input problems are `JaxpipeError`s: the CLI prints them as one
`error: ...` line and exits 2. Anything else is a bug and exits 1."""

from __future__ import annotations


class JaxpipeError(Exception):
    """A problem with the user's input (spec, data, options): exit status 2."""

    exit_code = 2


class SpecError(JaxpipeError):
    """An invalid experiment spec.

    The message is built from where the problem is (file, line, key path), what was
    found and what to do about it, so it reads as one line on the terminal.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ):
        self.key, self.file, self.line, self.detail = key, file, line, message
        where = ""
        if file:
            where = f"{file}:{line}: " if line else f"{file}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class DataError(JaxpipeError):
    """Data that cannot be read or used as the spec asks (file, column, row)."""


class PlanError(JaxpipeError):
    """The run cannot fit the devices it is given. The message is one line (what does not
    fit, what would); `plan` is the `planner.Plan`, whose table the CLI prints after it."""

    def __init__(self, message: str, *, plan: object = None):
        self.plan = plan
        super().__init__(message)


class RunDirectoryBusy(JaxpipeError):
    """Another process holds the run directory's lock (exit status 2, like any input
    problem: choose another `--out`, or wait). The message names the holder's pid."""


class EnvironmentProblem(Exception):
    """The machine, not the input, stopped the run: the disk is full or a file cannot be
    written (exit status 4). The message is one line naming the path and what to do; the
    run directory is left resumable."""

    exit_code = 4


class DivergedError(Exception):
    """Training produced a non-finite loss (exit status 3)."""

    exit_code = 3


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run after a checkpoint (exit status 130 or 143);
    `jaxpipe run --resume` continues it."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
