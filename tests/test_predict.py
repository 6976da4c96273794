"""`jaxpipe predict`: a finished run directory applies its saved encoders, scaler and
parameters to new rows. Predicting the validation file must reproduce the validation
metrics the run reported."""

import csv
import io
import json
import math

import numpy as np
import pytest

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.saved.predict import load_predictor, predict_file

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

COLORS = ["red", "green", "blue"]


def _rows(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        num = float(np.round(rng.uniform(0, 10), 2))
        color = COLORS[int(rng.integers(3))]
        code = int(rng.integers(1, 3))
        out.append((num, color, code))
    return out


def _write(path, rows, target):
    with open(path, "w") as f:
        f.write("num,color,code,target\n")
        for num, color, code in rows:
            f.write(f"{num},{color},{code},{target(num, color, code)}\n")


def _species(num, color, code):
    return "dog" if num > 5 or color == "red" else "cat"


def _value(num, color, code):
    return round(3 * num + 10 * (color == "red") - 4 * code + 100, 3)


SPEC = """
[experiment]
name = "{name}"
[data]
source = "csv"
path = "train.csv"
label = "target"
categorical = ["code"]
validation = "val.csv"
[preprocess]
normalize = "standard"
[model]
hidden = [16]
task = "{task}"
dropout = 0.1
layer_norm = true
[optimizer]
learning_rate = 0.01
[training]
epochs = 15
batch_size = 16
"""


@pytest.fixture(scope="module", params=["classification", "regression"])
def trained(request, tmp_path_factory):
    task = request.param
    d = tmp_path_factory.mktemp(task)
    target = _species if task == "classification" else _value
    _write(d / "train.csv", _rows(120, 0), target)
    _write(d / "val.csv", _rows(40, 1), target)
    (d / "spec.toml").write_text(SPEC.format(name=task, task=task))
    result = jaxpipe.run(str(d / "spec.toml"), out=str(d / "run"))
    return task, d, result


def _read(path_or_text):
    text = open(path_or_text).read() if not path_or_text.startswith("prediction") else path_or_text
    return list(csv.DictReader(io.StringIO(text)))


def test_predicting_the_validation_file_reproduces_the_reported_metric(trained, capsys):
    task, d, result = trained
    out = d / "pred.csv"
    assert main(["predict", str(d / "run"), str(d / "val.csv"), "--out", str(out)]) == 0
    rows = _read(str(out))
    truth = list(csv.DictReader(open(d / "val.csv")))
    assert len(rows) == len(truth) == 40
    if task == "classification":
        assert list(rows[0]) == ["prediction", "probability"]
        assert {r["prediction"] for r in rows} <= {"cat", "dog"}
        assert all(0.5 <= float(r["probability"]) <= 1.0 for r in rows)
        hits = sum(r["prediction"] == t["target"] for r, t in zip(rows, truth))
        assert hits / 40 == pytest.approx(result.final["val_accuracy"], abs=1e-9)
    else:
        assert list(rows[0]) == ["prediction"]
        err = [float(r["prediction"]) - float(t["target"]) for r, t in zip(rows, truth)]
        rmse = math.sqrt(sum(e * e for e in err) / len(err))
        # predictions are written with 6 significant digits; the metric is float32
        assert rmse == pytest.approx(result.final["val_rmse"], rel=1e-3)
        baseline = result.summary["baseline"]["val_rmse"]
        assert result.final["val_rmse"] < 0.5 * baseline


def test_stdout_unseen_categories_and_no_label_column(trained, capsys):
    task, d, _ = trained
    (d / "new.csv").write_text("color,num,code\npurple,3.5,1\nred,9,7\n")
    assert main(["predict", str(d / "run"), str(d / "new.csv")]) == 0
    captured = capsys.readouterr()
    rows = _read(captured.out)
    assert len(rows) == 2 and all(r["prediction"] for r in rows)


def test_run_directory_holds_the_predictor(trained):
    task, d, result = trained
    meta = json.loads((d / "run" / "predictor.json").read_text())
    assert meta["task"] == task and meta["model"]["layer_norm"] is True
    assert meta["features"] == result.summary["features"]
    assert [c["name"] for c in meta["encoder"]["columns"]] == ["num", "color", "code"]
    pred = load_predictor(str(d / "run"))
    assert pred.classes == (("cat", "dog") if task == "classification" else ())
    summary = json.loads((d / "run" / "summary.json").read_text())
    assert summary["classes"] == list(pred.classes)
    # The run's spec copy names its data files absolutely, so it runs from anywhere.
    copy = jaxpipe.load_spec(str(d / "run" / "spec.toml"))
    assert copy.data.validation == str(d / "val.csv") and copy.data.path == str(d / "train.csv")


def test_predict_errors(trained, capsys, tmp_path):
    task, d, _ = trained
    (tmp_path / "bad.csv").write_text("num,code\n1,1\n")
    cases = [
        ([str(tmp_path / "nope"), str(d / "val.csv")], "run directory not found"),
        ([str(tmp_path), str(d / "val.csv")], "not a finished run"),
        ([str(d / "run"), str(tmp_path / "missing.csv")], "data file not found"),
        ([str(d / "run"), str(tmp_path / "bad.csv")], "column 'color'"),
    ]
    for argv, needle in cases:
        assert main(["predict", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err
    with pytest.raises(jaxpipe.JaxpipeError, match="missing values"):
        (tmp_path / "gap.csv").write_text("num,color,code\n,red,1\n")
        predict_file(str(d / "run"), str(tmp_path / "gap.csv"), out=str(tmp_path / "p.csv"))
    assert not (tmp_path / "p.csv").exists()


@pytest.mark.parametrize("task, hidden, layer_norm", [("classification", (16,), False),
                                                      ("regression", (8, 8), True)])  # fmt: skip
def test_a_rows_prediction_does_not_depend_on_the_rows_beside_it(task, hidden, layer_norm):
    """Every row goes through one fixed-size block program (saved/predict.py): its output
    is bit for bit the same alone, in a subset, shuffled or among 20,000 rows."""
    import jax

    from jaxpipe.core.model import make_model
    from jaxpipe.core.scaling import Scaler
    from jaxpipe.data.fitted import Preprocessing
    from jaxpipe.saved.predict import forward
    from jaxpipe.spec.sections import ModelSpec

    rng = np.random.default_rng(5)
    x = rng.normal(size=(20_000, 6)).astype(np.float32)
    outputs = 3 if task == "classification" else 1
    spec = ModelSpec(hidden=hidden, layer_norm=layer_norm, task=task)
    params = make_model(spec, outputs).init(jax.random.key(0), x[:1])
    prep = Preprocessing(
        task, "y", ("a", "b", "c") if outputs == 3 else (), tuple("abcdef"), None,
        "standard", Scaler(np.zeros(6, np.float32), np.ones(6, np.float32)),
        Scaler(np.float32([10.0]), np.float32([3.0])) if outputs == 1 else None,
    )  # fmt: skip
    network = {"hidden": list(hidden), "activation": "relu", "dropout": 0.0,
               "layer_norm": layer_norm, "outputs": outputs}  # fmt: skip
    whole = forward(network, params, prep, x)
    order = rng.permutation(len(x))[:300]
    np.testing.assert_array_equal(forward(network, params, prep, x[order]), whole[order])
    for part in (slice(7, 8), slice(3, 70), slice(100, 420)):
        np.testing.assert_array_equal(forward(network, params, prep, x[part]), whole[part])
