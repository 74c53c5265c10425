"""The ELECTRA pre-training model: a generator and a discriminator with shared embeddings.

`ElectraForRTDPretraining` holds a `transformers.ElectraForMaskedLM` (the generator) and a
`transformers.ElectraForPreTraining` (the discriminator). Embedding sharing is declared through
transformers' tied-weights mechanism (`_tied_weights_keys`), so `save_pretrained` /
`from_pretrained` keep the tie and nothing is silently dropped from the checkpoint.

One training step, as the official implementation does it (see `forward`):

    generator(masked ids) → hidden states → logits at the masked positions only → MLM loss
    → Gumbel-max sample (fp32, no gradient) → corrupted sequence, replaced labels
    → discriminator(corrupted) → per-token logits → BCE over non-padding tokens
    loss = generator_loss_weight · MLM + discriminator_loss_weight · BCE
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    ElectraConfig,
    ElectraForMaskedLM,
    ElectraForPreTraining,
    PreTrainedModel,
)
from transformers.utils import ModelOutput

from .configuration import ElectraPretrainingConfig

IGNORE_INDEX = -100

# Parameters of `ElectraEmbeddings` that each sharing mode ties (generator ← discriminator).
_SHARED_EMBEDDING_PARAMETERS = {
    "all": (
        "word_embeddings.weight",
        "position_embeddings.weight",
        "token_type_embeddings.weight",
        "LayerNorm.weight",
        "LayerNorm.bias",
    ),
    "word": ("word_embeddings.weight",),
    "none": (),
    # GDES: the word table is the generator's; the discriminator adds its own delta (see forward).
    "gdes": ("position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias"),
}


@dataclass
class ElectraPretrainingOutput(ModelOutput):
    """Output of [`ElectraForRTDPretraining`]. B = batch, T = sequence length, N = max predictions.

    Args:
        loss (`()`): generator_loss_weight · generator_loss + discriminator_loss_weight · discriminator_loss.
        generator_loss (`()`): cross-entropy averaged over the masked positions.
        discriminator_loss (`()`): binary cross-entropy averaged over non-padding tokens (None for "mlm").
        masked_positions (`(B, N)`): indices of the positions the generator predicted.
        masked_weights (`(B, N)` bool): which entries of `masked_positions` are real (rows with fewer
            than N masked tokens are padded).
        generator_logits (`(B, N, V)`): generator logits at `masked_positions`.
        discriminator_input_ids (`(B, T)`): the corrupted sequence the discriminator read.
        replaced_labels (`(B, T)` long): 1 where the token was masked and the sample differs from the original.
        discriminator_logits (`(B, T)`): replaced-token logits.
        generator_accuracy, discriminator_accuracy, discriminator_precision, discriminator_recall (`()`):
            detached metrics (precision/recall of the "replaced" class); NaN-free (0 when undefined).
    """

    loss: torch.FloatTensor | None = None
    generator_loss: torch.FloatTensor | None = None
    discriminator_loss: torch.FloatTensor | None = None
    masked_positions: torch.LongTensor | None = None
    masked_weights: torch.BoolTensor | None = None
    generator_logits: torch.FloatTensor | None = None
    discriminator_input_ids: torch.LongTensor | None = None
    replaced_labels: torch.LongTensor | None = None
    discriminator_logits: torch.FloatTensor | None = None
    generator_accuracy: torch.FloatTensor | None = None
    discriminator_accuracy: torch.FloatTensor | None = None
    discriminator_precision: torch.FloatTensor | None = None
    discriminator_recall: torch.FloatTensor | None = None


def select_masked_positions(masked: torch.BoolTensor, num_predictions: int) -> tuple[torch.LongTensor, torch.BoolTensor]:
    """Fixed-size list of the masked positions of each row, without a host sync.

    Args:
        masked: `(B, T)` True where the collator selected a position.
        num_predictions: N ≥ the largest number of masked positions in a row.
    Returns:
        positions `(B, N)` (masked ones first, ascending, then distinct unmasked fillers) and weights `(B, N)`
        (True for real masked positions).
    """
    num_predictions = min(num_predictions, masked.shape[1])
    if not torch.compiler.is_compiling():
        # Asynchronous on accelerators; a row with more than N masked tokens would be silently truncated.
        torch._assert_async(masked.sum(dim=1).max() <= num_predictions)
    length = masked.shape[1]
    # Masked positions first in ascending order, then unmasked fillers in ascending order: a
    # deterministic layout (tie-free scores), so the same batch always gets the same samples.
    order_scores = masked.long() * length - torch.arange(length, device=masked.device)
    positions = order_scores.topk(num_predictions, dim=1, sorted=True).indices
    return positions, masked.gather(1, positions)


def gather_positions(hidden_states: torch.Tensor, positions: torch.LongTensor) -> torch.Tensor:
    """`(B, T, H)` × `(B, N)` → `(B, N, H)`."""
    return hidden_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1]))


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0) -> torch.LongTensor:
    """Gumbel-max sampling: `argmax(logits / T + g)`, g ~ Gumbel(0, 1), in fp32 and without gradient.

    Uses g = -log(E), E ~ Exp(1), which is one random draw and one log per entry.
    `(..., V)` → `(...)`.
    """
    with torch.no_grad():
        scores = logits.detach().float() / temperature
        exponential_noise = torch.empty_like(scores).exponential_()
        return (scores - exponential_noise.log()).argmax(dim=-1)


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean that is 0 (not NaN) when all weights are 0."""
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


class ElectraForRTDPretraining(PreTrainedModel):
    """ELECTRA pre-training: generator (masked LM) + discriminator (replaced token detection).

    With `config.objective == "mlm"` only a discriminator-sized masked LM is built (attribute
    `generator`; `discriminator` is None): the BERT baseline on the same pipeline.
    """

    config_class = ElectraPretrainingConfig
    base_model_prefix = "electra_pretraining"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["ElectraLayer", "ElectraEmbeddings"]

    def __init__(self, config: ElectraPretrainingConfig):
        super().__init__(config)
        if config.objective == "mlm":
            self.generator = ElectraForMaskedLM(config.discriminator_config)
            self.discriminator = None
            sharing = ()
        else:
            self.generator = ElectraForMaskedLM(config.generator_config)
            self.discriminator = ElectraForPreTraining(config.discriminator_config)
            sharing = _SHARED_EMBEDDING_PARAMETERS[config.embedding_sharing]
        # Declared per instance because it depends on the sharing mode; {target: source}.
        self._tied_weights_keys = {
            f"generator.electra.embeddings.{name}": f"discriminator.electra.embeddings.{name}" for name in sharing
        }
        if config.objective == "electra" and config.embedding_sharing in ("all", "word"):
            # The generator's output layer is tied to its word embeddings, which are the discriminator's.
            self._tied_weights_keys["generator.generator_lm_head.weight"] = (
                "discriminator.electra.embeddings.word_embeddings.weight"
            )
        self.post_init()
        if self.uses_gdes:
            # The discriminator's own word table is the GDES delta: zero, so the discriminator starts
            # from the shared table (from_pretrained overwrites it with the saved delta afterwards).
            with torch.no_grad():
                self.discriminator.electra.embeddings.word_embeddings.weight.zero_()

    # --- transformers plumbing -------------------------------------------------------------

    @property
    def uses_gdes(self) -> bool:
        return self.config.objective == "electra" and self.config.embedding_sharing == "gdes"

    def get_input_embeddings(self) -> nn.Module:
        encoder = self.discriminator if self.discriminator is not None else self.generator
        return encoder.electra.embeddings.word_embeddings

    def discriminator_word_embedding_matrix(self) -> torch.Tensor:
        """The `(V, E)` word table the discriminator actually uses (GDES: sg(shared) + delta)."""
        own = self.discriminator.electra.embeddings.word_embeddings.weight
        if self.uses_gdes:
            return self.generator.electra.embeddings.word_embeddings.weight.detach() + own
        return own

    # --- the step ----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor,
        labels: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> ElectraPretrainingOutput:
        """One ELECTRA pre-training forward pass on a collator batch.

        Args:
            input_ids `(B, T)`: the generator's input (masked by the collator).
            labels `(B, T)`: original token ids at the selected positions, -100 elsewhere.
            attention_mask `(B, T)`: 1 for real tokens, 0 for padding (default: all 1).
            token_type_ids `(B, T)`: segment ids (default: all 0).
        """
        config = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        masked = labels != IGNORE_INDEX
        original_ids = torch.where(masked, labels, input_ids)
        positions, weights = select_masked_positions(masked, config.max_predictions_per_seq)
        targets = original_ids.gather(1, positions)

        # 1. Generator: hidden states everywhere, vocabulary logits only where they are needed.
        generator_hidden = self.generator.electra(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).last_hidden_state
        generator_logits = self.generator.generator_lm_head(
            self.generator.generator_predictions(gather_positions(generator_hidden, positions))
        )
        token_losses = F.cross_entropy(
            generator_logits.float().flatten(0, 1), targets.flatten(), reduction="none"
        ).view_as(targets)
        generator_loss = masked_mean(token_losses, weights)

        if config.objective == "mlm":
            return ElectraPretrainingOutput(
                loss=config.generator_loss_weight * generator_loss,
                generator_loss=generator_loss,
                masked_positions=positions,
                masked_weights=weights,
                generator_logits=generator_logits,
                generator_accuracy=self._generator_accuracy(generator_logits, targets, weights),
            )

        # 2. Replace the masked tokens by generator samples (not differentiated: ELECTRA is not a GAN).
        samples = torch.where(weights, gumbel_sample(generator_logits, config.sampling_temperature), targets)
        discriminator_input_ids = original_ids.scatter(1, positions, samples)
        replaced = (discriminator_input_ids != original_ids).long()  # masked & sample != original

        # 3. Discriminator: is each token original or replaced?
        if self.uses_gdes:
            discriminator_logits = self.discriminator(
                inputs_embeds=F.embedding(discriminator_input_ids, self.discriminator_word_embedding_matrix()),
                attention_mask=attention_mask,
                token_type_ids=token_type_ids,
            ).logits
        else:
            discriminator_logits = self.discriminator(
                discriminator_input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits
        token_bce = F.binary_cross_entropy_with_logits(
            discriminator_logits.float(), replaced.float(), reduction="none"
        )
        discriminator_loss = masked_mean(token_bce, attention_mask)

        loss = config.generator_loss_weight * generator_loss + config.discriminator_loss_weight * discriminator_loss
        output = ElectraPretrainingOutput(
            loss=loss,
            generator_loss=generator_loss,
            discriminator_loss=discriminator_loss,
            masked_positions=positions,
            masked_weights=weights,
            generator_logits=generator_logits,
            discriminator_input_ids=discriminator_input_ids,
            replaced_labels=replaced,
            discriminator_logits=discriminator_logits,
        )
        if config.compute_metrics:
            output.generator_accuracy = self._generator_accuracy(generator_logits, targets, weights)
            output.discriminator_accuracy, output.discriminator_precision, output.discriminator_recall = (
                discriminator_metrics(discriminator_logits, replaced, attention_mask)
            )
        return output

    @staticmethod
    def _generator_accuracy(logits, targets, weights) -> torch.Tensor:
        with torch.no_grad():
            return masked_mean((logits.argmax(-1) == targets).float(), weights)


def discriminator_metrics(
    logits: torch.Tensor, replaced: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accuracy over non-pad tokens, and precision/recall of the "replaced" class. `(B, T)` inputs."""
    with torch.no_grad():
        valid = attention_mask.bool()
        predicted = (logits > 0) & valid
        actual = replaced.bool() & valid
        true_positive = (predicted & actual).sum().float()
        accuracy = masked_mean((predicted == actual).float(), valid)
        precision = true_positive / predicted.sum().clamp(min=1)
        recall = true_positive / actual.sum().clamp(min=1)
    return accuracy, precision, recall


AutoModel.register(ElectraPretrainingConfig, ElectraForRTDPretraining)
# So that a Hub copy carries the code and loads with trust_remote_code=True.
ElectraPretrainingConfig.register_for_auto_class()
ElectraForRTDPretraining.register_for_auto_class("AutoModel")
