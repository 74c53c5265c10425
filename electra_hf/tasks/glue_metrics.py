"""The GLUE metrics (values in [0, 1] / [-1, 1]; the tables multiply by 100)."""

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


