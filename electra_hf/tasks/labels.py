"""What a sentence(-pair) task's labels decide, shared by the GLUE tasks and data of your own."""

from __future__ import annotations


class SentenceTaskLabels:
    """Properties that follow from ``label_list`` (the class names; None for regression), for the
    frozen dataclasses :class:`~electra_hf.tasks.glue.GlueTask` and
    :class:`~electra_hf.tasks.classification.ClassificationTask`."""

    label_list: tuple | None

    @property
    def is_regression(self) -> bool:
        return self.label_list is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_list is None else len(self.label_list)

    def metric_key(self, split: str, metric: str) -> str:
        """Key of a metric in result dicts: ``"<split>/<metric>"`` (e.g. ``"dev_matched/accuracy"``)."""
        return f"{split}/{metric}"
