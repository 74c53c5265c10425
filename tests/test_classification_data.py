"""Data of your own (electra_hf.tasks.classification): formats, column detection as
run_glue_no_trainer.py does it, labels and regression, and the messages of bad files."""

from __future__ import annotations

import json

import datasets
import pytest

from electra_hf.tasks.classification import (
    ClassificationDataError,
    load_classification_data,
    write_classification_predictions,
)

from .conftest import write_table

PAIRS = [("the cat sat.", "a dog sat.", 1), ("the river.", "a tree.", 0), ("old man.", "the house.", 0)]


def _load(train, dev=None, **options):
    return load_classification_data(train_file=str(train), validation_file=str(dev or train), **options)


def test_every_format_gives_the_glue_layout(tmp_path):
    rows = [{"id": i, "sentence1": a, "sentence2": b, "label": y} for i, (a, b, y) in enumerate(PAIRS)]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    (tmp_path / "pairs.json").write_text(json.dumps(rows))
    write_table(tmp_path / "pairs.tsv", list(rows[0]), [list(row.values()) for row in rows], delimiter="\t")
    write_table(tmp_path / "pairs.csv", list(rows[0]), [list(row.values()) for row in rows])
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pairs.parquet"))
    for suffix in ("jsonl", "json", "tsv", "csv", "parquet"):
        task, splits = _load(tmp_path / f"pairs.{suffix}")
        # the int id column is no text: the pair is sentence1/sentence2 (run_glue_no_trainer would take id too)
        assert task.text_columns == ("sentence1", "sentence2") and task.label_list == (0, 1), suffix
        assert splits["dev"].column_names == ["sentence1", "sentence2", "label", "idx"]
        assert splits["train"]["label"] == [1, 0, 0] and splits["train"]["sentence2"][0] == "a dog sat."


def test_column_detection_and_naming(tmp_path):
    three = write_table(tmp_path / "three.csv", ["title", "body", "note", "label"],
                        [("a", "b", "c", "x"), ("d", "e", "f", "y")])
    assert _load(three)[0].text_columns == ("title", "body")  # the first two text columns
    assert _load(three, text_column_names=["note"])[0].text_columns == ("note",)
    single = write_table(tmp_path / "single.csv", ["label", "review"], [("x", "good"), ("y", "bad")])
    assert _load(single)[0].text_columns == ("review",)
    with pytest.raises(ClassificationDataError, match=r"three\.csv: --text_column_names nope: no column\(s\) \['nope'\]"):
        _load(three, text_column_names=["nope"])
    numbers_only = write_table(tmp_path / "numbers.csv", ["x", "label"], [(1, "a"), (2, "b")])
    with pytest.raises(ClassificationDataError, match=r"numbers\.csv: no text column besides 'label'"):
        _load(numbers_only)


def test_labels_classes_regression_and_classlabel(tmp_path):
    ints = write_table(tmp_path / "ints.csv", ["text", "label"], [("a", 3), ("b", 1), ("c", 3)])
    assert _load(ints)[0].label_list == (1, 3)  # sorted distinct labels
    assert _load(ints, do_regression=True)[0].is_regression
    floats = write_table(tmp_path / "floats.csv", ["text", "label"], [("a", 0.5), ("b", 4.0)])
    task, splits = _load(floats)
    assert task.is_regression and task.metric_config == "regression" and splits["train"]["label"] == [0.5, 4.0]
    named = datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [2, 0, 1]}, features=datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "neutral", "pos"])}))
    named.to_parquet(str(tmp_path / "named.parquet"))  # the ClassLabel survives in the file's metadata
    task, splits = _load(tmp_path / "named.parquet")
    assert task.label_list == ("neg", "neutral", "pos") and splits["train"]["label"] == [2, 0, 1]
    with pytest.raises(ClassificationDataError, match=r"--do_regression, but column 'label' holds classes"):
        _load(tmp_path / "named.parquet", do_regression=True)
    one_class = write_table(tmp_path / "one.csv", ["text", "label"], [("a", "x"), ("b", "x")])
    with pytest.raises(ClassificationDataError, match=r"one\.csv, column 'label': one class \('x'\)"):
        _load(one_class)


def test_bad_rows_and_files_are_named(tmp_path):
    train = write_table(tmp_path / "train.csv", ["text", "label"], [("a", "x"), ("b", "y")])
    gaps = write_table(tmp_path / "gaps.csv", ["text", "label"], [("a", "x"), ("b", ""), ("", "y"), ("d", "")])
    with pytest.raises(ClassificationDataError, match=r"gaps\.csv, row 3, column 'text': no text"):
        _load(train, gaps)
    no_labels = write_table(tmp_path / "no_labels.csv", ["text", "label"], [("a", "x"), ("b", ""), ("c", "")])
    with pytest.raises(ClassificationDataError, match=r"no_labels\.csv, row 2, column 'label': no label \(and 1 more rows\)"):
        _load(train, no_labels)
    words = write_table(tmp_path / "words.csv", ["text", "label"], [("a", 0.5), ("b", "high")])
    with pytest.raises(ClassificationDataError, match=r"words\.csv, row 2, column 'label': label 'high' is not a number"):
        _load(write_table(tmp_path / "scores.csv", ["text", "label"], [("a", 0.5), ("b", 1.5)]), words)
    header_only = write_table(tmp_path / "header.csv", ["text", "label"], [])
    with pytest.raises(ClassificationDataError, match=r"header\.csv: a header line and no rows"):
        _load(header_only)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ClassificationDataError, match=r"empty\.jsonl: empty file"):
        _load(tmp_path / "empty.jsonl")
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(ClassificationDataError, match=r"--train_file .*data\.xlsx: unknown format '\.xlsx'"):
        _load(tmp_path / "data.xlsx")
    with pytest.raises(FileNotFoundError, match=r"--validation_file .*missing\.csv: no such file"):
        _load(train, tmp_path / "missing.csv")
    (tmp_path / "broken.json").write_text('{"text": "a", "label": ')
    with pytest.raises(ClassificationDataError, match=r"broken\.json: cannot be read as JSON"):
        _load(tmp_path / "broken.json")


def test_test_split_needs_the_text_columns_only(tmp_path):
    train = write_table(tmp_path / "train.csv", ["text", "label"], [("a", "x"), ("b", "y")])
    test = write_table(tmp_path / "test.csv", ["id", "text"], [(7, "c"), (8, "d")])
    task, splits = load_classification_data(train_file=train, validation_file=train, test_file=test)
    assert splits["test"]["sentence1"] == ["c", "d"] and splits["test"]["label"] == [-1, -1]
    typed = write_table(tmp_path / "typed.csv", ["text"], [(1,), (2,)])
    with pytest.raises(ClassificationDataError, match=r"typed\.csv: its schema differs .*column 'text' holds "):
        load_classification_data(train_file=train, validation_file=train, test_file=typed)
    path = write_classification_predictions(tmp_path / "out" / "predict_results.tsv", task, [[0.1, 2.0], [3.0, 0.0]],
                                            splits["test"]["idx"])
    assert path.read_text() == "index\tprediction\n0\ty\n1\tx\n"
