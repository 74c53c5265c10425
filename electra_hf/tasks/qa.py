"""Extractive QA (SQuAD v1.1 / v2.0): reading, sliding-window features, span post-processing, official metrics.

Pieces, in the order a script uses them:

* :func:`read_squad` reads SQuAD-format JSON (plain or ``.gz``) into a ``datasets.Dataset`` with ``id``,
  ``title``, ``context``, ``question``, ``answers`` (``{"text": [...], "answer_start": [...]}``; empty
  lists for v2.0 ``is_impossible`` questions), the same layout as the Hub's ``squad``/``squad_v2``.
  :func:`split_by_article` splits by article (title) so contexts never leak between the parts.
* :func:`prepare_train_features` / :func:`prepare_eval_features` (batched ``Dataset.map`` functions) cut
  each example into windows of ``max_length`` tokens, question first, context truncated
  (``"only_second"``) with ``doc_stride`` tokens of overlap between windows (Hugging Face's ``stride``
  semantics). Training features get ``start_positions``/``end_positions`` (the CLS index when the answer is
  not wholly inside the window or there is none); eval features keep ``example_id``, ``cls_index`` and the
  ``offset_mapping`` with ``None`` outside the context.
* :func:`postprocess_qa_predictions` searches the n-best spans over all windows of an example and maps
  the best back to the original context text; for v2.0 it compares the null score with the best span
  (``null_score_diff_threshold``).
* :func:`squad_v1_metrics` and :func:`squad_v2_metrics` are the official evaluation scripts' EM/F1.

This module imports only datasets/numpy and the standard library (a tokenizer is passed in).
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from datasets import Dataset

from .squad_metrics import normalize_answer, squad_metrics, squad_v1_metrics, squad_v2_metrics

logger = logging.getLogger(__name__)

#: Columns :func:`prepare_eval_features` adds that are not model inputs (drop them before collating).
QA_NON_MODEL_COLUMNS: tuple[str, ...] = ("example_id", "offset_mapping", "cls_index")

SQUAD_COLUMNS: tuple[str, ...] = ("id", "title", "context", "question", "answers")


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def load_squad_json(path: str | os.PathLike) -> dict:
    """Parse the JSON of a SQuAD file (plain or ``.gz``); ``ValueError`` names the file and position."""
    path = os.fspath(path)
    try:
        with _open_text(path) as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    except (EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"{path}: cannot read ({e})") from e


def squad_records(obj: Mapping, source: str = "<squad>", check_answers: bool = True) -> dict[str, list]:
    """Flatten a parsed SQuAD object into column lists; errors name ``source`` and the article/question.

    Raises ``ValueError`` for a missing/ill-typed field, an answer span outside its context, or a
    duplicate question id. An answer whose text differs from ``context[start:start+len(text)]`` is
    counted and logged (official files have none; some community files do) when ``check_answers``.
    """
    if not isinstance(obj, Mapping) or not isinstance(obj.get("data"), list):
        raise ValueError(f"{source}: not SQuAD format (expected an object with a 'data' list of articles)")
    cols: dict[str, list] = {c: [] for c in SQUAD_COLUMNS}
    seen_ids: dict[str, str] = {}
    mismatched = 0

    def need(d: Any, key: str, typ: type | tuple, where: str):
        if not isinstance(d, Mapping) or key not in d:
            raise ValueError(f"{source}: {where}: missing field {key!r}")
        if not isinstance(d[key], typ) or isinstance(d[key], bool):
            names = "/".join(t.__name__ for t in (typ if isinstance(typ, tuple) else (typ,)))
            raise ValueError(f"{source}: {where}: field {key!r} should be {names}, got {type(d[key]).__name__}")
        return d[key]

    for ai, article in enumerate(obj["data"]):
        a_where = f"article {ai}"
        title = article.get("title", "") if isinstance(article, Mapping) else None
        if isinstance(title, str) and title:
            a_where += f" ({title!r})"
        paragraphs = need(article, "paragraphs", list, a_where)
        for pi, par in enumerate(paragraphs):
            p_where = f"{a_where}, paragraph {pi}"
            context = need(par, "context", str, p_where)
            for qi, qa in enumerate(need(par, "qas", list, p_where)):
                q_where = f"{p_where}, question {qi}"
                qid = need(qa, "id", (str, int), q_where)
                qid = str(qid)
                q_where += f" (id {qid!r})"
                question = need(qa, "question", str, q_where)
                if qid in seen_ids:
                    raise ValueError(f"{source}: {q_where}: duplicate question id (first at {seen_ids[qid]})")
                seen_ids[qid] = q_where
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise ValueError(f"{source}: {q_where}: 'is_impossible' should be true/false")
                answers = need(qa, "answers", list, q_where) if not impossible else qa.get("answers", [])
                texts, starts = [], []
                if not impossible:
                    if not answers:
                        raise ValueError(f"{source}: {q_where}: no answers (and not marked is_impossible)")
                    for ni, ans in enumerate(answers):
                        n_where = f"{q_where}, answer {ni}"
                        text = need(ans, "text", str, n_where)
                        start = need(ans, "answer_start", int, n_where)
                        if start < 0 or start + len(text) > len(context):
                            raise ValueError(
                                f"{source}: {n_where}: answer_start {start} + len {len(text)} is outside the "
                                f"context ({len(context)} characters)"
                            )
                        if check_answers and context[start:start + len(text)] != text:
                            mismatched += 1
                        texts.append(text)
                        starts.append(start)
                cols["id"].append(qid)
                cols["title"].append(title if isinstance(title, str) else "")
                cols["context"].append(context)
                cols["question"].append(question)
                cols["answers"].append({"text": texts, "answer_start": starts})
    if mismatched:
        logger.warning("%s: %d answer(s) whose text differs from the context at answer_start", source, mismatched)
    return cols


def read_squad(path: str | os.PathLike, check_answers: bool = True) -> Dataset:
    """Read a SQuAD v1.1/v2.0 JSON file (plain or ``.gz``) into a Dataset with :data:`SQUAD_COLUMNS`.

    Questions keep file order (article, paragraph, question). v2.0 ``is_impossible`` questions get empty
    answer lists (their ``plausible_answers`` are ignored), as in the Hub's ``squad_v2``.
    """
    path = os.fspath(path)
    cols = squad_records(load_squad_json(path), source=path, check_answers=check_answers)
    if not cols["id"]:
        raise ValueError(f"{path}: no questions found")
    return Dataset.from_dict(cols)


def check_squad_dataset(ds: Dataset, source: str = "data set") -> Dataset:
    """Check that ``ds`` (e.g. a Hub ``squad`` split) has the SQuAD columns; returns it unchanged."""
    missing = [c for c in ("id", "context", "question", "answers") if c not in ds.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing} (columns: {ds.column_names})")
    return ds


def load_hub_squad(path: str, name: str | None = None, split: str = "validation", **load_kwargs: Any) -> Dataset:
    """``datasets.load_dataset(path, name, split=split)`` (e.g. ``"squad"``, ``"squad_v2"``), checked."""
    from datasets import load_dataset

    return check_squad_dataset(load_dataset(path, name, split=split, **load_kwargs), source=f"{path}:{split}")


def split_by_article(ds: Dataset, num_first: int) -> tuple[Dataset, Dataset]:
    """Split by article: questions of the first ``num_first`` articles, then those of the rest.

    Articles are identified by ``title`` in order of first appearance, so no context is in both parts.
    On SQuAD v1.1 dev, ``num_first=40`` gives 8,981 / 1,589 questions.
    """
    if "title" not in ds.column_names:
        raise ValueError("split_by_article needs a 'title' column")
    order: dict[str, int] = {}
    article_of = [order.setdefault(t, len(order)) for t in ds["title"]]
    if not 0 < num_first < len(order):
        raise ValueError(f"num_first={num_first} but the data set has {len(order)} articles")
    first = [i for i, a in enumerate(article_of) if a < num_first]
    rest = [i for i, a in enumerate(article_of) if a >= num_first]
    return ds.select(first), ds.select(rest)


# --------------------------------------------------------------------------------------------------
# Features (sliding windows)
# --------------------------------------------------------------------------------------------------


def _truncate_questions(questions: list[str], tokenizer: Any, max_query_length: int | None) -> list[str]:
    """Strip leading whitespace and cut questions longer than ``max_query_length`` tokens (at a token end)."""
    questions = [q.lstrip() for q in questions]
    if not max_query_length:
        return questions
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for q, offsets in zip(questions, enc["offset_mapping"]):
        if len(offsets) > max_query_length:
            q = q[: offsets[max_query_length - 1][1]]
        out.append(q)
    return out


def _tokenize_windows(
    examples: Mapping[str, list], tokenizer: Any, max_length: int, doc_stride: int,
    max_query_length: int | None, padding: bool | str,
):
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("QA preprocessing needs a fast tokenizer (offset mapping); got a slow one")
    if doc_stride >= max_length:
        raise ValueError(f"doc_stride ({doc_stride}) must be smaller than max_length ({max_length})")
    if max_query_length is not None and max_query_length + doc_stride + 3 >= max_length:
        raise ValueError(
            f"max_query_length ({max_query_length}) + doc_stride ({doc_stride}) + 3 special tokens must be "
            f"below max_length ({max_length}) so every window holds new context tokens"
        )
    questions = _truncate_questions(list(examples["question"]), tokenizer, max_query_length)
    return tokenizer(
        questions,
        list(examples["context"]),
        truncation="only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if padding is True else padding,
    )


def _cls_index(input_ids: Sequence[int], tokenizer: Any) -> int:
    cls = tokenizer.cls_token_id
    if cls is not None and cls in input_ids:
        return input_ids.index(cls)
    return 0


def _context_span(seq_ids: Sequence[int | None]) -> tuple[int, int]:
    """First and last token index of the context (sequence 1) in a window."""
    start = seq_ids.index(1)
    end = len(seq_ids) - 1 - seq_ids[::-1].index(1)
    return start, end


def _answer_positions(
    offsets: Sequence[tuple[int, int]], seq_ids: Sequence[int | None], answers: Mapping, cls_index: int
) -> tuple[int, int]:
    """Token start/end of the first answer if it lies wholly inside this window's context, else CLS."""
    if not answers["answer_start"]:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    ctx_start, ctx_end = _context_span(seq_ids)
    if offsets[ctx_start][0] > start_char or offsets[ctx_end][1] < end_char:
        return cls_index, cls_index
    s = ctx_start
    while s <= ctx_end and offsets[s][1] <= start_char:  # first token ending after the answer start
        s += 1
    e = ctx_end
    while e >= ctx_start and offsets[e][0] >= end_char:  # last token starting before the answer end
        e -= 1
    if s > e:  # answer inside a gap between tokens (only whitespace): no span
        return cls_index, cls_index
    return s, e


def prepare_train_features(
    examples: Mapping[str, list],
    tokenizer: Any,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int | None = 64,
    padding: bool | str = False,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: windows with ``start_positions``/``end_positions`` for training.

    Question first, context truncated ``"only_second"`` into windows of ``max_length`` tokens overlapping
    by ``doc_stride`` tokens; questions longer than ``max_query_length`` tokens are cut. The positions are
    the first and last token of the (first) answer, or the CLS index when the answer is not wholly inside
    the window or the question is unanswerable. Use with ``remove_columns=dataset.column_names``.
    """
    enc = _tokenize_windows(examples, tokenizer, max_length, doc_stride, max_query_length, padding)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    starts, ends = [], []
    for i, offsets in enumerate(offset_mapping):
        seq_ids = enc.sequence_ids(i)
        cls = _cls_index(enc["input_ids"][i], tokenizer)
        s, e = _answer_positions(offsets, seq_ids, examples["answers"][sample_map[i]], cls)
        starts.append(s)
        ends.append(e)
    out = dict(enc)
    out["start_positions"] = starts
    out["end_positions"] = ends
    return out


def prepare_eval_features(
    examples: Mapping[str, list],
    tokenizer: Any,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int | None = 64,
    padding: bool | str = False,
    with_positions: bool = False,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: windows for prediction.

    Same windows as :func:`prepare_train_features`; each feature keeps ``example_id`` (the example's
    ``id``), ``cls_index`` and ``offset_mapping`` with ``None`` for every token outside the context, for
    :func:`postprocess_qa_predictions`. ``with_positions`` also adds start/end positions (for an eval loss).
    Drop :data:`QA_NON_MODEL_COLUMNS` before feeding the model.
    """
    enc = _tokenize_windows(examples, tokenizer, max_length, doc_stride, max_query_length, padding)
    sample_map = enc.pop("overflow_to_sample_mapping")
    offset_mapping = enc.pop("offset_mapping")
    example_ids, cls_indexes, masked_offsets, starts, ends = [], [], [], [], []
    for i, offsets in enumerate(offset_mapping):
        seq_ids = enc.sequence_ids(i)
        ex = sample_map[i]
        cls = _cls_index(enc["input_ids"][i], tokenizer)
        example_ids.append(examples["id"][ex])
        cls_indexes.append(cls)
        masked_offsets.append([tuple(o) if seq_ids[k] == 1 else None for k, o in enumerate(offsets)])
        if with_positions:
            s, e = _answer_positions(offsets, seq_ids, examples["answers"][ex], cls)
            starts.append(s)
            ends.append(e)
    out = dict(enc)
    out["example_id"] = example_ids
    out["cls_index"] = cls_indexes
    out["offset_mapping"] = masked_offsets
    if with_positions:
        out["start_positions"] = starts
        out["end_positions"] = ends
    return out


# --------------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------------


@dataclass
class QAPredictions:
    """Output of :func:`postprocess_qa_predictions`."""

    predictions: dict[str, str]  # example id -> answer text ("" = no answer)
    nbest: dict[str, list[dict]]  # example id -> [{"text", "score", "start_logit", "end_logit", "probability", ...}]
    null_score_diff: dict[str, float]  # example id -> null score - best span score (v2.0 threshold tuning)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def postprocess_qa_predictions(
    examples: Dataset | Mapping[str, list],
    features: Dataset | Mapping[str, list],
    start_logits: np.ndarray | Sequence[Sequence[float]],
    end_logits: np.ndarray | Sequence[Sequence[float]],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> QAPredictions:
    """Best answer text per example from the start/end logits of all its windows.

    For every window, the ``n_best_size`` highest start and end logits are paired; a pair is a candidate
    when both tokens are in the context, ``start <= end`` and ``end - start + 1 <= max_answer_length``;
    its score is ``start_logit + end_logit`` and its text the original context between the character
    offsets. The best candidate over all windows wins. With ``version_2_with_negative``, the null score is
    the lowest ``start_logit[CLS] + end_logit[CLS]`` over the windows (as the official BERT code), and the
    prediction is ``""`` when ``null_score - best_span_score > null_score_diff_threshold``.

    ``start_logits``/``end_logits``: one row per feature (in ``features`` order), padded to any length.
    """
    if len(start_logits) != len(features["example_id"]) or len(end_logits) != len(start_logits):
        raise ValueError(
            f"{len(start_logits)} start / {len(end_logits)} end logit rows for "
            f"{len(features['example_id'])} features"
        )
    features_of: dict[str, list[int]] = collections.defaultdict(list)
    for fi, ex_id in enumerate(features["example_id"]):
        features_of[ex_id].append(fi)
    offsets_all = features["offset_mapping"]
    columns = features.column_names if isinstance(features, Dataset) else list(features)
    cls_all = features["cls_index"] if "cls_index" in columns else [0] * len(offsets_all)

    out = QAPredictions(predictions={}, nbest={}, null_score_diff={})
    for ex_id, context in zip(examples["id"], examples["context"]):
        feats = features_of.get(ex_id, [])
        if not feats:
            logger.warning("example %s has no features; predicting an empty answer", ex_id)
        candidates, min_null = [], None
        for fi in feats:
            window = _WindowLogits(start_logits[fi], end_logits[fi], offsets_all[fi], cls_all[fi], fi)
            candidates += window.candidates(context, n_best_size, max_answer_length)
            min_null = window.null_score if min_null is None else min(min_null, window.null_score)
        _choose_answer(out, ex_id, candidates, min_null, n_best_size, version_2_with_negative,
                       null_score_diff_threshold)
    return out


@dataclass
class _WindowLogits:
    start: Sequence[float]
    end: Sequence[float]
    offsets: Sequence
    cls_index: int
    feature_index: int

    def __post_init__(self):
        n = len(self.offsets)
        self.start = np.asarray(self.start, dtype=np.float64)[:n]
        self.end = np.asarray(self.end, dtype=np.float64)[:n]

    @property
    def null_score(self) -> float:
        return float(self.start[self.cls_index] + self.end[self.cls_index])

    def candidates(self, context: str, n_best_size: int, max_answer_length: int) -> list[dict]:
        """Spans pairing the best start and end logits, inside the context and not too long."""
        found = []
        for s in np.argsort(self.start)[::-1][:n_best_size]:
            if self.offsets[s] is None:
                continue
            for e in np.argsort(self.end)[::-1][:n_best_size]:
                if self.offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                start_char, end_char = self.offsets[s][0], self.offsets[e][1]
                found.append({"text": context[start_char:end_char], "score": float(self.start[s] + self.end[e]),
                              "start_logit": float(self.start[s]), "end_logit": float(self.end[e]),
                              "offsets": (int(start_char), int(end_char)), "feature_index": int(self.feature_index)})
        return found


def _choose_answer(out: QAPredictions, ex_id: str, candidates: list[dict], min_null: float | None, n_best_size: int,
                   version_2_with_negative: bool, null_score_diff_threshold: float) -> None:
    """The n-best list (with probabilities), the answer and (v2.0) the null-score difference of one example."""
    candidates = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
    best_span = candidates[0] if candidates else None
    if version_2_with_negative and min_null is not None:
        candidates.append({"text": "", "score": min_null, "start_logit": None, "end_logit": None,
                           "offsets": (0, 0), "feature_index": None})
        candidates = sorted(candidates, key=lambda c: c["score"], reverse=True)[:n_best_size]
    if candidates:
        for candidate, probability in zip(candidates, _softmax(np.array([c["score"] for c in candidates]))):
            candidate["probability"] = float(probability)
    out.nbest[ex_id] = candidates
    if not version_2_with_negative:
        out.predictions[ex_id] = best_span["text"] if best_span is not None else ""
    elif best_span is None:
        out.predictions[ex_id], out.null_score_diff[ex_id] = "", float("inf")
    else:
        diff = (min_null if min_null is not None else float("-inf")) - best_span["score"]
        out.null_score_diff[ex_id] = float(diff)
        out.predictions[ex_id] = "" if diff > null_score_diff_threshold else best_span["text"]


__all__ = [
    "QA_NON_MODEL_COLUMNS", "SQUAD_COLUMNS", "load_squad_json", "squad_records", "read_squad",
    "check_squad_dataset", "load_hub_squad", "split_by_article", "prepare_train_features",
    "prepare_eval_features", "QAPredictions", "postprocess_qa_predictions", "normalize_answer",
    "squad_v1_metrics", "squad_v2_metrics", "squad_metrics",
]
