import json

import pytest
from conftest import EXPERIMENTS, SMALL_SPEC

from jaxpipe.errors import SpecError
from jaxpipe.spec.experiment import Spec, dump_spec, load_spec, parse_spec, spec_schema


def test_defaults_and_types():
    spec = parse_spec(SMALL_SPEC)
    assert isinstance(spec, Spec)
    assert spec.model.hidden == (16,)
    assert spec.optimizer.name == "adam" and spec.optimizer.learning_rate == 1e-3
    assert spec.data.validation == 100 and isinstance(spec.data.validation, int)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(SpecError) as e:
        parse_spec("[training]\nepochz = 3\n", file="x.toml")
    msg = str(e.value)
    assert "training.epochz" in msg and "did you mean 'epochs'" in msg and "x.toml:2" in msg


def test_unknown_section():
    with pytest.raises(SpecError, match="unknown section 'trainin'.*did you mean 'training'"):
        parse_spec("[trainin]\nepochs = 3\n")


@pytest.mark.parametrize(
    "text, key",
    [
        ('[training]\nepochs = "five"\n', "training.epochs"),
        ("[training]\nepochs = 0\n", "training.epochs"),
        ("[training]\nbatch_size = -1\n", "training.batch_size"),
        ("[optimizer]\nlearning_rate = -0.1\n", "optimizer.learning_rate"),
        ("[model]\nhidden = [16, 0]\n", "model.hidden[1]"),
        ("[data]\nvalidation = 1.5\n", "data.validation"),
        ('[model]\nactivation = "rleu"\n', "model.activation"),
        ('[preprocess]\nnormalize = "zscore"\n', "preprocess.normalize"),
        ('[data]\nsource = "csv"\nlabel = "y"\n', "data.path"),
        ("[training]\nepochs = true\n", "training.epochs"),
    ],
)
def test_bad_values_name_their_key(text, key):
    with pytest.raises(SpecError) as e:
        parse_spec(text, file="s.toml")
    assert e.value.key == key, str(e.value)
    assert str(e.value).startswith("s.toml:")


def test_error_line_numbers_point_at_the_key():
    text = "[experiment]\nname = 'a'\n\n[training]\nepochs = 2\nbatch_size = 0\n"
    with pytest.raises(SpecError) as e:
        parse_spec(text, file="s.toml")
    assert e.value.line == 6


def test_toml_syntax_error_has_line():
    with pytest.raises(SpecError) as e:
        parse_spec("[training]\nepochs = = 3\n", file="s.toml")
    assert e.value.line == 2 and "invalid TOML" in str(e.value)


def test_duplicate_key_is_an_error():
    with pytest.raises(SpecError, match="invalid TOML"):
        parse_spec("[training]\nepochs = 2\nepochs = 3\n")


def test_overrides_are_checked_like_the_file():
    spec = parse_spec(
        SMALL_SPEC, overrides=["training.epochs=7", "optimizer.name=adamw", "model.hidden=[8, 8]"]
    )
    assert spec.training.epochs == 7 and spec.optimizer.name == "adamw"
    assert spec.model.hidden == (8, 8)
    with pytest.raises(SpecError) as e:
        parse_spec(SMALL_SPEC, overrides=["training.epochs=-1"])
    assert e.value.file == "--set" and e.value.key == "training.epochs"
    for bad in ["training.epochs", "=3", "training.epochs=[1,", "trainig.epochs=3"]:
        with pytest.raises(SpecError):
            parse_spec(SMALL_SPEC, overrides=[bad])


def test_cross_field_checks():
    with pytest.raises(SpecError, match="batch of 600"):
        parse_spec(SMALL_SPEC, overrides=["training.batch_size=600"])
    with pytest.raises(SpecError) as e:
        parse_spec(SMALL_SPEC, overrides=["data.validation=500"])
    assert e.value.key == "data.validation"


@pytest.mark.parametrize("name", ["seed.toml", "digits.toml", "penguins.toml", "diabetes.toml"])
def test_dump_round_trips(name):
    spec = load_spec(f"{EXPERIMENTS}/{name}")
    again = parse_spec(dump_spec(spec), file=spec.source, base_dir=spec.base_dir)
    assert again == spec


def test_missing_file():
    with pytest.raises(SpecError, match="not found"):
        load_spec("/nonexistent/spec.toml")


def test_schema_is_json_and_strict():
    schema = spec_schema()
    json.dumps(schema)
    assert schema["additionalProperties"] is False
    training = schema["properties"]["training"]
    assert training["properties"]["epochs"]["minimum"] == 1
    assert training["additionalProperties"] is False
    assert "relu" in schema["properties"]["model"]["properties"]["activation"]["enum"]


@pytest.mark.parametrize(
    "text, key",
    [
        ("[model]\ndropout = 1.0\n", "model.dropout"),
        ("[model]\ndropout = -0.1\n", "model.dropout"),
        ('[model]\nlayer_norm = "yes"\n', "model.layer_norm"),
        ('[model]\ntask = "ranking"\n', "model.task"),
        ('[preprocess]\nmissing = "zero"\n', "preprocess.missing"),
        ('[data]\nsource = "xlsx"\n', "data.source"),
        ('[data]\nsource = "npz"\n', "data.path"),
        ('[data]\nsource = "parquet"\npath = "a.parquet"\n', "data.label"),
        ('[data]\nsource = "synthetic"\nvalidation = "v.csv"\n', "data.validation"),  # no file
        ('[data]\nsource = "synthetic"\nfeatures = ["a"]\n', "data.features"),  # no columns
        ('[data]\nsource = "csv"\npath = "a"\nlabel = "y"\nfeatures = []\n', "data.features"),
        (
            '[data]\nsource = "csv"\npath = "a"\nlabel = "y"\ncategorical = ["y"]\n',
            "data.categorical",
        ),
        (
            '[data]\nsource = "csv"\npath = "a"\nlabel = "y"\nfeatures = ["a", "a"]\n',
            "data.features",
        ),
    ],
)
def test_new_keys_are_checked(text, key):
    with pytest.raises(SpecError) as e:
        parse_spec(text, file="s.toml")
    assert e.value.key == key, str(e.value)


def test_new_keys_parse_and_round_trip():
    text = (
        '[data]\nsource = "csv"\npath = "d.csv"\nlabel = "y"\nfeatures = ["a", "c"]\n'
        'categorical = ["c"]\nvalidation = "v.csv"\n[preprocess]\nmissing = "mean"\n'
        '[model]\ntask = "regression"\ndropout = 0.25\nlayer_norm = true\n'
    )
    spec = parse_spec(text)
    assert spec.data.features == ("a", "c") and spec.data.validation == "v.csv"
    assert spec.model.task == "regression" and spec.model.dropout == 0.25
    assert parse_spec(dump_spec(spec)) == spec
    props = spec_schema()["properties"]
    assert props["model"]["properties"]["dropout"]["exclusiveMaximum"] == 1.0
    assert props["data"]["properties"]["source"]["enum"] == [
        "csv",
        "parquet",
        "npz",
        "synthetic",
        "memory",  # rows given to jaxpipe.fit
    ]
