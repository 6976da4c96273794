"""The prediction trace: `jaxpipe trace` (a real process) and `jaxpipe.saved.trace`, for
classification and regression; probabilities sum to 1 and the predicted class or value is
what `jaxpipe predict` writes for the same row."""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.saved.predict import load_predictor, predict_rows
from jaxpipe.saved.trace import TRACE_ROWS_FILE, trace_features

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

SPEC = """
[experiment]
name = "trace-{task}"
seed = 1

[data]
source = "csv"
path = "rows.csv"
label = "{label}"
features = ["a", "b", "kind"]
categorical = ["kind"]
validation = 20

[model]
task = "{task}"
hidden = [8, 6]
activation = "{activation}"

[training]
epochs = 2
batch_size = 16
"""


def _cli(*args):
    env = os.environ | {"PYTHONPATH": ROOT}
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return p.returncode, p.stdout, p.stderr


def _write_rows(path):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=80), rng.normal(size=80)
    kind = rng.choice(["u", "v"], size=80)
    animal = np.where(a + b > 0.5, "cat", np.where(a - b > 0, "dog", "eel"))
    value = 3 * a - b + (kind == "u") + 0.1 * rng.normal(size=80)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "kind", "animal", "value"])
        for row in zip(a, b, kind, animal, value):
            w.writerow([f"{row[0]:.4f}", f"{row[1]:.4f}", row[2], row[3], f"{row[4]:.4f}"])


@pytest.fixture(scope="module", params=["classification", "regression"])
def run(request, tmp_path_factory):
    """A finished two-epoch run through the real CLI: (task, run_dir, data_path)."""
    task = request.param
    d = tmp_path_factory.mktemp(task)
    _write_rows(d / "rows.csv")
    label, act = ("animal", "relu") if task == "classification" else ("value", "tanh")
    (d / "spec.toml").write_text(SPEC.format(task=task, label=label, activation=act))
    code, _, err = _cli("run", str(d / "spec.toml"), "--out", str(d / "run"), "-q")
    assert code == 0, err
    return task, str(d / "run"), str(d / "rows.csv"), act


def _check_contract(record, task, activation):
    layers = record["layers"]
    assert layers[0]["kind"] == "input" and layers[0]["features"][:2] == ["a", "b"]
    hidden = [x for x in layers if x["kind"] == "hidden"]
    assert [x["units"] for x in hidden] == [8, 6]
    assert all(x["activation"] == activation for x in hidden)
    assert layers[-1]["kind"] == "output"
    p = record["prediction"]
    assert {"class", "probability", "label"} <= set(p)
    if task == "classification":
        probs = layers[-1]["probabilities"]
        assert set(probs) == {"cat", "dog", "eel"}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert p["class"] == max(probs, key=probs.get) and p["probability"] == probs[p["class"]]
    else:
        assert p["class"] is None and isinstance(p["value"], float)


def _predicted(task, run_dir, data):
    code, out, err = _cli("predict", run_dir, data)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    return [r["prediction"] if task == "classification" else float(r["prediction"]) for r in rows]


def test_cli_trace_of_a_data_row_matches_predict(run):
    task, run_dir, data, act = run
    predicted = _predicted(task, run_dir, data)
    for i in (41,):
        code, out, err = _cli("trace", run_dir, data, "--row", str(i), "--json")
        assert code == 0, err
        record = json.loads(out)
        _check_contract(record, task, act)
        p = record["prediction"]
        assert record["row"] == i and p["label"] is not None
        if task == "classification":
            assert p["class"] == predicted[i]
        else:  # predict writes 6 significant digits
            assert p["value"] == pytest.approx(predicted[i], rel=1e-5, abs=1e-6)


def test_default_row_is_the_first_validation_row_and_the_report_shows_it(run):
    task, run_dir, _, act = run
    record = jaxpipe.trace(run_dir)  # the Python API
    _check_contract(record, task, act)
    assert record["source"] == "validation" and record["row"] == 0
    with np.load(os.path.join(run_dir, TRACE_ROWS_FILE)) as kept:
        x, y = kept["x"], kept["y"]
    out = predict_rows(load_predictor(run_dir), x[:1])
    if task == "classification":
        assert record["prediction"]["class"] == load_predictor(run_dir).classes[out[0].argmax()]
        assert record["prediction"]["label"] == load_predictor(run_dir).classes[int(y[0])]
    else:
        assert record["prediction"]["value"] == pytest.approx(float(out[0]), rel=1e-6)
    assert open(os.path.join(run_dir, "trace.png"), "rb").read(4) == b"\x89PNG"
    text = jaxpipe.format_trace(record)
    for line in ("Input", "Hidden 1", "Hidden 2", "Output", "Prediction"):
        assert line in text


def test_text_trace_and_bad_row(run, capsys):
    task, run_dir, data, _ = run
    assert main(["trace", run_dir]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Prediction trace (validation row 0)")
    assert ("Output (Softmax)" if task == "classification" else "Output (linear)") in out
    assert main(["trace", run_dir, data, "--row", "80"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --row 80") and len(err.splitlines()) == 1


@settings(max_examples=5)
@given(seed=st.integers(0, 2**16))
def test_trace_features_agrees_with_predict_rows_for_any_row(run, seed):
    task, run_dir, _, act = run
    pred = load_predictor(run_dir)
    x = np.random.default_rng(seed).normal(size=(1, len(pred.meta["features"])))
    x = x.astype(np.float32)
    record = trace_features(pred, x[0])
    out = predict_rows(pred, x)
    if task == "classification":
        probs = record["layers"][-1]["probabilities"]
        np.testing.assert_allclose(list(probs.values()), out[0], rtol=1e-6, atol=1e-7)
        assert record["prediction"]["class"] == pred.classes[int(out[0].argmax())]
    else:
        assert record["prediction"]["value"] == pytest.approx(float(out[0]), rel=1e-6)
    for layer in record["layers"][1:-1]:
        on = sum(v > 0 for v in layer["values"]) if act == "relu" else layer["active"]
        assert layer["active"] == on


def test_a_trained_models_parts_trace_as_its_run_directory_does(tmp_path, write_spec):
    """What `Model.trace` calls: TracedModel.from_parts(params, network, preprocessing)."""
    from conftest import SMALL_SPEC

    from jaxpipe.saved.trace import TracedModel

    result = jaxpipe.run(write_spec(SMALL_SPEC), out=str(tmp_path / "run"))
    pred = load_predictor(result.run_dir)
    model = TracedModel.from_parts(result.params, pred.meta["model"], result.preprocessing)
    with np.load(os.path.join(result.run_dir, TRACE_ROWS_FILE)) as kept:
        x = kept["x"][0]
    mine, theirs = trace_features(model, x), jaxpipe.trace(result.run_dir)
    assert mine["prediction"]["class"] == theirs["prediction"]["class"]
    assert mine["layers"][-1]["probabilities"] == pytest.approx(
        theirs["layers"][-1]["probabilities"], rel=1e-6
    )


def test_model_trace_equals_the_run_directorys(run):
    """`jaxpipe.load_model(dir).trace(data, row)` is `jaxpipe.trace(dir, data, row=row)`."""
    task, run_dir, data, act = run
    model = jaxpipe.load_model(run_dir)
    mine, theirs = model.trace(data, row=7), jaxpipe.trace(run_dir, data, row=7)
    _check_contract(mine, task, act)
    p, q = mine["prediction"], theirs["prediction"]
    assert p["class"] == q["class"]
    if task == "classification":
        assert p["probability"] == pytest.approx(q["probability"], rel=1e-6)
    else:
        assert p["value"] == pytest.approx(q["value"], rel=1e-6)
    assert mine["layers"][0]["raw"] == theirs["layers"][0]["raw"]
    assert mine["prediction"]["label"] == theirs["prediction"]["label"] is not None


def test_trace_png_names_the_encoded_features(run, tmp_path):
    """trace.png's input strip is labelled by the encoded feature names (the one-hot
    columns as column=value), not by index."""
    from jaxpipe.report.trace_view import trace_figure, write_trace_png

    task, run_dir, _, _ = run
    record = jaxpipe.trace(run_dir)
    fig = trace_figure(record)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["a", "b", "kind=u", "kind=v"]
    assert fig.axes[0].get_title(loc="left").startswith("Input: 4 features")
    write_trace_png(record, str(tmp_path / "trace.png"))
    assert (tmp_path / "trace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Many features: every k-th is named, and the title says so.
    wide = json.loads(json.dumps(record))
    wide["layers"][0] |= {"features": [f"f{i}" for i in range(130)], "scaled": [0.5] * 130}
    ax = trace_figure(wide).axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == [f"f{i}" for i in range(0, 130, 3)] and "one in 3 named" in ax.get_title(
        "left"
    )
