"""The official SQuAD v1.1 and v2.0 evaluation (exact match and F1 over normalised answers)."""

from __future__ import annotations

import collections
import logging
import re
import string
from typing import Any, Iterable, Mapping, Sequence

from datasets import Dataset

logger = logging.getLogger(__name__)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """The official SQuAD normalisation: lower case, drop punctuation and articles (a/an/the), fix spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1_v1(prediction: str, ground_truth: str) -> float:
    """F1 of the v1.1 script: bag-of-tokens overlap; 0 when nothing is shared (even two empty strings)."""
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(ground_truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred)
    recall = num_same / len(gold)
    return 2 * precision * recall / (precision + recall)


def _f1_v2(prediction: str, ground_truth: str) -> float:
    """F1 of the v2.0 script: as v1.1, but an empty side scores 1 if both are empty, else 0."""
    pred = normalize_answer(prediction).split()
    gold = normalize_answer(ground_truth).split()
    if not pred or not gold:
        return float(pred == gold)
    return _f1_v1(prediction, ground_truth)


def _exact(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _reference_texts(references: Dataset | Mapping[str, Any] | Iterable) -> dict[str, list[str]]:
    """``{id: [answer texts]}`` from a SQuAD Dataset, a dict id -> texts, or id -> answers dict."""
    if isinstance(references, Dataset):
        return {i: list(a["text"]) for i, a in zip(references["id"], references["answers"])}
    out = {}
    for k, v in dict(references).items():
        if isinstance(v, Mapping):
            v = v["text"]
        elif isinstance(v, str):
            v = [v]
        out[str(k)] = list(v)
    return out


def squad_v1_metrics(predictions: Mapping[str, str], references: Dataset | Mapping[str, Any]) -> dict[str, float]:
    """Official SQuAD v1.1 ``exact_match`` and ``f1`` (percentages), max over each question's references.

    ``references``: a SQuAD Dataset (``id``, ``answers``) or ``{id: [texts]}``. A question without a
    prediction scores 0 (as the official script does) and is counted in ``missing``.
    """
    refs = _reference_texts(references)
    em = f1 = 0.0
    missing = 0
    for qid, golds in refs.items():
        if qid not in predictions:
            missing += 1
            continue
        pred = predictions[qid]
        em += max(_exact(pred, g) for g in golds)
        f1 += max(_f1_v1(pred, g) for g in golds)
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0", missing, len(refs))
    total = len(refs)
    return {
        "exact_match": 100.0 * em / total if total else 0.0,
        "f1": 100.0 * f1 / total if total else 0.0,
        "total": float(total),
        "missing": float(missing),
    }


def squad_v2_metrics(
    predictions: Mapping[str, str],
    references: Dataset | Mapping[str, Any],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> dict[str, float]:
    """Official SQuAD v2.0 ``exact``/``f1`` (percentages), overall and split into ``HasAns_*``/``NoAns_*``.

    A no-answer is the empty string, both in predictions and (empty answer list) in references. As the
    official script: reference texts that normalise to empty are dropped, an empty reference list means
    ``[""]``, and with ``na_probs`` a prediction whose no-answer probability exceeds ``na_prob_thresh`` counts
    as a no-answer. A question without a prediction scores 0 (``missing`` counts them).
    """
    refs = _reference_texts(references)
    exact: dict[str, float] = {}
    f1: dict[str, float] = {}
    has_ans: list[str] = []
    no_ans: list[str] = []
    missing = 0
    for qid, texts in refs.items():
        golds = [t for t in texts if normalize_answer(t)] or [""]
        (has_ans if golds != [""] else no_ans).append(qid)
        if qid not in predictions:
            missing += 1
            exact[qid] = f1[qid] = 0.0
            continue
        pred = predictions[qid]
        if na_probs is not None and na_probs.get(qid, 0.0) > na_prob_thresh:
            pred = ""
        exact[qid] = max(_exact(pred, g) for g in golds)
        f1[qid] = max(_f1_v2(pred, g) for g in golds)
    if missing:
        logger.warning("%d of %d questions have no prediction; they score 0", missing, len(refs))

    def agg(qids: Sequence[str], prefix: str) -> dict[str, float]:
        n = len(qids)
        return {
            f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / n if n else 0.0,
            f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / n if n else 0.0,
            f"{prefix}total": float(n),
        }

    out = agg(list(refs), "")
    if has_ans:
        out.update(agg(has_ans, "HasAns_"))
    if no_ans:
        out.update(agg(no_ans, "NoAns_"))
    out["missing"] = float(missing)
    return out


def squad_metrics(
    predictions: Mapping[str, str], references: Dataset | Mapping[str, Any], version_2_with_negative: bool = False
) -> dict[str, float]:
    """:func:`squad_v2_metrics` when ``version_2_with_negative`` else :func:`squad_v1_metrics`."""
    if version_2_with_negative:
        return squad_v2_metrics(predictions, references)
    return squad_v1_metrics(predictions, references)
