"""Cross-validation (`[data] folds = K`): the folds of the one vmapped program equal K
separate runs on the same splits; each fold's encoder and scaler see its training part
only; the CLI writes summary.json's `cv`; bad fold counts are one line, exit 2."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, assert_trees_close

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.data.folds import fold_indices, load_folds
from jaxpipe.data.frames import to_columns
from jaxpipe.data.load import LoadRequest, load_dataset, make_synthetic
from jaxpipe.runner.shell import run_experiment
from jaxpipe.spec.experiment import load_spec
from jaxpipe.sweep.cv import run_cv

pytestmark = pytest.mark.usefixtures("compile_once")

BASE = """
[experiment]
name = "cv"
seed = 3
[data]
source = "synthetic"
folds = 3
[data.synthetic]
rows = 241
features = 5
classes = 3
[model]
hidden = [8]
[training]
epochs = 1
batch_size = 32
"""

# vmapped matmuls and reductions may round differently from the unbatched ones: fp32
# rounding over one epoch of 6 optimizer steps stays well inside this (as test_sweep's).
RTOL, ATOL = 2e-4, 2e-5


def _rows(history):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in history]


def _alone(spec, x, y, train, val, out):
    """A single run (the ordinary run path) on fold rows given in memory."""
    single = dataclasses.replace(spec, data=dataclasses.replace(spec.data, folds=None))
    single = dataclasses.replace(single, data=dataclasses.replace(single.data, source="memory"))
    columns = to_columns((x[train], y[train]), "y")[0]
    held = to_columns((x[val], y[val]), "y")[0]
    ds = load_dataset(single, columns, held, "fold")
    return run_experiment(single, out, dataset=ds, checkpoints=False)


def test_folds_equal_separate_runs_on_the_same_splits(write_spec, tmp_path):
    # "balanced" gives each fold its own class weights: a program input per fold.
    text = BASE.replace("folds = 3", "folds = 2") + 'class_weight = "balanced"\n'
    spec = load_spec(write_spec(text))
    result = run_cv(spec, str(tmp_path / "cv"))
    assert result.summary["programs"][0]["folds"] == [0, 1]  # one program, both folds
    assert result.summary["programs"][0]["devices"] == 2  # a fold per device
    x, y = make_synthetic(spec.data.synthetic, spec.experiment.seed)
    parts = fold_indices(y, 2, spec.experiment.seed, stratify=True)
    for k in (0, 1):
        train, val = parts[k]
        alone = _alone(spec, x, y, train, val, str(tmp_path / f"alone{k}"))
        fold = result.folds[k]
        assert fold.dataset.x_val.shape[0] == len(val) == 241 // 2
        got, want = _rows(fold.history), _rows(alone.history)
        for g, w in zip(got, want, strict=True):
            assert g.keys() == w.keys()
            np.testing.assert_allclose(list(g.values()), list(w.values()), rtol=RTOL, atol=ATOL)
        assert_trees_close(fold.params, jax.device_get(alone.params), rtol=RTOL, atol=ATOL)
        assert result.cv["metrics"][k]["val_loss"] == fold.history[-1]["val_loss"]
    losses = [m["val_loss"] for m in result.cv["metrics"]]
    assert result.cv["mean"]["val_loss"] == pytest.approx(np.mean(losses))
    assert result.cv["std"]["val_loss"] == pytest.approx(np.std(losses))


def test_folds_are_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(3), [40, 25, 12]).astype(np.int32)
    parts = fold_indices(y, 4, seed=7, stratify=True)
    held = np.concatenate([v for _, v in parts])
    assert len(np.unique(held)) == len(held) == 4 * (len(y) // 4)  # each held out once
    for train, val in parts:
        assert len(val) == len(y) // 4 and not np.intersect1d(train, val).size
        assert len(train) + len(val) == len(y)
        counts = np.bincount(y[val], minlength=3)
        assert np.all(np.abs(counts - np.bincount(y) / 4) <= 1.0)  # every class in proportion
    again = fold_indices(y, 4, seed=7, stratify=True)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(parts, again, strict=True))
    other = fold_indices(y, 4, seed=8, stratify=True)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(parts, other, strict=True))


def test_each_fold_fits_its_preprocessing_on_its_training_part_only(write_spec, tmp_path):
    """No leakage: fold k's encoder fill values, scaler and trained parameters depend on
    its training part alone; changing only its held-out rows changes none of them."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 4)).astype(np.float64) * [1, 10, 100, 1000]
    y = (x[:, 0] > 0).astype(np.int64)
    spec = load_spec(write_spec(BASE.replace('source = "synthetic"', 'source = "memory"')))
    spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, folds=2))
    parts = fold_indices(y, 2, spec.experiment.seed, stratify=True)
    a = jaxpipe.cross_validate(spec, (x, y))
    train0, val0 = parts[0]
    x_moved = x.copy()
    x_moved[val0] = x_moved[val0] * 50 + 7  # only fold 0's held-out rows change
    b = jaxpipe.cross_validate(spec, (x_moved, y))
    for result, rows in ((a, x), (b, x_moved)):
        scaler = result.folds[0].prep.scaler
        np.testing.assert_allclose(scaler.offset, rows[train0].min(0), rtol=1e-6)
        np.testing.assert_allclose(scaler.scale, np.ptp(rows[train0], 0), rtol=1e-6)
    assert_trees_close(a.folds[0].params, b.folds[0].params)  # fold 0 never saw them
    assert a.folds[0].history[-1]["train_loss"] == b.folds[0].history[-1]["train_loss"]
    assert a.folds[0].history[-1]["val_loss"] != b.folds[0].history[-1]["val_loss"]
    # Fold 1 trains on the moved rows: its scaler (and so its training) changes.
    assert not np.allclose(a.folds[1].prep.scaler.scale, b.folds[1].prep.scaler.scale)


def test_encoders_impute_from_the_fold_and_share_its_columns(write_spec, tmp_path):
    """missing = "mean" imputes from each fold's training part; a category seen only in a
    fold's held-out rows is a column of zeros in its training part, not a wider fold."""
    n = 30
    color = ["red", "blue"] * (n // 2)
    color[0] = "green"  # one row: in exactly one fold's held-out part
    value = np.arange(n, dtype=np.float64)
    value[[3, 4]] = np.nan
    csv = tmp_path / "t.csv"
    lines = ["color,value,label"] + [
        f"{c},{'' if np.isnan(v) else v},{i % 2}" for i, (c, v) in enumerate(zip(color, value))
    ]
    csv.write_text("\n".join(lines) + "\n")
    text = BASE.replace('source = "synthetic"', 'path = "t.csv"\nlabel = "label"')
    text = text.replace("batch_size = 32", "batch_size = 8") + '[preprocess]\nmissing = "mean"\n'
    spec = load_spec(write_spec(text))
    folds = load_folds(LoadRequest.of(spec))
    assert {ds.x_train.shape[1] for ds in folds} == {4}  # value + blue, green, red
    labels = np.arange(n) % 2
    for ds, (train, _) in zip(folds, fold_indices(labels, 3, 3, stratify=True), strict=True):
        fill = ds.encoder.columns[1].fill[0]
        assert fill == pytest.approx(np.nanmean(value[train]))
        green = ds.feature_names.index("color=green")
        assert ds.x_train[:, green].sum() == (0 in train)


def test_cli_set_folds_writes_summary_cv(write_spec, tmp_path):
    spec = write_spec(BASE.replace("folds = 3\n", ""))
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=ROOT)
    args = ["run", spec, "--set", "data.folds=3", "--out", str(out), "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "jaxpipe", *args], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    summary = json.loads((out / "summary.json").read_text())
    cv = summary["cv"]
    assert summary["kind"] == "cv" and cv["folds"] == 3 and len(cv["metrics"]) == 3
    assert set(cv["mean"]) == set(cv["std"]) >= {"val_loss", "val_accuracy"}
    for k in range(3):
        assert (out / "folds" / str(k) / "metrics.jsonl").read_text().count("\n") == 1


def test_console_shows_the_folds_and_their_mean(write_spec, tmp_path, capsys):
    spec = write_spec(BASE.replace("folds = 3", "folds = 2"))
    assert main(["run", spec, "--out", str(tmp_path / "run"), "--plain"]) == 0
    text = capsys.readouterr().out
    assert "Cross-validation (2 folds)" in text
    assert "Mean ± std over the folds: " in text and "val_loss " in text


@pytest.mark.parametrize(
    "change, where",
    [
        ("folds = 1", "data.folds"),  # below the minimum
        ("folds = 3\nvalidation = 50", "data.folds"),  # a split of its own: a conflict
        ('folds = 3\nvalidation = "val.csv"', "data.folds"),
        ("folds = 300", "data.folds"),  # more folds than rows
        ("folds = 3\nchunk_rows = 64", "data.folds"),
    ],
)
def test_bad_folds_are_one_line_exit_2(write_spec, tmp_path, capsys, change, where):
    spec = write_spec(BASE.replace("folds = 3", change))
    assert main(["run", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and where in err, err
    assert not os.path.exists(tmp_path / "run" / "summary.json")


def test_more_folds_than_a_class_has_rows_is_one_line(write_spec, tmp_path, capsys):
    csv = tmp_path / "t.csv"
    labels = ["a"] * 20 + ["b"] * 2
    csv.write_text("x,label\n" + "".join(f"{i},{c}\n" for i, c in enumerate(labels)))
    text = BASE.replace('source = "synthetic"', 'path = "t.csv"\nlabel = "label"')
    spec = write_spec(text.replace("batch_size = 32", "batch_size = 4"))
    assert main(["run", spec, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert "class 'b' has 2 rows, fewer than data.folds = 3" in err


def test_fit_refuses_folds_and_points_to_cross_validate(write_spec):
    spec = load_spec(write_spec(BASE))
    with pytest.raises(jaxpipe.SpecError, match="cross_validate"):
        jaxpipe.fit(spec)
