"""The public Python API as a notebook uses it: specs built in Python are checked like
files, `fit` trains on data in memory through the same encoders as a file, the `Model`
predicts, evaluates, saves and loads; the Python API guide's example runs."""

import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_bad_input import CASES

import jaxpipe
from jaxpipe import SpecError

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

pd = pytest.importorskip("pandas")

TINY = {"model": {"hidden": [8]}, "training": {"epochs": 2, "batch_size": 16}}


def _frame(rows=160, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "size": rng.normal(size=rows),
            "colour": rng.choice(["red", "green", "blue"], size=rows),
            "weight": rng.normal(50.0, 10.0, size=rows),
        }
    )
    df["kind"] = np.where((df["size"] > 0) ^ (df["colour"] == "red"), "cat", "dog")
    return df


@pytest.fixture(scope="module")
def frame_model():
    spec = jaxpipe.Spec.from_dict(TINY | {"data": {"label": "kind"}})
    return jaxpipe.fit(spec, data=_frame())


def test_notebook_dataframe_fit_predict_evaluate_save_load(frame_model, tmp_path):
    model, df = frame_model, _frame()
    assert model.classes == ("cat", "dog") and model.columns == ("size", "colour", "weight")
    assert [r["epoch"] for r in model.history] == [1, 2] and model.final == model.history[-1]
    probs = model.predict(df)
    assert probs.shape == (len(df), 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # An array (object: text and numbers) gives its columns in model.columns order.
    np.testing.assert_array_equal(model.predict(df[list(model.columns)].to_numpy()), probs)
    names = model.predict_classes(df.head(5))
    assert list(names) == [model.classes[i] for i in probs[:5].argmax(axis=1)]
    metrics = model.evaluate(df)
    assert metrics["rows"] == len(df) and sum(map(sum, metrics["confusion_matrix"])) == len(df)
    assert metrics["accuracy"] == pytest.approx(np.mean(model.predict_classes(df) == df["kind"]))
    assert set(metrics["per_class"]) == {"cat", "dog"}
    model.save(tmp_path / "m")
    loaded = jaxpipe.load_model(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(df), probs)
    np.testing.assert_array_equal(loaded.predict(df.to_numpy()[:, :3]), probs)
    assert loaded.evaluate(df) == metrics and loaded.history == model.history
    with pytest.raises(jaxpipe.JaxpipeError, match="already holds"):
        model.save(tmp_path / "m")
    # jaxpipe.predict takes rows in memory too, writing the CSV `jaxpipe predict` writes.
    assert jaxpipe.predict(str(tmp_path / "m"), df, out=str(tmp_path / "p.csv")) == len(df)
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == "prediction,probability" and lines[1].split(",")[0] == names[0]


def test_rows_in_memory_meet_the_file_checks(frame_model):
    df = _frame()
    df["size"] = df["size"].astype(object)
    df.loc[3, "size"] = "huge"  # text in a numeric column: the file's error, named
    with pytest.raises(jaxpipe.DataError, match=r"column 'size'.*'huge'.*at index 3\b"):
        frame_model.predict(df)  # named by the frame's own index (issue 25)
    with pytest.raises(jaxpipe.DataError, match=r"'huge' at index 'd'"):
        frame_model.predict(df.set_axis(list("abcdefgh") + list(range(8, len(df)))))
    with pytest.raises(jaxpipe.DataError, match="expected \\[rows, 3\\]"):
        frame_model.predict(np.zeros((2, 5)))
    with pytest.raises(jaxpipe.DataError, match="label column 'kind' not found"):
        jaxpipe.fit(jaxpipe.Spec.from_dict(TINY | {"data": {"label": "kind"}}), data=df[["size"]])


def _no_time(rows):
    return [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]


def test_fit_from_arrays_equals_run_from_the_same_data_in_a_file(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    seen = []

    class Listener:  # any object with some Observer methods
        def on_epoch(self, row, epochs):
            seen.append((row["epoch"], epochs))

    fitted = jaxpipe.fit(TINY, data=(x, y), callbacks=[Listener()], out=str(tmp_path / "fit"))
    assert seen == [(1, 2), (2, 2)]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    spec = jaxpipe.Spec.from_dict(TINY | {"data": {"source": "npz", "path": "d.npz"}})
    spec = dataclasses.replace(spec, base_dir=str(tmp_path))
    ran = jaxpipe.run(spec, out=str(tmp_path / "run"), verbose=False)
    assert _no_time(fitted.history) == _no_time(ran.history)
    file_model = jaxpipe.load_model(tmp_path / "run")
    np.testing.assert_array_equal(fitted.predict(x), file_model.predict(x))
    # fit(out=...) wrote a run directory that the command line reads.
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxpipe",
            "evaluate",
            str(tmp_path / "fit"),
            str(tmp_path / "d.npz"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == fitted.evaluate((x, y))


def test_fit_regression_with_validation_table(tmp_path):
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(100, 2))
    table = pa.table({"a": x[:, 0], "b": x[:, 1], "y": 3.0 * x[:, 0] + 1.0})
    val = pa.table({"a": [0.5, -0.5], "b": [0.0, 1.0], "y": [2.5, -0.5]})
    spec = {
        "model": {"task": "regression", "hidden": [4]},
        "training": {"epochs": 1, "batch_size": 20},
    }
    model = jaxpipe.fit(spec, data=table, validation=val)
    assert model.predict(table).shape == (100,)
    metrics = model.evaluate(val)
    assert set(metrics) >= {"rmse", "mae", "r2", "loss"} and metrics["rows"] == 2
    assert metrics["rmse"] == pytest.approx(model.final["val_rmse"], rel=1e-4)
    with pytest.raises(jaxpipe.JaxpipeError, match="regression model has no classes"):
        model.predict_classes(table)


# Bad spec values of tests/test_bad_input.py, as Python builds them:
# (case id there, key path, bad value, what the error says). Data-file cases are not here.
SPEC_VALUE_CASES = [
    ("unknown-key", "training.epochz", 1, "did you mean 'epochs'"),
    ("unknown-section", "trainin.epochs", 2, "did you mean 'training'"),
    ("string-for-int", "training.epochs", "five", "expected an integer"),
    ("string-for-float", "optimizer.learning_rate", "fast", "expected a number"),
    ("negative-epochs", "training.epochs", -2, "≥ 1"),
    ("zero-batch", "training.batch_size", 0, "≥ 1"),
    ("negative-lr", "optimizer.learning_rate", -0.1, "> 0"),
    ("zero-width-layer", "model.hidden", [4, 0], "model.hidden[1]"),
    ("validation-above-1", "data.validation", 1.5, "(0, 1)"),
    ("validation-zero", "data.validation", 0.0, "(0, 1)"),
    ("dropout-one", "model.dropout", 1.0, "< 1.0"),
    ("unknown-task", "model.task", "regresion", "did you mean 'regression'"),
    ("unknown-activation", "model.activation", "rleu", "did you mean 'relu'"),
    ("unknown-normaliser", "preprocess.normalize", "zscore", "'minmax'"),
    ("unknown-missing-policy", "preprocess.missing", "impute", "'mean'"),
    ("set-list-entry-type", "data.features", ["a", 3], "expected a string"),
    ("label-in-features", "data.features", ["a", "y"], "label"),
    ("categorical-not-feature", "data.categorical", ["b"], "'b'"),
    ("set-wrong-type", "training.batch_size", "big", "expected an integer"),
    ("defect-19-seed-past-32-bits", "experiment.seed", 2**32, "≤ 4294967295"),
    ("defect-20-long-name", "experiment.name", "n" * 240, "at most 200"),
]
# Checked when the run starts (they need optax), before any data is read.
OPTAX_CASES = [
    ("unknown-optimizer", "optimizer.name", "adamm", "did you mean 'adam'"),
    ("unknown-schedule", "optimizer.schedule", {"name": "cosin"}, "did you mean 'cosine'"),
    ("bad-optimizer-kwarg", "optimizer.weight_decy", 0.1, "did you mean 'weight_decay'"),
]
BASE = {
    "data": {"source": "csv", "path": "d.csv", "label": "y", "features": ["a", "b"]},
    "optimizer": {"name": "adamw"},
}


def _nested(key, value):
    table = json.loads(json.dumps(BASE))
    *parents, last = key.split(".")
    node = table
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    if key == "data.categorical":
        node["features"] = ["a"]
    return table


def _key_of(case_id, key):
    """The key path the error names (an unknown section's own name, say)."""
    return {"zero-width-layer": "model.hidden[1]", "unknown-section": "trainin"}.get(case_id, key)


@pytest.mark.parametrize("case", SPEC_VALUE_CASES + OPTAX_CASES, ids=lambda c: c[0])
def test_a_spec_built_in_python_raises_spec_error_naming_the_key(case, tmp_path):
    case_id, key, value, needle = case
    assert case_id in {c[0] for c in CASES}, case_id  # mirrors the bad-input table
    late = case in OPTAX_CASES

    def check(build):
        with pytest.raises(SpecError) as e:
            spec = build()
            if late:
                jaxpipe.fit(spec, data=(np.zeros((8, 2)), np.arange(8) % 2))
        assert _key_of(case_id, key) in str(e.value) and needle in str(e.value), str(e.value)

    check(lambda: jaxpipe.Spec.from_dict(_nested(key, value)))
    path = tmp_path / "spec.toml"
    path.write_text(
        '[data]\nsource = "csv"\npath = "d.csv"\nlabel = "y"\nfeatures = ["a", "b"]\n'
        '[optimizer]\nname = "adamw"\n'
    )
    overrides = {key: value} | ({"data.features": ["a"]} if key == "data.categorical" else {})
    check(lambda: jaxpipe.load_spec(path, overrides=overrides))
    section, _, name = key.rpartition(".")
    spec = jaxpipe.Spec.from_dict(BASE)
    parent = dataclasses.replace(spec, data=dataclasses.replace(spec.data, features=("a",)))
    obj = parent
    for part in section.split("."):
        obj = getattr(obj, part, None)
    if not dataclasses.is_dataclass(obj) or name not in {f.name for f in dataclasses.fields(obj)}:
        return  # an unknown key or section: no keyword to replace
    if isinstance(value, dict):
        return  # a whole subsection: from_dict and overrides cover it

    def replaced():
        new = dataclasses.replace(obj, **{name: value})  # raises here, naming the key
        for part in reversed(section.split(".")):  # ...or the rebuilt spec does
            holder = parent
            path = section.split(".")
            for p in path[: path.index(part)]:
                holder = getattr(holder, p)
            new = dataclasses.replace(holder, **{part: new})
        return new

    check(replaced)


def test_python_specs_fail_before_any_file_is_written(tmp_path):
    spec = jaxpipe.Spec.from_dict(TINY | {"data": {"source": "synthetic"}})
    with pytest.raises(SpecError, match="training.epochs"):
        jaxpipe.run(
            dataclasses.replace(spec, training=dataclasses.replace(spec.training, epochs=-5))
        )
    with pytest.raises(SpecError, match="training.batch_size"):  # cross-section rule, too
        dataclasses.replace(spec, training=dataclasses.replace(spec.training, batch_size=10**6))
    assert not (tmp_path / "runs").exists()


def test_python_api_guide_example_runs(tmp_path, monkeypatch):
    path = os.path.join(ROOT, "docs", "guides", "python-api.md")
    with open(path) as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    os.symlink(os.path.join(ROOT, "experiments"), tmp_path / "experiments")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, path, "exec"), {"__name__": "readme"})
    assert (tmp_path / "models" / "kinds" / "predictor.json").exists()
    assert (tmp_path / "runs" / "api-demo" / "summary.json").exists()


def test_cli_predict_probabilities_and_keep(frame_model, tmp_path):
    df = _frame(rows=6, seed=5)
    df.insert(0, "id", [101, 102, 103, 104, 105, 106])
    df.to_csv(tmp_path / "new.csv", index=False)
    frame_model.save(tmp_path / "m")
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "predict", str(tmp_path / "m"), str(tmp_path / "new.csv"),
         "--probabilities", "--keep", "id,colour"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "id,colour,prediction,cat,dog" and len(lines) == 7
    probs = frame_model.predict(df)
    first = lines[1].split(",")
    assert first[:2] == ["101", df["colour"][0]]
    assert first[2] == frame_model.classes[probs[0].argmax()]
    np.testing.assert_allclose([float(v) for v in first[3:]], probs[0], atol=1e-6)
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "predict", str(tmp_path / "m"), str(tmp_path / "new.csv"), "--keep", "nope"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--keep nope" in p.stderr
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "evaluate", str(tmp_path / "m"), str(tmp_path / "new.csv")],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": ROOT},
        timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "accuracy" in p.stdout and "confusion matrix" in p.stdout


def test_no_silent_synthetic_data(tmp_path):
    """Synthetic rows only when the spec says so (issue 25): no data and no source is a
    SpecError saying what to pass; a path infers its source from the extension."""
    with pytest.raises(SpecError, match=r"data.source: jaxpipe.fit\(spec\) has no data.*data="):
        jaxpipe.fit(TINY)
    with pytest.raises(SpecError, match='source = "synthetic"'):
        jaxpipe.run(TINY, out=str(tmp_path / "r"), verbose=False)
    assert not (tmp_path / "r").exists()
    with pytest.raises(SpecError, match="has no data"):
        jaxpipe.plan(TINY)
    assert jaxpipe.Spec.from_dict({"data": {"path": "a/b.parquet", "label": "y"}}).data.source == (
        "parquet"
    )
    assert jaxpipe.Spec.from_dict({"data": {"path": "x.npz"}}).data.source == "npz"
    assert jaxpipe.Spec.from_dict({"data": {"path": "t.csv", "label": "y"}}).data.source == "csv"
    with pytest.raises(SpecError, match="data.label"):  # a csv path still needs its label
        jaxpipe.Spec.from_dict({"data": {"path": "t.csv"}})


def test_fit_x_y_positional_and_plan_takes_the_same_data():
    df = _frame(64)
    x, y = df[["size", "weight"]].to_numpy(), df["kind"].to_numpy()
    with pytest.raises(TypeError, match=r"jaxpipe.fit\(spec, X, y\).*MLPClassifier"):
        jaxpipe.fit(x, y)
    labelled = TINY | {"data": {"label": "kind"}}
    plan = jaxpipe.plan(labelled, data=df, fit=False)  # a DataFrame, as fit takes it
    assert plan.shapes.features == 5 and plan.shapes.classes == 2
    assert jaxpipe.plan(TINY, (x, y), fit=False).shapes.features == 2
    assert repr(plan).startswith("Plan(fits: ") and len(repr(plan)) < 200
    assert "<table>" in plan._repr_html_()
    model = jaxpipe.fit(labelled, df[["size", "colour"]], df["kind"])
    assert model.columns == ("size", "colour") and model.classes == ("cat", "dog")


def test_a_callback_stops_training_and_the_model_shows_itself_briefly():
    x = np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)

    class Enough:
        def on_epoch_end(self, row, epochs):
            return "good enough" if row["epoch"] == 2 else None

    spec = jaxpipe.Spec.from_dict(TINY | {"training": {"epochs": 5, "batch_size": 16}})
    model = jaxpipe.fit(spec, x, y, callbacks=[Enough()])
    assert len(model.history) == 2
    assert model.summary["stop"] == {"epoch": 2, "reason": "callback: good enough"}
    assert model.summary["status"] == "completed"
    layers = model.summary()  # summary.json stays a dict; called, the layer table
    assert [r["name"] for r in layers.layers] == ["hidden_0", "output"]
    assert layers.params == 3 * 8 + 8 + 8 * 2 + 2 == sum(r["params"] for r in layers.layers)
    assert layers.bytes == 4 * layers.params and "total: 50 parameters" in repr(layers)
    assert len(repr(model)) < 200 and "50 parameters" in repr(model)
    assert len(model._repr_html_()) < 2000 and "<table>" in model._repr_html_()
    assert len(repr(spec)) < 200 and "<pre>" in spec._repr_html_()


def test_dir_lists_the_api_and_py_typed_ships():
    names = dir(jaxpipe)
    assert not {"sys", "types", "Any", "import_module", "errors", "_LAZY"} & set(names)
    assert names == sorted(set(names)) and {"fit", "Model", "StopTraining"} <= set(names)
    assert os.path.isfile(os.path.join(ROOT, "jaxpipe", "py.typed"))
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        assert '"py.typed"' in f.read()  # package data: shipped in the wheel
