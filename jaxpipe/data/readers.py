"""Reading data files into named host columns: CSV and Parquet (pyarrow) and NPZ, each
path checked first (exists, a readable regular file, not larger than the free host
memory). Numeric columns come back float64 with NaN for missing (exact int64 / uint64
for integer columns without gaps; bool for boolean ones), others object with None. Split from `data.py`, which
encodes and splits what these return."""

from __future__ import annotations

import os

import numpy as np

from jaxpipe.data.encoding import Columns
from jaxpipe.errors import DataError

__all__ = ["arrow_columns", "read_csv", "read_table", "available_host_bytes", "check_host_memory"]


def available_host_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, capped by a cgroup (container)
    limit; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    v1 = "/sys/fs/cgroup/memory/memory."
    for path, used in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (v1 + "limit_in_bytes", v1 + "usage_in_bytes"),
    ):
        try:
            with open(path) as f, open(used) as g:
                limit, current = f.read().strip(), g.read().strip()
            if limit.isdigit() and int(limit) < 2**60:
                found.append(int(limit) - int(current))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def check_host_memory(need: int, what: str, fix: str) -> None:
    """Raises DataError before `what` is generated or read if it needs more host memory
    than is available (a MemoryError or the OOM killer would come later, mid-way)."""
    have = available_host_bytes()
    if have is not None and need > have:
        raise DataError(
            f"{what} needs about {need / 2**30:.1f} GiB of host memory, but "
            f"{max(have, 0) / 2**30:.1f} GiB is available; {fix}"
        )


def _arrow_columns(table, path: str, first_row: int = 0) -> Columns:
    import pyarrow as pa

    if table.num_rows == 0:
        raise DataError(f"{path}: the file has a header but no data rows")
    try:
        names = table.column_names
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: the header row is not UTF-8 text; save the file as UTF-8"
        ) from None
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{path}: column name {dup[0]!r} appears twice; rename one of them")
    columns: Columns = {}
    for name, col in zip(names, table.columns):
        t = col.type
        if pa.types.is_integer(t):
            columns[name] = _integer_column(col)
        elif pa.types.is_boolean(t):
            # bool (object True / False / None with gaps): a feature reads as 0 / 1, a
            # label's classes are False / True, whichever way the rows came in.
            if col.null_count == 0:
                columns[name] = np.asarray(col.to_numpy(zero_copy_only=False), dtype=bool)
            else:
                columns[name] = np.asarray(col.to_pylist(), dtype=object)
        elif pa.types.is_floating(t):
            values = col.to_numpy(zero_copy_only=False)
            columns[name] = np.asarray(values, dtype=np.float64)
        elif pa.types.is_null(t):
            columns[name] = np.full(table.num_rows, np.nan)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            # pyarrow infers bytes for text that is not valid UTF-8.
            values = col.to_pylist()
            for i, v in enumerate(values):
                try:
                    values[i] = None if v is None else v.decode("utf-8")
                except UnicodeDecodeError:
                    raise DataError(
                        f"{path}: column {name!r} row {first_row + i + 1} is not UTF-8 text; "
                        "save the file as UTF-8"
                    ) from None
            columns[name] = np.asarray(values, dtype=object)
        elif pa.types.is_nested(t) or pa.types.is_temporal(t):
            # Their Python text ("[1, 2]", "2024-01-01 00:00:00") would become categories.
            raise DataError(
                f"{path}: column {name!r} has type {t}, which jaxpipe cannot use as a "
                "feature or label; convert it to numbers or text (or leave it out with "
                "data.features)"
            )
        else:
            columns[name] = np.asarray(col.to_pylist(), dtype=object)
    return columns


def _integer_column(col) -> np.ndarray:
    """An integer column exactly: int64 / uint64 without nulls; with nulls float64 (NaN
    for missing) while that is exact (|x| ≤ 2**53), else Python ints and None, so large
    integer labels keep their identity."""
    if col.null_count == 0:
        return col.to_numpy()
    values = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
    if np.nanmax(np.abs(values), initial=0.0) <= 2**53:
        return values
    return np.asarray(col.to_pylist(), dtype=object)


def arrow_columns(table, origin: str, first_row: int = 0) -> Columns:
    """The named columns of an in-memory pyarrow Table, read as a file's are. `first_row`:
    the table's first row within `origin` (a streamed row group), for messages."""
    return _arrow_columns(table, origin, first_row)


def read_csv(path: str) -> Columns:
    """Reads a CSV with a header row into named numpy columns (pyarrow's multithreaded
    reader). Numeric columns come back as float64 with NaN for missing (empty, NA, NaN,
    null, ...); others as object with None."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    _check_file(path)
    try:
        # Empty strings and NA/null spellings are missing in text columns too (pyarrow's
        # default keeps them as strings there, which would make "NA" a category).
        convert = pacsv.ConvertOptions(strings_can_be_null=True)
        table = pacsv.read_csv(path, convert_options=convert)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot parse as CSV ({str(e).splitlines()[0]})") from None
    if table.num_columns == 1:  # one column named "a;b;y": another separator
        try:
            header = table.column_names[0]
        except UnicodeDecodeError:
            header = ""  # _arrow_columns words this one
        sep = next((s for s in (";", "\t", "|") if s in header), None)
        if sep is not None:
            raise DataError(
                f"{path}: the header {header!r} reads as one column: the file seems "
                f"separated by {sep!r}; jaxpipe reads comma-separated CSV, so convert it"
            )
    return _arrow_columns(table, path)


def _read_parquet(path: str, wanted: list[str] | None = None) -> Columns:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_file(path)
    try:
        if wanted is not None:  # only these (a list column elsewhere is no concern)
            names = pq.read_schema(path).names
            wanted = [n for n in names if n in set(wanted)]
        table = pq.read_table(path, columns=wanted)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{path}: cannot read as Parquet ({str(e).splitlines()[0]})") from None
    return _arrow_columns(table, path)


def _read_npz(path: str) -> Columns:
    """Arrays `x` [rows, features] (numeric) and `y` [rows] as columns x0.., y."""
    import zipfile

    _check_file(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npz ({e})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(
                f"{path}: no array {key!r}; an npz source holds x [rows, features] and y "
                f"[rows] (found {', '.join(arrays) or 'none'})"
            )
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise DataError(
            f"{path}: x must be [rows, features] and y [rows]; found x {x.shape}, y {y.shape}"
        )
    if x.dtype.kind not in "fiub":
        raise DataError(f"{path}: x must be numeric, found dtype {x.dtype}")
    if len(x) == 0:
        raise DataError(f"{path}: the arrays have no rows")
    columns: Columns = {f"x{i}": x[:, i].astype(np.float64) for i in range(x.shape[1])}
    columns["y"] = y.astype(np.float64) if y.dtype.kind in "fiub" else y.astype(str).astype(object)
    return columns


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(f"{path}: data file not found; check [data] path (relative to the spec)")
    if not os.path.isfile(path):
        raise DataError(f"{path}: is not a file; [data] path must name a data file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: the data file is not readable (permissions)")
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: the data file is empty; it needs a header row and data rows")
    # Decoded columns take at least the file's size (parquet: several times it): a file
    # larger than the free memory cannot load, so say so before reading.
    check_host_memory(size, path, "free host memory, or use a smaller file")


_READERS = {"csv": read_csv, "parquet": _read_parquet, "npz": _read_npz}


def read_table(path: str, source: str, wanted: list[str] | None = None) -> Columns:
    """The named columns of a csv, parquet or npz file; with `wanted`, a parquet file's
    other columns are not read (csv and npz are read whole)."""
    if source not in _READERS:  # "memory": the rows come from jaxpipe.fit(data=...)
        raise DataError(f'data.source = "{source}" reads no file; pass the rows to jaxpipe.fit')
    if source == "parquet":
        return _read_parquet(path, wanted)
    return _READERS[source](path)
