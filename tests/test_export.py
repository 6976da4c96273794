"""Export for serving (issue 25): the whole predictor (encoder's numeric part, scaler,
MLP) as StableHLO and as ONNX gives `predict`'s probabilities (or values) on held-back
rows within 1e-5, with the row count symbolic."""

import numpy as np
import pytest

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.saved.export import categories

# Runs here compile the same few programs: the per-worker compilation cache (conftest)
# compiles each once; a cached executable is the compiled one.
pytestmark = pytest.mark.usefixtures("compile_once")

pd = pytest.importorskip("pandas")

SPEC = {
    "data": {"categorical": ["code"], "validation": 0.25},
    "preprocess": {"missing": "mean", "normalize": "standard"},
    "model": {"hidden": [8]},
    "training": {"epochs": 2, "batch_size": 16},
}


def _frame(rows=160, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "size": rng.normal(size=rows),
            "weight": rng.normal(50.0, 10.0, size=rows),
            "code": rng.integers(1, 4, size=rows),  # an integer-coded category
            "colour": rng.choice(["red", "green", "blue"], size=rows),  # a text category
        }
    )
    df.loc[[3, 130], "size"] = np.nan  # imputed with the training mean, in the graph too
    df["kind"] = np.where((df["size"].fillna(0) > 0) ^ (df["colour"] == "red"), "cat", "dog")
    df["value"] = df["size"].fillna(0) * 3.0 + df["code"] + df["weight"] / 10.0
    return df


def _matrix(model, df):
    """The raw float32 matrix the exported model takes: the input columns in order, a
    text category as its number from `categories`."""
    codes = categories(model.preprocessing.encoder)
    cols = [
        df[c].to_numpy() if pd.api.types.is_numeric_dtype(df[c]) else df[c].map(codes[c]).to_numpy()
        for c in model.columns
    ]
    return np.stack(cols, axis=1).astype(np.float32)


@pytest.mark.parametrize("task, label", [("classification", "kind"), ("regression", "value")])
def test_stablehlo_and_onnx_equal_predict_on_held_back_rows(task, label, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("jax2onnx")
    import jax

    df = _frame().drop(columns=["value" if label == "kind" else "kind"])
    train, held = df.iloc[:120], df.iloc[120:]
    spec = SPEC | {"data": SPEC["data"] | {"label": label}, "model": {"hidden": [8], "task": task}}
    model = jaxpipe.fit(spec, data=train, out=str(tmp_path / "run"))
    expected = model.predict(held)
    x = _matrix(model, held)
    assert np.isnan(x).any()  # a missing value goes in as NaN

    path = model.export(tmp_path / "m.stablehlo")  # the default format
    exported = jax.export.deserialize(bytearray(open(path, "rb").read()))
    for rows in (len(x), 3):  # the row count is symbolic
        got = np.asarray(exported.call(x[:rows]))
        np.testing.assert_allclose(got, expected[:rows], rtol=1e-5, atol=1e-5)

    # The command line writes the same predictor as ONNX; onnxruntime runs it.
    onnx_path = str(tmp_path / "m.onnx")
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", onnx_path]) == 0
    session = ort.InferenceSession(onnx_path)
    (inp,) = session.get_inputs()
    assert inp.name == "x" and isinstance(inp.shape[0], str)  # symbolic rows
    got = session.run(None, {"x": x})[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_export_names_an_unknown_format(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
    model = jaxpipe.fit(SPEC | {"data": {}}, x, (x[:, 0] > 0).astype(int))
    with pytest.raises(jaxpipe.JaxpipeError, match="'tflite' is not one of stablehlo, onnx"):
        model.export(tmp_path / "m", format="tflite")
