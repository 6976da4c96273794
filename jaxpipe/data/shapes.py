"""The data's shapes, as the planner needs them: encoded features, classes, training
and validation rows. The planner receives them and never loads data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp

from jaxpipe.data.load import load_dataset
from jaxpipe.spec.experiment import Spec

__all__ = ["Shapes", "data_shapes"]


@dataclass(frozen=True)
class Shapes:
    """What the estimate needs to know about the data, and where it was learnt."""

    features: int  # encoded feature columns (after one-hot)
    classes: int  # 0 for regression
    train_rows: int
    val_rows: int
    source: str
    task: str = "classification"

    @property
    def outputs(self) -> int:
        """The model's output width: one per class, or 1 for regression."""
        return 1 if self.task == "regression" else self.classes

    @property
    def y_dtype(self) -> Any:
        return jnp.float32 if self.task == "regression" else jnp.int32

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self)) | {"outputs": self.outputs}


def data_shapes(spec: Spec, dataset: Any | None = None) -> Shapes:
    """The data's shapes. Synthetic data: from the spec. A file (csv, parquet, npz, or a
    separate validation file): the data set is loaded on the host, as `jaxpipe run` loads
    it, because only then is the encoded feature count exact (one-hot vocabularies are
    fitted on the training split) and rows dropped for missing values known; nothing goes
    to a device. Pass an already loaded `data.Dataset` to skip that."""
    task = spec.model.task
    cfg = spec.data
    if dataset is None and (cfg.source != "synthetic" or isinstance(cfg.validation, str)):
        dataset = load_dataset(spec)
    if dataset is not None:
        return Shapes(
            dataset.num_features,
            dataset.num_classes if task == "classification" else 0,
            len(dataset.x_train),
            len(dataset.x_val),
            "loaded data set",
            task,
        )
    syn = cfg.synthetic
    val = cfg.validation
    n_val = val if isinstance(val, int) else int(round(syn.rows * val))
    classes = syn.classes if task == "classification" else 0
    return Shapes(syn.features, classes, syn.rows - n_val, n_val, "spec", task)
