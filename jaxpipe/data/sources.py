"""Out-of-core sources: `[data] path` naming a directory or a glob of Parquet (or CSV)
files, read through pyarrow's dataset API one row group at a time.

pyarrow.dataset (already a dependency) gives what a streamed read needs without a new
library: the files' fragments, each Parquet file's row groups with their row counts from
the footer (no data read), schema checks per fragment, and fragment-level reads of only
the wanted columns. A CSV file has no row groups: it is one group, read whole.

The host budget (`[data] host_memory`) is "auto" — half the memory this process can
still take (MemAvailable, capped by a cgroup limit) — or a size such as "64MiB".
"""

from __future__ import annotations

import functools
import glob
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from jaxpipe.data.readers import available_host_bytes
from jaxpipe.errors import DataError
from jaxpipe.spec.hardware import parse_size

__all__ = [
    "Group",
    "FileSet",
    "AUTO_HOST_FRACTION",
    "host_budget",
    "is_multi_path",
    "open_files",
    "read_group",
    "decoded_bytes",
    "IN_MEMORY_BYTES_PER_CELL",
    "host_record",
    "release_unused",
]

# "auto": this fraction of the free host memory. The other half is left to the
# framework, the validation split, the double-buffered chunks and other processes.
AUTO_HOST_FRACTION = 0.5
_FALLBACK_BUDGET = 1 << 30  # where free memory cannot be read
# Peak host bytes of a data set loaded whole, per decoded cell: the read columns, the
# split copies and the encoded float32 matrix (about 2.3 copies of the float64 cells).
IN_MEMORY_BYTES_PER_CELL = 19
_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
# A decoded value is a float64 column cell (numeric) or a Python object pointer (text).
_CELL_BYTES = 8


def _size(n: int) -> str:
    """Bytes for a message, in the unit that shows them (never "0.0 MiB")."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def host_budget(value: str) -> int:
    """Bytes of host memory the data path may hold: `data.host_memory`'s value."""
    if value == "auto":
        have = available_host_bytes()
        return int(AUTO_HOST_FRACTION * have) if have else _FALLBACK_BUDGET
    return parse_size(value, "data.host_memory")


def is_multi_path(path: str) -> bool:
    """A directory or a glob pattern (several files), rather than one file."""
    return os.path.isdir(path) or any(c in path for c in "*?[")


@dataclass(frozen=True)
class Group:
    """One unit of reading: a Parquet row group, or a whole CSV file."""

    file: str
    index: int  # row group within the file (0 for CSV)
    first_row: int  # the group's first row within its file
    rows: int
    columns: int


@dataclass(frozen=True)
class FileSet:
    """The files of a source, in sorted order, and their row groups in file order."""

    files: tuple[str, ...]
    format: str  # "parquet" | "csv"
    groups: tuple[Group, ...]
    names: tuple[str, ...]  # the columns every file holds

    @property
    def rows(self) -> int:
        return sum(g.rows for g in self.groups)


def decoded_bytes(group: Group) -> int:
    """Host bytes a group takes once read into columns (float64 / object cells)."""
    return group.rows * group.columns * _CELL_BYTES


def _list_files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = [os.path.join(path, f) for f in os.listdir(path)]
        found = [f for f in found if os.path.isfile(f) and not os.path.basename(f).startswith(".")]
        if not found:
            raise DataError(f"{path}: the data directory holds no files; check [data] path")
    else:
        found = [f for f in glob.glob(path) if os.path.isfile(f)]
        if not found:
            raise DataError(
                f"{path}: the pattern matches no files; check [data] path (relative to the spec)"
            )
    return sorted(found)


def _format_of(files: list[str], path: str, source: str) -> str:
    kinds = {}
    for f in files:
        kind = _FORMATS.get(os.path.splitext(f)[1].lower())
        if kind is None:
            raise DataError(
                f"{f}: not a .parquet or .csv file, in the data set {path}; move it out or "
                "narrow [data] path with a glob such as 'dir/*.parquet'"
            )
        kinds.setdefault(kind, f)
    if len(kinds) > 1:
        raise DataError(
            f"{kinds['csv']}: a CSV file among Parquet files ({kinds['parquet']}) in {path}; "
            "a data set is one format: narrow [data] path with a glob such as 'dir/*.parquet'"
        )
    kind = next(iter(kinds))
    if kind != source:
        raise DataError(
            f'{files[0]}: {path} holds {kind} files but data.source = "{source}"; '
            f'set source = "{kind}"'
        )
    return kind


def _file_format(kind: str):
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads

    if kind == "csv":  # the same missing-value reading as readers.read_csv
        convert = pacsv.ConvertOptions(strings_can_be_null=True)
        return pads.CsvFileFormat(convert_options=convert)
    return pads.ParquetFileFormat()


def _dataset(files: list[str], kind: str):
    import pyarrow as pa
    import pyarrow.dataset as pads

    try:
        return pads.dataset(files, format=_file_format(kind))
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{files[0]}: cannot read as {kind} ({str(e).splitlines()[0]})") from None


def _fragment_schema(frag, kind: str):
    import pyarrow as pa

    try:
        return frag.physical_schema
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{frag.path}: cannot read as {kind} ({str(e).splitlines()[0]})") from None


def _groups(frag, kind: str, columns: int) -> list[Group]:
    if kind == "csv":
        import pyarrow as pa

        try:  # a CSV's rows are known only by reading it; it is one group
            rows = frag.count_rows()
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(
                f"{frag.path}: cannot parse as CSV ({str(e).splitlines()[0]})"
            ) from None
        return [Group(frag.path, 0, 0, rows, columns)]
    frag.ensure_complete_metadata()
    out, first = [], 0
    for rg in frag.row_groups:
        out.append(Group(frag.path, rg.id, first, rg.num_rows, columns))
        first += rg.num_rows
    return out


def open_files(path: str, source: str, budget: int) -> FileSet:
    """The files of a directory or glob `path`, checked: at least one, one format (that
    of `source`), one schema, and no row group larger than `budget` bytes decoded."""
    files = _list_files(path)
    kind = _format_of(files, path, source)
    ds = _dataset(files, kind)
    first, groups = None, []
    for frag in ds.get_fragments():
        schema = _fragment_schema(frag, kind)
        if first is None:
            first = (frag.path, schema)
        elif not schema.equals(first[1]):
            raise DataError(
                f"{frag.path}: its columns ({_describe(schema)}) differ from those of "
                f"{first[0]} ({_describe(first[1])}); every file of a data set needs the "
                "same column names and types"
            )
        groups += [g for g in _groups(frag, kind, len(schema.names)) if g.rows > 0]
    for g in groups:
        if decoded_bytes(g) > budget:
            raise DataError(
                f"{g.file}: row group {g.index} ({g.rows} rows × {g.columns} columns, about "
                f"{_size(decoded_bytes(g))} read) is larger than the host budget "
                f"({_size(budget)}, data.host_memory); raise host_memory or rewrite "
                "the file with smaller row groups (pyarrow.parquet.write_table(..., "
                "row_group_size=N))"
            )
    if not groups:
        raise DataError(f"{path}: the data set's files hold no data rows")
    return FileSet(tuple(files), kind, tuple(groups), tuple(first[1].names))


def _describe(schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


@functools.lru_cache(maxsize=8)
def _parquet_file(path: str, stamp: tuple[int, int]):
    """An open Parquet file (footer parsed once), by path and (size, mtime)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


# Row groups read ahead of the one being encoded (each its own worker thread).
READ_AHEAD = 1

_LOCKS: dict[str, threading.Lock] = {}


def _file_lock(path: str) -> threading.Lock:
    """One lock per file: a cached `ParquetFile` is read by one thread at a time (several
    lanes' read-ahead threads may reach the same file; pyarrow's own threads still
    decode its columns in parallel)."""
    return _LOCKS.setdefault(path, threading.Lock())


def release_unused() -> None:
    """Gives arrow's freed pages back to the system: its allocator keeps those of the row
    groups already read, which a streamed run's host budget would otherwise count."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def read_group(fs: FileSet, group: Group, columns: list[str]):
    """One group's `columns` as a pyarrow Table (only that row group is read). Parquet
    groups are read through a cached `ParquetFile`: a dataset scan per row group costs
    about twice as much (benchmarks/stream_bench.py)."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        if fs.format == "parquet":
            st = os.stat(group.file)
            pf = _parquet_file(group.file, (st.st_size, st.st_mtime_ns))
            with _file_lock(group.file):  # lanes reading ahead may share a file
                return pf.read_row_group(group.index, columns=columns)
        frag = _file_format(fs.format).make_fragment(group.file, pafs.LocalFileSystem())
        return frag.to_table(columns=columns)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{group.file}: cannot read ({str(e).splitlines()[0]})") from None


def _read_released(fs: FileSet, group: Group, columns: list[str]):
    """`read_group` on a worker thread, first handing back the pages of the tables it
    read before: arrow's allocator (mimalloc) frees a thread's pages only when that
    thread collects, and the tables are dropped on the caller's thread."""
    release_unused()
    return read_group(fs, group, columns)


def read_ahead(
    fs: FileSet, groups: Sequence[int], columns: list[str], depth: int = READ_AHEAD
) -> Iterator[tuple]:
    """(group index, Table) for `groups`, in their order, the next `depth` groups read
    on worker threads while the caller decodes and encodes this one (pyarrow releases
    the GIL while it reads): `depth` more row groups in host memory, and the reading
    overlaps the encoding and the devices' work. A read's error is raised here."""
    if depth < 1 or len(groups) < 2:
        yield from ((g, read_group(fs, fs.groups[g], columns)) for g in groups)
        return
    with ThreadPoolExecutor(depth, thread_name_prefix="jaxpipe-read") as pool:
        ahead: deque = deque()
        for g in groups:
            ahead.append((g, pool.submit(_read_released, fs, fs.groups[g], columns)))
            if len(ahead) > depth:
                yield _pop(ahead)
        while ahead:
            yield _pop(ahead)


def _pop(ahead: deque) -> tuple:
    """The oldest read, its future dropped (a future holds its table until freed)."""
    g, future = ahead.popleft()
    return g, future.result()


def host_record(path: str | None, source: str, host_memory: str) -> dict:
    """`jaxpipe plan`'s host line: the budget, and whether a directory / glob (or a file
    with a `host_memory` given) is larger than it and streams from disk. Reads footers."""
    budget, need = host_budget(host_memory), None
    if path and source in ("csv", "parquet") and (is_multi_path(path) or host_memory != "auto"):
        fs = open_files(path, source, budget)
        need = fs.rows * len(fs.names) * IN_MEMORY_BYTES_PER_CELL
    return {
        "host_memory_bytes": budget,
        "data_bytes_in_memory": need,
        "streams_from_disk": need is not None and need > budget,
    }
