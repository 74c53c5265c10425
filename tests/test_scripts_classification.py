"""train_glue.py on data of your own: CSV files written here, a tiny ELECTRA, metrics through
`evaluate`, the Hub stand-in, the starting points (--ignore_mismatched_sizes, --trust_remote_code,
a pre-training run folder) and the bad inputs' messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from electra_hf.metrics import GLUE_METRIC, MetricLoadError
from electra_hf.tasks.classification import ClassificationDataError

from .conftest import build_tiny_discriminator, labelled_sentences, load_script, write_local_metric, write_table

train_glue = load_script("train_glue")
CLASSES = ["animal", "place"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = [sentence for sentence, _, _ in labelled_sentences(300, seed=1)]
    return build_tiny_discriminator(tmp_path_factory.mktemp("tiny_classifier"), texts, vocab_size=200)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """train/dev/test CSVs with class labels, and train/dev CSVs with float scores."""
    folder = tmp_path_factory.mktemp("own_data")
    rows = labelled_sentences(74, seed=2)
    train, dev, test = rows[:48], rows[48:64], rows[64:]
    return {
        "train": write_table(folder / "train.csv", ["sentence", "label"], [(s, c) for s, c, _ in train]),
        "dev": write_table(folder / "dev.csv", ["sentence", "label"], [(s, c) for s, c, _ in dev]),
        "test": write_table(folder / "test.csv", ["sentence"], [(s,) for s, _, _ in test]),
        "train_scores": write_table(folder / "train_scores.csv", ["sentence", "score"], [(s, v) for s, _, v in train]),
        "dev_scores": write_table(folder / "dev_scores.csv", ["sentence", "score"], [(s, v) for s, _, v in dev]),
    }


def _args(model, out, *extra) -> list[str]:
    return ["--model_name_or_path", str(model), "--output_dir", str(out), "--learning_rate", "3e-3",
            "--layer_decay", "0.8", "--max_seq_length", "32", "--per_device_train_batch_size", "8",
            "--disable_tqdm", "true", "--logging_steps", "2", *extra]


def _own_files(data, *extra) -> list[str]:
    return ["--train_file", data["train"], "--validation_file", data["dev"], *extra]


def _dev_predictions(model_dir: Path, dev_csv: str) -> np.ndarray:
    """Class ids the saved model predicts for the dev sentences (transformers alone)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sentences = [line.rsplit(",", 1)[0] for line in Path(dev_csv).read_text().splitlines()[1:]]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    return logits.argmax(-1).numpy()


def test_classification_csv_metrics_through_evaluate_predictions_and_hub(tiny, data, tmp_path, hub_stand_in):
    out = tmp_path / "run"
    metric = write_local_metric(tmp_path)
    results = train_glue.main(_args(tiny, out, *_own_files(data, "--test_file", data["test"]), "--seeds", "1", "2",
                                    "--max_train_steps", "4", "--metric_name", metric, "--push_to_hub",
                                    "--hub_model_id", "me/tiny-classifier", "--hub_token", "hf_test",
                                    "--hub_private_repo", "--push_all_seeds"))
    task = results["tasks"]["train.csv"]
    assert task["labels"] == CLASSES and task["text_columns"] == ["sentence"] and task["num_train_examples"] == 48
    assert task["metric_modules"] == [{"module": GLUE_METRIC, "config_name": "classification"},
                                      {"module": metric, "config_name": None}]
    assert task["metric_keys"] == ["dev/accuracy", "dev/mean_prediction", "dev/mean_prediction/accuracy"]
    assert "glue_average" not in results and "GLUE average" not in (out / "results.md").read_text()
    # The reported numbers are those of the saved models' own predictions on dev.csv.
    gold = np.array([CLASSES.index(line.rsplit(",", 1)[1]) for line in Path(data["dev"]).read_text().splitlines()[1:]])
    for seed, metrics in zip((1, 2), task["per_seed"]):
        predicted = _dev_predictions(out / "train.csv" / f"seed_{seed}", data["dev"])
        assert metrics["dev/accuracy"] == pytest.approx((predicted == gold).mean())
        assert metrics["dev/mean_prediction"] == pytest.approx(predicted.mean())
        assert metrics["dev/mean_prediction/accuracy"] == -1.0
    lines = (out / "predict_results.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == [str(i) for i in range(10)]
    assert {line.split("\t")[1] for line in lines[1:]} <= set(CLASSES)
    saved = json.loads((out / "train.csv" / "seed_1" / "config.json").read_text())
    assert saved["id2label"] == {"0": "animal", "1": "place"}
    _check_hub_push(hub_stand_in.calls, task)


def _check_hub_push(calls, task):
    assert ("init", {"token": "hf_test"}) in calls
    created = [kwargs for name, kwargs in calls if name == "create_repo"]
    assert created == [{"repo_id": "me/tiny-classifier", "private": True, "exist_ok": True, "repo_type": "model"}]
    uploads = [kwargs for name, kwargs in calls if name == "upload_folder"]
    assert len(uploads) == 1 and uploads[0]["repo_id"] == "me/tiny-classifier"
    pushed = uploads[0]["copy"]
    root = {p.name for p in pushed.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "results.json", "results.md",
            "seed_1", "seed_2"} <= root
    assert "run_result.json" not in root  # the run's own records stay home
    for seed in ("seed_1", "seed_2"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (pushed / seed).iterdir()}
    chosen = task["hub"]["seed"]
    assert task["hub"] == {"repo_id": "me/tiny-classifier", "seed": chosen, "selected_by": "dev/accuracy",
                           "seed_folders": ["seed_1", "seed_2"]}
    assert (pushed / "model.safetensors").read_bytes() == (pushed / f"seed_{chosen}" / "model.safetensors").read_bytes()
    card = (pushed / "README.md").read_text()
    assert "pipeline_tag: text-classification" in card and "sentence classification (train.csv)" in card
    assert "| train.csv | dev/accuracy |" in card and f"the model of seed {chosen}" in card
    assert "trust_remote_code=True" in card and (pushed / "heads.py").is_file()  # the official head's code
    assert json.loads((pushed / "results.json").read_text())["tasks"]["train.csv"]["seeds"] == [1, 2]


def test_regression_from_float_scores(tiny, data, tmp_path):
    out = tmp_path / "scores"
    results = train_glue.main(_args(tiny, out, "--train_file", data["train_scores"], "--validation_file",
                                    data["dev_scores"], "--label_column_name", "score", "--max_train_steps", "3",
                                    "--head", "hf"))
    task = results["tasks"]["train_scores.csv"]
    assert task["labels"] is None and task["metric_keys"] == ["dev/pearson", "dev/spearmanr"]
    assert task["metric_modules"][0] == {"module": GLUE_METRIC, "config_name": "regression"}
    assert -1.0 <= task["median"]["dev/pearson"] <= 1.0
    saved = json.loads((out / "train_scores.csv" / "seed_42" / "config.json").read_text())
    assert saved["problem_type"] == "regression" and saved["id2label"] == {"0": "score"}


def test_bad_inputs_name_file_row_and_column(tiny, data, tmp_path):
    folder = tmp_path / "bad"
    outside = write_table(folder / "dev_outside.csv", ["sentence", "label"], [("the cat sat.", "animal"),
                                                                              ("the river.", "river")])
    other_schema = write_table(folder / "test_other.csv", ["text"], [("the cat sat.",)])
    no_label = write_table(folder / "no_label.csv", ["sentence", "class"], [("the cat.", "animal"), ("a day.", "place")])
    empty = folder / "empty.csv"
    empty.write_text("")
    run = lambda *extra: train_glue.main(_args(tiny, tmp_path / "out", "--max_train_steps", "1", *extra))  # noqa: E731
    with pytest.raises(ClassificationDataError, match=r"dev_outside\.csv, row 2, column 'label': label 'river' is not "
                                                      r"among the training data's classes \['animal', 'place'\]"):
        run("--train_file", data["train"], "--validation_file", outside)
    with pytest.raises(ClassificationDataError, match=r"test_other\.csv: its schema differs from the training data's: "
                                                      r"no column\(s\) \['sentence'\]"):
        run(*_own_files(data, "--test_file", other_schema))
    with pytest.raises(ClassificationDataError, match=r"no_label\.csv: no label column 'label' .*--label_column_name"):
        run("--train_file", no_label, "--validation_file", data["dev"])
    with pytest.raises(ClassificationDataError, match=r"empty\.csv: empty file"):
        run("--train_file", str(empty), "--validation_file", data["dev"])
    with pytest.raises(RuntimeError, match=r"--dataset_name someone/reviews: split 'train' did not load .*HF_HUB_OFFLINE"):
        run("--dataset_name", "someone/reviews")
    with pytest.raises(MetricLoadError, match=r"--metric_name accuracy: evaluate could not load it"):
        run(*_own_files(data), "--metric_name", "accuracy")
    with pytest.raises(ValueError, match="--task_name reads a GLUE task; --train_file, --validation_file are for data"):
        run(*_own_files(data), "--task_name", "rte", "--data_dir", str(folder))
    with pytest.raises(ValueError, match="--do_predict with files of your own needs --test_file"):
        run(*_own_files(data), "--do_predict")
    with pytest.raises(ValueError, match="--push_to_hub pushes the saved models: it needs --save_model true"):
        run(*_own_files(data), "--push_to_hub", "--hub_model_id", "me/x", "--save_model", "false")


def test_ignore_mismatched_sizes_refits_a_classifier_to_other_classes(tiny, data, tmp_path):
    first = tmp_path / "two"
    train_glue.main(_args(tiny, first, *_own_files(data), "--max_train_steps", "1"))
    three = labelled_sentences(24, seed=3)
    three_classes = [(s, "other" if i % 3 == 0 else c) for i, (s, c, _) in enumerate(three)]
    train = write_table(tmp_path / "three" / "train.csv", ["sentence", "label"], three_classes[:16])
    dev = write_table(tmp_path / "three" / "dev.csv", ["sentence", "label"], three_classes[16:])
    fine_tuned = first / "train.csv" / "seed_42"
    again = ["--train_file", train, "--validation_file", dev, "--max_train_steps", "1"]
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        train_glue.main(_args(fine_tuned, tmp_path / "three_out", *again))
    results = train_glue.main(_args(fine_tuned, tmp_path / "three_out", *again, "--ignore_mismatched_sizes"))
    assert results["tasks"]["train.csv"]["labels"] == ["animal", "other", "place"]
    saved = json.loads((tmp_path / "three_out" / "train.csv" / "seed_42" / "config.json").read_text())
    assert saved["id2label"] == {"0": "animal", "1": "other", "2": "place"}


CUSTOM_CONFIG = """
from transformers import ElectraConfig


class CustomElectraConfig(ElectraConfig):
    model_type = "custom_electra"
"""


def test_trust_remote_code_loads_a_checkpoint_with_its_own_code(tiny, data, tmp_path):
    import shutil

    custom = tmp_path / "custom"
    shutil.copytree(tiny, custom)
    (custom / "configuration_custom.py").write_text(CUSTOM_CONFIG)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="custom_electra", auto_map={"AutoConfig": "configuration_custom.CustomElectraConfig"})
    (custom / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        train_glue.main(_args(custom, tmp_path / "out", *_own_files(data), "--max_train_steps", "1"))
    results = train_glue.main(_args(custom, tmp_path / "out", *_own_files(data), "--max_train_steps", "1",
                                    "--trust_remote_code"))
    assert results["tasks"]["train.csv"]["global_steps"] == [1]


def test_pretraining_run_folder_gives_its_export(tiny_tokenizer, data, tmp_path, caplog):
    from electra_hf.export import export_pretrained
    from electra_hf.modeling import ElectraForRTDPretraining

    from .conftest import tiny_config

    run = tmp_path / "runs" / "demo"
    export_pretrained(ElectraForRTDPretraining(tiny_config(vocab_size=len(tiny_tokenizer))), run / "export", tiny_tokenizer)
    (run / "run_config.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="electra_hf.scripts_common"):
        results = train_glue.main(_args(run, tmp_path / "out", *_own_files(data), "--max_train_steps", "1"))
    assert results["model_weights"] == str(run / "export" / "discriminator")
    assert f"--model_name_or_path {run}: fine-tuning the weights of {run / 'export' / 'discriminator'}" in caplog.text
    unfinished = tmp_path / "runs" / "unfinished"
    (unfinished / "checkpoints" / "step_00000004").mkdir(parents=True)
    (unfinished / "checkpoints" / "step_00000004" / "training_state.json").write_text("{}")
    with pytest.raises(ValueError, match=r"unfinished: a pre-training run without export/ .*step_00000004"):
        train_glue.main(_args(unfinished, tmp_path / "out2", *_own_files(data), "--max_train_steps", "1"))


def test_hub_data_set_of_your_own(tiny, tmp_path, monkeypatch):
    """--dataset_name of any Hub data set (the Hub is unreachable here: load_dataset is faked with a
    ClassLabel column, a 'text' column and an unlabeled test split, the Hub's usual layout)."""
    import datasets

    rows = labelled_sentences(40, seed=4)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["place", "animal"])})
    requested = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        requested.append((name, config, split))
        part = {"train": rows[:24], "dev": rows[24:34], "eval": rows[34:]}[split]
        labels = [-1] * len(part) if split == "eval" else [int(c == "animal") for _, c, _ in part]
        return datasets.Dataset.from_dict({"text": [s for s, _, _ in part], "label": labels}, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    results = train_glue.main(_args(tiny, tmp_path, "--dataset_name", "someone/reviews", "--dataset_config_name", "en",
                                    "--validation_split", "dev", "--test_split", "eval", "--do_predict",
                                    "--max_train_steps", "1"))
    assert requested == [("someone/reviews", "en", "train"), ("someone/reviews", "en", "dev"),
                         ("someone/reviews", "en", "eval")]
    task = results["tasks"]["someone/reviews"]
    assert task["labels"] == ["place", "animal"] and task["text_columns"] == ["text"]
    predicted = [line.split("\t")[1] for line in (tmp_path / "predict_results.tsv").read_text().splitlines()[1:]]
    assert len(predicted) == 6 and set(predicted) <= {"place", "animal"}
