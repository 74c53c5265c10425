"""Tests for electra_hf.tasks.tagging: CoNLL readers on the real files, IOB1→IOB2, alignment, metrics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, List, Value

from electra_hf.tasks.tagging import (
    CONLL2003_LABELS,
    IGNORE_INDEX,
    TAGGING_TASKS,
    apply_tag_scheme,
    encode_tagging_dataset,
    entity_counts,
    iob1_to_iob2,
    is_valid_iob2,
    label_maps,
    labels_from_datasets,
    predictions_to_tags,
    read_conll,
    tagging_dataset_from_hub,
    tagging_metrics,
    token_accuracy,
    tokenize_and_align_labels,
    word_predictions,
)

from .conftest import write_text_file

DATA = Path(os.environ.get("ELECTRA_HF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "ner").is_dir(), reason=f"shared data not found at {DATA}")


# --------------------------------------------------------------------------------------------------
# A tiny WordPiece tokenizer trained here (no Hub access)
# --------------------------------------------------------------------------------------------------

CORPUS = [
    "the european commission said on thursday it disagreed with german advice to consumers",
    "peter blackburn reported from brussels about the british lamb market",
    "germany 's representative to the european union 's veterinary committee said",
    "the cat sat on the mat and the dog sat on the log",
    "rare words like xylophone and quizzical split into several word pieces",
    "a man in a van ran to the bank in the town of the river",
] * 3


def make_tokenizer(vocab_size: int = 120):
    from electra_hf.data import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(CORPUS, vocab_size=vocab_size, lowercase=True, min_frequency=0, show_progress=False)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


# --------------------------------------------------------------------------------------------------
# Real files: official counts
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conll2003():
    spec = TAGGING_TASKS["conll2003"]
    return {
        split: read_conll(path, spec.tag_column, tag_scheme=spec.tag_scheme)
        for split, path in spec.files(DATA).items()
    }


@needs_data
@pytest.mark.parametrize(
    "split,sentences,tokens",
    [("train", 14041, 203621), ("validation", 3250, 51362), ("test", 3453, 46435)],
)
def test_conll2003_official_counts(conll2003, split, sentences, tokens):
    ds = conll2003[split]
    assert len(ds) == sentences
    assert sum(len(t) for t in ds["tokens"]) == tokens
    assert all(len(a) == len(b) for a, b in zip(ds["tokens"], ds["tags"]))
    assert ds.column_names == ["id", "tokens", "tags"]
    assert not any("-DOCSTART-" in t for t in ds["tokens"][0])


@needs_data
def test_conll2003_train_entities_after_iob2(conll2003):
    ds = conll2003["train"]
    assert ds["tokens"][0] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert ds["tags"][0] == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]
    assert entity_counts(ds["tags"]) == {"PER": 6600, "LOC": 7140, "ORG": 6321, "MISC": 3438}
    assert all(is_valid_iob2(t) for t in ds["tags"])
    # every tag is in the fixed 9-label list (B-PER appears only after conversion)
    assert labels_from_datasets(ds) == sorted(CONLL2003_LABELS, key=lambda t: (t != "O", t[2:], t[0]))
    assert set(labels_from_datasets(*conll2003.values())) == set(CONLL2003_LABELS)


@needs_data
def test_conll2003_raw_iob1_kept_without_conversion():
    spec = TAGGING_TASKS["conll2003"]
    raw = read_conll(spec.files(DATA)["validation"], tag_scheme="iob2")  # "iob2" = keep tags as they are
    tags = {t for s in raw["tags"] for t in s}
    assert "I-PER" in tags and "B-PER" not in tags and "B-MISC" in tags
    auto = read_conll(spec.files(DATA)["validation"], tag_scheme="auto")  # detects IOB1
    assert auto["tags"] == read_conll(spec.files(DATA)["validation"], tag_scheme="iob1")["tags"]
    # chunk column (third) is IOB1 too
    chunks = read_conll(spec.files(DATA)["validation"], tag_column=2, tag_scheme="iob1")
    assert {t for s in chunks["tags"][:50] for t in s} & {"B-NP", "I-NP"}


@needs_data
@pytest.mark.parametrize("split,sentences,tokens,n_labels", [("train", 8936, 211727, 22), ("validation", 2012, 47377, 19)])
def test_conll2000_official_counts(split, sentences, tokens, n_labels):
    spec = TAGGING_TASKS["conll2000"]
    ds = read_conll(spec.files(DATA)[split], spec.tag_column, tag_scheme=spec.tag_scheme)
    assert len(ds) == sentences
    assert sum(len(t) for t in ds["tokens"]) == tokens
    labels = labels_from_datasets(ds)
    assert len(labels) == n_labels
    assert labels[0] == "O" and labels[1:3] == ["B-ADJP", "I-ADJP"]
    if split == "train":
        assert ds["tokens"][0][:3] == ["Confidence", "in", "the"]
        assert ds["tags"][0][:3] == ["B-NP", "B-PP", "B-NP"]


# --------------------------------------------------------------------------------------------------
# Reader on hand-made files
# --------------------------------------------------------------------------------------------------


GOOD = "-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\n\nPeter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n"


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_reader_plain_and_gz(tmp_path, name):
    ds = read_conll(write_text_file(tmp_path / name, GOOD), tag_scheme="iob1")
    assert ds["tokens"] == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert ds["tags"] == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert ds["id"] == ["0", "1"]


def test_reader_tag_column_tabs_crlf_and_no_final_blank(tmp_path):
    text = "a\tDT\tB-NP\r\ncat\tNN\tI-NP\r\n\r\n-DOCSTART-\tX\tO\r\nsat\tVBD\tB-VP"
    ds = read_conll(write_text_file(tmp_path / "c.txt", text), tag_column=1)
    assert ds["tokens"] == [["a", "cat"], ["sat"]]
    assert ds["tags"] == [["DT", "NN"], ["VBD"]]
    assert read_conll(tmp_path / "c.txt", tag_column=None).column_names == ["id", "tokens"]


def test_reader_wrong_column_count_names_file_and_line(tmp_path):
    bad = GOOD.replace("rejects VBZ I-VP O", "rejects VBZ O")
    path = write_text_file(tmp_path / "bad.txt", bad)
    with pytest.raises(ValueError, match=r"bad\.txt, line 4: 3 column") as e:
        read_conll(path)
    assert "have 4" in str(e.value)


def test_reader_missing_tag_column(tmp_path):
    path = write_text_file(tmp_path / "words.txt", "EU\nrejects\n\nPeter\n")
    with pytest.raises(ValueError, match=r"words\.txt, line 1: only one column"):
        read_conll(path)
    with pytest.raises(ValueError, match=r"two\.txt, line 1: no tag column 5"):
        read_conll(write_text_file(tmp_path / "two.txt", "EU B\n"), tag_column=5)
    assert read_conll(path, tag_column=None)["tokens"] == [["EU", "rejects"], ["Peter"]]


def test_reader_empty_file(tmp_path):
    with pytest.raises(ValueError, match="no sentences"):
        read_conll(write_text_file(tmp_path / "e.txt", "-DOCSTART- -X- O O\n\n\n"))


def test_reader_bad_scheme(tmp_path):
    with pytest.raises(ValueError, match="tag_scheme"):
        read_conll(write_text_file(tmp_path / "a.txt", GOOD), tag_scheme="bioes")


def test_hub_path_classlabel_names_and_scheme():
    names = ["O", "I-PER", "B-PER", "I-LOC"]
    feats = Features({
        "id": Value("string"),
        "words": List(Value("string")),
        "ner": List(ClassLabel(names=names)),
    })
    ds = Dataset.from_dict(
        {"id": ["x", "y"], "words": [["Ann", "Bob", "Rome"], ["Hi"]], "ner": [[1, 2, 3], [0]]}, features=feats
    )
    out = tagging_dataset_from_hub(ds, tokens_column="words", tags_column="ner", tag_scheme="iob1")
    assert out.column_names == ["id", "tokens", "tags"]
    assert out["id"] == ["x", "y"]
    assert out["tags"] == [["B-PER", "B-PER", "B-LOC"], ["O"]]
    plain = Dataset.from_dict({"tokens": [["a"]], "tags": [["B-NP"]]})
    assert tagging_dataset_from_hub(plain, tags_column="tags")["tags"] == [["B-NP"]]
    with pytest.raises(ValueError, match="column 'ner_tags' not in"):
        tagging_dataset_from_hub(plain)
    ints = Dataset.from_dict({"tokens": [["a"]], "tags": [[3]]})
    with pytest.raises(ValueError, match="without ClassLabel"):
        tagging_dataset_from_hub(ints, tags_column="tags")


# --------------------------------------------------------------------------------------------------
# Tag schemes and labels
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "iob1,iob2",
    [
        (["I-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),
        (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),  # two adjacent PER entities
        (["I-PER", "I-LOC", "I-LOC"], ["B-PER", "B-LOC", "I-LOC"]),  # type change starts a chunk
        (["O", "B-MISC", "I-MISC"], ["O", "B-MISC", "I-MISC"]),  # invalid-IOB1 B after O stays B
        (["O", "I-ORG", "O", "I-ORG"], ["O", "B-ORG", "O", "B-ORG"]),
        ([], []),
        (["O", "O"], ["O", "O"]),
    ],
)
def test_iob1_to_iob2(iob1, iob2):
    assert iob1_to_iob2(iob1) == iob2
    assert iob1_to_iob2(iob2) == iob2  # idempotent on IOB2
    assert is_valid_iob2(iob2)


def test_apply_tag_scheme_auto():
    iob1 = [["I-PER", "O"], ["B-LOC"]]
    assert apply_tag_scheme(iob1, "auto") == ([["B-PER", "O"], ["B-LOC"]], "iob1")
    assert apply_tag_scheme([["B-PER", "I-PER"]], "auto")[1] == "iob2"
    assert apply_tag_scheme([["NN", "VB"]], "auto") == ([["NN", "VB"]], "none")
    assert apply_tag_scheme(iob1, "iob2")[0] == iob1


def test_labels_sorted_stable_and_maps():
    a = labels_from_datasets([["I-VP", "B-NP"], ["O", "B-VP", "I-NP"]])
    b = labels_from_datasets([["I-NP", "O"], ["B-VP", "B-NP", "I-VP"]])
    assert a == b == ["O", "B-NP", "I-NP", "B-VP", "I-VP"]
    label2id, id2label = label_maps(CONLL2003_LABELS)
    assert label2id["I-MISC"] == 8 and id2label[0] == "O"
    with pytest.raises(ValueError, match="duplicate"):
        label_maps(["O", "O"])


# --------------------------------------------------------------------------------------------------
# Alignment with a fast tokenizer
# --------------------------------------------------------------------------------------------------

WORDS = ["Peter", "Blackburn", "saw", "a", "xylophone", "."]
TAGS = ["B-PER", "I-PER", "O", "O", "B-MISC", "O"]


def test_tiny_tokenizer_splits_words(tokenizer):
    assert tokenizer.is_fast
    assert len(tokenizer.tokenize("Blackburn")) >= 2
    assert len(tokenizer.tokenize("xylophone")) >= 2


def test_alignment_first_subtoken(tokenizer):
    label2id, _ = label_maps(CONLL2003_LABELS)
    out = tokenize_and_align_labels({"tokens": [WORDS], "tags": [TAGS]}, tokenizer, label2id)
    ids, labels, wids = out["input_ids"][0], out["labels"][0], out["word_ids"][0]
    assert len(ids) == len(labels) == len(wids)
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert labels[0] == labels[-1] == IGNORE_INDEX and wids[0] == wids[-1] == -1
    # exactly one label per word, on its first sub-token, equal to the word's tag
    expected = []
    prev = None
    for w in wids:
        expected.append(IGNORE_INDEX if w == -1 or w == prev else label2id[TAGS[w]])
        prev = w
    assert labels == expected
    labelled = [l for l in labels if l != IGNORE_INDEX]
    assert labelled == [label2id[t] for t in TAGS]
    # the multi-piece word "Blackburn" (word 1) has ignored continuation pieces
    pos = [i for i, w in enumerate(wids) if w == 1]
    assert len(pos) >= 2 and labels[pos[0]] == label2id["I-PER"] and all(labels[p] == IGNORE_INDEX for p in pos[1:])
    assert out["num_words"] == [len(WORDS)] and out["truncated"] == [False]


def test_alignment_label_all_tokens(tokenizer):
    label2id, _ = label_maps(CONLL2003_LABELS)
    out = tokenize_and_align_labels({"tokens": [WORDS], "tags": [TAGS]}, tokenizer, label2id, label_all_tokens=True)
    labels, wids = out["labels"][0], out["word_ids"][0]
    pos = [i for i, w in enumerate(wids) if w == 4]  # xylophone, B-MISC
    assert len(pos) >= 2
    assert labels[pos[0]] == label2id["B-MISC"] and all(labels[p] == label2id["I-MISC"] for p in pos[1:])
    assert all((l == IGNORE_INDEX) == (w == -1) for l, w in zip(labels, wids))


def test_alignment_unknown_tag_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="'B-XYZ'.*not in the label list"):
        tokenize_and_align_labels({"tokens": [["a"]], "tags": [["B-XYZ"]]}, tokenizer, {"O": 0})


def test_encode_truncation_warning_and_roundtrip(tokenizer, caplog):
    label2id, id2label = label_maps(CONLL2003_LABELS)
    long_words = WORDS * 6
    long_tags = TAGS * 6
    ds = Dataset.from_dict({"id": ["0", "1"], "tokens": [WORDS, long_words], "tags": [TAGS, long_tags]})
    with caplog.at_level("WARNING", logger="electra_hf.tasks.tagging"):
        enc = encode_tagging_dataset(ds, tokenizer, label2id, max_length=24)
    assert "1 of 2 sentences" in caplog.text
    assert set(enc.column_names) >= {"input_ids", "attention_mask", "labels", "word_ids", "num_words"}
    assert "tokens" not in enc.column_names and "truncated" not in enc.column_names
    assert max(len(x) for x in enc["input_ids"]) == 24

    # perfect predictions at the labelled positions map back to the gold tags; cut-off words -> O
    preds = [[l if l != IGNORE_INDEX else 0 for l in labels] for labels in enc["labels"]]
    words = predictions_to_tags(preds, enc["word_ids"], enc["num_words"], id2label)
    assert words[0] == TAGS
    n_kept = max(enc["word_ids"][1]) + 1
    assert 0 < n_kept < len(long_words)
    assert words[1] == long_tags[:n_kept] + ["O"] * (len(long_words) - n_kept)

    # logits [N, L, C] padded to a common length give the same
    L = 30
    logits = np.full((2, L, len(CONLL2003_LABELS)), -5.0)
    for i, p in enumerate(preds):
        logits[i, np.arange(len(p)), p] = 5.0
    assert predictions_to_tags(logits, enc["word_ids"], enc["num_words"], id2label) == words


def test_word_predictions_uses_first_subtoken_only():
    id2label = ["O", "B-PER", "I-PER"]
    # word 0 has pieces at 1,2; word 1 at 3; specials at 0 and 4; pred at continuation piece ignored
    assert word_predictions([0, 1, 0, 2, 1, 1], [None, 0, 0, 1, None], 3, id2label, fill_tag="O") == [
        "B-PER", "I-PER", "O",
    ]


# --------------------------------------------------------------------------------------------------
# Metrics (hand-computed)
# --------------------------------------------------------------------------------------------------


def test_metrics_hand_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]
    m = tagging_metrics(gold, pred)
    # gold entities: PER(0-1), LOC(3), ORG(s2 0), PER(s2 2) = 4; predicted: PER, ORG, ORG = 3; correct: PER, ORG = 2
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 4)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["num_entities"] == 4
    assert m["PER/precision"] == 1.0 and m["PER/recall"] == 0.5 and m["PER/number"] == 2
    assert m["LOC/recall"] == 0.0 and m["LOC/number"] == 1
    assert m["ORG/precision"] == 0.5 and m["ORG/recall"] == 1.0 and m["ORG/f1"] == pytest.approx(2 / 3)


def test_metrics_conlleval_chunk_rules():
    # conlleval: an I-X after O starts a chunk; a partial match is no match; chunks end at sentence ends
    gold = [["B-PER", "I-PER"], ["B-LOC"]]
    assert tagging_metrics(gold, [["I-PER", "I-PER"], ["I-LOC"]])["f1"] == 1.0
    assert tagging_metrics(gold, [["B-PER", "O"], ["B-LOC"]])["f1"] == pytest.approx(0.5)
    # I-LOC after B-PER starts a new LOC chunk, so PER is (0,0) only: no correct PER
    m = tagging_metrics([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]])
    assert m["PER/f1"] == 0.0 and m["precision"] == 0.0 and m["LOC/precision"] == 0.0
    # a chunk at the end of sentence 1 does not continue into sentence 2
    m = tagging_metrics([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
    assert m["num_entities"] == 2 and m["f1"] == 1.0


def test_metrics_degenerate_and_errors():
    m = tagging_metrics([["O", "O"]], [["O", "O"]])
    assert m["f1"] == 0.0 and m["accuracy"] == 1.0
    assert tagging_metrics([["NN", "VB"]], [["NN", "NN"]], entity_level=False) == {"accuracy": 0.5}
    assert token_accuracy([["O"], ["B-PER", "O"]], [["O"], ["O", "O"]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="sentence 0"):
        tagging_metrics([["O"]], [["O", "O"]])


@needs_data
def test_metrics_gold_against_itself_on_real_file(conll2003):
    tags = conll2003["validation"]["tags"]
    m = tagging_metrics(tags, tags)
    assert m["f1"] == 1.0 and m["num_entities"] == 1842 + 1837 + 1341 + 922
    assert m["PER/number"] == 1842
    # predicting everything O: recall 0, accuracy = share of O tokens
    none = [["O"] * len(t) for t in tags]
    m0 = tagging_metrics(tags, none)
    assert m0["recall"] == 0.0 and 0.8 < m0["accuracy"] < 0.9
