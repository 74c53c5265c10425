"""Tests for electra_hf.tasks.qa: SQuAD reader on the real dev file, windows, post-processing, official metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset

from electra_hf.tasks.qa import (
    QA_NON_MODEL_COLUMNS,
    SQUAD_COLUMNS,
    check_squad_dataset,
    normalize_answer,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    read_squad,
    split_by_article,
    squad_metrics,
    squad_v1_metrics,
    squad_v2_metrics,
)

from .conftest import write_text_file

DATA = Path(os.environ.get("ELECTRA_HF_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SQUAD_DEV = DATA / "qa" / "squad-v1.1" / "dev-v1.1.json.gz"
needs_data = pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"SQuAD dev not found at {SQUAD_DEV}")


# --------------------------------------------------------------------------------------------------
# A tiny WordPiece tokenizer trained here (no Hub access)
# --------------------------------------------------------------------------------------------------

CORPUS = [
    "the cat sat on the mat and the dog sat on the log",
    "who wrote the letter to the king of the north",
    "what colour is the sky over the river in the town",
    "the red fox jumped over the lazy brown dog near the barn",
    "a man in a van ran to the bank in the town of the river",
    "when did the war end and where did the army go",
] * 3 + ["quiz jazz kick blackburn cab"]  # every letter of the answer, as rare pieces


def make_tokenizer(vocab_size: int = 120):
    from electra_hf.data import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(CORPUS, vocab_size=vocab_size, lowercase=True, min_frequency=0, show_progress=False)


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


# A long context: the answer ("Blackburn Quizzical") sits near the end, past the first window.
FILLER = "The cat sat on the mat and the dog sat on the log. " * 4
CONTEXT = FILLER + "The letter to the king was written by Blackburn Quizzical in the town."
ANSWER = "Blackburn Quizzical"
ANSWER_START = CONTEXT.index(ANSWER)
QUESTION = "Who wrote the letter to the king?"


def one_example(answers=None, qid="q1"):
    if answers is None:
        answers = {"text": [ANSWER], "answer_start": [ANSWER_START]}
    return {"id": [qid], "title": ["T"], "context": [CONTEXT], "question": [QUESTION], "answers": [answers]}


WINDOW = dict(max_length=40, doc_stride=10, max_query_length=16)


# --------------------------------------------------------------------------------------------------
# Real dev file: official counts
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squad_dev():
    return read_squad(SQUAD_DEV)


@needs_data
def test_squad_dev_counts_and_split(squad_dev):
    ds = squad_dev
    assert ds.column_names == list(SQUAD_COLUMNS)
    assert len(ds) == 10570
    assert len(set(ds["id"])) == 10570
    titles = list(dict.fromkeys(ds["title"]))
    assert len(titles) == 48 and titles[0] == "Super_Bowl_50"
    assert len(set(ds["context"])) == 2067
    assert sum(len(a["text"]) for a in ds["answers"]) == 34726
    first, rest = split_by_article(ds, 40)
    assert (len(first), len(rest)) == (8981, 1589)
    assert list(dict.fromkeys(rest["title"]))[0] == "Prime_number" and rest["title"][-1] == "Force"
    assert not set(first["context"]) & set(rest["context"])  # no context leaks
    ex = ds[0]
    a = ex["answers"]
    assert all(ex["context"][s:s + len(t)] == t for s, t in zip(a["answer_start"], a["text"]))
    # the gold answers score 100 against themselves
    preds = {i: a["text"][0] for i, a in zip(rest["id"], rest["answers"])}
    m = squad_v1_metrics(preds, rest)
    assert m["exact_match"] == 100.0 and m["f1"] == 100.0 and m["total"] == 1589


@needs_data
def test_squad_dev_windows_cover_every_answer(squad_dev, tokenizer):
    # On 200 real questions (long contexts, many windows with the tiny max_length), every answer that
    # lands in some window maps back through the offsets to exactly the answer text.
    ds = squad_dev.select(range(200))
    feats = ds.map(prepare_train_features, batched=True, remove_columns=ds.column_names,
                   fn_kwargs=dict(tokenizer=tokenizer, max_length=128, doc_stride=32, max_query_length=32))
    found = exact = 0
    ex_by_id = {i: k for k, i in enumerate(ds["id"])}
    ev = ds.map(prepare_eval_features, batched=True, remove_columns=ds.column_names,
                fn_kwargs=dict(tokenizer=tokenizer, max_length=128, doc_stride=32, max_query_length=32,
                               with_positions=True))
    assert len(ev) == len(feats) > len(ds)
    assert ev["start_positions"] == feats["start_positions"]
    for f in range(len(ev)):
        s, e = ev["start_positions"][f], ev["end_positions"][f]
        if s == ev["cls_index"][f]:
            continue
        found += 1
        ex = ds[ex_by_id[ev["example_id"][f]]]
        offs = ev["offset_mapping"][f]
        a_text, a_start = ex["answers"]["text"][0], ex["answers"]["answer_start"][0]
        a_end = a_start + len(a_text)
        # the span is the smallest run of tokens covering the answer (a token may be wider than the
        # answer, e.g. "18" for the answer "8" when the tiny vocabulary turns "18" into one [UNK])
        assert offs[s][0] <= a_start < offs[s][1] and offs[e][0] < a_end <= offs[e][1]
        exact += ex["context"][offs[s][0]:offs[e][1]] == a_text
    assert found >= 200  # every question has its answer in at least one window
    assert exact >= 0.9 * found


# --------------------------------------------------------------------------------------------------
# Reader: formats and malformed files
# --------------------------------------------------------------------------------------------------


def squad_obj(version="1.1", impossible=False):
    qa = {"id": "a1", "question": "Who?", "answers": [{"text": "Bob", "answer_start": 0}]}
    qas = [qa]
    if version == "2.0":
        qas.append({"id": "a2", "question": "Why?", "answers": [], "is_impossible": True,
                    "plausible_answers": [{"text": "Bob", "answer_start": 0}]})
    return {"version": version, "data": [{"title": "T1", "paragraphs": [{"context": "Bob ran.", "qas": qas}]}]}


def write_json(path: Path, obj_or_text) -> Path:
    return write_text_file(path, obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text, indent=1))


@pytest.mark.parametrize("name", ["s.json", "s.json.gz"])
def test_reader_v1_and_v2(tmp_path, name):
    ds = read_squad(write_json(tmp_path / name, squad_obj("2.0")))
    assert ds["id"] == ["a1", "a2"]
    assert ds["answers"] == [{"text": ["Bob"], "answer_start": [0]}, {"text": [], "answer_start": []}]
    assert ds["title"] == ["T1", "T1"]
    check_squad_dataset(ds)
    with pytest.raises(ValueError, match="missing column"):
        check_squad_dataset(ds.remove_columns("answers"))


def test_reader_invalid_json_names_file_and_line(tmp_path):
    text = json.dumps(squad_obj(), indent=1).replace('"Who?",', '"Who?"', 1)
    with pytest.raises(ValueError, match=r"bad\.json: invalid JSON at line \d+"):
        read_squad(write_json(tmp_path / "bad.json", text))


def test_reader_missing_field_names_article_and_question(tmp_path):
    obj = squad_obj()
    del obj["data"][0]["paragraphs"][0]["qas"][0]["question"]
    with pytest.raises(ValueError, match=r"m\.json: article 0 \('T1'\), paragraph 0, question 0 \(id 'a1'\): "
                                         r"missing field 'question'"):
        read_squad(write_json(tmp_path / "m.json", obj))


def test_reader_bad_answer_and_duplicates(tmp_path):
    obj = squad_obj()
    obj["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 50
    with pytest.raises(ValueError, match=r"answer 0: answer_start 50 .* outside the context"):
        read_squad(write_json(tmp_path / "o.json", obj))
    obj = squad_obj()
    obj["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = "0"
    with pytest.raises(ValueError, match=r"'answer_start' should be int, got str"):
        read_squad(write_json(tmp_path / "t.json", obj))
    obj = squad_obj()
    obj["data"][0]["paragraphs"][0]["qas"].append(dict(obj["data"][0]["paragraphs"][0]["qas"][0]))
    with pytest.raises(ValueError, match="question 1 \\(id 'a1'\\): duplicate question id"):
        read_squad(write_json(tmp_path / "d.json", obj))
    with pytest.raises(ValueError, match="not SQuAD format"):
        read_squad(write_json(tmp_path / "x.json", {"version": "1.1"}))
    obj = squad_obj()
    obj["data"][0]["paragraphs"][0]["qas"][0]["answers"] = []
    with pytest.raises(ValueError, match="no answers"):
        read_squad(write_json(tmp_path / "n.json", obj))


def test_split_by_article_errors():
    ds = Dataset.from_dict({"title": ["a", "a", "b"], "id": ["1", "2", "3"]})
    a, b = split_by_article(ds, 1)
    assert a["id"] == ["1", "2"] and b["id"] == ["3"]
    with pytest.raises(ValueError, match="2 articles"):
        split_by_article(ds, 2)


# --------------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------------


def test_answer_in_second_window(tokenizer):
    ex = one_example()
    feats = prepare_train_features(ex, tokenizer, **WINDOW)
    n = len(feats["input_ids"])
    assert n >= 3
    assert all(len(ids) <= WINDOW["max_length"] for ids in feats["input_ids"])
    # question first in every window
    q_ids = tokenizer(QUESTION, add_special_tokens=False)["input_ids"]
    for ids in feats["input_ids"]:
        assert ids[0] == tokenizer.cls_token_id and ids[1:1 + len(q_ids)] == q_ids
    positions = list(zip(feats["start_positions"], feats["end_positions"]))
    inside = [i for i, (s, e) in enumerate(positions) if s != 0]
    assert inside and inside[0] >= 1  # not in the first window
    assert positions[0] == (0, 0)  # first window: CLS
    pieces = tokenizer.tokenize(ANSWER)
    assert len(pieces) > 2 and tokenizer.unk_token not in pieces  # the answer splits into pieces
    for i in inside:
        s, e = positions[i]
        decoded = tokenizer.decode(feats["input_ids"][i][s:e + 1])
        assert decoded == ANSWER.lower()
    # consecutive windows overlap by doc_stride context tokens
    ev = prepare_eval_features(ex, tokenizer, **WINDOW)
    ctx0 = [o for o in ev["offset_mapping"][0] if o is not None]
    ctx1 = [o for o in ev["offset_mapping"][1] if o is not None]
    assert ctx0[-WINDOW["doc_stride"]:] == ctx1[:WINDOW["doc_stride"]]


def test_eval_features_offsets_and_ids(tokenizer):
    ex = one_example()
    ev = prepare_eval_features(ex, tokenizer, with_positions=True, **WINDOW)
    tr = prepare_train_features(ex, tokenizer, **WINDOW)
    assert ev["start_positions"] == tr["start_positions"] and ev["input_ids"] == tr["input_ids"]
    assert set(QA_NON_MODEL_COLUMNS) <= set(ev)
    assert ev["example_id"] == ["q1"] * len(ev["input_ids"])
    assert ev["cls_index"] == [0] * len(ev["input_ids"])
    for ids, offs in zip(ev["input_ids"], ev["offset_mapping"]):
        seq = [None if o is None else 1 for o in offs]
        assert seq[0] is None and offs[-1] is None  # CLS and final SEP are outside the context
        q_len = len(tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
        assert all(o is None for o in offs[: q_len + 2])  # question + SEP
        # every context offset maps to a non-empty piece of the context
        assert all(CONTEXT[o[0]:o[1]].strip() for o in offs if o is not None)
    # the answer span, read back through the offsets, is exactly the answer
    i = next(k for k, s in enumerate(ev["start_positions"]) if s != 0)
    s, e = ev["start_positions"][i], ev["end_positions"][i]
    offs = ev["offset_mapping"][i]
    assert CONTEXT[offs[s][0]:offs[e][1]] == ANSWER


def test_unanswerable_and_dataset_map(tokenizer):
    ex = one_example(answers={"text": [], "answer_start": []})
    feats = prepare_train_features(ex, tokenizer, **WINDOW)
    assert set(feats["start_positions"]) == {0} and set(feats["end_positions"]) == {0}
    # through Dataset.map (None offsets survive Arrow)
    ds = Dataset.from_dict(one_example())
    ev = ds.map(prepare_eval_features, batched=True, remove_columns=ds.column_names,
                fn_kwargs=dict(tokenizer=tokenizer, **WINDOW))
    assert ev["offset_mapping"][0][0] is None
    assert ev.remove_columns(list(QA_NON_MODEL_COLUMNS)).column_names == [
        c for c in ("input_ids", "token_type_ids", "attention_mask") if c in ev.column_names
    ]


def test_long_question_is_cut_and_bad_settings(tokenizer):
    ex = one_example()
    ex["question"] = ["who wrote the letter " * 10]
    feats = prepare_train_features(ex, tokenizer, **WINDOW)
    sep = feats["input_ids"][0].index(tokenizer.sep_token_id)
    assert sep == 1 + WINDOW["max_query_length"]
    with pytest.raises(ValueError, match="doc_stride"):
        prepare_train_features(ex, tokenizer, max_length=40, doc_stride=40)
    with pytest.raises(ValueError, match="max_query_length"):
        prepare_train_features(ex, tokenizer, max_length=40, doc_stride=20, max_query_length=30)


# --------------------------------------------------------------------------------------------------
# Post-processing
# --------------------------------------------------------------------------------------------------


def hand_features():
    # context "Bob ran to the big red barn." ; two windows of 8 tokens, CLS at 0, question tokens 1-2, SEP 3
    ctx = "Bob ran to the big red barn."
    words = [(0, 3), (4, 7), (8, 10), (11, 14), (15, 18), (19, 22), (23, 27), (27, 28)]
    f0 = [None, None, None, None] + words[0:3] + [None]  # Bob ran to
    f1 = [None, None, None, None] + words[2:5] + [None]  # to the big
    f2 = [None, None, None, None] + words[4:8]  # big red barn .
    examples = {"id": ["x"], "context": [ctx]}
    features = {"example_id": ["x", "x", "x"], "offset_mapping": [f0, f1, f2], "cls_index": [0, 0, 0]}
    return examples, features


def test_postprocess_picks_best_span_across_windows():
    examples, features = hand_features()
    start = np.full((3, 8), -10.0)
    end = np.full((3, 8), -10.0)
    start[2, 5], end[2, 6] = 3.0, 4.0  # "red barn" in window 2: score 7
    start[0, 4], end[0, 5] = 2.0, 2.0  # "Bob ran" in window 0: score 4
    start[1, 1], end[1, 2] = 50.0, 50.0  # question tokens: never an answer
    start[1, 6], end[1, 5] = 9.0, 9.0  # end before start: skipped (score 18 otherwise)
    out = postprocess_qa_predictions(examples, features, start, end)
    assert out.predictions == {"x": "red barn"}
    nb = out.nbest["x"]
    assert nb[0]["text"] == "red barn" and nb[0]["score"] == pytest.approx(7.0)
    assert [c["score"] for c in nb] == sorted((c["score"] for c in nb), reverse=True)
    assert sum(c["probability"] for c in nb) == pytest.approx(1.0)
    assert "Bob ran" in [c["text"] for c in nb]
    # max_answer_length: a 3-token span is allowed at 3 and excluded at 2
    start2 = np.full((3, 8), -10.0)
    end2 = np.full((3, 8), -10.0)
    start2[2, 4], end2[2, 6] = 5.0, 5.0  # "big red barn" (3 tokens)
    start2[0, 5], end2[0, 6] = 1.0, 1.0  # "ran to" (2 tokens)
    pp = postprocess_qa_predictions
    assert pp(examples, features, start2, end2).predictions["x"] == "big red barn"
    assert pp(examples, features, start2, end2, max_answer_length=3).predictions["x"] == "big red barn"
    assert pp(examples, features, start2, end2, max_answer_length=2).predictions["x"] == "ran to"
    # logits padded longer than the offsets are fine
    padded = np.pad(start, ((0, 0), (0, 4)), constant_values=100.0)
    assert postprocess_qa_predictions(examples, features, padded, np.pad(end, ((0, 0), (0, 4)))).predictions["x"] == "red barn"


def test_postprocess_v2_null_threshold():
    examples, features = hand_features()
    start = np.full((3, 8), -10.0)
    end = np.full((3, 8), -10.0)
    start[2, 5], end[2, 6] = 3.0, 4.0  # best span score 7
    start[:, 0] = [5.0, 2.0, 6.0]
    end[:, 0] = [5.0, 2.0, 6.0]  # null scores 10, 4, 12 -> min 4
    out = postprocess_qa_predictions(examples, features, start, end, version_2_with_negative=True)
    assert out.predictions["x"] == "red barn" and out.null_score_diff["x"] == pytest.approx(4 - 7)
    start[1, 0] = end[1, 0] = 4.0  # min null score 8 > 7
    out = postprocess_qa_predictions(examples, features, start, end, version_2_with_negative=True)
    assert out.predictions["x"] == "" and out.null_score_diff["x"] == pytest.approx(1.0)
    assert "" in [c["text"] for c in out.nbest["x"]]
    out = postprocess_qa_predictions(examples, features, start, end, version_2_with_negative=True,
                                     null_score_diff_threshold=1.5)
    assert out.predictions["x"] == "red barn"
    # v1: the null score is ignored
    assert postprocess_qa_predictions(examples, features, start, end).predictions["x"] == "red barn"


def test_postprocess_end_to_end_with_tokenizer(tokenizer):
    ds = Dataset.from_dict(one_example())
    ev = ds.map(prepare_eval_features, batched=True, remove_columns=ds.column_names,
                fn_kwargs=dict(tokenizer=tokenizer, with_positions=True, **WINDOW))
    L = max(len(x) for x in ev["input_ids"])
    start = np.zeros((len(ev), L))
    end = np.zeros((len(ev), L))
    i = next(k for k, s in enumerate(ev["start_positions"]) if s != 0)
    start[i, ev["start_positions"][i]] = 10.0
    end[i, ev["end_positions"][i]] = 10.0
    out = postprocess_qa_predictions(ds, ev, start, end)
    assert out.predictions == {"q1": ANSWER}  # original casing, from the context
    assert squad_v1_metrics(out.predictions, ds) == {"exact_match": 100.0, "f1": 100.0, "total": 1.0, "missing": 0.0}
    with pytest.raises(ValueError, match="logit rows"):
        postprocess_qa_predictions(ds, ev, start[:1], end[:1])


# --------------------------------------------------------------------------------------------------
# Official metrics (hand cases)
# --------------------------------------------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a day") == "apple day"
    assert normalize_answer("Theatre") == "theatre"  # "the" only as a word
    assert normalize_answer("  ") == ""


def test_squad_v1_hand_cases():
    refs = {
        "1": ["Denver Broncos", "The Denver Broncos"],
        "2": ["Saint Bernadette Soubirous"],
        "3": ["a red car", "blue truck"],
        "4": ["x"],
    }
    preds = {
        "1": "the denver broncos.",  # EM 1 after normalisation
        "2": "Bernadette",  # P=1, R=1/3 -> F1 0.5
        "3": "red truck",  # vs "red car": P 1/2 R 1/2 -> .5; vs "blue truck": .5 -> max .5
        # "4" missing -> 0
    }
    m = squad_v1_metrics(preds, refs)
    assert m["exact_match"] == pytest.approx(100 * 1 / 4)
    assert m["f1"] == pytest.approx(100 * (1 + 0.5 + 0.5 + 0) / 4)
    assert m["total"] == 4 and m["missing"] == 1
    # max over references picks the better one
    assert squad_v1_metrics({"1": "blue truck"}, {"1": ["a red car", "blue truck"]})["exact_match"] == 100.0
    # v1.1 F1 of two empty strings is 0 (the official v1.1 script), v2.0 gives 1
    assert squad_v1_metrics({"1": "the"}, {"1": ["a"]})["f1"] == 0.0
    assert squad_v1_metrics({"1": "the"}, {"1": ["a"]})["exact_match"] == 100.0
    assert squad_metrics({"1": "x"}, {"1": {"text": ["x"], "answer_start": [0]}})["f1"] == 100.0


def test_squad_v2_hand_cases():
    refs = {
        "h1": ["Denver Broncos"],
        "h2": ["red car"],
        "n1": [],  # no answer
        "n2": [],
    }
    preds = {"h1": "Denver", "h2": "", "n1": "", "n2": "something"}
    m = squad_v2_metrics(preds, refs)
    # h1: EM 0, F1 2*1*.5/1.5 = 2/3 ; h2: 0, 0 ; n1: 1, 1 ; n2: 0, 0
    assert m["exact"] == pytest.approx(100 * 1 / 4)
    assert m["f1"] == pytest.approx(100 * (2 / 3 + 1) / 4)
    assert m["HasAns_total"] == 2 and m["NoAns_total"] == 2 and m["total"] == 4
    assert m["HasAns_exact"] == 0.0 and m["HasAns_f1"] == pytest.approx(100 * (2 / 3) / 2)
    assert m["NoAns_exact"] == 50.0 and m["NoAns_f1"] == 50.0
    # references that normalise to empty count as no-answer; na_probs over the threshold -> ""
    assert squad_v2_metrics({"q": ""}, {"q": ["the"]})["NoAns_exact"] == 100.0
    assert squad_v2_metrics({"q": "junk"}, {"q": []}, na_probs={"q": 0.9}, na_prob_thresh=0.5)["exact"] == 100.0
    ds = Dataset.from_dict({"id": ["a"], "answers": [{"text": [], "answer_start": []}]})
    assert squad_metrics({"a": ""}, ds, version_2_with_negative=True)["exact"] == 100.0
