"""The GLUE metrics (values in [0, 1] / [-1, 1]; the tables multiply by 100).

These functions are the computation behind the `evaluate` module ``electra_hf/metrics/glue``
(one implementation: the module wraps them). Besides the GLUE tasks' metric sets,
:data:`GENERIC_METRICS` holds those of classification and regression data of your own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: Sequence[int], references: Sequence[int]) -> float:
    predictions, references = np.asarray(predictions), np.asarray(references)
    return float((predictions == references).mean())


def f1_binary(predictions: Sequence[int], references: Sequence[int]) -> float:
    """F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""
    from sklearn.metrics import f1_score

    return float(f1_score(np.asarray(references), np.asarray(predictions), pos_label=1, average="binary",
                          zero_division=0.0))


def matthews_correlation(predictions: Sequence[int], references: Sequence[int]) -> float:
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(np.asarray(references), np.asarray(predictions)))


def _correlation(fn, predictions, references) -> float:
    predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
    references = np.asarray(references, dtype=np.float64).reshape(-1)
    if np.ptp(predictions) == 0 or np.ptp(references) == 0:
        return float("nan")  # undefined for constant input (a collapsed model): NaN, not an exception
    return float(fn(predictions, references)[0])


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    from scipy.stats import pearsonr

    return _correlation(pearsonr, predictions, references)


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return _correlation(spearmanr, predictions, references)


METRIC_FUNCTIONS = {
    "accuracy": accuracy,
    "f1": f1_binary,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearmanr": spearman,
}



#: The metrics of a data set outside GLUE, by problem: the `evaluate` module's configurations
#: "classification" and "regression" (train_glue.py --train_file ...).
GENERIC_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy",),
    "regression": ("pearson", "spearmanr"),
}


def class_ids_or_scores(predictions, is_regression: bool, name: str) -> np.ndarray:
    """Model outputs → class ids (argmax over logits (N, C), or ids (N,) as given) for
    classification; → float scores (N,) for regression (an (N, 1) array is squeezed)."""
    predictions = np.asarray(predictions)
    if is_regression:
        return predictions.reshape(predictions.shape[0], -1)[:, 0].astype(np.float64)
    if predictions.ndim == 2:
        return predictions.argmax(axis=-1)
    if predictions.ndim == 1:
        return predictions.astype(np.int64)
    raise ValueError(f"{name}: predictions must be logits (N, C) or class ids (N,), got shape {predictions.shape}")


def score_predictions(metric_names: Sequence[str], is_regression: bool, predictions, references,
                      name: str) -> dict[str, float]:
    """The metrics ``metric_names`` of ``predictions`` (logits (N, C), class ids (N,) or regression
    scores (N,)/(N, 1)) against ``references`` (N,); ``name`` (the task) goes into error messages.
    Regression scores and references must be on the same scale (correlations do not care which)."""
    preds = class_ids_or_scores(predictions, is_regression, name)
    refs = np.asarray(references)
    if refs.shape[0] != preds.shape[0]:
        raise ValueError(f"{name}: {preds.shape[0]} predictions but {refs.shape[0]} references")
    if not is_regression:
        refs = refs.astype(np.int64)
        if (refs < 0).any():
            raise ValueError(f"{name}: references contain -1 (unlabeled test split?)")
    return {metric: METRIC_FUNCTIONS[metric](preds, refs) for metric in metric_names}
