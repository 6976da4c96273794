import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxpipe.data.encoding import (
    FeatureEncoder,
    column_values,
    encode_labels,
    encode_target,
    fit_encoder,
    handle_missing,
    missing_mask,
)
from jaxpipe.errors import DataError
from jaxpipe.testing import categories


def obj(*values):
    return np.array(values, dtype=object)


def test_column_kinds():
    assert column_values("n", np.array([1.0, np.nan]), "f")[0] == "numeric"
    kind, values = column_values("c", obj("red", None, "blue"), "f")
    assert kind == "categorical" and list(values) == ["red", None, "blue"]
    # Integer codes marked categorical: 3.0 and "3" are the same category.
    kind, values = column_values("k", np.array([3.0, 1.0, np.nan]), "f", categorical=True)
    assert kind == "categorical" and list(values) == ["3", "1", None]
    # Mostly numbers in text form: a numeric column.
    kind, values = column_values("t", obj("1.5", " 2", None), "f")
    assert kind == "numeric" and np.allclose(values[:2], [1.5, 2.0]) and np.isnan(values[2])


def test_stray_text_in_a_numeric_column_names_column_row_value():
    with pytest.raises(DataError) as e:
        column_values("mass", obj("1", "2", "3", "heavy", "5"), "d.csv")
    msg = str(e.value)
    assert "d.csv" in msg and "'mass'" in msg and "'heavy'" in msg and "row 4" in msg
    # A column forced numeric (the training file decided) rejects any text.
    with pytest.raises(DataError, match="'x' at row 1"):
        column_values("mass", obj("x"), "v.csv", kind="numeric")


def test_missing_policies():
    feats = {"a": np.array([1.0, np.nan, 3.0, 4.0]), "c": obj("x", "y", None, "x")}
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(DataError, match="column 'a' has 1 missing values"):
        handle_missing(feats, y, "y", "error", "f")
    kept, y2, dropped = handle_missing(feats, y, "y", "drop", "f")
    assert dropped == 2 and list(kept["a"]) == [1.0, 4.0] and list(y2) == [0.0, 1.0]
    same, _, dropped = handle_missing(feats, y, "y", "mean", "f")
    assert dropped == 0 and same is feats
    with pytest.raises(DataError, match="1 rows without a label"):
        handle_missing(feats, np.array([0.0, np.nan, 1, 1]), "y", "mean", "f")


def test_encoder_fits_on_training_rows_and_maps_unseen_to_zeros():
    train = {"a": np.array([1.0, 3.0, np.nan]), "c": obj("x", "y", "x")}
    enc = fit_encoder(train, {"a": "numeric", "c": "categorical"}, impute=True)
    assert enc.feature_names == ("a", "c=x", "c=y")
    x = enc.transform({"a": np.array([np.nan, 5.0]), "c": obj("z", None)})
    # NaN → training mean 2; unseen "z" → zeros; missing → training frequencies.
    np.testing.assert_allclose(x, [[2.0, 0.0, 0.0], [5.0, 2 / 3, 1 / 3]], rtol=1e-6)
    assert x.dtype == np.float32
    again = FeatureEncoder.from_json(json.loads(json.dumps(enc.to_json())))
    assert again == enc


@given(
    st.lists(categories(), min_size=1, max_size=30), st.lists(categories(), min_size=1, max_size=10)
)
def test_one_hot_rows_are_one_hot_or_zero(train, new):
    enc = fit_encoder({"c": obj(*train)}, {"c": "categorical"}, impute=False)
    x = enc.transform({"c": obj(*new)})
    seen = set(train)
    for row, value in zip(x, new):
        assert row.sum() == (1.0 if value in seen else 0.0)
        if value in seen:
            assert enc.feature_names[int(row.argmax())] == f"c={value}"


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False) | st.just(float("nan")), min_size=2, max_size=20)
)
def test_a_rows_encoding_does_not_depend_on_the_other_rows(values):
    col = np.array(values)
    enc = fit_encoder({"a": np.array([1.0, 2.0])}, {"a": "numeric"}, impute=True)
    whole = enc.transform({"a": col})
    for i in range(len(col)):
        np.testing.assert_array_equal(whole[i], enc.transform({"a": col[i : i + 1]})[0])
    assert not np.isnan(whole).any()


def test_labels_map_to_sorted_indices_and_onto_given_classes():
    idx, names = encode_labels(np.array([10.0, 2.0, 10.0]), "y")
    assert names == ("2", "10") and list(idx) == [1, 0, 1]  # numeric, not string, order
    idx, names = encode_labels(obj("b", "a"), "y", classes=("a", "b", "c"))
    assert list(idx) == [1, 0] and names == ("a", "b", "c")
    with pytest.raises(DataError, match="class 'q' does not occur"):
        encode_labels(obj("q"), "y", classes=("a", "b"))
    with pytest.raises(DataError, match="single class"):
        encode_labels(obj("a", "a"), "y")


def test_regression_target():
    y, classes = encode_target(np.array([1.5, 2.5]), "t", "regression", "f")
    assert y.dtype == np.float32 and classes == ()
    with pytest.raises(DataError, match="regression needs numeric"):
        encode_target(obj("1", "lots"), "t", "regression", "f")


def test_missing_mask():
    assert list(missing_mask(obj(None, "a", float("nan")))) == [True, False, True]


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=20),
    st.data(),
)
def test_numbers_as_text_parse_back_and_stray_text_is_located(numbers, data):
    text = obj(*[repr(v) for v in numbers])
    kind, values = column_values("n", text, "f")
    assert kind == "numeric" and values.tolist() == numbers
    row = data.draw(st.integers(0, len(numbers) - 1))
    text[row] = "n/a?"
    with pytest.raises(DataError, match=rf"'n/a\?' at row {row + 1} "):
        column_values("n", text, "f")
