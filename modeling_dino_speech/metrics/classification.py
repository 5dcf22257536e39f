"""Single-label classification scores used for emotion recognition: micro-F1, macro-F1, unweighted accuracy.

- micro-F1: pooled over all utterances; for single-label classification it equals accuracy (the paper's
  emotion metric).
- macro-F1: the mean over classes of each class's F1 (a class with no true positives scores 0, as does a
  class listed in ``labels`` that never occurs), as ``sklearn.metrics.f1_score(average="macro")``.
- unweighted accuracy (UA): the mean over the classes present in the references of each class's recall,
  the usual emotion-recognition number alongside weighted accuracy (``balanced_accuracy_score``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classification_scores", "confusion_matrix", "macro_f1", "micro_f1", "unweighted_accuracy"]


def confusion_matrix(
    references: Sequence, predictions: Sequence, labels: Sequence | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of (reference, prediction) pairs.

    Args:
        references, predictions: (N,) class labels of any sortable type (ints, strings).
        labels: the classes, in the order of the rows/columns; default: the sorted union of both inputs.

    Returns:
        matrix: (C, C) int64, ``matrix[i, j]`` = utterances of class ``labels[i]`` predicted as ``labels[j]``.
        labels: (C,) the classes.
    """
    references = np.asarray(references)
    predictions = np.asarray(predictions)
    if references.ndim != 1 or references.shape != predictions.shape:
        raise ValueError(
            f"references and predictions must be 1-D of equal length, got {references.shape} and {predictions.shape}"
        )
    if references.size == 0:
        raise ValueError("references and predictions are empty")
    if labels is None:
        labels = np.unique(np.concatenate([references, predictions]))
    else:
        labels = np.asarray(labels)
        unknown = np.setdiff1d(np.concatenate([references, predictions]), labels)
        if unknown.size:
            raise ValueError(f"classes {unknown.tolist()} are not in labels {labels.tolist()}")
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    # Index of each input in `labels`: searchsorted over the sorted classes, then back to the given order.
    ref_index = order[np.searchsorted(sorted_labels, references)]
    pred_index = order[np.searchsorted(sorted_labels, predictions)]
    c = labels.shape[0]
    matrix = np.bincount(ref_index * c + pred_index, minlength=c * c).reshape(c, c)
    return matrix, labels


def classification_scores(references: Sequence, predictions: Sequence, labels: Sequence | None = None) -> dict:
    """All three scores plus the confusion matrix, from one pass.

    Returns:
        dict with ``micro_f1``, ``macro_f1``, ``unweighted_accuracy`` (floats in [0, 1]), ``confusion``
        ((C, C) int64, rows = references) and ``labels`` ((C,) classes).
    """
    matrix, labels = confusion_matrix(references, predictions, labels)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    f1_denominator = support + predicted  # 2 TP + FP + FN; 0 only for a class in `labels` never seen: F1 = 0
    f1 = np.divide(2.0 * true_positives, f1_denominator, out=np.zeros(len(labels)), where=f1_denominator > 0)
    present = support > 0
    return {
        "micro_f1": float(true_positives.sum() / matrix.sum()),
        "macro_f1": float(f1.mean()),
        "unweighted_accuracy": float((true_positives[present] / support[present]).mean()),
        "confusion": matrix,
        "labels": labels,
    }


def micro_f1(references: Sequence, predictions: Sequence) -> float:
    """Pooled F1 over all utterances (= accuracy for single-label classification)."""
    return classification_scores(references, predictions)["micro_f1"]


def macro_f1(references: Sequence, predictions: Sequence, labels: Sequence | None = None) -> float:
    """Mean per-class F1 over ``labels`` (default: the classes seen in references or predictions)."""
    return classification_scores(references, predictions, labels)["macro_f1"]


def unweighted_accuracy(references: Sequence, predictions: Sequence) -> float:
    """Mean per-class recall over the classes present in the references."""
    return classification_scores(references, predictions)["unweighted_accuracy"]
