"""Files the user names and files jaxpipe writes, handled the one safe way.

`atomic_write` is the only way jaxpipe writes a file: a reader sees the old file or the
whole new one, never half of it, and a symlink planted at a predictable temporary name
is never followed. `read_input_file` is how a spec or catalog file is read: only regular
files, with a size cap, so a path that names `/dev/zero` or a FIFO fails at once instead
of reading forever. Standard library only (the spec loader, which imports no jax, uses it).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from jaxpipe.errors import EnvironmentProblem, JaxpipeError

__all__ = [
    "atomic_write",
    "read_input_file",
    "environment_problem",
    "silence_stream",
    "append_line",
    "read_json",
    "read_jsonl",
    "MAX_TEXT_BYTES",
    "scratch_folder",
]

# Folders removed when their work ends (`fit` without `out`): files there are still
# written atomically, but not synced to the disk, which nothing would read back.
_SCRATCH: list[str] = []


@contextlib.contextmanager
def scratch_folder(path: str | None) -> Iterator[None]:
    """While inside, `atomic_write` skips fsync for files under `path` (a temporary
    folder thrown away afterwards); None: nothing changes."""
    root = None if path is None else os.path.join(os.path.abspath(path), "")
    if root is not None:
        _SCRATCH.append(root)
    try:
        yield
    finally:
        if root is not None:
            _SCRATCH.remove(root)


def _synced(directory: str) -> bool:
    where = os.path.join(directory, "")
    return not any(where.startswith(root) for root in _SCRATCH)


# A spec or catalog is a few kilobytes; 16 MiB is far above any real one and far below
# what would hurt the host.
MAX_TEXT_BYTES = 16 * 2**20

_FULL = (errno.ENOSPC, errno.EDQUOT)


def environment_problem(path: str, e: OSError, resume: bool = True) -> EnvironmentProblem | None:
    """The one-line EnvironmentProblem for a full disk, a quota or a file-size limit
    (`ulimit -f`: EFBIG) at `path`, else None. `resume`: the fix ends "continue the run
    with --resume" (a run's files); else "run it again"."""
    then = "continue the run with --resume" if resume else "run it again"
    if e.errno in _FULL:
        return EnvironmentProblem(
            f"{path}: the disk is full ({e.strerror}); free space (or choose another --out) "
            f"and {then}"
        )
    if e.errno == errno.EFBIG:
        return EnvironmentProblem(
            f"{path}: the file is larger than this process may write ({e.strerror}: a "
            f"file-size limit such as `ulimit -f`); raise the limit and {then}"
        )
    return None


def _umask() -> int:
    """The process's umask, read without changing it where Linux says it (a set-and-
    restore would race with other threads creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_mode(path: str) -> int:
    """The mode the written file gets: an existing regular file's own, else what `open`
    would give a new file (0666 less the umask: 0644 typically), never mkstemp's 0600."""
    try:
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def _write_into(path: str, raw: bytes) -> None:
    """Writes `raw` into the FIFO, character device or socket-like file at `path` (what
    a shell's `> path` does), instead of replacing that special file with a regular one."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)  # no O_CREAT: it exists; no O_TRUNC
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _special_target(path: str, what: str) -> bool:
    """True when `path` (a symlink followed: `/dev/stdout`) is a FIFO or character device
    to write into; a directory or block device is refused; False for a regular file or
    nothing there (written atomically)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # nothing there (or a dangling link): a new file
    if stat.S_ISREG(mode):
        return False
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return True
    raise JaxpipeError(f"{what}: is {_kind(mode)}; give the path of a file to write")


def atomic_write(
    path: str, data: bytes | str, *, what: str | None = None, resume: bool = True
) -> None:
    """Writes `data` to `path` atomically: a fresh temporary in the same directory
    (mkstemp: O_CREAT | O_EXCL with an unpredictable name, so nothing planted there is
    followed), fsync (not in a `scratch_folder`), then os.replace over `path`. On failure the temporary is removed
    and `path` keeps its old content. The file gets the mode a new file gets (the
    umask's: 0644 typically) or the one it had. A symlink at `path` itself is replaced,
    except one to a FIFO or device (`/dev/stdout`): a FIFO or character device at `path`
    is written into, not replaced; a directory or block device is refused.

    A full disk (or a file-size limit) raises EnvironmentProblem (exit 4; `resume`: a
    run's file, so the fix is --resume); any other OSError a JaxpipeError naming `what`
    (default: the path), e.g. "--out x.csv: cannot write there"."""
    raw = data.encode() if isinstance(data, str) else data
    what = what or path
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tmp = None
    try:
        if _special_target(path, what):
            _write_into(path, raw)
            return
        mode = _new_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            if _synced(directory):
                os.fsync(f.fileno())  # the rename must not land before the bytes do
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise environment_problem(path, e, resume) or JaxpipeError(
            f"{what}: cannot write there ({e.strerror or e}); choose a writable path"
        ) from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def read_input_file(path: str, what: str, limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a user-named input file (`what`: "spec file", "catalog file").

    Refuses anything but a regular file (a directory, FIFO, socket or device such as
    /dev/zero, also through a symlink) and files over `limit` bytes, with a JaxpipeError
    naming the path. Opened with O_NONBLOCK so a FIFO swapped in after the check cannot
    block the open, and read at most `limit` + 1 bytes, so nothing reads forever.
    Raises FileNotFoundError when the path does not exist (callers word that one)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise JaxpipeError(f"{path}: cannot read the {what} ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise JaxpipeError(
            f"{path}: cannot read the {what}: it is {_kind(mode)}, not a regular file; "
            "give the path of a TOML file"
        )
    with os.fdopen(fd, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise JaxpipeError(
            f"{path}: the {what} is larger than {limit // 2**20} MiB; "
            "a TOML file this large is not a jaxpipe spec or catalog"
        )
    return raw


# A run's summary.json or predictor.json is kilobytes; metrics.jsonl ~200 bytes an epoch.
_MAX_RUN_FILE = 256 * 2**20


def _read_run_file(path: str) -> str:
    """The text of a file jaxpipe wrote into a run directory (summary.json,
    metrics.jsonl, predictor.json), read as `read_input_file` reads: only a regular file,
    of bounded size. FileNotFoundError propagates (callers word that one)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except OSError as e:
        raise JaxpipeError(f"{path}: cannot read it ({e.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise JaxpipeError(
            f"{path}: is {_kind(mode)}, not the file jaxpipe wrote; the run directory was "
            "changed: run again into a new directory"
        )
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(_MAX_RUN_FILE + 1)
    except OSError as e:
        raise JaxpipeError(f"{path}: cannot read it ({e.strerror})") from None
    if len(raw) > _MAX_RUN_FILE:
        raise JaxpipeError(
            f"{path}: larger than {_MAX_RUN_FILE // 2**20} MiB; not one jaxpipe wrote"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _damaged(path, "not UTF-8 text") from None


def _damaged(path: str, why: str) -> JaxpipeError:
    return JaxpipeError(
        f"{path}: damaged ({why}); it was cut short or edited: run again into a new "
        "directory (or restore the file)"
    )


def read_json(path: str, expect: type = dict) -> Any:
    """The JSON value of a file jaxpipe wrote (summary.json, predictor.json), checked:
    a file that is not regular, not JSON, or not an `expect` (an object by default) is a
    JaxpipeError naming the path (exit 2), never a traceback. FileNotFoundError
    propagates."""
    text = _read_run_file(path)
    try:
        value = json.loads(text)
    except ValueError as e:
        raise _damaged(path, f"not JSON: {e}") from None
    if not isinstance(value, expect):
        raise _damaged(path, f"a JSON {type(value).__name__}, not an {expect.__name__}")
    return value


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file jaxpipe wrote (metrics.jsonl, sweep.jsonl), checked
    as `read_json` checks: a line that is not a JSON object (a file cut short mid-line) is
    a JaxpipeError naming the path and line. FileNotFoundError propagates."""
    rows = []
    for n, line in enumerate(_read_run_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise _damaged(path, f"line {n} is not JSON: {e}") from None
        if not isinstance(row, dict):
            raise _damaged(path, f"line {n} is not a JSON object")
        rows.append(row)
    return rows


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def silence_stream(stream: object) -> None:
    """After a BrokenPipeError (`jaxpipe run ... | head`: the reader left), points the
    stream's file descriptor at /dev/null, so later writes and the interpreter's final
    flush succeed quietly instead of failing the process (exit 120) or the run."""
    try:
        fd = stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def append_line(f: IO[str], path: str, line: str) -> None:
    """Appends `line` to the open log `f` (at `path`) and flushes it; a full disk is
    EnvironmentProblem (exit 4) rather than a traceback. The log is rewritten from the
    checkpoint on --resume, so a line lost here is not lost for good."""
    try:
        f.write(line)
        f.flush()
    except OSError as e:
        full = environment_problem(path, e)
        if full is not None:
            raise full from None
        raise
