"""The experiment spec: frozen, typed sections loaded from TOML and validated once.

`load_spec(path, overrides)` is the only way in. Every key has a type, a range and a
line of documentation (used by `jaxpipe schema` and `docs/spec.md`); unknown keys and
sections are errors with a did-you-mean. Imports no jax.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jaxpipe import schema
from jaxpipe.errors import SpecError
from jaxpipe.schema import field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Spec",
    "ExperimentSpec",
    "DataSpec",
    "SyntheticSpec",
    "PreprocessSpec",
    "ModelSpec",
    "OptimizerSpec",
    "ScheduleSpec",
    "TrainingSpec",
    "EarlyStoppingSpec",
    "CheckpointSpec",
    "RuntimeSpec",
    "metric_mode",
    "HardwareSpec",
    "CatalogEntrySpec",
    "STRATEGIES",
    "parse_size",
    "load_spec",
    "parse_spec",
    "dump_spec",
    "spec_schema",
    "ACTIVATIONS",
    "SOURCES",
    "spec_markdown",
    "place_error",
]

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "softplus")
SOURCES = ("csv", "parquet", "npz", "synthetic")


@dataclass(frozen=True)
class ExperimentSpec:
    """What the run is called and where its randomness comes from."""

    name: str = field("experiment", "Run name; the default output folder is runs/<name>-<time>.")
    seed: int = field(0, "Seed of every random key (data, shuffling, init, dropout).", minimum=0)

    def _check(self, where: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", self.name):
            raise SpecError(
                f"{self.name!r} is not usable as a folder name; use letters, digits, '-', '_', '.'",
                key=f"{where}.name",
            )


@dataclass(frozen=True)
class SyntheticSpec:
    """A seeded synthetic data set (used when `data.source = "synthetic"`); a
    classification or a regression set, as `model.task` says."""

    rows: int = field(12000, "Number of rows generated.", minimum=2)
    features: int = field(50, "Number of feature columns.", minimum=1)
    classes: int = field(4, "Number of classes (classification only).", minimum=2)
    noise: float = field(
        0.1,
        "Classification: fraction of labels drawn at random (caps the accuracy). "
        "Regression: noise standard deviation relative to the signal's.",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True)
class DataSpec:
    """Where the rows come from, which columns are used and how rows are split."""

    source: Literal[SOURCES] = field(  # type: ignore[valid-type]
        "synthetic", "Where rows come from: a csv or parquet table, an npz file or generated."
    )
    path: str | None = field(
        None, "Data file, relative to the spec file (csv, parquet; npz with arrays x and y)."
    )
    label: str | None = field(None, "Label (target) column (csv, parquet; npz uses its array y).")
    features: tuple[str, ...] | None = field(
        None, "Feature columns to use; default every column but the label."
    )
    categorical: tuple[str, ...] = field(
        (), "Integer-coded columns to one-hot encode (text columns always are)."
    )
    validation: int | float | str = field(
        0.2,
        "Rows held out for validation: a count (int), a fraction in (0, 1) (float), or a "
        "separate file of the same kind (string, relative to the spec file).",
    )
    shuffle: bool = field(True, "Shuffle rows (seeded) before the train/validation split.")
    chunk_rows: Literal["auto"] | int = field(
        "auto",
        "Training rows per device chunk: an integer streams the training split from host "
        'memory in chunks (double-buffered); "auto" keeps it resident unless the plan finds '
        "that only streaming it fits the device, and then streams it in the largest chunks "
        "that fit.",
        minimum=1,
    )
    synthetic: SyntheticSpec = field(factory=SyntheticSpec, doc="The synthetic set.")

    def _check(self, where: str) -> None:
        if isinstance(self.validation, bool):  # pragma: no cover - the builder rejects it
            raise SpecError("expected a count, fraction or file", key=f"{where}.validation")
        if isinstance(self.validation, int) and self.validation < 1:
            raise SpecError(
                f"a row count must be ≥ 1, found {self.validation}", key=f"{where}.validation"
            )
        if isinstance(self.validation, float) and not 0.0 < self.validation < 1.0:
            raise SpecError(
                f"a fraction must lie in (0, 1), found {self.validation}",
                key=f"{where}.validation",
            )
        if isinstance(self.validation, str):
            if not self.validation.strip():
                raise SpecError(
                    "an empty string is not a file; give a count, a fraction or a file name",
                    key=f"{where}.validation",
                )
            if self.source == "synthetic":
                raise SpecError(
                    "synthetic data has no validation file; give a count or a fraction",
                    key=f"{where}.validation",
                )
        needs = {"csv": ("path", "label"), "parquet": ("path", "label"), "npz": ("path",)}
        for name in needs.get(self.source, ()):
            if getattr(self, name) is None:
                raise SpecError(
                    f'source = "{self.source}" needs `{name}`; add {name} = "..." to [data]',
                    key=f"{where}.{name}",
                )
        if self.features is not None:
            if not self.features:
                raise SpecError(
                    "is empty; list at least one column or leave it out to use every column",
                    key=f"{where}.features",
                )
            if self.label is not None and self.label in self.features:
                raise SpecError(
                    f"lists the label column {self.label!r}; a label cannot be a feature",
                    key=f"{where}.features",
                )
            for i, name in enumerate(self.categorical):
                if name not in self.features:
                    raise SpecError(
                        f"{name!r} is not among data.features; add it there or remove it",
                        key=f"{where}.categorical[{i}]",
                    )
        if self.label is not None and self.label in self.categorical:
            raise SpecError(
                f"lists the label column {self.label!r}; labels are encoded by model.task",
                key=f"{where}.categorical",
            )
        for key in ("features", "categorical"):
            names = getattr(self, key) or ()
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise SpecError(f"lists {dup[0]!r} twice", key=f"{where}.{key}")


@dataclass(frozen=True)
class PreprocessSpec:
    """On-device feature scaling, fitted on the training split only."""

    normalize: Literal["minmax", "standard", "none"] = field(
        "minmax", "minmax scales to [0, 1]; standard to zero mean, unit variance."
    )
    missing: Literal["error", "drop", "mean"] = field(
        "error",
        "Missing values: error names the column and row count; drop removes those rows; "
        "mean imputes the training split's mean (a categorical column's category frequencies).",
    )


@dataclass(frozen=True)
class ModelSpec:
    """The MLP."""

    hidden: tuple[int, ...] = field(
        (128, 128), "Widths of the hidden layers; [] is linear.", item_minimum=1
    )
    activation: Literal[ACTIVATIONS] = field("relu", "Hidden-layer activation.")  # type: ignore[valid-type]
    dropout: float = field(
        0.0,
        "Dropout rate after each hidden layer during training (evaluation runs without).",
        minimum=0.0,
        exclusive_maximum=1.0,
    )
    layer_norm: bool = field(False, "Layer normalisation after each hidden Dense layer.")
    task: Literal["classification", "regression"] = field(
        "classification",
        "classification: softmax cross-entropy, reports accuracy; regression: one linear "
        "output, MSE on the standardised target, reports RMSE in the target's units.",
    )


@dataclass(frozen=True)
class ScheduleSpec:
    """A learning-rate schedule from optax; other keys are passed to the optax function."""

    _extra = "options"
    name: str = field("constant", "constant | cosine | warmup_cosine | exponential | linear.")
    options: Mapping[str, Any] = field(factory=dict, doc="Keyword arguments of the schedule.")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optax optimizer by name; other keys are its keyword arguments (checked
    against the optax function's signature)."""

    _extra = "options"
    name: str = field("adam", "Any optax optimizer: adam, adamw, sgd, lion, ...")
    learning_rate: float = field(1e-3, "Peak learning rate.", exclusive_minimum=0.0)
    clip_norm: float | None = field(
        None, "Clip gradients to this global norm.", exclusive_minimum=0.0
    )
    schedule: ScheduleSpec | None = field(None, "Learning-rate schedule.")
    options: Mapping[str, Any] = field(factory=dict, doc="Keyword arguments of the optimizer.")


# Metric name parts that say which way is better, for mode = "auto".
_LOWER_IS_BETTER = ("loss", "error", "mse", "rmse", "mae")
_HIGHER_IS_BETTER = ("accuracy", "acc", "f1", "auc", "r2", "precision", "recall")


def metric_mode(metric: str, mode: str, key: str = "") -> str:
    """ "min" or "max" for a metric such as "val_loss": `mode` itself unless it is "auto",
    in which case the metric's name decides."""
    if mode in ("min", "max"):
        return mode
    words = metric.lower().split("_")
    if any(w in _LOWER_IS_BETTER for w in words):
        return "min"
    if any(w in _HIGHER_IS_BETTER for w in words):
        return "max"
    raise SpecError(
        f'cannot tell whether {metric!r} is better low or high; set mode = "min" or "max"',
        key=key,
    )


def _check_metric(metric: str, key: str) -> None:
    if not re.fullmatch(r"(train|val)_[a-z0-9_]+", metric):
        raise SpecError(
            f"{metric!r} is not a metric name; use train_<name> or val_<name> as in "
            "metrics.jsonl, e.g. val_loss or val_accuracy",
            key=key,
        )


@dataclass(frozen=True)
class EarlyStoppingSpec:
    """Stop when a metric has not improved for `patience` epochs."""

    metric: str = field("val_loss", "Metric watched, as named in metrics.jsonl.")
    mode: Literal["auto", "min", "max"] = field(
        "auto", "Whether lower or higher is better; auto: from the name (loss → min)."
    )
    patience: int = field(5, "Epochs without improvement before stopping.", minimum=1)
    min_delta: float = field(0.0, "Smallest change that counts as an improvement.", minimum=0.0)
    restore_best: bool = field(
        False, "Return (and summarise) the parameters of the best epoch, not the last."
    )

    def _check(self, where: str) -> None:
        _check_metric(self.metric, f"{where}.metric")
        metric_mode(self.metric, self.mode, f"{where}.mode")


@dataclass(frozen=True)
class TrainingSpec:
    """How long and in what batches."""

    epochs: int = field(5, "Passes over the training split.", minimum=1)
    batch_size: int = field(128, "Rows per optimizer step.", minimum=1)
    precision: Literal["float32", "bfloat16"] = field(
        "float32", "Compute dtype; bfloat16 keeps float32 master weights and optimizer state."
    )
    early_stopping: EarlyStoppingSpec | None = field(
        None, "Stop early when a metric stops improving."
    )


@dataclass(frozen=True)
class CheckpointSpec:
    """Orbax checkpoints under <run>/checkpoints/, for `jaxpipe run --resume`."""

    every_epochs: int = field(1, "Save every this many epochs (and always the last).", minimum=1)
    keep: int = field(3, "Keep this many of the newest checkpoints.", minimum=1)
    best_metric: str | None = field(
        None, "Also keep the checkpoint with the best value of this metric (e.g. val_loss)."
    )
    best_mode: Literal["auto", "min", "max"] = field(
        "auto", "Whether lower or higher best_metric is better; auto: from the name."
    )

    def _check(self, where: str) -> None:
        if self.best_metric is not None:
            _check_metric(self.best_metric, f"{where}.best_metric")
            metric_mode(self.best_metric, self.best_mode, f"{where}.best_mode")


@dataclass(frozen=True)
class RuntimeSpec:
    """Process-level switches."""

    compilation_cache: bool = field(
        True, "Keep compiled programs on disk across runs (JAXPIPE_COMPILATION_CACHE=0 disables)."
    )


STRATEGIES = ("single", "data", "fsdp", "tensor", "data+tensor", "fsdp+tensor")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([KMGT]i?B|B)\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, key: str = "size") -> int:
    """Bytes in a size string: "16GiB", "512MiB", "1.5GB", "80 GB" (GB = 10⁹, GiB = 2³⁰)."""
    m = _SIZE.match(text)
    if not m:
        raise SpecError(
            f'{text!r} is not a size; write a number and a unit, e.g. "16GiB", '
            '"512MiB" or "1.5GB" (GB = 10^9 bytes, GiB = 2^30)',
            key=key,
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value < 1:
        raise SpecError(f"a size must be at least 1 byte, found {text!r}", key=key)
    return value


@dataclass(frozen=True)
class CatalogEntrySpec:
    """One accelerator of the hardware catalog (a `[hardware.catalog.NAME]` table, or a
    table of the file `[hardware] catalog` names). An entry that overrides a shipped name
    may give only the keys it changes."""

    memory: str | None = field(None, 'Nominal device memory, e.g. "16GB" or "80GiB".')
    fp32_tflops: float | None = field(
        None, "Peak dense float32 rate, TFLOP/s.", exclusive_minimum=0.0
    )
    bf16_tflops: float | None = field(
        None, "Peak dense bfloat16 rate, TFLOP/s.", exclusive_minimum=0.0
    )
    bandwidth_gbs: float | None = field(
        None, "Peak memory bandwidth, GB/s (10⁹ bytes/s).", exclusive_minimum=0.0
    )
    match: tuple[str, ...] = field(
        (), "Substrings of jax's device_kind that identify this card (case-insensitive)."
    )

    def _check(self, where: str) -> None:
        if self.memory is not None:
            parse_size(self.memory, f"{where}.memory")


@dataclass(frozen=True)
class HardwareSpec:
    """The devices a run plans for (see `jaxpipe plan`)."""

    device_memory: str = field(
        "auto",
        '"auto" (what the device reports) or a size per device such as "16GiB" or "512MiB".',
    )
    strategy: Literal[("auto",) + STRATEGIES] = field(  # type: ignore[valid-type]
        "auto",
        "auto (the plan's choice) | single | data | fsdp | tensor | data+tensor | fsdp+tensor.",
    )
    devices: int | str = field("auto", '"auto" (every local device) or a device count ≥ 1.')
    catalog: str | Mapping[str, Any] = field(
        factory=dict,
        doc="Extra or overriding catalog entries: [hardware.catalog.NAME] tables, or the "
        "path of a TOML file of such tables (relative to the spec file).",
    )

    def _check(self, where: str) -> None:
        if self.device_memory != "auto":
            parse_size(self.device_memory, f"{where}.device_memory")
        if isinstance(self.devices, str) and self.devices != "auto":
            raise SpecError(
                f'expected "auto" or a device count, found {self.devices!r}',
                key=f"{where}.devices",
            )
        if isinstance(self.devices, int) and self.devices < 1:
            raise SpecError(f"must be ≥ 1, found {self.devices}", key=f"{where}.devices")
        if isinstance(self.catalog, Mapping):
            for name, table in self.catalog.items():
                if not isinstance(table, dict):
                    raise SpecError(
                        "expected a table of memory, fp32_tflops, bf16_tflops, bandwidth_gbs",
                        key=f"{where}.catalog.{name}",
                    )
                schema.build(CatalogEntrySpec, table, f"{where}.catalog.{name}")


@dataclass(frozen=True)
class Spec:
    """A whole experiment."""

    experiment: ExperimentSpec = field(factory=ExperimentSpec)
    data: DataSpec = field(factory=DataSpec)
    preprocess: PreprocessSpec = field(factory=PreprocessSpec)
    model: ModelSpec = field(factory=ModelSpec)
    optimizer: OptimizerSpec = field(factory=OptimizerSpec)
    training: TrainingSpec = field(factory=TrainingSpec)
    checkpoint: CheckpointSpec = field(factory=CheckpointSpec)
    runtime: RuntimeSpec = field(factory=RuntimeSpec)
    hardware: HardwareSpec = field(factory=HardwareSpec)
    base_dir: str = field(".", internal=True)
    source: str | None = field(None, internal=True)
    # Where the spec came from, to place errors found after loading; not part of its value.
    overrides: tuple[str, ...] = dataclasses.field(
        default=(), compare=False, repr=False, metadata={"internal": True}
    )
    text: str | None = dataclasses.field(
        default=None, compare=False, repr=False, metadata={"internal": True}
    )

    def _check(self, where: str) -> None:
        data = self.data
        if data.source == "synthetic":
            for key in ("features", "categorical"):
                if getattr(data, key):
                    raise SpecError(
                        "applies to columns of a data file; synthetic data has none",
                        key=f"data.{key}",
                    )
            rows = data.synthetic.rows
            val = data.validation
            n_val = val if isinstance(val, int) else int(round(rows * val))
            if n_val >= rows or n_val < 1:
                raise SpecError(
                    f"holds out {n_val} of {rows} rows; it must leave at least one row to "
                    "train on and hold out at least one",
                    key="data.validation",
                )
            if self.training.batch_size > rows - n_val:
                raise SpecError(
                    f"batch of {self.training.batch_size} is larger than the training split "
                    f"({rows - n_val} rows); lower it",
                    key="training.batch_size",
                )

    def resolve_path(self, path: str) -> str:
        """A data path as the spec means it: relative to the spec file's folder."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError(
            f"override {item!r} is not KEY=VALUE (e.g. training.epochs=3)", file="--set"
        )
    if not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*", key):
        raise SpecError(
            f"override key {key!r} is not a dotted key such as training.epochs", file="--set"
        )
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        # A bare word (`--set optimizer.name=adamw`) is what users type; take it as a string.
        if re.fullmatch(r"[A-Za-z_][\w.\-/]*", text.strip()):
            value = text.strip()
        else:
            raise SpecError(
                f'value {text!r} is not a TOML value (quote strings: key="text")',
                key=key,
                file="--set",
            ) from None
    return key, value


def _apply_override(table: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = table
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(
                f"{'.'.join(parts[: i + 1])} is a value, not a table", key=key, file="--set"
            )
        node = child
    node[parts[-1]] = value


def parse_spec(
    text: str,
    *,
    file: str = "<spec>",
    base_dir: str = ".",
    overrides: Iterable[str] = (),
) -> Spec:
    """Parses and validates a spec from TOML text; errors name the file and line."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise SpecError(
            f"invalid TOML: {e}", file=file, line=int(m.group(1)) if m else None
        ) from None
    overridden = set()
    for item in overrides:
        key, value = _parse_override(item)
        _apply_override(table, key, value)
        overridden.add(key)
    try:
        spec = schema.build(Spec, table)
        spec = dataclasses.replace(
            spec, base_dir=base_dir, source=file, overrides=tuple(overridden), text=text
        )
    except SpecError as e:
        if e.file is not None:
            raise
        raise _placed(e, text, file, overridden) from None
    return spec


def _placed(e: SpecError, text: str, file: str, overridden: Iterable[str]) -> SpecError:
    key = re.sub(r"(\[\d+\])+$", "", e.key or "")  # model.hidden[1] is model.hidden's
    # An error at the override's key, inside it, or at a table it created (a misspelt
    # section) belongs to --set.
    from_set = any(
        key == k or key.startswith(k + ".") or (key and k.startswith(key + ".")) for k in overridden
    )
    return SpecError(
        e.detail,
        key=e.key,
        file="--set" if from_set else file,
        line=None if from_set else schema.locate(text, key),
    )


def place_error(spec: Spec, e: SpecError) -> SpecError:
    """A SpecError found after loading (by a check that needs optax, say) with the spec
    file and line, or `--set`, added as the loader adds them."""
    if e.file is not None or spec.source is None:
        return e
    return _placed(e, spec.text or "", spec.source, spec.overrides)


def load_spec(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> Spec:
    """Loads the TOML spec at `path`, applies `KEY=VALUE` overrides, validates it."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise SpecError("spec file not found; check the path", file=path) from None
    except OSError as e:
        raise SpecError(f"cannot read the spec file ({e.strerror})", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("spec file is not UTF-8 text", file=path) from None
    base = os.path.dirname(os.path.abspath(path))
    return parse_spec(text, file=path, base_dir=base, overrides=list(overrides))


def spec_markdown() -> str:
    """The spec reference (docs/spec.md), generated from the same fields the loader checks."""
    return schema.markdown_reference(
        Spec,
        title="jaxpipe experiment spec",
        intro=(
            "Generated from `jaxpipe/spec.py` by `jaxpipe schema --format markdown`; "
            "`tests/test_docs.py` fails if this file and the schema differ.\n\n"
            "An experiment is one TOML file. Every section and key is optional (the defaults "
            "are listed); unknown sections and keys are errors. Paths are relative to the "
            "spec file. `--set KEY=VALUE` overrides any key (the value is TOML) and is "
            "checked like the file."
        ),
    )


def dump_spec(spec: Spec) -> str:
    """The resolved spec as TOML; `parse_spec(dump_spec(s))` gives `s` back."""
    return schema.dump_toml(schema.to_dict(spec))


def spec_schema() -> dict[str, Any]:
    """The JSON Schema of an experiment file."""
    return schema.json_schema(Spec, title="jaxpipe experiment")
