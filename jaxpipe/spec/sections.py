"""The spec's sections: frozen, typed dataclasses, one per TOML table, each key with a
default, a range and a line of documentation. Every section checks itself on
construction (`schema.Section`). Imports no jax.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from jaxpipe.errors import SpecError
from jaxpipe.spec.schema import Section, field

__all__ = [
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
    "RECORDED_METRICS",
    "OPTIONAL_METRICS",
    "ACTIVATIONS",
    "SOURCES",
    "source_of",
    "no_rows_error",
    "SEED_MAX",
    "NAME_MAX",
]

# jax's random keys take 32 bits of a seed: 2**32 would give seed 0's run, bit for bit.
SEED_MAX = 2**32 - 1
# The default run directory is runs/<name>-YYYYmmdd-HHMMSS; a file name holds 255 bytes.
NAME_MAX = 200

ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "softplus")
SOURCES = ("csv", "parquet", "npz", "synthetic", "memory")
_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".npz": "npz"}


def source_of(path: str) -> str:
    """The reader for a data file or glob, from its extension (csv unless parquet or npz)."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower(), "csv")


def no_rows_error(what: str = "the run") -> SpecError:
    """The error of a spec that names no rows: synthetic rows are never a silent default."""
    return SpecError(
        f"{what} has no data: [data] gives neither a path nor a source. Add "
        'path = "data.csv" (with label = "column"; csv, parquet or npz), or '
        'source = "synthetic" for generated rows; jaxpipe.fit(spec, data=...) also takes '
        "a DataFrame, a pyarrow Table, (X, y) arrays or a file path",
        key="data.source",
    )


@dataclass(frozen=True)
class ExperimentSpec(Section):
    """What the run is called and where its randomness comes from."""

    name: str = field("experiment", "Run name; the default output folder is runs/<name>-<time>.")
    seed: int = field(
        0,
        "Seed of every random key (data, shuffling, init, dropout); 0 … 2^32 - 1.",
        minimum=0,
        maximum=SEED_MAX,
    )

    def _check(self, where: str) -> None:
        if len(self.name.encode()) > NAME_MAX:
            raise SpecError(
                f"is {len(self.name.encode())} bytes long; a run name (a folder name) may "
                f"have at most {NAME_MAX}: shorten it",
                key=f"{where}.name",
            )
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", self.name):
            raise SpecError(
                f"{self.name!r} is not usable as a folder name; use letters, digits, '-', '_', '.'",
                key=f"{where}.name",
            )


@dataclass(frozen=True)
class SyntheticSpec(Section):
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
class DataSpec(Section):
    """Where the rows come from, which columns are used and how rows are split."""

    source: Literal[SOURCES] | None = field(  # type: ignore[valid-type]
        None,
        "Where rows come from: a csv or parquet table, an npz file, generated (synthetic, "
        "only when named), or memory (the data given to jaxpipe.fit). Left out: from the "
        "extension of `path` (csv unless .parquet, .pq or .npz); with no path either, the "
        "rows must be passed to jaxpipe.fit.",
    )
    path: str | None = field(
        None,
        "Data file, relative to the spec file (csv, parquet; npz with arrays x and y); for "
        "csv and parquet also a directory or a glob ('data/*.parquet') of files.",
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
    folds: int | None = field(
        None,
        "Cross-validation in place of the validation split: K folds (stratified by class "
        "for classification, seeded by experiment.seed), each held out in turn, trained "
        "as one program; summary.json gains `cv` (each fold's final metrics, their mean "
        "and standard deviation).",
        minimum=2,
    )
    chunk_rows: Literal["auto"] | int = field(
        "auto",
        "Training rows per device chunk: an integer streams the training split from host "
        'memory in chunks (double-buffered); "auto" keeps it resident unless the plan finds '
        "that only streaming it fits the device, and then streams it in the largest chunks "
        "that fit.",
        minimum=1,
    )
    host_memory: str = field(
        "auto",
        'Host memory the data may take: a size ("64MiB", "8GiB") or "auto" (half the '
        "memory free at start). A directory or glob of csv/parquet files (or one file, with a "
        "size given) larger than this streams from disk in row groups.",
    )
    synthetic: SyntheticSpec = field(factory=SyntheticSpec, doc="The synthetic set.")

    def _check(self, where: str) -> None:
        if self.source is None and self.path is not None:
            # Resolved once, here, so the run directory's spec.toml and every reader see it.
            object.__setattr__(self, "source", source_of(self.path))
        if self.folds is not None:  # first: the validation key's own checks do not apply
            self._check_folds(where)
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
        self._check_needs(where)
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

    def _check_needs(self, where: str) -> None:
        needs = {"csv": ("path", "label"), "parquet": ("path", "label"), "npz": ("path",)}
        for name in needs.get(self.source, ()):
            if getattr(self, name) is None:
                raise SpecError(
                    f'source = "{self.source}" needs `{name}`; add {name} = "..." to [data]',
                    key=f"{where}.{name}",
                )

    def _check_folds(self, where: str) -> None:
        """Folds replace the validation split: a validation file or size of one's own,
        or training rows streamed in chunks (folds keep every row on the device), is a
        conflict named at `data.folds`."""
        default = type(self).__dataclass_fields__["validation"].default
        if self.validation != default or isinstance(self.validation, str):
            raise SpecError(
                f"holds out each of {self.folds} folds in turn in place of the validation "
                f"split, and data.validation = {self.validation!r} asks for a split of its "
                "own; remove data.validation (or data.folds)",
                key=f"{where}.folds",
            )
        if isinstance(self.chunk_rows, int):
            raise SpecError(
                "keeps every fold's rows on the device; remove data.chunk_rows (streaming) "
                "or data.folds",
                key=f"{where}.folds",
            )


@dataclass(frozen=True)
class PreprocessSpec(Section):
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
class ModelSpec(Section):
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
class ScheduleSpec(Section):
    """A learning-rate schedule from optax; other keys are passed to the optax function."""

    _extra = "options"
    name: str = field("constant", "constant | cosine | warmup_cosine | exponential | linear.")
    options: Mapping[str, Any] = field(factory=dict, doc="Keyword arguments of the schedule.")


@dataclass(frozen=True)
class OptimizerSpec(Section):
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


# The columns of metrics.jsonl by task (besides epoch and epoch_seconds); read by
# core.evaluation.metric_names and the sweep's metric check.
RECORDED_METRICS = {
    "classification": ("train_loss", "train_accuracy", "val_loss", "val_accuracy"),
    "regression": ("train_loss", "val_loss", "val_rmse"),
}

# Validation metrics a classification run adds to its epoch rows only when the spec asks
# for them (`[training] metrics`, or watched by early stopping, a best checkpoint or a
# sweep): they need every validation row's probabilities, fetched once per epoch and
# scored on the host as `evaluate` scores them (roc_auc, pr_auc, ...).
OPTIONAL_METRICS = {
    "classification": (
        "val_roc_auc",
        "val_pr_auc",
        "val_f1_macro",
        "val_f1_weighted",
        "val_balanced_accuracy",
        "val_log_loss",
    ),
    "regression": (),
}

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
class EarlyStoppingSpec(Section):
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
class TrainingSpec(Section):
    """How long and in what batches."""

    epochs: int = field(5, "Passes over the training split.", minimum=1)
    batch_size: int = field(128, "Rows per optimizer step.", minimum=1)
    precision: Literal["float32", "bfloat16"] = field(
        "float32", "Compute dtype; bfloat16 keeps float32 master weights and optimizer state."
    )
    early_stopping: EarlyStoppingSpec | None = field(
        None, "Stop early when a metric stops improving."
    )
    class_weight: Literal["balanced"] | Mapping[str, float] | None = field(
        None,
        'Classification: weight of each class in the training loss. "balanced": rows / '
        "(classes × the class's training rows); a table {label = weight} (labels as in the "
        "data, others 1.0). The validation loss and metrics stay unweighted.",
    )
    metrics: tuple[str, ...] = field(
        (),
        "Classification: validation metrics added to each epoch's row beside val_loss and "
        "val_accuracy: " + ", ".join(OPTIONAL_METRICS["classification"]) + ". One watched "
        "by early stopping, a best checkpoint or a sweep is added without being listed. "
        "They score every validation row's probabilities on the host each epoch.",
    )

    def _check(self, where: str) -> None:
        allowed = OPTIONAL_METRICS["classification"]
        for i, name in enumerate(self.metrics):
            if name not in allowed:
                raise SpecError(
                    f"unknown metric {name!r}; choose from {', '.join(allowed)}",
                    key=f"{where}.metrics[{i}]",
                )
        if not isinstance(self.class_weight, Mapping):
            return
        if not self.class_weight:
            raise SpecError(
                'is an empty table; give {label = weight, ...} or "balanced"',
                key=f"{where}.class_weight",
            )
        for label, w in self.class_weight.items():
            ok = isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
            if not ok or w < 0:
                raise SpecError(
                    f"expected a finite weight ≥ 0, found {w!r}",
                    key=f"{where}.class_weight.{label}",
                )
        if not any(w > 0 for w in self.class_weight.values()):
            raise SpecError(
                "gives every class weight 0; at least one must be > 0",
                key=f"{where}.class_weight",
            )


@dataclass(frozen=True)
class CheckpointSpec(Section):
    """Orbax checkpoints under <run>/checkpoints/, for `jaxpipe run --resume`."""

    every_epochs: Literal["auto"] | int = field(
        "auto",
        'Save every this many epochs; "auto": every every_minutes of wall time. Always '
        "also after the last epoch, an early stop and a signal.",
        minimum=1,
    )
    every_minutes: float = field(
        5.0, 'With every_epochs = "auto": minutes of training between saves.', minimum=0.0
    )
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
class RuntimeSpec(Section):
    """Process-level switches."""

    compilation_cache: bool = field(
        True, "Keep compiled programs on disk across runs (JAXPIPE_COMPILATION_CACHE=0 disables)."
    )
