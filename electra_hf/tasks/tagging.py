"""Token classification (NER, chunking): CoNLL-style readers, tag schemes, label alignment, metrics.

Pieces, in the order a script uses them:

* :func:`read_conll` reads a CoNLL column file (plain or ``.gz``) into a ``datasets.Dataset`` with
  ``id``, ``tokens`` and ``tags`` (strings); :func:`tagging_dataset_from_hub` does the same for a Hub
  data set with tokens/tags columns (``ClassLabel`` ids become their names).
* ``tag_scheme`` (``"iob1"``, ``"iob2"``, ``"auto"``, ``"none"``) decides whether IOB1 tags are rewritten to
  IOB2 (:func:`iob1_to_iob2`).
* :data:`TAGGING_TASKS` describes the two known data sets (CoNLL-2003 NER, CoNLL-2000 chunking):
  files, tag column, scheme and label list (fixed for CoNLL-2003, derived from the training file for
  chunking with :func:`labels_from_datasets`).
* :func:`encode_tagging_dataset` tokenizes with a fast tokenizer and puts each word's label on its first
  sub-token (-100 elsewhere, or on every sub-token with ``label_all_tokens``), truncating to
  ``max_length`` and counting truncated sentences.
* :func:`predictions_to_tags` maps sub-token predictions back to one tag per word (words cut off by
  truncation get ``fill_tag``), and :func:`tagging_metrics` scores them as CoNLL's ``conlleval`` does
  (seqeval in its default mode): entity-level precision/recall/F1 overall and per type, plus token
  accuracy.

This module imports only datasets/transformers/seqeval/numpy and the standard library.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from datasets import ClassLabel, Dataset

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
"""Label id ignored by the loss (PyTorch's ``CrossEntropyLoss`` default)."""

TAG_SCHEMES = ("iob1", "iob2", "auto", "none")

CONLL2003_LABELS: tuple[str, ...] = (
    "O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC",
)
"""The fixed CoNLL-2003 NER label list (IOB2). Fixed rather than derived: ``B-PER`` never occurs in the
original IOB1 files and eng.testa has only ``B-MISC``."""

#: Columns :func:`encode_tagging_dataset` adds that are not model inputs (drop them before collating).
TAGGING_NON_MODEL_COLUMNS: tuple[str, ...] = ("word_ids", "num_words")

_DOCSTART = "-DOCSTART-"
_FIELD_SPLIT = re.compile(r"[ \t]+")


# --------------------------------------------------------------------------------------------------
# Known data sets
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggingTaskSpec:
    """How to read one known tagging data set. File names are relative to ``data_dir``."""

    name: str
    data_dir: str  # relative to the shared data root (e.g. ``../shared/data``)
    train_file: str
    validation_file: str
    test_file: str | None
    tag_column: int  # index into the whitespace-separated columns; -1 = last
    tag_scheme: str  # scheme of the files as stored; "iob1" files are converted to IOB2 on reading
    labels: tuple[str, ...] | None  # None: derive from the training file (labels_from_datasets)
    description: str = ""

    def files(self, root: str | os.PathLike) -> dict[str, str]:
        """``{"train": path, "validation": path[, "test": path]}`` under the shared data ``root``."""
        base = os.path.join(os.fspath(root), self.data_dir)
        out = {
            "train": os.path.join(base, self.train_file),
            "validation": os.path.join(base, self.validation_file),
        }
        if self.test_file is not None:
            out["test"] = os.path.join(base, self.test_file)
        return out


TAGGING_TASKS: dict[str, TaggingTaskSpec] = {
    "conll2003": TaggingTaskSpec(
        name="conll2003",
        data_dir="ner/conll2003",
        train_file="eng.train",
        validation_file="eng.testa",
        test_file="eng.testb",
        tag_column=-1,
        tag_scheme="iob1",
        labels=CONLL2003_LABELS,
        description="CoNLL-2003 English NER (word POS chunk NER; IOB1 tags, converted to IOB2)",
    ),
    "conll2000": TaggingTaskSpec(
        name="conll2000",
        data_dir="chunking/conll2000",
        train_file="train.txt.gz",
        # The official ELECTRA code reports chunking on the test set (its dev.txt is test.txt).
        validation_file="test.txt.gz",
        test_file=None,
        tag_column=-1,
        tag_scheme="iob2",
        labels=None,
        description="CoNLL-2000 chunking (word POS chunk; IOB2 tags; test set used as dev, as ELECTRA does)",
    ),
}


# --------------------------------------------------------------------------------------------------
# Tag schemes
# --------------------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``; a tag without prefix -> ``("", tag)``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "", tag


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite one sentence's IOB1 tags as IOB2.

    The standard rule: an ``I-X`` that does not follow ``B-X`` or ``I-X`` starts a chunk, so it becomes
    ``B-X``. Every other tag is kept. Valid IOB2 input comes back unchanged (the rule is idempotent).
    """
    out: list[str] = []
    prev_type: str | None = None  # type of the chunk the previous tag belongs to (None after O)
    for tag in tags:
        prefix, typ = _split_tag(tag)
        if prefix == "I" and prev_type != typ:
            out.append("B-" + typ)
        else:
            out.append(tag)
        prev_type = typ if prefix in ("B", "I") else None
    return out


def is_valid_iob2(tags: Sequence[str]) -> bool:
    """True when every ``I-X`` follows ``B-X`` or ``I-X`` (i.e. :func:`iob1_to_iob2` changes nothing)."""
    return list(tags) == iob1_to_iob2(tags)


def _looks_like_iob(tag_counts: Mapping[str, int]) -> bool:
    return all(_split_tag(t)[0] in ("O", "B", "I") for t in tag_counts)


def apply_tag_scheme(
    sentences_tags: list[list[str]], tag_scheme: str, source: str = "data"
) -> tuple[list[list[str]], str]:
    """Convert a corpus' tags according to ``tag_scheme``; returns (tags, scheme actually applied).

    ``"iob1"``: convert every sentence with :func:`iob1_to_iob2`. ``"iob2"`` and ``"none"``: keep the tags.
    ``"auto"``: if all tags are ``O``/``B-X``/``I-X`` and some ``I-X`` starts a chunk, the data is IOB1 and
    is converted; otherwise kept.
    """
    if tag_scheme not in TAG_SCHEMES:
        raise ValueError(f"tag_scheme must be one of {TAG_SCHEMES}, got {tag_scheme!r}")
    if tag_scheme == "auto":
        counts = Counter(t for tags in sentences_tags for t in tags)
        if _looks_like_iob(counts) and not all(is_valid_iob2(t) for t in sentences_tags):
            logger.info("%s: tags look like IOB1 (an I-X starts a chunk); converting to IOB2", source)
            tag_scheme = "iob1"
        else:
            tag_scheme = "iob2" if _looks_like_iob(counts) else "none"
    if tag_scheme == "iob1":
        return [iob1_to_iob2(t) for t in sentences_tags], "iob1"
    return sentences_tags, tag_scheme


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_conll(
    path: str | os.PathLike,
    tag_column: int | None = -1,
    token_column: int = 0,
    tag_scheme: str = "iob2",
) -> Dataset:
    """Read a CoNLL-style column file (plain or ``.gz``) into a Dataset with ``id``, ``tokens``, ``tags``.

    One token per line, columns separated by spaces or tabs; the token is column ``token_column`` and the
    tag column ``tag_column`` (negative counts from the end; default the last). A blank line ends a
    sentence; lines starting with ``-DOCSTART-`` are skipped (they also end a sentence). ``tag_column=None``
    reads tokens only (files to predict on): the result then has no ``tags`` column.

    Every token line must have as many columns as the file's majority; the first line that does not, or a
    file whose lines lack the requested tag/token column, raises ``ValueError`` naming the file and line.
    ``tag_scheme`` is applied as in :func:`apply_tag_scheme` (``"iob1"`` converts to IOB2).
    """
    path = os.fspath(path)
    if tag_scheme not in TAG_SCHEMES:
        raise ValueError(f"tag_scheme must be one of {TAG_SCHEMES}, got {tag_scheme!r}")
    rows: list[tuple[int, list[str]]] = []  # (line number, fields) of token lines
    boundaries: list[int] = []  # index into rows where each sentence starts
    width_counts: Counter[int] = Counter()
    first_line_of_width: dict[int, int] = {}
    in_sentence = False
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, start=1):
                stripped = line.strip(" \t\r\n")
                if not stripped or stripped.startswith(_DOCSTART):
                    in_sentence = False
                    continue
                fields = _FIELD_SPLIT.split(stripped)
                if not in_sentence:
                    boundaries.append(len(rows))
                    in_sentence = True
                rows.append((lineno, fields))
                width_counts[len(fields)] += 1
                first_line_of_width.setdefault(len(fields), lineno)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from e
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read ({e})") from e
    if not rows:
        raise ValueError(f"{path}: no sentences found (empty file, or only blank/-DOCSTART- lines)")

    majority = max(width_counts.items(), key=lambda kv: (kv[1], -first_line_of_width[kv[0]]))[0]
    if len(width_counts) > 1:
        bad_lineno, bad_fields = next((ln, f) for ln, f in rows if len(f) != majority)
        raise ValueError(
            f"{path}, line {bad_lineno}: {len(bad_fields)} column(s) {bad_fields!r}, but "
            f"{width_counts[majority]} of the file's {len(rows)} token lines have {majority} "
            f"(widths seen: {dict(sorted(width_counts.items()))})"
        )
    for what, col in (("token", token_column), ("tag", tag_column)):
        if col is not None and not -majority <= col < majority:
            first = rows[0][0]
            raise ValueError(
                f"{path}, line {first}: no {what} column {col}; the file's lines have {majority} "
                f"column(s) {rows[0][1]!r}" + (" (missing tag column?)" if what == "tag" else "")
            )
    if tag_column is not None and majority == 1:
        raise ValueError(
            f"{path}, line {rows[0][0]}: only one column {rows[0][1]!r}, so there is no tag column "
            "(pass tag_column=None to read tokens only)"
        )

    ends = boundaries[1:] + [len(rows)]
    tokens = [[rows[i][1][token_column] for i in range(s, e)] for s, e in zip(boundaries, ends)]
    data: dict[str, list] = {"id": [str(i) for i in range(len(tokens))], "tokens": tokens}
    if tag_column is not None:
        tags = [[rows[i][1][tag_column] for i in range(s, e)] for s, e in zip(boundaries, ends)]
        tags, _ = apply_tag_scheme(tags, tag_scheme, source=path)
        data["tags"] = tags
    return Dataset.from_dict(data)


def _names_of(feature: Any) -> list[str] | None:
    """Label names when ``feature`` is a ClassLabel or a sequence (List/Sequence) of ClassLabel."""
    inner = getattr(feature, "feature", feature)
    if isinstance(inner, ClassLabel):
        return list(inner.names)
    return None


def tagging_dataset_from_hub(
    ds: Dataset,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    tag_scheme: str = "iob2",
    id_column: str | None = "id",
) -> Dataset:
    """Turn a Hub-style Dataset with token/tag columns into the ``id``/``tokens``/``tags`` layout.

    ``ClassLabel`` tag ids are mapped to their names (a plain string column is taken as is; integer tags
    without ``ClassLabel`` names raise). ``tag_scheme`` is applied as in :func:`apply_tag_scheme`.
    """
    for col in (tokens_column, tags_column):
        if col not in ds.column_names:
            raise ValueError(f"column {col!r} not in the data set (columns: {ds.column_names})")
    names = _names_of(ds.features[tags_column])
    raw_tags = ds[tags_column]
    if names is not None:
        tags = [[names[t] for t in sent] for sent in raw_tags]
    else:
        if any(sent and not isinstance(sent[0], str) for sent in raw_tags):
            raise ValueError(
                f"column {tags_column!r} holds integers without ClassLabel names; cannot map them to tags"
            )
        tags = [list(sent) for sent in raw_tags]
    tokens = [list(t) for t in ds[tokens_column]]
    for i, (tok, tag) in enumerate(zip(tokens, tags)):
        if len(tok) != len(tag):
            raise ValueError(f"row {i}: {len(tok)} tokens but {len(tag)} tags")
    tags, _ = apply_tag_scheme(tags, tag_scheme, source="hub data set")
    ids = [str(x) for x in ds[id_column]] if id_column and id_column in ds.column_names else [str(i) for i in range(len(ds))]
    return Dataset.from_dict({"id": ids, "tokens": tokens, "tags": tags})


def load_hub_tagging(
    path: str,
    name: str | None = None,
    split: str = "train",
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    tag_scheme: str = "iob2",
    **load_kwargs: Any,
) -> Dataset:
    """``datasets.load_dataset(path, name, split=split)`` then :func:`tagging_dataset_from_hub`."""
    from datasets import load_dataset

    ds = load_dataset(path, name, split=split, **load_kwargs)
    return tagging_dataset_from_hub(ds, tokens_column, tags_column, tag_scheme)


# --------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------


def _label_sort_key(tag: str) -> tuple:
    prefix, typ = _split_tag(tag)
    if prefix == "O":
        return (0, "", 0)
    return (1, typ, "BIES".find(prefix) if prefix else -1)


def labels_from_datasets(*datasets: Dataset | Iterable[Sequence[str]], tags_column: str = "tags") -> list[str]:
    """Sorted label list of the tags that occur: ``O`` first, then by type, ``B-`` before ``I-``.

    Deterministic for a given set of tags (does not depend on the order they occur in). Accepts Datasets
    (their ``tags_column``) or plain iterables of tag sequences.
    """
    seen: set[str] = set()
    for ds in datasets:
        sents = ds[tags_column] if isinstance(ds, Dataset) else ds
        for sent in sents:
            seen.update(sent)
    return sorted(seen, key=_label_sort_key)


def label_maps(labels: Sequence[str]) -> tuple[dict[str, int], dict[int, str]]:
    """``(label2id, id2label)`` for a label list (for the model config)."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"duplicate labels in {list(labels)}")
    return {l: i for i, l in enumerate(labels)}, {i: l for i, l in enumerate(labels)}


# --------------------------------------------------------------------------------------------------
# Tokenization and label alignment
# --------------------------------------------------------------------------------------------------


def _inside_label(tag: str, label2id: Mapping[str, int]) -> int:
    """Label id for a non-first sub-token when labelling all sub-tokens: ``B-X`` continues as ``I-X``."""
    prefix, typ = _split_tag(tag)
    if prefix == "B" and f"I-{typ}" in label2id:
        return label2id[f"I-{typ}"]
    return label2id[tag]


def tokenize_and_align_labels(
    examples: Mapping[str, list],
    tokenizer: Any,
    label2id: Mapping[str, int] | None,
    max_length: int | None = 512,
    label_all_tokens: bool = False,
    tokens_column: str = "tokens",
    tags_column: str = "tags",
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: tokenize pre-split words and align word tags to sub-tokens.

    Each word's label goes on its first sub-token; other sub-tokens and special tokens get -100 (with
    ``label_all_tokens`` every sub-token of a word is labelled, a ``B-X`` word continuing as ``I-X``).
    Sequences are truncated to ``max_length``; the output carries ``word_ids`` (-1 for special tokens) and
    ``num_words`` for :func:`predictions_to_tags`, and ``truncated`` (bool) for the warning count.
    ``label2id=None`` (or no ``tags_column`` in ``examples``) produces no ``labels``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("label alignment needs a fast tokenizer (word_ids); got a slow one")
    words_batch = examples[tokens_column]
    enc = tokenizer(
        words_batch,
        is_split_into_words=True,
        truncation=max_length is not None,
        max_length=max_length,
    )
    with_labels = label2id is not None and tags_column in examples
    all_labels, all_word_ids, truncated = [], [], []
    for i, words in enumerate(words_batch):
        word_ids = enc.word_ids(i)
        wid = [-1 if w is None else w for w in word_ids]
        all_word_ids.append(wid)
        last = max(wid) if wid else -1
        # A full-length sequence missing trailing words was cut; words that yield no sub-token
        # (e.g. a lone zero-width character) are not truncation.
        truncated.append(
            max_length is not None and len(wid) >= max_length and last < len(words) - 1
        )
        if with_labels:
            tags = examples[tags_column][i]
            labels, prev = [], None
            for w in word_ids:
                if w is None:
                    labels.append(IGNORE_INDEX)
                else:
                    tag = tags[w]
                    if tag not in label2id:
                        raise ValueError(
                            f"tag {tag!r} (sentence {examples['id'][i] if 'id' in examples else i}) is not in "
                            f"the label list {list(label2id)}; derive labels from all files or fix the data"
                        )
                    if w != prev:
                        labels.append(label2id[tag])
                    elif label_all_tokens:
                        labels.append(_inside_label(tag, label2id))
                    else:
                        labels.append(IGNORE_INDEX)
                prev = w
            all_labels.append(labels)
    out = dict(enc)
    out["word_ids"] = all_word_ids
    out["num_words"] = [len(w) for w in words_batch]
    out["truncated"] = truncated
    if with_labels:
        out["labels"] = all_labels
    return out


def encode_tagging_dataset(
    ds: Dataset,
    tokenizer: Any,
    label2id: Mapping[str, int] | None,
    max_length: int | None = 512,
    label_all_tokens: bool = False,
    keep_columns: Sequence[str] = (),
    desc: str | None = None,
    **map_kwargs: Any,
) -> Dataset:
    """Tokenize a ``tokens``/``tags`` Dataset and align labels (see :func:`tokenize_and_align_labels`).

    Returns model inputs + ``labels`` + the non-model columns :data:`TAGGING_NON_MODEL_COLUMNS`
    (``word_ids``, ``num_words``) used to map predictions back to words. Logs a warning with the number
    of sentences truncated to ``max_length`` (their cut-off words are predicted as ``O`` at evaluation).
    """
    remove = [c for c in ds.column_names if c not in keep_columns]
    enc = ds.map(
        tokenize_and_align_labels,
        batched=True,
        fn_kwargs=dict(
            tokenizer=tokenizer, label2id=label2id, max_length=max_length, label_all_tokens=label_all_tokens
        ),
        remove_columns=remove,
        desc=desc,
        **map_kwargs,
    )
    n_trunc = int(sum(enc["truncated"]))
    if n_trunc:
        logger.warning(
            "%d of %d sentences are longer than max_length=%s sub-tokens and were truncated; their "
            "cut-off words get no label in training and are predicted as O at evaluation",
            n_trunc, len(enc), max_length,
        )
    return enc.remove_columns("truncated")


# --------------------------------------------------------------------------------------------------
# Predictions back to words
# --------------------------------------------------------------------------------------------------


def word_predictions(
    pred_ids: Sequence[int] | np.ndarray,
    word_ids: Sequence[int | None],
    num_words: int,
    id2label: Mapping[int, str] | Sequence[str],
    fill_tag: str = "O",
) -> list[str]:
    """One sentence: the predicted tag of each word = the prediction at its first sub-token.

    ``pred_ids`` may be longer than ``word_ids`` (padding); words without a sub-token (truncated, or
    tokenized to nothing) get ``fill_tag``.
    """
    out = [fill_tag] * num_words
    seen = set()
    for pos, w in enumerate(word_ids):
        if w is None or w < 0 or w in seen:
            continue
        seen.add(w)
        out[w] = id2label[int(pred_ids[pos])]
    return out


def predictions_to_tags(
    predictions: np.ndarray | Sequence,
    word_ids: Sequence[Sequence[int | None]],
    num_words: Sequence[int],
    id2label: Mapping[int, str] | Sequence[str],
    fill_tag: str = "O",
) -> list[list[str]]:
    """Batch version of :func:`word_predictions`.

    ``predictions``: label ids ``[N, L]`` or logits ``[N, L, C]`` (argmax taken), as an array or a list of
    per-sentence arrays of any padded length ≥ the sentence's sub-token count.
    """
    if len(predictions) != len(word_ids) or len(word_ids) != len(num_words):
        raise ValueError(
            f"length mismatch: {len(predictions)} predictions, {len(word_ids)} word_ids, {len(num_words)} num_words"
        )
    out = []
    for pred, wid, n in zip(predictions, word_ids, num_words):
        pred = np.asarray(pred)
        if pred.ndim == 2:
            pred = pred.argmax(-1)
        out.append(word_predictions(pred, wid, n, id2label, fill_tag))
    return out


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------


def token_accuracy(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> float:
    """Fraction of tokens whose predicted tag equals the gold tag."""
    total = correct = 0
    for t, p in zip(true_tags, pred_tags):
        total += len(t)
        correct += sum(a == b for a, b in zip(t, p))
    return correct / total if total else 0.0


def tagging_metrics(
    true_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    entity_level: bool = True,
) -> dict[str, float]:
    """CoNLL evaluation: entity-level precision/recall/F1 (seqeval, default = ``conlleval`` mode) + accuracy.

    Returns a flat dict: ``precision``, ``recall``, ``f1`` (micro over all entities), ``accuracy`` (tokens),
    ``num_entities`` (gold), and per type ``{TYPE}/precision``, ``{TYPE}/recall``, ``{TYPE}/f1``,
    ``{TYPE}/number`` (gold entities of that type). Values are fractions in [0, 1]. With
    ``entity_level=False`` (tags that are not IOB, e.g. POS) only ``accuracy`` is returned.
    """
    if len(true_tags) != len(pred_tags):
        raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted")
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted")
    result: dict[str, float] = {"accuracy": token_accuracy(true_tags, pred_tags)}
    if not entity_level:
        return result
    from seqeval.metrics.sequence_labeling import get_entities, precision_recall_fscore_support

    y_true = [list(t) for t in true_tags]
    y_pred = [list(p) for p in pred_tags]
    # seqeval's default mode (no ``mode="strict"``) reproduces conlleval: chunks as conlleval's
    # startOfChunk/endOfChunk rules find them, an I-X after O or after another type starts a chunk, and
    # sentences are joined with an O so chunks never cross a sentence boundary.
    p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    result.update(precision=float(p), recall=float(r), f1=float(f))
    types = sorted({t for t, _, _ in get_entities(y_true)} | {t for t, _, _ in get_entities(y_pred)})
    result["num_entities"] = float(sum(1 for _ in get_entities(y_true)))
    if types:
        ps, rs, fs, ns = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        for typ, p, r, f, n in zip(types, ps, rs, fs, ns):
            result[f"{typ}/precision"] = float(p)
            result[f"{typ}/recall"] = float(r)
            result[f"{typ}/f1"] = float(f)
            result[f"{typ}/number"] = float(n)
    return result


def entity_counts(tags: Iterable[Sequence[str]]) -> dict[str, int]:
    """Number of entities (chunks) per type, as :func:`tagging_metrics` counts them."""
    from seqeval.metrics.sequence_labeling import get_entities

    return dict(Counter(typ for typ, _, _ in get_entities([list(t) for t in tags])))


__all__ = [
    "IGNORE_INDEX", "TAG_SCHEMES", "CONLL2003_LABELS", "TAGGING_NON_MODEL_COLUMNS", "TaggingTaskSpec",
    "TAGGING_TASKS", "iob1_to_iob2", "is_valid_iob2", "apply_tag_scheme", "read_conll",
    "tagging_dataset_from_hub", "load_hub_tagging", "labels_from_datasets", "label_maps",
    "tokenize_and_align_labels", "encode_tagging_dataset", "word_predictions", "predictions_to_tags",
    "token_accuracy", "tagging_metrics", "entity_counts",
]
