"""The fitted `Preprocessing` record, one for everything fitted (feature encoder, scaler,
regression target scaling), which checkpoints, the predictor and the summary all read.
The stage that fits it is `jaxpipe.runner.preprocess`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax
import numpy as np

from jaxpipe.core.scaling import Scaler
from jaxpipe.data.encoding import FeatureEncoder
from jaxpipe.errors import DataError, SpecError

__all__ = ["Preprocessing", "fit_class_weights"]


def fit_class_weights(
    setting: str | Mapping[str, float] | None, y_train: Any, classes: tuple[str, ...]
) -> tuple[float, ...] | None:
    """`[training] class_weight` as one weight per class index ([classes] floats), fitted
    on the training labels `y_train` ([rows] int class indices) as scikit-learn's
    "balanced" is: rows / (classes × rows of the class); a class absent from the training
    split gets 1.0. A table names classes as the data does (`classes`); unnamed ones 1.0."""
    if setting is None:
        return None
    k = len(classes)
    if isinstance(setting, Mapping):
        unknown = [c for c in setting if c not in classes]
        if unknown:
            raise DataError(
                f"training.class_weight names the class {unknown[0]!r}, which the data does "
                f"not have; its classes are {', '.join(classes)}"
            )
        return tuple(float(setting.get(c, 1.0)) for c in classes)
    if not isinstance(y_train, np.ndarray):
        raise SpecError(
            '"balanced" counts the training labels in memory; a set streamed from disk '
            "needs a table {label = weight}",
            key="training.class_weight",
        )
    counts = np.bincount(np.asarray(y_train, np.int64), minlength=k).astype(np.float64)
    n = counts.sum()
    return tuple(float(n / (k * c)) if c > 0 else 1.0 for c in counts)


@dataclass(frozen=True)
class Preprocessing:
    """What a model needs besides its parameters to be used on new rows: the task, the
    label and class names, the encoder of the raw columns, the feature scaler and, for
    regression, the target's standardisation (mean, scale)."""

    task: str
    label: str | None
    classes: tuple[str, ...]
    features: tuple[str, ...]
    encoder: FeatureEncoder | None
    normalize: str
    scaler: Scaler
    target: Scaler | None = None
    class_weights: tuple[float, ...] | None = None  # [classes], training loss only

    @property
    def regression(self) -> bool:
        return self.task == "regression"

    @property
    def target_stats(self) -> tuple[float, float] | None:
        """A regression target's (mean, scale) as Python floats; None otherwise."""
        if self.target is None:
            return None
        return float(self.target.offset[0]), float(self.target.scale[0])

    def dataset_info(self) -> dict[str, Any]:
        """The checkpoint's `dataset` record (JSON): checked on resume, so a run never
        continues on data encoded differently."""
        stats = self.target_stats
        info = {
            "task": self.task,
            "label": self.label,
            "classes": list(self.classes),
            "features": list(self.features),
            "encoder": self.encoder.to_json() if self.encoder is not None else None,
            "target": None if stats is None else {"mean": stats[0], "scale": stats[1]},
        }
        if self.class_weights is not None:  # absent otherwise: older checkpoints still match
            info["class_weights"] = list(self.class_weights)
        return json.loads(json.dumps(info))  # as a checkpoint reads back (lists, not tuples)

    def scaler_json(self, dtype: Any = None) -> dict[str, Any]:
        return {
            "kind": self.normalize,
            "offset": np.asarray(self.scaler.offset, dtype).tolist(),
            "scale": np.asarray(self.scaler.scale, dtype).tolist(),
        }

    def to_host(self) -> Preprocessing:
        """The same record with host (numpy) arrays, for a model that outlives the run."""
        return replace(self, scaler=jax.device_get(self.scaler), target=jax.device_get(self.target))

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> Preprocessing:
        """From predictor.json's fields (float32 scalers, as the model was trained)."""
        t = meta.get("target")
        target = None
        if t is not None:
            target = Scaler(np.float32([t["mean"]]), np.float32([t["scale"]]))
        return cls(
            task=meta["task"],
            label=meta.get("label"),
            classes=tuple(meta["classes"]),
            features=tuple(meta["features"]),
            encoder=FeatureEncoder.from_json(meta["encoder"]) if meta.get("encoder") else None,
            normalize=meta["scaler"]["kind"],
            scaler=Scaler(
                np.asarray(meta["scaler"]["offset"], np.float32),
                np.asarray(meta["scaler"]["scale"], np.float32),
            ),
            target=target,
        )
