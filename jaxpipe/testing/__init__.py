"""Property-based testing of experiments: hypothesis strategies for specs, their data
and their `--set` overrides, and the invariants every run must keep (re-exported from
jaxpipe.invariants). jaxpipe's own test suite draws from these same strategies.

    from hypothesis import given
    from jaxpipe.testing import specs, check_deterministic

    @given(specs(max_params=10**5, tasks=["classification"]))
    def test_my_settings_repeat(spec):
        check_deterministic(spec)

Needs hypothesis: `pip install 'jaxpipe[testing]'`.
"""

from __future__ import annotations

try:
    from hypothesis import HealthCheck, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "jaxpipe.testing needs hypothesis, an optional extra: pip install 'jaxpipe[testing]'"
    ) from e

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxpipe.check.invariants import (
    check_deterministic,
    check_plan_matches_compiler,
    check_predict_matches_evaluate,
    check_resume_exact,
    check_sharding_equivalent,
    diff_histories,
    diff_trees,
    with_overrides,
)
from jaxpipe.spec.experiment import Spec, parse_spec
from jaxpipe.spec.schema import dump_toml
from jaxpipe.spec.sections import ACTIVATIONS
from jaxpipe.spec.strategy import Strategy

__all__ = [
    "specs",
    "tabular_data",
    "overrides",
    "Table",
    "hidden_layers",
    "optimizer_names",
    "matrices",
    "categories",
    "strategy_meshes",
    "MESHES",
    "register_profiles",
    "check_resume_exact",
    "check_sharding_equivalent",
    "check_plan_matches_compiler",
    "check_deterministic",
    "check_predict_matches_evaluate",
    "diff_histories",
    "diff_trees",
    "with_overrides",
]

# Few widths and batch sizes, so drawn runs reuse compiled programs (jit's cache keys
# on shapes): every new shape is a new compile.
WIDTHS = (8, 16, 64, 128, 512)
BATCHES = (8, 16, 32, 64)
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lion")
SCHEDULE_NAMES = ("constant", "cosine", "warmup_cosine", "exponential", "linear")
# Meshes per strategy for up to 8 devices ("model" is the tensor-parallel axis).
MESHES = {
    "data": ({"data": 2}, {"data": 4}, {"data": 8}),
    "fsdp": ({"data": 2}, {"data": 4}, {"data": 8}),
    "tensor": ({"model": 2}, {"model": 4}),
    "data+tensor": ({"data": 2, "model": 2}, {"data": 2, "model": 4}),
    "fsdp+tensor": ({"data": 2, "model": 2}, {"data": 2, "model": 4}),
}


def register_profiles() -> None:
    """Hypothesis profiles: `dev` (small: the default), `ci` (loaded when CI is set) and
    `thorough` (200 examples); HYPOTHESIS_PROFILE picks one. `ci` draws as many examples
    as `dev` (the suite's time on two cores: most examples are a compile), fresh ones each
    run, so CI's coverage grows run by run. Every profile has no deadline: the first
    example of a shape pays its compile. None is derandomized, not even under CI, where
    hypothesis' own `ci` defaults would be their parent: CI draws fresh examples as a
    newcomer's run does (jaxpipe's tests/conftest.py seeds each run and prints the seed to
    replay it); `ci` also prints a failure's `@reproduce_failure` blob."""
    common = {
        "deadline": None,
        "derandomize": False,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    }
    settings.register_profile("dev", max_examples=10, **common)
    settings.register_profile("ci", max_examples=10, print_blob=True, **common)
    settings.register_profile("thorough", max_examples=200, **common)
    default = "ci" if os.environ.get("CI") else "dev"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", default))


def hidden_layers(
    widths: Sequence[int] = WIDTHS, min_layers: int = 1, max_layers: int = 3
) -> st.SearchStrategy[tuple[int, ...]]:
    """Hidden-layer widths: `min_layers`..`max_layers` layers, each from `widths`."""
    layer = st.sampled_from(list(widths))
    return st.lists(layer, min_size=min_layers, max_size=max_layers).map(tuple)


def optimizer_names(names: Sequence[str] = OPTIMIZERS) -> st.SearchStrategy[str]:
    """optax optimizers that train with their defaults and a learning rate alone."""
    return st.sampled_from(list(names))


def categories(values: Sequence[str] = ("a", "b", "c", "d")) -> st.SearchStrategy[str]:
    """A category value from a small vocabulary, so draws repeat values."""
    return st.sampled_from(list(values))


def strategy_meshes(max_devices: int = 8) -> st.SearchStrategy[tuple[str, dict[str, int]]]:
    """(strategy, mesh shape) pairs that fit in `max_devices` devices."""
    pairs = [
        (s, m)
        for s, ms in MESHES.items()
        for m in ms
        if int(np.prod(list(m.values()))) <= max_devices
    ]
    return st.sampled_from(pairs)


@st.composite
def matrices(
    draw: st.DrawFn,
    shapes: Sequence[tuple[int, int]] = ((8, 3), (32, 5), (64, 1)),
    bound: float = 1e4,
) -> np.ndarray:
    """float32 feature matrices [rows, features] of a few shapes, finite values within
    ±bound, sometimes with a constant first column (a scaler's zero-range case)."""
    shape = draw(st.sampled_from(list(shapes)))
    finite = st.floats(-bound, bound, allow_nan=False, width=32)
    x = draw(arrays(np.float32, shape, elements=finite))
    if draw(st.booleans()):
        x[:, 0] = x[0, 0]
    return x


def _param_count(widths: Sequence[int]) -> int:
    return sum(a * b + b for a, b in zip(widths, widths[1:]))


def _hardware(strategy: str) -> dict[str, Any]:
    if strategy == "auto":
        return {}
    s = Strategy.parse(strategy)
    devices = 1 if s is Strategy.SINGLE else 4 if s.two_axes else 2
    return {"hardware": {"strategy": strategy, "devices": devices}}


def _data_section(
    draw: st.DrawFn, source: str, max_rows: int, features: int, classes: int
) -> tuple[dict[str, Any], int]:
    """The [data] table and the fewest rows its training split can have."""
    rows = draw(st.sampled_from([r for r in (64, 128, 256, 512) if r <= max_rows] or [max_rows]))
    # A data file's row count is tabular_data's (at least 64): a fraction holds out a
    # part of it, and at least 40 rows are left to train on.
    val = draw(st.sampled_from([0.25, 0.2] if source != "synthetic" else [rows // 4, 0.25, 0.2]))
    train_rows = rows - (val if isinstance(val, int) else round(rows * val))
    data: dict[str, Any] = {"source": source, "validation": val, "shuffle": draw(st.booleans())}
    if source == "synthetic":
        data["synthetic"] = {"rows": rows, "features": features, "classes": classes}
        return data, train_rows
    names = [f"{draw(st.sampled_from('xct'))}{i}" for i in range(features)]
    data |= {"path": f"data.{source}", "label": "label", "features": names}
    data["categorical"] = [n for n in names if n.startswith("c")]
    return data, 40


def _optimizer_section(draw: st.DrawFn, optimizers: Sequence[str]) -> dict[str, Any]:
    optimizer: dict[str, Any] = {
        "name": draw(st.sampled_from(list(optimizers))),
        "learning_rate": draw(st.sampled_from([1e-3, 3e-3, 1e-2])),
    }
    schedule = draw(st.sampled_from([None, *SCHEDULE_NAMES]))
    if schedule:
        optimizer["schedule"] = {"name": schedule}
    return optimizer


@st.composite
def specs(
    draw: st.DrawFn,
    *,
    tasks: Sequence[str] = ("classification", "regression"),
    sources: Sequence[str] = ("synthetic",),
    max_params: int = 10**6,
    max_rows: int = 512,
    max_features: int = 16,
    max_classes: int = 5,
    max_epochs: int = 3,
    strategies: Sequence[str] = ("auto",),
    optimizers: Sequence[str] = OPTIMIZERS,
    precisions: Sequence[str] = ("float32",),
    widths: Sequence[int] = WIDTHS,
    base_dir: str = ".",
) -> Spec:
    """Valid experiment specs across the schema, within bounds a user narrows:
    `specs(max_params=10**6, tasks=["classification"])`. A "csv" / "parquet" source reads
    `data.csv` / `data.parquet` in `base_dir` with label column `label` and feature
    columns x<i> (numbers), c<i> (integer-coded categories) and t<i> (text): write
    `tabular_data(spec)` there before running it."""
    task = draw(st.sampled_from(list(tasks)))
    source = draw(st.sampled_from(list(sources)))
    features = draw(st.integers(1, max_features))
    classes = draw(st.integers(2, max_classes))
    outputs = classes if task == "classification" else 1
    hidden = draw(hidden_layers(widths, 0, 3))
    while hidden and _param_count([features, *hidden, outputs]) > max_params:
        hidden = hidden[:-1]  # drop layers until the model fits the bound
    data, train_rows = _data_section(draw, source, max_rows, features, classes)
    training: dict[str, Any] = {
        "epochs": draw(st.integers(1, max_epochs)),
        "batch_size": draw(st.sampled_from([b for b in BATCHES if b <= train_rows] or [1])),
        "precision": draw(st.sampled_from(list(precisions))),
    }
    if draw(st.booleans()):
        training["early_stopping"] = {"metric": "val_loss", "patience": draw(st.integers(1, 3))}
    table = {
        "experiment": {"name": "drawn", "seed": draw(st.integers(0, 2**16))},
        "data": data,
        "preprocess": {
            "normalize": draw(st.sampled_from(["minmax", "standard", "none"])),
            "missing": "mean" if source != "synthetic" else "error",
        },
        "model": {
            "task": task,
            "hidden": list(hidden),
            "activation": draw(st.sampled_from(ACTIVATIONS)),
            "dropout": draw(st.sampled_from([0.0, 0.0, 0.1])),
            "layer_norm": draw(st.booleans()),
        },
        "optimizer": _optimizer_section(draw, optimizers),
        "training": training,
        "checkpoint": {"keep": draw(st.integers(1, 3))},
        **_hardware(draw(st.sampled_from(list(strategies)))),
    }
    return parse_spec(dump_toml(table), file="<drawn spec>", base_dir=base_dir)


@dataclass(frozen=True)
class Table:
    """Drawn rows for a spec's data file. `columns`: name → values (None is missing);
    `new_rows`: rows to predict (no label), holding categories the file never has."""

    columns: dict[str, list[Any]]
    new_rows: dict[str, list[Any]] = field(default_factory=dict)

    def write(self, path: str, which: str = "columns") -> str:
        """Writes `columns` (or `new_rows`) as CSV (missing as NA) or, for a .parquet
        path, Parquet; returns `path`."""
        cols = getattr(self, which)
        if path.endswith((".parquet", ".pq")):
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(cols), path)
            return path
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(list(cols))
            for row in zip(*cols.values()):
                out.writerow(["NA" if v is None else v for v in row])
        return path


_TEXT = ("red", "green", "blue", "amber")


def _column(name: str, rng: np.random.Generator, n: int, unseen: bool) -> list[Any]:
    if name.startswith("c"):  # integer-coded category
        return [9] * n if unseen else rng.integers(1, 4, n).tolist()
    if name.startswith("t"):  # text: always one-hot encoded
        return ["purple"] * n if unseen else rng.choice(_TEXT, n).tolist()
    return np.round(rng.normal(size=n) * 10, 3).tolist()


@st.composite
def tabular_data(draw: st.DrawFn, spec: Spec, *, min_rows: int = 64, max_rows: int = 128) -> Table:
    """Rows matching a spec drawn by `specs(sources=["csv"])` (or any spec whose feature
    columns follow its naming: x<i> numbers, c<i> integer codes, t<i> text): every
    class in every split's reach, missing values (NA) when the spec imputes them, and
    `new_rows` with unseen categories for predict."""
    d = spec.data
    if d.source == "synthetic" or not d.features or d.label is None:
        raise ValueError("tabular_data needs a spec with a data file, a label and features")
    n = draw(st.integers(min_rows, max_rows))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols = {name: _column(name, rng, n, unseen=False) for name in d.features}
    if spec.preprocess.missing != "error":
        for name in d.features:
            for i in np.flatnonzero(rng.random(n) < 0.05):
                cols[name][i] = None
    if spec.model.task == "classification":
        classes = draw(st.integers(2, 4))
        labels = [f"k{i % classes}" for i in rng.permutation(n)]  # each class n/classes times
    else:
        labels = np.round(rng.normal(size=n) * 5 + 50, 3).tolist()
    new = {name: _column(name, rng, 3, unseen=True) for name in d.features}
    return Table(cols | {d.label: labels}, new)


@st.composite
def overrides(draw: st.DrawFn, spec: Spec, max_items: int = 4) -> list[str]:
    """Valid `--set KEY=VALUE` lists for `spec`: each keeps the spec loadable (batch
    sizes within its training split, known names, legal ranges)."""
    choices = {
        "training.epochs": st.integers(1, 3).map(str),
        "experiment.seed": st.integers(0, 2**16).map(str),
        "optimizer.learning_rate": st.sampled_from(["1e-3", "0.01", "3e-4"]),
        "optimizer.name": optimizer_names().map(lambda n: f'"{n}"'),
        "model.activation": st.sampled_from(ACTIVATIONS).map(lambda a: f'"{a}"'),
        "model.dropout": st.sampled_from(["0.0", "0.1", "0.5"]),
        "model.hidden": hidden_layers(max_layers=2).map(lambda h: str(list(h))),
        "preprocess.normalize": st.sampled_from(['"minmax"', '"standard"', '"none"']),
        "checkpoint.keep": st.integers(1, 5).map(str),
        "training.batch_size": st.sampled_from(
            [str(b) for b in BATCHES if b <= spec.training.batch_size] or ["1"]
        ),
    }
    keys = draw(st.lists(st.sampled_from(sorted(choices)), max_size=max_items, unique=True))
    return [f"{key}={draw(choices[key])}" for key in keys]
