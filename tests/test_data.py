import numpy as np
import pytest
from conftest import SMALL_SPEC

from jaxpipe.data import encode_labels, load_dataset, make_synthetic, read_csv, split_rows
from jaxpipe.errors import DataError
from jaxpipe.spec import SyntheticSpec, load_spec, parse_spec


def test_synthetic_is_seeded():
    a = make_synthetic(SyntheticSpec(rows=100, features=5, classes=3), 1)
    b = make_synthetic(SyntheticSpec(rows=100, features=5, classes=3), 1)
    c = make_synthetic(SyntheticSpec(rows=100, features=5, classes=3), 2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])
    assert a[0].shape == (100, 5) and a[0].dtype == np.float32 and set(a[1]) <= {0, 1, 2}


def test_split_sizes_and_disjoint():
    tr, va = split_rows(100, 0.25, 0, True)
    assert len(va) == 25 and len(tr) == 75 and not set(tr) & set(va)
    tr, va = split_rows(10, 3, 0, False)
    assert list(va) == [7, 8, 9]


def test_dataset_shapes():
    ds = load_dataset(parse_spec(SMALL_SPEC))
    assert ds.x_train.shape == (400, 6) and ds.x_val.shape == (100, 6)
    assert ds.num_classes == 3


def test_labels_strings_and_integers():
    idx, names = encode_labels(np.array(["b", "a", "b"], dtype=object), "y")
    assert names == ("a", "b") and list(idx) == [1, 0, 1]
    idx, names = encode_labels(np.array([10.0, -3.0, 10.0]), "y")
    assert names == ("-3", "10") and list(idx) == [1, 0, 1]
    with pytest.raises(DataError, match="not a class label"):
        encode_labels(np.array([1.5, 2.0]), "y")


def test_csv(tmp_path, write_spec):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n")
    cols = read_csv(str(tmp_path / "d.csv"))
    assert list(cols) == ["a", "b", "y"]
    spec = load_spec(
        write_spec(
            '[data]\nsource="csv"\npath="d.csv"\nlabel="y"\nvalidation=1\n'
            "[training]\nbatch_size=2\n"
        )
    )
    ds = load_dataset(spec)
    assert ds.x_train.shape == (3, 2) and ds.feature_names == ("a", "b")


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "empty"),
        ("a,y\n", "no data rows"),
        ("a,b\n1,2\n", "label column 'y' not found"),
        ("a,y\n1,0\nx,1\n", "column 'a' holds text"),
        ("a,y\n1,0\n,1\n", "column 'a' has 1 missing"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, write_spec, content, match):
    (tmp_path / "d.csv").write_text(content)
    spec = load_spec(
        write_spec(
            '[data]\nsource="csv"\npath="d.csv"\nlabel="y"\nvalidation=1\n'
            "[training]\nbatch_size=1\n"
        )
    )
    with pytest.raises(DataError, match=match):
        load_dataset(spec)
