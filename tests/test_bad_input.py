"""Bad input, table-driven: each case exits 2 with one `error: ...` line on stderr that
names the key, file or column, no traceback, and no finished-looking run directory."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from jaxpipe.cli.main import main

ROWS = "".join(
    f"{i % 7}.5,{i * 3 % 11},{'red' if i % 3 else 'blue'},{'cat' if i % 2 else 'dog'}\n"
    for i in range(20)
)
CSV = "a,b,color,y\n" + ROWS

BASE = """
[experiment]
name = "bad"

[data]
source = "csv"
path = "d.csv"
label = "y"
validation = 0.25

[model]
hidden = [4]

[training]
epochs = 1
batch_size = 4
"""


def spec_with(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


# (id, spec text, extra files {name: str | bytes}, argv after the command, needles)
CASES = [
    ("toml-syntax", BASE + "[training2]\nepochs = = 3\n", {}, [], ["spec.toml:", "invalid TOML"]),
    ("duplicate-key", BASE + "epochs = 2\n", {}, [], ["spec.toml:", "invalid TOML"]),
    (
        "unknown-section",
        BASE + "[trainin]\nepochs = 2\n",
        {},
        [],
        ["trainin", "did you mean 'training'"],
    ),
    (
        "unknown-key",
        spec_with("epochs = 1", "epochz = 1"),
        {},
        [],
        ["training.epochz", "did you mean 'epochs'"],
    ),
    (
        "string-for-int",
        spec_with("epochs = 1", 'epochs = "five"'),
        {},
        [],
        ["training.epochs", "expected an integer"],
    ),
    (
        "string-for-float",
        BASE + '[optimizer]\nlearning_rate = "fast"\n',
        {},
        [],
        ["optimizer.learning_rate", "expected a number"],
    ),
    ("negative-epochs", spec_with("epochs = 1", "epochs = -2"), {}, [], ["training.epochs", "≥ 1"]),
    (
        "zero-batch",
        spec_with("batch_size = 4", "batch_size = 0"),
        {},
        [],
        ["training.batch_size", "≥ 1"],
    ),
    (
        "negative-lr",
        BASE + "[optimizer]\nlearning_rate = -0.1\n",
        {},
        [],
        ["optimizer.learning_rate", "> 0"],
    ),
    ("zero-width-layer", spec_with("hidden = [4]", "hidden = [4, 0]"), {}, [], ["model.hidden[1]"]),
    (
        "validation-above-1",
        spec_with("validation = 0.25", "validation = 1.5"),
        {},
        [],
        ["data.validation", "(0, 1)"],
    ),
    (
        "validation-zero",
        spec_with("validation = 0.25", "validation = 0.0"),
        {},
        [],
        ["data.validation", "(0, 1)"],
    ),
    (
        "dropout-one",
        spec_with("hidden = [4]", "hidden = [4]\ndropout = 1.0"),
        {},
        [],
        ["model.dropout", "< 1.0"],
    ),
    (
        "unknown-task",
        spec_with("hidden = [4]", 'hidden = [4]\ntask = "regresion"'),
        {},
        [],
        ["model.task", "did you mean 'regression'"],
    ),
    (
        "unknown-optimizer",
        BASE + '[optimizer]\nname = "adamm"\n',
        {},
        [],
        ["optimizer.name", "did you mean 'adam'"],
    ),
    (
        "unknown-activation",
        spec_with("hidden = [4]", 'hidden = [4]\nactivation = "rleu"'),
        {},
        [],
        ["model.activation", "did you mean 'relu'"],
    ),
    (
        "unknown-normaliser",
        BASE + '[preprocess]\nnormalize = "zscore"\n',
        {},
        [],
        ["preprocess.normalize", "'minmax'"],
    ),
    (
        "unknown-missing-policy",
        BASE + '[preprocess]\nmissing = "impute"\n',
        {},
        [],
        ["preprocess.missing", "'mean'"],
    ),
    (
        "unknown-schedule",
        BASE + '[optimizer.schedule]\nname = "cosin"\n',
        {},
        [],
        ["optimizer.schedule.name", "did you mean 'cosine'"],
    ),
    (
        "bad-optimizer-kwarg",
        BASE + '[optimizer]\nname = "adamw"\nweight_decy = 0.1\n',
        {},
        [],
        ["optimizer.weight_decy", "did you mean 'weight_decay'"],
    ),
    (
        "bad-optimizer-value",
        BASE + '[optimizer]\nname = "adamw"\nweight_decay = "lots"\n',
        {},
        [],
        ["spec.toml:", "optimizer", "weight_decay = 'lots'"],
    ),
    (
        "set-bad-optimizer-value",
        BASE,
        {},
        ["--set", 'optimizer.b1="x"'],
        ["--set: optimizer", "b1 = 'x'"],
    ),
    (
        "key-outside-its-section",
        "epochs = 3\n" + BASE,
        {},
        [],
        ["spec.toml:1:", "[training] epochs"],
    ),
    (
        "set-list-entry-type",
        BASE,
        {},
        ["--set", 'data.features=["a", 3]'],
        ["--set: data.features[1]", "expected a string"],
    ),
    (
        "binary-data-file",
        BASE,
        {"d.csv": bytes(range(256)) * 4},
        [],
        ["d.csv", "cannot parse as CSV"],
    ),
    (
        "duplicate-column",
        BASE,
        {"d.csv": CSV.replace("a,b,color,y", "a,a,color,y", 1)},
        [],
        ["d.csv", "column name 'a' appears twice"],
    ),
    (
        "csv-without-path",
        BASE.replace('path = "d.csv"\n', ""),
        {},
        [],
        ["data.path", 'source = "csv" needs'],
    ),
    (
        "label-in-features",
        spec_with('label = "y"', 'label = "y"\nfeatures = ["a", "y"]'),
        {},
        [],
        ["data.features", "label"],
    ),
    (
        "categorical-not-feature",
        spec_with('label = "y"', 'label = "y"\nfeatures = ["a"]\ncategorical = ["b"]'),
        {},
        [],
        ["data.categorical[0]", "'b'"],
    ),
    ("missing-spec-file", None, {}, ["nowhere.toml"], ["nowhere.toml", "spec file not found"]),
    ("spec-is-a-directory", None, {"sub/x": ""}, ["{dir}/sub"], ["cannot read the spec file"]),
    ("spec-not-utf8", b"[training]\nepochs = 1 # \xff\xfe\n", {}, [], ["spec.toml", "not UTF-8"]),
    (
        "missing-data-file",
        spec_with('path = "d.csv"', 'path = "none.csv"'),
        {},
        [],
        ["none.csv", "not found"],
    ),
    (
        "data-is-a-directory",
        spec_with('path = "d.csv"', 'path = "sub"'),
        {"sub/x": ""},
        [],
        # A directory is a data set now (issue 16): its non-data file is named.
        ["sub/x", "not a .parquet or .csv file"],
    ),
    ("empty-data-file", BASE, {"d.csv": ""}, [], ["d.csv", "empty"]),
    ("header-only", BASE, {"d.csv": "a,b,color,y\n"}, [], ["d.csv", "no data rows"]),
    (
        "not-utf8-data",
        BASE,
        {"d.csv": b"a,b,color,y\n" + b"1,2,\xff\xfe,cat\n" * 3},
        [],
        ["d.csv", "column 'color'", "not UTF-8"],
    ),
    (
        "missing-label-column",
        spec_with('label = "y"', 'label = "species"'),
        {},
        [],
        ["d.csv", "label column 'species' not found"],
    ),
    (
        "missing-feature-column",
        spec_with('label = "y"', 'label = "y"\nfeatures = ["a", "wings"]'),
        {},
        [],
        ["d.csv", "'wings'", "not found"],
    ),
    (
        "text-in-numeric",
        BASE,
        {"d.csv": CSV.replace("\n3.5,", "\n3.5x,", 1)},
        [],
        ["d.csv", "column 'a'", "'3.5x'", "row 4"],
    ),
    (
        "missing-values-default",
        BASE,
        {"d.csv": CSV.replace("\n3.5,9,", "\n,9,", 1)},
        [],
        ["d.csv", "column 'a' has 1 missing", 'missing = "drop"'],
    ),
    (
        "missing-label-value",
        BASE,
        {"d.csv": CSV.replace(",cat\n", ",\n", 1)},
        [],
        ["label column 'y'", "1 rows without a label"],
    ),
    (
        "non-integer-labels",
        spec_with('label = "y"', 'label = "a"\nfeatures = ["b"]'),
        {},
        [],
        ["label column 'a'", "not a class label"],
    ),
    (
        "text-regression-target",
        spec_with("hidden = [4]", 'hidden = [4]\ntask = "regression"'),
        {},
        [],
        ["label column 'y'", "'dog' at row 1", "regression needs numeric"],
    ),
    (
        "batch-larger-than-train",
        spec_with("batch_size = 4", "batch_size = 64"),
        {},
        [],
        ["training.batch_size = 64", "15 rows"],
    ),
    (
        "validation-rows-exceed",
        spec_with("validation = 0.25", "validation = 20"),
        {},
        [],
        ["data.validation holds out 20 of 20"],
    ),
    (
        "missing-validation-file",
        spec_with("validation = 0.25", 'validation = "val.csv"'),
        {},
        [],
        ["val.csv", "not found"],
    ),
    (
        "unseen-validation-class",
        spec_with("validation = 0.25", 'validation = "val.csv"'),
        {"val.csv": "a,b,color,y\n1,2,red,bird\n"},
        [],
        ["val.csv", "class 'bird'"],
    ),
    (
        "npz-without-y",
        spec_with('source = "csv"\npath = "d.csv"\nlabel = "y"', 'source = "npz"\npath = "d.npz"'),
        {"d.npz": "NPZ_NO_Y"},
        [],
        ["d.npz", "no array 'y'"],
    ),
    (
        "not-parquet",
        spec_with('source = "csv"\npath = "d.csv"', 'source = "parquet"\npath = "d.csv"'),
        {},
        [],
        ["d.csv", "Parquet"],
    ),
    ("set-not-key-value", BASE, {}, ["--set", "training.epochs"], ["--set", "not KEY=VALUE"]),
    (
        "set-bad-toml",
        BASE,
        {},
        ["--set", "model.hidden=[1,"],
        ["--set", "model.hidden", "not a TOML value"],
    ),
    (
        "set-unknown-key",
        BASE,
        {},
        ["--set", "trainig.epochs=3"],
        ["--set", "did you mean 'training'"],
    ),
    ("set-out-of-range", BASE, {}, ["--set", "data.validation=1.0"], ["--set", "data.validation"]),
    (
        "set-wrong-type",
        BASE,
        {},
        ["--set", "training.batch_size=big"],
        ["--set", "training.batch_size", "expected an integer"],
    ),  # Issue 11, defects in spec loading.
    ("defect-15-deep-nesting", BASE + "x = " + "[" * 500 + "]" * 500 + "\n", {}, [], ["deep"]),
    ("defect-15-nesting-over-limit", BASE + "x = " + "[" * 20 + "]" * 20 + "\n", {}, [], ["deep"]),
    (
        "defect-15-deep-set",
        BASE,
        {},
        ["--set", "optimizer.x=" + "[" * 500 + "]" * 500],
        ["--set", "deep"],
    ),
    (
        "defect-17-set-trailing-text",
        BASE,
        {},
        ["--set", "training.epochs=2 3"],
        ["--set", "training.epochs", "text after the value"],
    ),
    (
        "defect-17-set-trailing-key",
        BASE,
        {},
        ["--set", "training.epochs=2\nbatch_size = 8"],
        ["--set", "training.epochs", "text after the value"],
    ),
    (
        "defect-17-set-trailing-comment",
        BASE,
        {},
        ["--set", "training.epochs=2 # two"],
        ["--set", "training.epochs", "text after the value"],
    ),
    (
        "defect-17-set-value-for-table",
        BASE,
        {},
        ["--set", "model=3"],
        ["--set", "model", "is a table"],
    ),
    (
        "defect-19-seed-past-32-bits",
        BASE + "[experiment]\nseed = 4294967296\n".replace("[experiment]\n", ""),
        {},
        ["--set", "experiment.seed=4294967296"],
        ["experiment.seed", "≤ 4294967295"],
    ),
    (
        "defect-20-stopping-metric-not-recorded",
        BASE + '[training.early_stopping]\nmetric = "val_rmse"\n',
        {},
        [],
        ["training.early_stopping.metric", "unknown metric 'val_rmse'", "val_accuracy"],
    ),
    (
        "defect-20-best-metric-not-recorded",
        BASE + '[checkpoint]\nbest_metric = "val_rmse"\n',
        {},
        [],
        ["spec.toml:", "checkpoint.best_metric", "unknown metric 'val_rmse'"],
    ),
    (
        "defect-20-long-name",
        spec_with('name = "bad"', 'name = "' + "n" * 240 + '"'),
        {},
        [],
        ["spec.toml:3:", "experiment.name", "at most 200"],
    ),
]


def _parquet_with_list_column() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20
    table = pa.table(
        {
            "a": [float(i % 7) for i in range(n)],
            "tags": [[i, i + 1] for i in range(n)],
            "y": ["cat" if i % 2 else "dog" for i in range(n)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


SYNTHETIC = """
[experiment]
name = "bad"

[data]
source = "synthetic"
validation = 0.25

[data.synthetic]
rows = 100000000000
features = 1000

[training]
epochs = 1
batch_size = 4
"""

# Issue 11's defects, in the table where a spec and files show them (the id names it).
CASES += [
    (
        "defect-02-schedule-bad-value",
        BASE + '[optimizer.schedule]\nname = "cosine"\ndecay_steps = 0\n',
        {},
        [],
        ["optimizer.schedule", "decay_steps = 0"],
    ),
    (
        "defect-02-schedule-negative-rate",
        BASE + '[optimizer.schedule]\nname = "exponential"\ndecay_rate = -0.5\n',
        {},
        [],
        ["optimizer.schedule", "learning rate -", "≥ 0"],
    ),
    (
        "defect-03-inf-in-data",
        BASE,
        {"d.csv": CSV.replace("\n3.5,", "\ninf,", 1)},
        [],
        ["d.csv", "column 'a'", "inf", "row 4"],
    ),
    (
        "defect-03-beyond-float32",
        BASE,
        {"d.csv": CSV.replace("\n3.5,", "\n1e308,", 1)},
        [],
        ["d.csv", "column 'a'", "1e+308", "row 4", "float32"],
    ),
    (
        "defect-03-inf-with-missing-error",
        BASE + '[preprocess]\nmissing = "error"\n',
        {"d.csv": CSV.replace("\n3.5,9,", "\n-inf,9,", 1)},
        [],
        ["d.csv", "column 'a'", "-inf"],
    ),
    (
        "defect-03-inf-regression-target",
        spec_with('label = "y"', 'label = "a"\nfeatures = ["b"]').replace(
            "hidden = [4]", 'hidden = [4]\ntask = "regression"'
        ),
        {"d.csv": CSV.replace("\n3.5,", "\ninf,", 1)},
        [],
        ["d.csv", "label column 'a'", "inf"],
    ),
    (
        "defect-04-label-beyond-2-53",
        spec_with('label = "y"', 'label = "n"'),
        {"d.csv": "a,n\n" + "".join(f"{i},{'1e20' if i % 2 else '5'}\n" for i in range(20))},
        [],
        ["label column 'n'", "2**53"],
    ),
    (
        "defect-06-validation-file-lacks-a-column",
        spec_with("validation = 0.25", 'validation = "val.csv"'),
        {"val.csv": "a,color,y,extra\n1,red,cat,5\n"},
        [],
        ["val.csv", "no column 'b'"],
    ),
    (
        "defect-07-synthetic-beyond-host-memory",
        SYNTHETIC,
        {},
        [],
        ["data.synthetic", "GiB of host memory", "lower data.synthetic.rows"],
    ),
    (
        "defect-07-synthetic-classes-beyond-host-memory",
        SYNTHETIC.replace("rows = 100000000000", "rows = 100\nclasses = 100000000000"),
        {},
        [],
        ["data.synthetic", "100000000000 classes", "GiB of host memory"],
    ),
    (
        "defect-10-spec-is-dev-zero",
        None,
        {},
        ["/dev/zero"],
        ["/dev/zero", "a device, not a regular file"],
    ),
    (
        "defect-23-semicolon-csv",
        BASE,
        {"d.csv": CSV.replace(",", ";")},
        [],
        ["d.csv", "separated by ';'"],
    ),
    (
        "defect-24-parquet-list-column",
        spec_with('source = "csv"\npath = "d.csv"', 'source = "parquet"\npath = "d.parquet"'),
        {"d.parquet": "PARQUET_LIST"},
        [],
        ["d.parquet", "column 'tags'", "list<"],
    ),
]


def _materialise(tmp_path, spec, files):
    (tmp_path / "d.csv").write_text(CSV)
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content == "NPZ_NO_Y":
            np.savez(path, x=np.zeros((4, 2)))
        elif content == "PARQUET_LIST":
            path.write_bytes(_parquet_with_list_column())
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if spec is not None:
        p = tmp_path / "spec.toml"
        p.write_bytes(spec if isinstance(spec, bytes) else spec.encode())
    return str(tmp_path / "spec.toml")


def _check(code, err, out, needles):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert err[:-1].isprintable(), repr(err)  # control characters from a file are escaped
    for needle in needles:
        assert needle in err, (needle, err)
    assert not os.path.exists(os.path.join(out, "summary.json"))


assert len(CASES) >= 25


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, monkeypatch, case, command):
    _, spec, files, extra, needles = case
    monkeypatch.chdir(tmp_path)
    spec_path = _materialise(tmp_path, spec, files)
    out = str(tmp_path / "run")
    extra = [a.replace("{dir}", str(tmp_path)) for a in extra]
    if spec is not None:
        argv = [command, spec_path, *extra]
    else:
        argv = [command, *extra]
    if command == "run":
        argv += ["--out", out]
    code = main(argv)
    _check(code, capsys.readouterr().err, out, needles)


@pytest.mark.parametrize("case_id", ["toml-syntax", "text-in-numeric"])
def test_bad_input_in_a_real_process(tmp_path, case_id):
    _, spec, files, extra, needles = next(c for c in CASES if c[0] == case_id)
    spec_path = _materialise(tmp_path, spec, files)
    out = str(tmp_path / "run")
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", spec_path, "--out", out, *extra],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )
    _check(p.returncode, p.stderr, out, needles)


def test_defect_16_bom(tmp_path, capsys):
    """A spec saved with a UTF-8 byte-order mark (as some Windows editors do) loads."""
    spec_path = _materialise(tmp_path, "\ufeff" + BASE, {})
    assert main(["validate", spec_path]) == 0, capsys.readouterr().err
    assert ": valid" in capsys.readouterr().out


def test_defect_17_table_override_merges(tmp_path):
    """`--set model={...}` changes the keys it names and keeps the others (the task)."""
    from jaxpipe import load_spec

    spec_path = _materialise(tmp_path, spec_with("hidden = [4]", 'task = "regression"'), {})
    spec = load_spec(spec_path, ["model={hidden=[8, 2]}"])
    assert spec.model.hidden == (8, 2) and spec.model.task == "regression"
    spec = load_spec(spec_path, {"model": {"dropout": 0.5}})
    assert spec.model.dropout == 0.5 and spec.model.task == "regression"


def test_defect_20_long_name_without_out_blames_the_name(tmp_path, monkeypatch, capsys):
    """Without --out the over-long name is the spec's problem, and `validate` says so
    too: neither mentions --out."""
    monkeypatch.chdir(tmp_path)
    spec_path = _materialise(tmp_path, spec_with('name = "bad"', 'name = "' + "n" * 240 + '"'), {})
    for argv in (["run", spec_path], ["validate", spec_path]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "experiment.name" in err and "--out" not in err, err
    assert not os.path.exists(tmp_path / "runs")
