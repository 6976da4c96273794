"""Out-of-core sources (issue 16): files and row groups, one-pass statistics equal to the
in-memory fit, the rows' seeded order, and bad input named in one line."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from conftest import ROOT

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.core.scaling import fit_scaler
from jaxpipe.data.diskrows import DiskRows, ReadSpec, _scan_share, scan_source
from jaxpipe.data.encoding import column_values, encode_labels, fit_encoder, handle_missing
from jaxpipe.data.load import load_dataset
from jaxpipe.data.readers import arrow_columns
from jaxpipe.data.roworder import epoch_steps, process_lanes, validation_mask
from jaxpipe.data.sources import open_files
from jaxpipe.runner.stream import chunk_bounds


def write_parts(folder, parts=3, rows=60, group=20, seed=0, missing=False):
    """`parts` Parquet files of `rows` rows in row groups of `group`: five numeric
    columns on large offsets (where naive moments lose fp32), a text column, labels."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(parts):
        x = rng.normal(size=(rows, 5)) * [1, 10, 100, 0.1, 5] + [1e4, -3, 7, 0, 50]
        if missing:
            x[rng.random(x.shape) < 0.1] = np.nan
        cat = rng.choice(["red", "green", "blue", None] if missing else ["a", "b", "c"], rows)
        y = rng.choice(["cat", "dog", "emu"], rows)
        table = pa.table({**{f"f{j}": x[:, j] for j in range(5)}, "c": cat, "y": y})
        pq.write_table(table, os.path.join(folder, f"part{i}.parquet"), row_group_size=group)
    return folder


def _read_spec(folder, missing="error", task="classification", validation=0.25):
    fs = open_files(os.path.join(folder, "*.parquet"), "parquet", 1 << 30)
    return ReadSpec(fs, "y", None, (), missing, task, 7, validation, True, 1 << 30)


def _in_memory_train(rs):
    """The training rows the stream selects, read whole and encoded as in memory."""
    feats, ys = {}, []
    for g in rs.fs.groups:
        cols = arrow_columns(pq.ParquetFile(g.file).read_row_group(g.index), g.file)
        keep = ~validation_mask(g.file, g.first_row, g.rows, rs.seed, rs.validation)
        for name in [n for n in cols if n != "y"]:
            feats.setdefault(name, []).append(cols[name][keep])
        ys.append(cols["y"][keep])
    kinds, prepared = {}, {}
    for name, parts in feats.items():
        kinds[name], prepared[name] = column_values(name, np.concatenate(parts), "mem")
    return handle_missing(prepared, np.concatenate(ys), "y", rs.missing, "mem")[:2], kinds


@pytest.mark.parametrize("missing", ["error", "mean"])
@pytest.mark.parametrize("normalize", ["minmax", "standard"])
def test_streamed_statistics_equal_the_in_memory_fit(tmp_path, missing, normalize):
    rs = _read_spec(write_parts(tmp_path / "d", missing=missing == "mean"), missing)
    scan = scan_source(rs, normalize, "d")
    (feats, y), kinds = _in_memory_train(rs)
    encoder = fit_encoder(feats, kinds, missing == "mean")
    # Vocabularies exact; imputation means to float64 rounding (a different sum order).
    assert [c.categories for c in scan.encoder.columns] == [c.categories for c in encoder.columns]
    for a, b in zip(scan.encoder.columns, encoder.columns):
        np.testing.assert_allclose(a.fill, b.fill, rtol=1e-12)
    scaler = fit_scaler(normalize, jnp.asarray(encoder.transform(feats)))
    if normalize == "minmax":  # exact
        np.testing.assert_array_equal(scan.scaler.offset, np.asarray(scaler.offset))
        np.testing.assert_array_equal(scan.scaler.scale, np.asarray(scaler.scale))
    else:  # moments merged in float64 against a float32 fit: fp32 tolerance
        np.testing.assert_allclose(scan.scaler.offset, scaler.offset, rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(scan.scaler.scale, scaler.scale, rtol=2e-5)
    assert scan.classes == encode_labels(y, "y")[1] == ("cat", "dog", "emu")
    assert sum(scan.train_rows) == len(y) and len(scan.y_val) == 180 - len(y)


def test_regression_target_statistics_equal_the_in_memory_fit(tmp_path):
    folder = tmp_path / "r"
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    for i in range(2):
        x = rng.normal(size=(50, 3))
        t = pa.table({"a": x[:, 0], "b": x[:, 1], "y": 1e3 + 50 * x[:, 2]})
        pq.write_table(t, folder / f"p{i}.parquet", row_group_size=10)
    rs = _read_spec(folder, task="regression")
    scan = scan_source(rs, "standard", "r")
    (_, y), _ = _in_memory_train(rs)
    y = jnp.asarray(y.astype(np.float32))
    np.testing.assert_allclose(scan.target.offset, [jnp.mean(y)], rtol=1e-6)
    np.testing.assert_allclose(scan.target.scale, [jnp.std(y)], rtol=1e-5)


def test_same_seed_same_batches_with_one_or_two_processes(tmp_path):
    rs = _read_spec(write_parts(tmp_path / "d", parts=4, rows=40, group=10))
    rows = DiskRows(rs, scan_source(rs, "minmax", "d"), "d")
    lanes, per_lane = 4, 3
    bounds = chunk_bounds(epoch_steps(rows.lane_rows(lanes), per_lane), 4)

    def chunks(local):
        return list(rows.epoch_chunks(1, lanes, per_lane, bounds, local))

    one = chunks(range(4))
    halves = [chunks(process_lanes(lanes, p, 2)) for p in range(2)]
    for c, (a, b) in enumerate(zip(*halves)):
        for k in range(3):  # x, y, weight: process 0's rows of each batch, then 1's
            np.testing.assert_array_equal(np.concatenate([a[k], b[k]], axis=1), one[c][k])
    assert chunks(range(4))[0][0].tobytes() == one[0][0].tobytes()  # seeded: repeatable
    # Every training row exactly once an epoch; another epoch another order.
    assert sum(float(c[2].sum()) for c in one) == rows.shape[0]
    other = list(rows.epoch_chunks(2, lanes, per_lane, bounds, range(4)))
    assert other[0][0].tobytes() != one[0][0].tobytes()
    # The two processes' lanes read disjoint row groups that together are all of them.
    groups = rows.lanes(lanes)
    mine = [{g for lane in process_lanes(lanes, p, 2) for g in groups[lane]} for p in range(2)]
    assert not mine[0] & mine[1] and mine[0] | mine[1] == set(range(len(rs.fs.groups)))


def test_validation_split_is_stable_whatever_the_file_layout(tmp_path):
    # A row's side depends on its file's name and its row index, not on row groups.
    whole = validation_mask("/a/part0.parquet", 0, 100, 3, 0.3)
    parts = [validation_mask("/b/part0.parquet", s, 25, 3, 0.3) for s in range(0, 100, 25)]
    np.testing.assert_array_equal(whole, np.concatenate(parts))
    assert 15 < whole.sum() < 45


def _run(spec, tmp_path):
    env = os.environ | {"PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "jaxpipe", "run", spec, "--out", str(tmp_path / "o")]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def _spec(tmp_path, path, host="1GiB"):
    text = (
        f'[data]\nsource = "parquet"\npath = "{path}"\nlabel = "y"\nhost_memory = "{host}"\n'
        "[training]\nepochs = 1\nbatch_size = 8\n"
    )
    spec = tmp_path / f"spec{len(list(tmp_path.glob('spec*')))}.toml"
    spec.write_text(text)
    return str(spec)


def test_bad_sources_fail_in_one_line_naming_the_file(tmp_path, capsys):
    write_parts(tmp_path / "d", parts=2)
    pq.write_table(pa.table({"f0": [1.0, 2.0], "y": ["a", "b"]}), tmp_path / "d" / "zz.parquet")
    write_parts(tmp_path / "m", parts=1)
    (tmp_path / "m" / "extra.csv").write_text("f0,y\n1,a\n")
    cases = [
        (_spec(tmp_path, "nothing/*.parquet"), "nothing/*.parquet: the pattern matches no files"),
        (_spec(tmp_path, "d"), "zz.parquet: its columns"),
        (_spec(tmp_path, "m"), "extra.csv: a CSV file among Parquet files"),
        (_spec(tmp_path, "d/part*.parquet", host="1KiB"), "part0.parquet: row group 0 (20 rows"),
    ]
    # The real CLI in a subprocess once; the other cases through the same entry point
    # in this process (each subprocess pays seconds of imports).
    p = _run(cases[0][0], tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and cases[0][1] in p.stderr, p.stderr
    for spec, expected in cases[1:]:
        capsys.readouterr()
        assert main(["run", spec, "--out", str(tmp_path / "o")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_a_csv_glob_streams_as_its_parquet_twin(tmp_path):
    # One CSV file is one group: the same rows in CSV and Parquet files (same names,
    # so the same row hash) give the same split and statistics.
    write_parts(tmp_path / "p", parts=2, rows=40, group=40)
    os.makedirs(tmp_path / "c")
    for i in range(2):
        table = pq.read_table(tmp_path / "p" / f"part{i}.parquet")
        pacsv.write_csv(table, tmp_path / "c" / f"part{i}.csv")
    p = _read_spec(tmp_path / "p")
    fs = open_files(str(tmp_path / "c" / "*.csv"), "csv", 1 << 30)
    c = ReadSpec(fs, "y", None, (), "error", "classification", 7, 0.25, True, 1 << 30)
    a, b = scan_source(p, "standard", "p"), scan_source(c, "standard", "c")
    assert len(fs.groups) == 2 and a.train_rows == b.train_rows
    assert a.encoder == b.encoder and a.classes == b.classes
    np.testing.assert_allclose(a.scaler.scale, b.scaler.scale, rtol=1e-6)
    np.testing.assert_array_equal(a.x_val, b.x_val)


def test_statistics_pass_split_over_two_processes_equals_one(tmp_path):
    # Process p scans groups i ≡ p (mod 2); the merged statistics are the whole pass's.
    rs = _read_spec(write_parts(tmp_path / "d", missing=True), "mean")
    whole = scan_source(rs, "standard", "d")
    shares = [_scan_share(rs, "d", p, 2) for p in range(2)]
    assert not set(shares[0].groups) & set(shares[1].groups)
    assert set(shares[0].groups) | set(shares[1].groups) == set(range(len(rs.fs.groups)))
    fit = shares[0].fit
    fit.merge(shares[1].fit)
    assert [c.categories for c in fit.encoder().columns] == [
        c.categories for c in whole.encoder.columns
    ]
    scaler = fit.scaler("standard", fit.encoder())
    np.testing.assert_allclose(scaler.offset, whole.scaler.offset, rtol=1e-12)
    np.testing.assert_allclose(scaler.scale, whole.scaler.scale, rtol=1e-6)


def test_a_set_streams_only_when_larger_than_the_host_budget(tmp_path, write_spec):
    write_parts(tmp_path / "d", parts=2, rows=60, group=20)
    base = '[data]\nsource = "parquet"\nlabel = "y"\n[training]\nbatch_size = 8\n'
    spec = jaxpipe.load_spec(write_spec(base), ['data.path="d/*.parquet"'])
    assert isinstance(load_dataset(spec).x_train, np.ndarray)  # fits "auto": loaded whole
    one = ['data.path="d/part0.parquet"', 'data.host_memory="6KiB"']
    ds = load_dataset(jaxpipe.load_spec(write_spec(base), one))
    assert isinstance(ds.x_train, DiskRows) and len(ds.x_train) + len(ds.y_val) == 60
    plan = jaxpipe.plan(jaxpipe.load_spec(write_spec(base), one))
    assert plan.host == {
        "host_memory_bytes": 6144,
        "data_bytes_in_memory": 60 * 7 * 19,
        "streams_from_disk": True,
    }
