"""Metrics of a model on labelled rows, on the host in float64: accuracy, loss (log
loss), ROC-AUC and PR-AUC (binary, or one-vs-rest macro), macro and weighted F1,
balanced accuracy, per-class precision / recall / F1 and the confusion matrix for
classification; RMSE, MAE and R² for regression. Used by `Model.evaluate` and `jaxpipe
evaluate`. Each equals scikit-learn's function of the same name on the same rows
(tests/test_model_losses_metrics.py holds them within 1e-6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxpipe.spec.sections import OPTIONAL_METRICS, RECORDED_METRICS

__all__ = [
    "classification_metrics",
    "regression_metrics",
    "format_metrics",
    "metric_names",
    "roc_auc",
    "average_precision",
    "epoch_scores",
]

# log(0) guard: a probability that underflowed to 0 costs at most -log(1e-12) ≈ 27.6.
_EPS = 1e-12


def metric_names(regression: bool) -> list[str]:
    """The columns a run's metrics.jsonl can have (besides epoch and epoch_seconds): those
    always recorded, then the optional ones a spec may ask for."""
    task = "regression" if regression else "classification"
    return list(RECORDED_METRICS[task] + OPTIONAL_METRICS[task])


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (as the Mann-Whitney statistic needs)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def _binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for the boolean `positive`: the probability
    that a random positive scores above a random negative (ties count half); None when
    either side has no rows."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _binary_ap(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (the step-wise area under the precision-recall curve, as
    scikit-learn's `average_precision_score`): sum over thresholds of (recall gained) ×
    precision, tied scores one threshold; None without positive rows."""
    if not positive.any():
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, hit = scores[order], positive[order].astype(np.float64)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # the end of each tie group
    tp = np.cumsum(hit)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _one_vs_rest(fn, probs: np.ndarray, y: np.ndarray) -> float | None:
    """Binary: `fn` of the second class's probability. More classes: the unweighted mean
    of each class against the rest (None when a class leaves a side empty)."""
    if probs.shape[1] == 2:
        return fn(y == 1, probs[:, 1])
    each = [fn(y == c, probs[:, c]) for c in range(probs.shape[1])]
    return None if any(v is None for v in each) else float(np.mean(each))


def roc_auc(probs: np.ndarray, y: np.ndarray) -> float | None:
    """ROC-AUC: binary, or one-vs-rest macro (scikit-learn's `roc_auc_score(...,
    multi_class="ovr")`). probs: [rows, classes]; y: [rows] class indices."""
    return _one_vs_rest(_binary_auc, np.asarray(probs, np.float64), np.asarray(y))


def average_precision(probs: np.ndarray, y: np.ndarray) -> float | None:
    """PR-AUC as average precision: binary, or one-vs-rest macro."""
    return _one_vs_rest(_binary_ap, np.asarray(probs, np.float64), np.asarray(y))


def _summary_scores(confusion: np.ndarray, f1: np.ndarray, recall: np.ndarray) -> dict:
    """Macro and weighted F1 over the classes that occur (as true or predicted labels,
    scikit-learn's default) and balanced accuracy (mean recall over true classes)."""
    actual, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    seen = (actual + predicted) > 0
    return {
        "f1_macro": float(f1[seen].mean()) if seen.any() else 0.0,
        "f1_weighted": float(np.sum(f1 * actual) / max(actual.sum(), 1)),
        "balanced_accuracy": float(recall[actual > 0].mean()) if (actual > 0).any() else 0.0,
    }


def _per_class(pred: np.ndarray, y: np.ndarray, k: int):
    """(confusion [k, k] with rows the true class, precision, recall, f1: [k] each)."""
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(k), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return confusion, precision, recall, f1


def _log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)).mean())


def classification_metrics(
    probs: np.ndarray, y: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """probs: [rows, classes] probabilities; y: [rows] class indices."""
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    pred = probs.argmax(axis=1)
    confusion, precision, recall, f1 = _per_class(pred, y, len(classes))
    actual = confusion.sum(axis=1)
    per_class = {
        str(c): {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, c in enumerate(classes)
    }
    loss = _log_loss(probs, y)
    return {
        "task": "classification",
        "rows": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "loss": loss,
        "log_loss": loss,
        "roc_auc": roc_auc(probs, y),
        "pr_auc": average_precision(probs, y),
        **_summary_scores(confusion, f1, recall),
        "per_class": per_class,
        "classes": [str(c) for c in classes],
        "confusion_matrix": confusion.tolist(),
    }


def epoch_scores(probs: np.ndarray, y: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """The optional validation metrics `names` of one epoch (spec.sections.OPTIONAL_METRICS:
    val_roc_auc, val_pr_auc, val_f1_macro, val_f1_weighted, val_balanced_accuracy,
    val_log_loss), scored as `classification_metrics` scores them; only those named are
    computed (the AUCs sort every row). probs: [rows, classes]; y: [rows] class indices.
    An AUC without both sides of a class among the rows is NaN (undefined)."""
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    out: dict[str, float] = {}
    if {"val_f1_macro", "val_f1_weighted", "val_balanced_accuracy"} & set(names):
        confusion, _, recall, f1 = _per_class(probs.argmax(axis=1), y, probs.shape[1])
        out |= {f"val_{k}": v for k, v in _summary_scores(confusion, f1, recall).items()}
    if "val_roc_auc" in names:
        out["val_roc_auc"] = roc_auc(probs, y)
    if "val_pr_auc" in names:
        out["val_pr_auc"] = average_precision(probs, y)
    if "val_log_loss" in names:
        out["val_log_loss"] = _log_loss(probs, y)
    return {k: float("nan") if out[k] is None else out[k] for k in names}


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

    def opt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    lines = [
        f"{m['rows']} rows: accuracy {m['accuracy']:.4f}, loss {m['loss']:.4f}",
        f"roc_auc {opt(m.get('roc_auc'))}, pr_auc {opt(m.get('pr_auc'))}, "
        f"f1_macro {opt(m.get('f1_macro'))}, f1_weighted {opt(m.get('f1_weighted'))}, "
        f"balanced_accuracy {opt(m.get('balanced_accuracy'))}",
        "",
    ]
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
