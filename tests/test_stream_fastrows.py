"""The numeric fast path of a streamed epoch (jaxpipe.fastrows): the same rows, bit for
bit, as the general column-by-column path, and the general path wherever it must decide
(missing values, categoricals, unseen classes, text labels, integer features); the
read-ahead thread keeps the groups' order."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import jaxpipe.data.diskrows as diskrows
from jaxpipe.data.diskrows import DiskRows, ReadSpec, scan_source
from jaxpipe.data.encoding import ColumnCode, FeatureEncoder
from jaxpipe.data.fastrows import numeric_rows
from jaxpipe.data.sources import open_files, read_ahead, read_group
from jaxpipe.errors import DataError

F32_MAX = float(np.finfo(np.float32).max)


def _write(folder, task, seed=0):
    """Three files of 40 rows in 10-row groups: float64 and float32 features on large
    offsets (where a careless cast would differ), integer classes 3, 10, 42 (numeric
    order is not text order) or float targets."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(3):
        x = rng.normal(size=(40, 3)) * [1e-3, 10, 1e5] + [1e4, -3, 7]
        y = rng.choice([3, 10, 42], 40) if task == "classification" else rng.normal(size=40)
        cols = {"a": x[:, 0], "b": x[:, 1].astype(np.float32), "c": x[:, 2], "y": y}
        pq.write_table(pa.table(cols), os.path.join(folder, f"p{i}.parquet"), row_group_size=10)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fast_path_gives_the_general_paths_rows_bit_for_bit(tmp_path, monkeypatch, task):
    _write(tmp_path / "d", task)
    fs = open_files(str(tmp_path / "d" / "*.parquet"), "parquet", 1 << 30)
    rs = ReadSpec(fs, "y", None, (), "error", task, 7, 0.25, True, 1 << 30)
    rows = DiskRows(rs, scan_source(rs, "standard", "d"), "d")
    taken = []

    def spy(*a):
        out = numeric_rows(*a)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(diskrows, "numeric_rows", spy)
    fast = [rows._train(g, diskrows._read_table(rs, fs.groups[g])) for g in range(len(fs.groups))]
    assert taken and all(taken)
    monkeypatch.setattr(diskrows, "numeric_rows", lambda *a: None)
    general = [
        rows._train(g, diskrows._read_table(rs, fs.groups[g])) for g in range(len(fs.groups))
    ]
    for (fx, fy), (gx, gy) in zip(fast, general):
        assert fx.dtype == gx.dtype and fy.dtype == gy.dtype
        np.testing.assert_array_equal(fx, gx)
        np.testing.assert_array_equal(fy, gy)


NUMERIC = FeatureEncoder((ColumnCode("a", "numeric"), ColumnCode("b", "numeric")))


@pytest.mark.parametrize(
    "a, b, y, encoder, classes",
    [
        ([1.0, np.nan], [2.0, 3.0], [0, 1], NUMERIC, ("0", "1")),  # a missing value
        ([1.0, np.inf], [2.0, 3.0], [0, 1], NUMERIC, ("0", "1")),  # not finite: an error
        ([1.0, 2 * F32_MAX], [2.0, 3.0], [0, 1], NUMERIC, ("0", "1")),  # beyond float32
        ([1.0, 2.0], [2.0, 3.0], [0, 5], NUMERIC, ("0", "1")),  # a class never fitted
        ([1.0, 2.0], [2.0, 3.0], ["u", "v"], NUMERIC, ("u", "v")),  # text labels
        ([1.0, 2.0], [2.0, 3.0], [0, None], NUMERIC, ("0", "1")),  # a missing label
        ([1.0, 2.0], [2, 3], [0, 1], NUMERIC, ("0", "1")),  # an integer feature
        ([1.0, 2.0], [2.0, 3.0], [0, 1], NUMERIC, ("00", "1")),  # a class not int-spelled
        (
            [1.0, 2.0],
            [2.0, 3.0],
            [0, 1],
            FeatureEncoder((ColumnCode("a", "numeric"), ColumnCode("b", "categorical", ("2",)))),
            ("0", "1"),
        ),
    ],
)
def test_fast_path_leaves_what_needs_a_decision_to_the_general_path(a, b, y, encoder, classes):
    table = pa.table({"a": a, "b": b, "y": y})
    assert numeric_rows(table, encoder, "y", np.arange(2), "classification", classes) is None


def test_fast_path_maps_integer_classes_in_numeric_order():
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [0.5, 0.25, 0.0], "y": [42, 3, 10]})
    x, y = numeric_rows(table, NUMERIC, "y", np.array([2, 0]), "classification", ("3", "10", "42"))
    np.testing.assert_array_equal(x, np.array([[3.0, 0.0], [1.0, 0.5]], np.float32))
    np.testing.assert_array_equal(y, np.array([1, 2], np.int32))


def test_read_ahead_keeps_the_order_and_raises_a_reads_error(tmp_path):
    _write(tmp_path / "d", "classification")
    fs = open_files(str(tmp_path / "d" / "*.parquet"), "parquet", 1 << 30)
    order = list(np.random.default_rng(1).permutation(len(fs.groups)))
    got = list(read_ahead(fs, order, ["a", "y"]))
    assert [g for g, _ in got] == order
    for g, t in got:
        assert t.equals(read_group(fs, fs.groups[g], ["a", "y"]))
    with open(fs.groups[order[1]].file, "wb") as f:  # a file gone bad since the scan
        f.write(b"not parquet")
    with pytest.raises(DataError, match="cannot read"):
        list(read_ahead(fs, order, ["a", "y"]))
