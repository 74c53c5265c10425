"""Entity-level precision, recall and F1 (CoNLL's conlleval rules, through seqeval) as an
`evaluate` module, computed by electra_hf.tasks.tagging.tagging_metrics.

    import evaluate
    from electra_hf.metrics import ENTITY_F1_METRIC
    entity_f1 = evaluate.load(ENTITY_F1_METRIC)
    entity_f1.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "O", "O"]])

Configurations: "entities" (the default): precision, recall and F1 micro over all entities,
token accuracy, the number of gold entities, and per type TYPE/precision, TYPE/recall, TYPE/f1,
TYPE/number; "tokens": token accuracy alone (tags that are not IOB chunks, e.g. POS).
"""

import datasets
import evaluate

from electra_hf.tasks.tagging import tagging_metrics

_DESCRIPTION = "Entity-level precision/recall/F1 as conlleval computes them (seqeval's default mode), plus token accuracy."
_CITATION = """@inproceedings{tjong2003conll, title={Introduction to the {CoNLL}-2003 Shared Task: Language-Independent
Named Entity Recognition}, author={Tjong Kim Sang, Erik F. and De Meulder, Fien}, booktitle={CoNLL}, year={2003}}"""
_INPUTS = """predictions: one list of predicted tags per sentence (IOB2 strings such as "B-PER").
references: one list of gold tags per sentence, as long as the predicted one.
Returns floats in [0, 1] (counts for num_entities and TYPE/number)."""
CONFIGS = ("default", "entities", "tokens")


class EntityF1(evaluate.Metric):
    def _info(self):
        if self.config_name not in CONFIGS:
            raise ValueError(f"electra_hf/metrics/entity_f1: unknown configuration {self.config_name!r}; "
                             f"choose 'entities' or 'tokens'")
        tags = datasets.List(datasets.Value("string"))
        return evaluate.MetricInfo(description=_DESCRIPTION, citation=_CITATION, inputs_description=_INPUTS,
                                   features=datasets.Features({"predictions": tags, "references": tags}))

    def _compute(self, predictions, references):
        return tagging_metrics(references, predictions, entity_level=self.config_name != "tokens")
