"""Metrics of a model on labelled rows, on the host in float64: accuracy, loss,
per-class precision / recall / F1 and the confusion matrix for classification; RMSE,
MAE and R² for regression. Used by `Model.evaluate` and `jaxpipe evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxpipe.spec.sections import RECORDED_METRICS

__all__ = ["classification_metrics", "regression_metrics", "format_metrics", "metric_names"]

# log(0) guard: a probability that underflowed to 0 costs at most -log(1e-12) ≈ 27.6.
_EPS = 1e-12


def metric_names(regression: bool) -> list[str]:
    """The columns of a run's metrics.jsonl (besides epoch and epoch_seconds)."""
    return list(RECORDED_METRICS["regression" if regression else "classification"])


def classification_metrics(
    probs: np.ndarray, y: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """probs: [rows, classes] probabilities; y: [rows] class indices."""
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    k = len(classes)
    pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), np.int64)  # rows: true class, columns: predicted
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    per_class = {
        str(c): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, c in enumerate(classes)
    }
    loss = -np.log(np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)).mean()
    return {
        "task": "classification",
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "loss": float(loss),
        "per_class": per_class,
        "classes": [str(c) for c in classes],
        "confusion_matrix": confusion.tolist(),
    }


def regression_metrics(pred: np.ndarray, y: np.ndarray, scale: float = 1.0) -> dict[str, Any]:
    """pred, y: [rows] in the target's units. `loss` is the MSE on the standardised
    target (divided by the training target's `scale`²), as training reports val_loss."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    err = pred - y
    mse = float(np.mean(err**2))
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "task": "regression",
        "rows": int(len(y)),
        "loss": mse / (scale * scale),
        "rmse": float(np.sqrt(mse)),
        "mae": float(np.mean(np.abs(err))),
        "r2": 1.0 - float(np.sum(err**2)) / total if total > 0 else float("nan"),
    }


def format_metrics(m: dict[str, Any]) -> str:
    """The metrics as a few lines for a person (`jaxpipe evaluate` without --json)."""
    if m["task"] == "regression":
        return (
            f"{m['rows']} rows: rmse {m['rmse']:.6g}, mae {m['mae']:.6g}, "
            f"r2 {m['r2']:.4f}, loss {m['loss']:.6g}"
        )
    lines = [f"{m['rows']} rows: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}", ""]
    width = max(len(c) for c in m["classes"] + ["class"])
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for c in m["classes"]:
        r = m["per_class"][c]
        lines.append(
            f"{c:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  "
            f"{r['support']:7d}"
        )
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    cell = max(width, *(len(str(v)) for row in m["confusion_matrix"] for v in row))
    lines.append(" " * (width + 2) + "  ".join(f"{c:>{cell}}" for c in m["classes"]))
    for c, row in zip(m["classes"], m["confusion_matrix"]):
        lines.append(f"{c:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in row))
    return "\n".join(lines)
