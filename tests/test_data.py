import numpy as np
import pytest
from conftest import SMALL_SPEC

from jaxpipe.data.encoding import encode_labels
from jaxpipe.data.load import load_dataset, make_synthetic, split_rows
from jaxpipe.data.readers import read_csv
from jaxpipe.errors import DataError
from jaxpipe.spec.experiment import load_spec, parse_spec
from jaxpipe.spec.sections import SyntheticSpec


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


TABLE = "num,color,code,species\n" + "".join(
    f"{i * 0.5},{['red', 'green', 'blue'][i % 3]},{i % 2 + 1},{['cat', 'dog'][(i // 2) % 2]}\n"
    for i in range(24)
)
TABLE_SPEC = (
    '[data]\nsource="csv"\npath="t.csv"\nlabel="species"\nvalidation=0.25\n'
    'categorical=["code"]\n[training]\nbatch_size=4\n'
)


def test_text_and_integer_coded_columns_are_one_hot(tmp_path, write_spec):
    (tmp_path / "t.csv").write_text(TABLE)
    ds = load_dataset(load_spec(write_spec(TABLE_SPEC)))
    assert ds.class_names == ("cat", "dog")
    assert ds.feature_names == ("num", "color=blue", "color=green", "color=red", "code=1", "code=2")
    onehot = ds.x_train[:, 1:4]
    assert set(onehot.sum(axis=1)) == {1.0}
    assert ds.x_train.shape == (18, 6) and ds.x_val.shape == (6, 6)


def test_features_select_columns_and_parquet_npz_match_csv(tmp_path, write_spec):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    (tmp_path / "t.csv").write_text(TABLE)
    pq.write_table(pacsv.read_csv(tmp_path / "t.csv"), tmp_path / "t.parquet")
    csv_ds = load_dataset(load_spec(write_spec(TABLE_SPEC, "a.toml")))
    pq_spec = TABLE_SPEC.replace('"csv"', '"parquet"').replace("t.csv", "t.parquet")
    pq_ds = load_dataset(load_spec(write_spec(pq_spec, "b.toml")))
    np.testing.assert_array_equal(csv_ds.x_train, pq_ds.x_train)
    np.testing.assert_array_equal(csv_ds.y_val, pq_ds.y_val)
    only = load_dataset(
        load_spec(
            write_spec(TABLE_SPEC.replace('categorical=["code"]', 'features=["num"]'), "c.toml")
        )
    )
    assert only.feature_names == ("num",)
    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.array(["a", "b"] * 10))
    npz = load_dataset(
        load_spec(
            write_spec(
                '[data]\nsource="npz"\npath="d.npz"\nvalidation=5\n[training]\nbatch_size=4\n',
                "d.toml",
            )
        )
    )
    assert npz.feature_names == ("x0", "x1") and npz.class_names == ("a", "b")
    assert sorted(np.concatenate([npz.x_train, npz.x_val])[:, 0].tolist()) == x[:, 0].tolist()


def test_separate_validation_file_uses_the_training_encoding(tmp_path, write_spec):
    (tmp_path / "t.csv").write_text(TABLE)
    (tmp_path / "v.csv").write_text("num,color,code,species\n1,purple,2,dog\n2,red,1,cat\n")
    spec = TABLE_SPEC.replace("validation=0.25", 'validation="v.csv"')
    ds = load_dataset(load_spec(write_spec(spec)))
    assert ds.x_train.shape == (24, 6) and ds.x_val.shape == (2, 6)
    np.testing.assert_array_equal(ds.x_val[0, 1:4], [0, 0, 0])  # unseen colour
    assert list(ds.y_val) == [1, 0]


def test_missing_drop_and_mean(tmp_path, write_spec):
    rows = TABLE.replace("\n1.0,", "\n,", 1).replace(",green,", ",,", 1)
    (tmp_path / "t.csv").write_text(rows)
    dropped = load_dataset(load_spec(write_spec(TABLE_SPEC + '[preprocess]\nmissing="drop"\n')))
    assert dropped.dropped_rows == 2 and len(dropped.y_train) + len(dropped.y_val) == 22
    mean = load_dataset(
        load_spec(write_spec(TABLE_SPEC + '[preprocess]\nmissing="mean"\n', "m.toml"))
    )
    assert mean.dropped_rows == 0 and not np.isnan(mean.x_train).any()
    assert len(mean.y_train) + len(mean.y_val) == 24


def test_shuffle_false_keeps_file_order(tmp_path, write_spec):
    (tmp_path / "t.csv").write_text(TABLE)
    spec = TABLE_SPEC.replace("validation=0.25", "validation=0.25\nshuffle=false")
    ds = load_dataset(load_spec(write_spec(spec)))
    np.testing.assert_array_equal(ds.x_train[:, 0], np.arange(18) * 0.5)


def test_synthetic_regression():
    spec = parse_spec(SMALL_SPEC, overrides=['model.task="regression"'])
    ds = load_dataset(spec)
    assert ds.task == "regression" and ds.y_train.dtype == np.float32 and ds.outputs == 1
    assert ds.class_names == () and ds.y_train.std() > 1.0


@pytest.mark.parametrize(
    "y",
    [
        np.arange(40) % 3,
        (np.arange(40) % 2).astype(bool),
        np.arange(40, dtype=np.uint64) * 2**58,  # exact beyond float64
        np.arange(40, dtype=np.int8),
        np.linspace(-1, 1, 40).astype(np.float16),
        np.linspace(-1, 1, 40).astype(">f8"),  # not native: through pyarrow
        np.array(["a", "b"] * 20),
        np.array([1, None] * 20, dtype=object),
    ],
)
def test_array_columns_are_what_the_arrow_route_reads(y):
    # (X, y) number columns skip pyarrow (its first conversion imports pandas); they must
    # come out exactly as the readers make them from the Arrow table.
    from jaxpipe.data.frames import _array_columns, _columns_table
    from jaxpipe.data.readers import arrow_columns

    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    x[3, 1], x[5, 0], x[6, 2] = np.nan, -0.0, np.inf
    named = {f"x{i}": x[:, i] for i in range(3)} | {"y": y}
    want = arrow_columns(_columns_table(named), "<arrays>")
    got = _array_columns(x, y, "y", "fit")
    assert list(got) == list(want)
    for name, column in want.items():
        assert got[name].dtype == column.dtype and got[name].shape == column.shape
        if column.dtype.kind == "f":
            assert np.array_equal(got[name], column, equal_nan=True)
            assert np.array_equal(np.signbit(got[name]), np.signbit(column))
        else:
            assert got[name].tolist() == column.tolist()
