"""The package's `evaluate` modules equal the local implementations, load without a network, and
MetricSuite adds --metric_name metrics (local folders; Hub ids fail with a clear message offline)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from electra_hf.metrics import (
    ENTITY_F1_METRIC,
    GLUE_METRIC,
    SQUAD_METRIC,
    MetricLoadError,
    MetricSuite,
    load_metric,
)
from electra_hf.tasks.glue import compute_glue_metrics
from electra_hf.tasks.glue_metrics import GENERIC_METRICS, score_predictions
from electra_hf.tasks.squad_metrics import squad_v1_metrics, squad_v2_metrics
from electra_hf.tasks.tagging import tagging_metrics

from .conftest import write_local_metric

# The cases of tests/test_glue.py, test_tagging.py and test_qa.py.
GLUE_CASES = [
    ("mrpc", [0, 1, 1, 0], [0, 1, 0, 0]),
    ("cola", [1, 1, 0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0, 1, 1]),
    ("sst2", [1, 1, 0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0, 1, 1]),
    ("mnli", [0, 2, 1, 1], [0, 2, 2, 1]),
    ("stsb", [0.1, 0.5, 0.4], [0.2, 0.9, 0.5]),
    ("stsb", [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.0]),
]
TAGGING_CASES = [
    ([["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-PER"]], [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]),
    ([["B-PER", "I-PER"], ["B-LOC"]], [["I-PER", "I-PER"], ["I-LOC"]]),
    ([["B-PER", "I-PER"]], [["B-PER", "I-LOC"]]),
    ([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]]),
    ([["O", "O"]], [["O", "O"]]),
]
SQUAD_V1_REFERENCES = {"1": ["Denver Broncos", "The Denver Broncos"], "2": ["Saint Bernadette Soubirous"],
                       "3": ["a red car", "blue truck"], "4": ["x"]}
# "4" has no prediction (it scores 0 and counts as missing); "5" is a prediction without a question.
SQUAD_V1_PREDICTIONS = {"1": "the denver broncos.", "2": "Bernadette", "3": "red truck", "5": "x"}
SQUAD_V2_REFERENCES = {"h1": ["Denver Broncos"], "h2": ["red car"], "n1": [], "n2": [], "e": ["the"]}
SQUAD_V2_PREDICTIONS = {"h1": "Denver", "h2": "", "n1": "", "n2": "something", "e": ""}


@pytest.mark.parametrize("config, predictions, references", GLUE_CASES)
def test_glue_module_equals_compute_glue_metrics(config, predictions, references):
    module = load_metric(GLUE_METRIC, config)
    assert module.compute(predictions=predictions, references=references) == compute_glue_metrics(
        config, predictions, references)


def test_glue_module_scores_data_of_your_own_and_names_its_configurations():
    classification = load_metric(GLUE_METRIC, "classification").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    assert classification == {"accuracy": 0.75}
    scores, gold = [0.1, 0.5, 0.4, 0.9], [0.2, 0.9, 0.5, 0.7]
    regression = load_metric(GLUE_METRIC, "regression").compute(predictions=scores, references=gold)
    assert regression == score_predictions(GENERIC_METRICS["regression"], True, scores, gold, "regression")
    assert set(regression) == {"pearson", "spearmanr"}
    with pytest.raises(ValueError, match="name a configuration.*'mrpc'.*'classification', 'regression'"):
        load_metric(GLUE_METRIC)


@pytest.mark.parametrize("references, predictions", TAGGING_CASES)
def test_entity_f1_module_equals_tagging_metrics(references, predictions):
    module = load_metric(ENTITY_F1_METRIC)
    assert module.compute(predictions=predictions, references=references) == tagging_metrics(references, predictions)


def test_entity_f1_tokens_configuration_is_token_accuracy():
    tokens = load_metric(ENTITY_F1_METRIC, "tokens")
    assert tokens.compute(predictions=[["NN", "NN"]], references=[["NN", "VB"]]) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="entity_f1: unknown configuration 'chunks'"):
        load_metric(ENTITY_F1_METRIC, "chunks")


def _squad_inputs(predictions: dict, references: dict, no_answer_probability: float | None = None):
    preds = [{"id": qid, "prediction_text": text} for qid, text in predictions.items()]
    if no_answer_probability is not None:
        preds = [{**p, "no_answer_probability": no_answer_probability} for p in preds]
    refs = [{"id": qid, "answers": {"text": texts, "answer_start": [0] * len(texts)}} for qid, texts in references.items()]
    return preds, refs


def test_squad_module_equals_the_official_evaluation():
    preds, refs = _squad_inputs(SQUAD_V1_PREDICTIONS, SQUAD_V1_REFERENCES)
    v1 = load_metric(SQUAD_METRIC).compute(predictions=preds, references=refs)
    assert v1 == squad_v1_metrics(SQUAD_V1_PREDICTIONS, SQUAD_V1_REFERENCES)
    assert v1["missing"] == 1.0 and v1["exact_match"] == pytest.approx(25.0)
    preds, refs = _squad_inputs(SQUAD_V2_PREDICTIONS, SQUAD_V2_REFERENCES, no_answer_probability=0.0)
    v2 = load_metric(SQUAD_METRIC, "v2").compute(predictions=preds, references=refs)
    assert v2 == squad_v2_metrics(SQUAD_V2_PREDICTIONS, SQUAD_V2_REFERENCES)
    assert v2["NoAns_total"] == 3.0 and v2["HasAns_total"] == 2.0


def test_modules_load_and_compute_with_no_network(tmp_path):
    """A fresh process with HF_HUB_OFFLINE=1, an empty modules cache and every socket connection refused."""
    script = textwrap.dedent("""
        import json, socket

        def refuse(*args, **kwargs):
            raise OSError("network use during an offline metric load")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        from electra_hf.metrics import ENTITY_F1_METRIC, GLUE_METRIC, SQUAD_METRIC, load_metric
        out = {
            "glue": load_metric(GLUE_METRIC, "rte").compute(predictions=[0, 1], references=[0, 0]),
            "entity": load_metric(ENTITY_F1_METRIC).compute(predictions=[["B-PER"]], references=[["B-PER"]])["f1"],
            "squad": load_metric(SQUAD_METRIC).compute(
                predictions=[{"id": "q", "prediction_text": "x"}],
                references=[{"id": "q", "answers": {"text": ["x"], "answer_start": [0]}}])["f1"],
        }
        print(json.dumps(out))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"glue": {"accuracy": 0.5}, "entity": 1.0,
                                                                  "squad": 100.0}
    copied = list((tmp_path / "modules").rglob("glue.py"))
    assert copied, "evaluate imports the module from its modules cache"


def test_hub_metric_unreachable_names_the_flag():
    with pytest.raises(MetricLoadError, match=r"--metric_name f1: evaluate could not load it .*HF_HUB_OFFLINE is set"):
        MetricSuite(GLUE_METRIC, "rte", ["f1"])


def test_suite_adds_local_metrics_prefixes_clashes_and_skips_non_numbers(tmp_path, caplog):
    suite = MetricSuite(GLUE_METRIC, "mrpc", [write_local_metric(tmp_path)])
    with caplog.at_level(logging.WARNING, logger="electra_hf.metrics"):
        results = suite.compute(np.array([0, 1, 1, 1]).tolist(), [0, 1, 0, 0])
    assert results == {"accuracy": 0.5, "f1": pytest.approx(0.5), "mean_prediction": 0.75,
                       "mean_prediction/accuracy": -1.0}
    assert suite.extra_keys == ["mean_prediction", "mean_prediction/accuracy"]
    assert "'per_example' is not a number" in caplog.text
    assert [entry["config_name"] for entry in suite.describe()] == ["mrpc", None]
