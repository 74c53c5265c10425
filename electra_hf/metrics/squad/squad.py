"""The official SQuAD v1.1 and v2.0 evaluation as an `evaluate` module, computed by
electra_hf.tasks.squad_metrics. Its inputs are those of the Hub's squad and squad_v2 metrics.

    import evaluate
    from electra_hf.metrics import SQUAD_METRIC
    squad = evaluate.load(SQUAD_METRIC)  # "v2" for SQuAD 2.0
    squad.compute(predictions=[{"id": "q1", "prediction_text": "Denver Broncos"}],
                  references=[{"id": "q1", "answers": {"text": ["Denver Broncos"], "answer_start": [177]}}])

Configurations: "v1" (the default): exact_match and f1; "v2": exact and f1 overall and over
the answerable (HasAns_*) and unanswerable (NoAns_*) questions, with "no_answer_probability" in
each prediction (a prediction whose probability exceeds 1.0, never, is not turned into "no answer":
the threshold of the Hub's squad_v2). All in percent, with the counts total and missing.
"""

import datasets
import evaluate

from electra_hf.tasks.squad_metrics import squad_v1_metrics, squad_v2_metrics

_DESCRIPTION = "The official SQuAD evaluation scripts' exact match and F1 over normalised answers."
_CITATION = """@inproceedings{rajpurkar2018know, title={Know What You Don't Know: Unanswerable Questions for
{SQuAD}}, author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy}, booktitle={ACL}, year={2018}}"""
_INPUTS = """predictions: {"id": str, "prediction_text": str} per question (v2: also "no_answer_probability": float).
references: {"id": str, "answers": {"text": [str], "answer_start": [int]}} per question; v2: no answer is an empty list.
Returns percentages, and the counts total and missing."""
CONFIGS = ("default", "v1", "v2")


class Squad(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise ValueError(f"electra_hf/metrics/squad: unknown configuration {self.config_name!r}; choose 'v1' or 'v2'")
        prediction = {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")}
        if self.config_name == "v2":
            prediction["no_answer_probability"] = datasets.Value("float32")
        answers = {"text": datasets.List(datasets.Value("string")), "answer_start": datasets.List(datasets.Value("int32"))}
        reference = {"id": datasets.Value("string"), "answers": answers}
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_INPUTS,
                                   features=datasets.Features({"predictions": prediction, "references": reference}))

    def _compute(self, predictions, references):
        answers = {prediction["id"]: prediction["prediction_text"] for prediction in predictions}
        gold = {reference["id"]: reference["answers"]["text"] for reference in references}
        if self.config_name != "v2":
            return squad_v1_metrics(answers, gold)
        no_answer = {prediction["id"]: prediction["no_answer_probability"] for prediction in predictions}
        return squad_v2_metrics(answers, gold, na_probs=no_answer)
