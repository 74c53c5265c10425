"""The GLUE metrics as an `evaluate` module, computed by electra_hf.tasks.glue_metrics.

    import evaluate
    from electra_hf.metrics import GLUE_METRIC
    glue = evaluate.load(GLUE_METRIC, "mrpc")
    glue.compute(predictions=[0, 1, 1], references=[0, 1, 0])  # {"accuracy": ..., "f1": ...}

Configurations: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli, or any name
electra_hf.tasks.glue.get_glue_task accepts) gives that task's metrics; "classification"
(accuracy) and "regression" (Pearson and Spearman correlations) score data of your own.
Predictions and references are class ids, or scores for stsb and regression.
"""

import datasets
import evaluate

from electra_hf.tasks.glue import GLUE_TASKS, compute_glue_metrics, get_glue_task
from electra_hf.tasks.glue_metrics import GENERIC_METRICS, score_predictions

_DESCRIPTION = "GLUE metrics (accuracy, binary F1, Matthews correlation, Pearson, Spearman) as electra_hf reports them."
_CITATION = """@inproceedings{wang2019glue, title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural
Language Understanding}, author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer
and Bowman, Samuel R.}, booktitle={ICLR}, year={2019}}"""
_INPUTS = """predictions: class ids (int), or scores (float) for stsb and regression.
references: the gold class ids or scores, on the scale of the predictions.
Returns the configuration's metrics, each a float."""


def _is_regression(config_name: str) -> bool:
    if config_name in GENERIC_METRICS:
        return config_name == "regression"
    return get_glue_task(config_name).is_regression


class Glue(evaluate.Metric):
    def _info(self):
        if self.config_name == "default":
            tasks = [task.hub_config for task in GLUE_TASKS.values() if task.metrics]
            raise ValueError(f"electra_hf/metrics/glue: name a configuration: a GLUE task {tasks} or one of "
                             f"{list(GENERIC_METRICS)}")
        value = datasets.Value("float64" if _is_regression(self.config_name) else "int64")
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_INPUTS,
                                   features=datasets.Features({"predictions": value, "references": value}))

    def _compute(self, predictions, references):
        if self.config_name in GENERIC_METRICS:
            return score_predictions(GENERIC_METRICS[self.config_name], self.config_name == "regression", predictions,
                                     references, self.config_name)
        return compute_glue_metrics(self.config_name, predictions, references)
