"""The official ELECTRA fine-tuning head for sequence classification / regression.

The official code (google-research/electra, ``finetune/classification``) puts **dropout 0.1 and
one linear layer on the [CLS] vector** of the discriminator — no pooler, no hidden layer.
transformers' stock ``ElectraForSequenceClassification`` instead uses a two-layer head
(dense + GELU + dropout + dense). This module provides the official one as a regular
``PreTrainedModel`` on top of ``ElectraModel``:

* ``base_model_prefix = "electra"``, so ``from_pretrained`` on a discriminator checkpoint
  (``ElectraForPreTraining`` / ``ElectraModel``, e.g. ``google/electra-small-discriminator``)
  loads the encoder and initialises only the classifier;
* its own config class and ``model_type``, registered with ``AutoConfig`` and
  ``AutoModelForSequenceClassification`` when this module is imported, and marked with
  ``register_for_auto_class`` so that ``save_pretrained`` copies this file next to the weights:
  a saved (or Hub) copy then loads with plain transformers and ``trust_remote_code=True``.

This file must import only torch and transformers (it is copied verbatim into saved models).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    ElectraConfig,
    ElectraModel,
    ElectraPreTrainedModel,
)

__all__ = ["ElectraOfficialHeadConfig", "ElectraOfficialHeadForSequenceClassification"]

MODEL_TYPE = "electra_official_head"


class SequenceClassifierOutput(dict):
    """`loss`, `logits`, `hidden_states`, `attentions`, by key or by attribute (None entries are
    left out), like transformers' model outputs: a dict, so Accelerate's output conversions keep it."""

    FIELDS = ("loss", "logits", "hidden_states", "attentions")

    def __getattr__(self, name: str):
        if name in self:
            return self[name]
        if name in self.FIELDS:
            return None
        raise AttributeError(name)

    def __getitem__(self, key):
        return self.to_tuple()[key] if isinstance(key, int) else super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())


class ElectraOfficialHeadConfig(ElectraConfig):
    """``ElectraConfig`` for :class:`ElectraOfficialHeadForSequenceClassification`.

    Same fields as ``ElectraConfig`` (keyword-only in transformers 5); ``classifier_dropout``
    (None → ``hidden_dropout_prob``, 0.1 officially) is the dropout before the linear layer.
    """

    model_type = MODEL_TYPE

    @classmethod
    def from_electra_config(cls, config: ElectraConfig, **overrides) -> "ElectraOfficialHeadConfig":
        """Copy every field of an existing (discriminator) ``ElectraConfig``; ``overrides`` such
        as ``num_labels=3, id2label=…, problem_type=…`` win. Architecture-specific entries
        (``architectures``, ``model_type``, ``auto_map``) are dropped so they are not inherited."""
        values = config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version"):
            values.pop(key, None)
        # num_labels is derived from id2label; pass whichever the caller gave.
        if "num_labels" in overrides or "id2label" in overrides:
            values.pop("id2label", None)
            values.pop("label2id", None)
        values.update(overrides)
        return cls(**values)


class ElectraOfficialHeadForSequenceClassification(ElectraPreTrainedModel):
    """ELECTRA discriminator + dropout + one linear layer on the [CLS] hidden state.

    Inputs (batch B, length L): ``input_ids`` (B, L), ``attention_mask`` (B, L),
    ``token_type_ids`` (B, L), optional ``labels``: (B,) int64 class ids, or (B,) float targets
    when ``num_labels == 1`` (regression, MSE) — or (B, C) floats for multi-label (BCE).
    Output: ``SequenceClassifierOutput`` with ``logits`` (B, num_labels) and ``loss`` (scalar)
    when labels are given.
    """

    config_class = ElectraOfficialHeadConfig
    config: ElectraOfficialHeadConfig
    base_model_prefix = "electra"

    def __init__(self, config: ElectraOfficialHeadConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.electra = ElectraModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        extra = {}
        if output_hidden_states is not None:
            extra["output_hidden_states"] = output_hidden_states
        if output_attentions is not None:
            extra["output_attentions"] = output_attentions
        encoder_outputs = self.electra(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **extra,
            **kwargs,
        )
        cls_vector = encoder_outputs.last_hidden_state[:, 0]  # (B, H): the [CLS] position
        logits = self.classifier(self.dropout(cls_vector))  # (B, num_labels)

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels)

        values = dict(loss=loss, logits=logits, hidden_states=encoder_outputs.hidden_states,
                      attentions=encoder_outputs.attentions)
        output = SequenceClassifierOutput({key: value for key, value in values.items() if value is not None})
        if return_dict is False:
            return output.to_tuple()
        return output

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Same problem-type rules as transformers' heads (regression iff num_labels == 1)."""
        problem_type = self.config.problem_type
        if problem_type is None:
            if self.num_labels == 1:
                problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                problem_type = "single_label_classification"
            else:
                problem_type = "multi_label_classification"
        if problem_type == "regression":
            if self.num_labels == 1:
                return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.view(-1).float())
            return nn.functional.mse_loss(logits.float(), labels.float())
        if problem_type == "single_label_classification":
            # ignore_index -100 (transformers' convention): never the pad id.
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())


# Registration: AutoConfig / AutoModelForSequenceClassification know the model type once this
# module is imported; register_for_auto_class makes save_pretrained write an `auto_map` and copy
# this file, so the saved model also loads without electra_hf (trust_remote_code=True).
try:
    AutoConfig.register(MODEL_TYPE, ElectraOfficialHeadConfig)
except ValueError:  # already registered (module reloaded, e.g. by transformers' dynamic loader)
    pass
try:
    AutoModelForSequenceClassification.register(ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification)
except ValueError:
    pass
ElectraOfficialHeadConfig.register_for_auto_class()
ElectraOfficialHeadForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
