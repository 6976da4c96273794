"""scikit-learn estimators over jaxpipe's own pipeline: `MLPClassifier` and `MLPRegressor`.

    from jaxpipe.sklearn import MLPClassifier
    clf = MLPClassifier(hidden=(64,), epochs=50).fit(X, y)   # X: [rows, features]
    clf.predict_proba(X_new)

They keep scikit-learn's contract (`fit(X, y)`, `predict`, `predict_proba`, `score`,
`get_params` / `set_params`, `classes_`, `n_features_in_`, `feature_names_in_`), so they
work in `Pipeline`, `cross_val_score` and `GridSearchCV`, and pass scikit-learn's estimator
checks (tests/test_sklearn.py). Each `fit` is a `jaxpipe.fit` of a spec built from the
keywords, which mirror the spec's keys; the fitted `jaxpipe.Model` is `model_` (save,
export, trace it). Input is numeric, as scikit-learn's own estimators take it: encode text
columns in the pipeline (a `OneHotEncoder`), or give the DataFrame to `jaxpipe.fit`,
which encodes them itself. Needs scikit-learn: `pip install 'jaxpipe[sklearn]'`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "jaxpipe.sklearn needs scikit-learn (>= 1.6): pip install 'jaxpipe[sklearn]'"
    ) from e

from jaxpipe.api import fit as _fit
from jaxpipe.errors import JaxpipeError

__all__ = ["MLPClassifier", "MLPRegressor"]


class _MLP(BaseEstimator):
    """The keywords and the fit shared by both estimators (see the module's docstring)."""

    _task = "classification"

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (100,),
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm: bool = False,
        epochs: int = 200,
        batch_size: int = 200,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        normalize: str = "standard",
        validation: int | float | None = None,
        random_state: Any = 0,
        verbose: bool = False,
    ):
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.layer_norm = layer_norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.normalize = normalize
        self.validation = validation
        self.random_state = random_state
        self.verbose = verbose

    def _seed(self) -> int:
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    def _spec(self, rows: int, class_weight: Any = None) -> dict[str, Any]:
        """The jaxpipe spec of these keywords for `rows` training rows (the batch never
        larger than the rows, as scikit-learn's `min(200, n_samples)`)."""
        held = 0 if self.validation is None else self.validation
        held = held if isinstance(held, int) else int(round(rows * held))
        training: dict[str, Any] = {
            "epochs": int(self.epochs),
            "batch_size": int(max(1, min(self.batch_size, rows - held))),
        }
        if class_weight is not None:
            training["class_weight"] = class_weight
        data = {} if self.validation is None else {"validation": self.validation}
        return {
            "experiment": {"name": "sklearn", "seed": self._seed()},
            "data": data,
            "preprocess": {"normalize": self.normalize},
            "model": {
                "task": self._task,
                "hidden": [int(h) for h in self.hidden],
                "activation": self.activation,
                "dropout": float(self.dropout),
                "layer_norm": bool(self.layer_norm),
            },
            "optimizer": {"name": self.optimizer, "learning_rate": float(self.learning_rate)},
            "training": training,
        }

    def _train(self, x: np.ndarray, y: np.ndarray, class_weight: Any = None) -> None:
        """jaxpipe.fit on x: [rows, features] float32 and y: [rows] (class indices or
        targets). Without `validation` every row trains and the per-epoch validation
        metrics are taken on the training rows themselves."""
        if len(x) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 samples to fit; found 1 sample"
            )
        spec = self._spec(len(x), class_weight)
        rows = (x, y)
        try:
            model = _fit(
                spec,
                data=rows,
                validation=rows if self.validation is None else None,
                verbose=self.verbose,
                progress=False,  # a grid search's many fits: no display each
            )
        except JaxpipeError as e:  # scikit-learn's contract: bad input is a ValueError
            raise ValueError(str(e)) from e
        self.model_ = model
        self.history_ = list(model.history)
        self.n_iter_ = len(model.history)

    def _outputs(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=np.float32)
        try:
            return self.model_.predict(x)
        except JaxpipeError as e:
            raise ValueError(str(e)) from e

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class MLPClassifier(ClassifierMixin, _MLP):
    """An MLP classifier trained by jaxpipe (softmax cross-entropy). Keywords as the spec:
    `hidden`, `activation`, `dropout`, `layer_norm` ([model]); `epochs`, `batch_size`,
    `class_weight` ([training]); `learning_rate`, `optimizer` ([optimizer]); `normalize`
    ([preprocess]); `validation` ([data]: None trains on every row); `random_state`
    (experiment.seed). `class_weight`: None, "balanced" or {label: weight}."""

    _task = "classification"

    def __init__(
        self,
        *,
        hidden: Sequence[int] = (100,),
        activation: str = "relu",
        dropout: float = 0.0,
        layer_norm: bool = False,
        epochs: int = 200,
        batch_size: int = 200,
        learning_rate: float = 1e-3,
        optimizer: str = "adam",
        normalize: str = "standard",
        class_weight: str | Mapping[Any, float] | None = None,
        validation: int | float | None = None,
        random_state: Any = 0,
        verbose: bool = False,
    ):
        super().__init__(
            hidden=hidden,
            activation=activation,
            dropout=dropout,
            layer_norm=layer_norm,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            optimizer=optimizer,
            normalize=normalize,
            validation=validation,
            random_state=random_state,
            verbose=verbose,
        )
        self.class_weight = class_weight

    def fit(self, X: Any, y: Any) -> MLPClassifier:
        """Trains on X: [rows, features] (numbers) and y: [rows] class labels."""
        x, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"MLPClassifier needs samples of at least 2 classes; found 1 class "
                f"({self.classes_[0]!r})"
            )
        self._train(x, index.astype(np.int64), self._class_weight())
        return self

    def _class_weight(self) -> Any:
        """`class_weight` as jaxpipe names classes: the index of each label in `classes_`."""
        cw = self.class_weight
        if cw is None or isinstance(cw, str):
            return cw
        labels = {label: i for i, label in enumerate(self.classes_.tolist())}
        unknown = [k for k in cw if k not in labels]
        if unknown:
            raise ValueError(
                f"class_weight names the class {unknown[0]!r}, which y does not have; its "
                f"classes are {self.classes_.tolist()}"
            )
        return {str(labels[k]): float(w) for k, w in cw.items()}

    def predict_proba(self, X: Any) -> np.ndarray:
        """[rows, classes] probabilities, columns in `classes_` order."""
        probs = np.asarray(self._outputs(X), np.float64)
        return probs / probs.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row: [rows], labels as `classes_` holds them."""
        probs = self.predict_proba(X)  # first: an unfitted model raises NotFittedError
        return self.classes_[probs.argmax(axis=1)]


class MLPRegressor(RegressorMixin, _MLP):
    """An MLP regressor trained by jaxpipe (squared error on the standardised target).
    Keywords as `MLPClassifier`'s, without `class_weight`."""

    _task = "regression"

    def fit(self, X: Any, y: Any) -> MLPRegressor:
        """Trains on X: [rows, features] (numbers) and y: [rows] targets."""
        x, y = validate_data(self, X, y, dtype=np.float32, y_numeric=True)
        self._train(x, np.asarray(y, np.float64))
        return self

    def predict(self, X: Any) -> np.ndarray:
        """[rows] predictions in the target's units."""
        return np.asarray(self._outputs(X), np.float64).reshape(-1)
