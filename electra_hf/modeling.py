"""The ELECTRA pre-training model: a generator and a discriminator with shared embeddings.

`ElectraForRTDPretraining` holds a `transformers.ElectraForMaskedLM` (the generator) and a
`transformers.ElectraForPreTraining` (the discriminator), or the networks of another encoder
family (DeBERTa-v2, BERT, RoBERTa, ModernBERT, ...: see `backbones.py`, which says what differs).
Embedding sharing is declared through transformers' tied-weights mechanism (`_tied_weights_keys`),
so `save_pretrained` / `from_pretrained` keep the tie and nothing is silently dropped from the
checkpoint.

One training step, as the official implementation does it (see `forward`):

    generator(masked ids) → hidden states → logits at the masked positions only → MLM loss
    → sample from the generator (fp32, no gradient) → corrupted sequence, replaced labels
    → discriminator(corrupted) → per-token logits → BCE over non-padding tokens
    loss = generator_loss_weight · MLM + discriminator_loss_weight · BCE
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel

from .backbones import backbone_for
from .configuration import ElectraPretrainingConfig

IGNORE_INDEX = -100


@dataclass
class ElectraPretrainingOutput:
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

    def __getitem__(self, key: str):
        """`output["loss"]`, as with transformers' outputs."""
        return getattr(self, key)

    def keys(self) -> list[str]:
        """The fields that hold a value, as with transformers' outputs."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]


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
    if masked.device.type == "cpu" and not torch.compiler.is_compiling():
        # A row with more than N masked tokens would be truncated. Checked where it costs no device
        # sync; on accelerators the collator, built from the same config, caps the count.
        most = int(masked.sum(dim=1).max()) if masked.numel() else 0
        if most > num_predictions:
            raise ValueError(
                f"a row has {most} masked positions, more than max_predictions_per_seq={num_predictions}; build the "
                "collator from the model's config (DataCollatorForElectra.from_config) or raise max_predictions_per_seq"
            )
    length = masked.shape[1]
    # Masked positions first in ascending order, then unmasked fillers in ascending order: a
    # deterministic layout (tie-free scores), so the same batch always gets the same samples.
    order_scores = masked.long() * length - torch.arange(length, device=masked.device)
    positions = order_scores.topk(num_predictions, dim=1, sorted=True).indices
    return positions, masked.gather(1, positions)


def gumbel_sample(logits: torch.Tensor, temperature: float = 1.0) -> torch.LongTensor:
    """Gumbel-max sampling: `argmax(logits / T + g)`, g ~ Gumbel(0, 1), in fp32 and without gradient.

    Uses g = -log(E), E ~ Exp(1), which is one random draw and one log per entry.
    `(..., V)` → `(...)`.
    """
    with torch.no_grad():
        scores = logits.detach().float() / temperature
        exponential_noise = torch.empty_like(scores).exponential_()
        return (scores - exponential_noise.log()).argmax(dim=-1)


def categorical_sample(
    log_probs: torch.Tensor, block_size: int = 256, normalized: bool = False, probabilities: bool = False
) -> torch.LongTensor:
    """One exact sample per row from Categorical(exp(log_probs)), without gradient. `(..., V)` → `(...)`.

    Two-level inverse-CDF sampling: pick a block of `block_size` consecutive classes with probability
    equal to its mass, then a class inside the block in proportion to its probability (two fp64
    uniforms per row). The same distribution as Gumbel-max (`gumbel_sample`) but it draws 2 random
    numbers per row instead of V, and needs one `exp` and one sum over the (rows, V) matrix: on a
    CPU, Gumbel-max over a 30k vocabulary spends most of its time in the random number generator.
    Rows need not be normalised (log-weights are fine) unless `normalized=True` promises
    log-probabilities (max <= 0), which saves a pass; `probabilities=True` says the input already
    holds (unnormalised, non-negative) weights rather than their logarithms. Cumulative sums are in fp64 and only over
    `V / block_size` block masses and `block_size` in-block weights, so no fp32 prefix-sum error
    over the whole vocabulary distorts the tail.
    """
    with torch.no_grad():
        vocab = log_probs.shape[-1]
        flat = log_probs.detach().float().reshape(-1, vocab)
        rows = flat.shape[0]
        if probabilities:
            weights = flat
        else:  # exp(log-probabilities) cannot overflow; log-weights are shifted to max 0 first.
            weights = flat.exp() if normalized else (flat - flat.amax(dim=-1, keepdim=True)).exp_()  # (rows, V)
        full_blocks, tail = divmod(vocab, block_size)
        block_mass = [weights[:, : full_blocks * block_size].reshape(rows, full_blocks, block_size).sum(-1)]
        if tail:
            block_mass.append(weights[:, full_blocks * block_size :].sum(-1, keepdim=True))
        block_mass = torch.cat(block_mass, dim=1).double()
        num_blocks = block_mass.shape[1]
        block_cdf = block_mass.cumsum(dim=1)
        u = torch.rand(rows, 2, dtype=torch.float64, device=flat.device)
        block = torch.searchsorted(block_cdf, u[:, :1] * block_cdf[:, -1:], right=True).clamp_(max=num_blocks - 1)
        index = block * block_size + torch.arange(block_size, device=flat.device)  # (rows, block_size)
        in_vocab = index < vocab
        in_block = weights.gather(1, index.clamp(max=vocab - 1)).double() * in_vocab
        in_block_cdf = in_block.cumsum(dim=1)
        offset = torch.searchsorted(in_block_cdf, u[:, 1:] * in_block_cdf[:, -1:], right=True)
        sample = (block * block_size + offset).clamp_(max=vocab - 1)
        return sample.view(log_probs.shape[:-1])


class _CrossEntropyWithProbabilities(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.LongTensor):
        log_probs = torch.log_softmax(logits, dim=-1)
        # Out of place: torch.compile cuts an in-place `neg_()` on this (view of a) gathered output off
        # the Function, and the generator then gets an all-zero gradient (tests/test_sampling.py).
        losses = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1).neg()
        probabilities = log_probs.exp_()  # log_probs is not needed any more
        ctx.save_for_backward(probabilities, targets)
        ctx.mark_non_differentiable(probabilities)
        # No (N, V) zero gradient for the probabilities, which nothing differentiates.
        ctx.set_materialize_grads(False)
        return losses, probabilities

    @staticmethod
    def backward(ctx, grad_losses, grad_probabilities):
        probabilities, targets = ctx.saved_tensors
        if grad_losses is None:  # the losses were not used: no gradient reaches the logits
            return None, None
        # d loss_i / d logits_i = softmax_i - onehot(target_i): one pass over (N, V).
        grad_logits = probabilities * grad_losses.unsqueeze(1)
        grad_logits.scatter_add_(1, targets.unsqueeze(1), grad_losses.neg().unsqueeze(1))
        return grad_logits, None


def cross_entropy_with_probabilities(logits: torch.Tensor, targets: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row cross-entropy and the softmax probabilities, for a loss that also samples from them.

    `logits (N, V)`, `targets (N,)` → `losses (N,)` (= `F.cross_entropy(..., reduction="none")`) and
    `probabilities (N, V)` (no gradient). The backward pass is `(probabilities - onehot) · grad` from
    the saved probabilities — one pass over the (N, V) matrix instead of log-softmax + NLL's zero
    fill, scatter and log-softmax backward — and the probabilities serve the generator's sampling
    (`categorical_sample(..., probabilities=True)`) without another `exp`. Do not modify them in place.
    """
    return _CrossEntropyWithProbabilities.apply(logits, targets)


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
        # What differs per encoder family (a plain object, not a module: it holds no weights).
        self.backbone = backbone_for(config.discriminator_config)
        self.discriminator_head = None  # the RTD head, where the family's discriminator class has none
        if config.objective == "mlm":
            self.generator = self.backbone.build_generator(config.discriminator_config)
            self.discriminator = None
        else:
            self.generator = self.backbone.build_generator(config.generator_config)
            self.discriminator, self.discriminator_head = self.backbone.build_discriminator(config.discriminator_config)
        # Declared per instance because it depends on the family and the sharing mode; {target: source}.
        self._tied_weights_keys = {}
        if config.objective == "electra":
            ties = self.backbone.tied_parameters(self.generator, self.discriminator, config.embedding_sharing)
            self._tied_weights_keys = {f"generator.{target}": f"discriminator.{source}" for target, source in ties.items()}
        self.post_init()
        if self.uses_gdes:
            # The discriminator's own word table is the GDES delta: zero, so the discriminator starts
            # from the shared table (from_pretrained overwrites it with the saved delta afterwards).
            with torch.no_grad():
                self.get_input_embeddings().weight.zero_()

    # --- transformers plumbing -------------------------------------------------------------

    @property
    def uses_gdes(self) -> bool:
        return self.config.objective == "electra" and self.config.embedding_sharing == "gdes"

    def get_input_embeddings(self) -> nn.Module:
        """The discriminator's word table (GDES: its delta), or the "mlm" objective's."""
        encoder = self.discriminator if self.discriminator is not None else self.generator
        return self.backbone.encoder(encoder).get_input_embeddings()

    def discriminator_word_embedding_matrix(self) -> torch.Tensor:
        """The `(V, E)` word table the discriminator actually uses (GDES: sg(shared) + delta)."""
        own = self.get_input_embeddings().weight
        if self.uses_gdes:
            return self.backbone.encoder(self.generator).get_input_embeddings().weight.detach() + own
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
            attention_mask `(B, T)`: 1 for real tokens, 0 for padding. None: no padding (every token
                attends to every token). The encoders then get no mask, which on an accelerator spares
                transformers' host-side check that a given mask is all ones (a device sync per encoder;
                after it an all-ones mask is dropped, so sdpa's kernels are the same either way).
            token_type_ids `(B, T)`: segment ids (default: all 0).
        """
        config = self.config
        masked = labels != IGNORE_INDEX
        original_ids = torch.where(masked, labels, input_ids)
        positions, weights = select_masked_positions(masked, config.max_predictions_per_seq)
        targets = original_ids.gather(1, positions)

        # 1. Generator: hidden states everywhere, vocabulary logits only where they are needed.
        generator_logits = self.generator_logits(input_ids, positions, attention_mask, token_type_ids)
        # = F.cross_entropy, which also returns the probabilities for the sampling below.
        token_losses, probabilities = cross_entropy_with_probabilities(
            generator_logits.float().flatten(0, 1), targets.flatten()
        )
        generator_loss = masked_mean(token_losses.view_as(targets), weights)
        output = ElectraPretrainingOutput(
            loss=config.generator_loss_weight * generator_loss, generator_loss=generator_loss,
            masked_positions=positions, masked_weights=weights, generator_logits=generator_logits,
        )
        if config.compute_metrics:
            output.generator_accuracy = masked_mean(generator_correct(generator_logits, targets).float(), weights)
        if config.objective == "mlm":
            return output

        # 2. Replace the masked tokens by generator samples (not differentiated: ELECTRA is not a GAN).
        samples = torch.where(weights, self.sample(generator_logits, probabilities), targets)
        discriminator_input_ids = original_ids.scatter(1, positions, samples)
        replaced = (discriminator_input_ids != original_ids).long()  # masked & sample != original

        # 3. Discriminator: is each token original or replaced?
        discriminator_logits = self.discriminator_logits(discriminator_input_ids, attention_mask, token_type_ids)
        token_bce = F.binary_cross_entropy_with_logits(discriminator_logits.float(), replaced.float(), reduction="none")
        discriminator_loss = token_bce.mean() if attention_mask is None else masked_mean(token_bce, attention_mask)

        output.loss = output.loss + config.discriminator_loss_weight * discriminator_loss
        output.discriminator_loss = discriminator_loss
        output.discriminator_input_ids, output.replaced_labels = discriminator_input_ids, replaced
        output.discriminator_logits = discriminator_logits
        if config.compute_metrics:
            output.discriminator_accuracy, output.discriminator_precision, output.discriminator_recall = (
                discriminator_metrics(discriminator_logits, replaced, attention_mask)
            )
        return output

    def generator_logits(self, input_ids, positions, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """`(B, N, V)` vocabulary logits of the generator at `positions` `(B, N)` only."""
        return self.backbone.generator_logits(self.generator, input_ids, positions, attention_mask, token_type_ids)

    def sample(self, generator_logits: torch.Tensor, probabilities: torch.Tensor) -> torch.LongTensor:
        """Replacement tokens drawn from the generator's softmax, without gradient. `probabilities`
        are the loss's softmax of the same logits (reused at temperature 1)."""
        config = self.config
        if config.sampling_method == "gumbel":  # the official algorithm
            return gumbel_sample(generator_logits, config.sampling_temperature)
        if config.sampling_temperature == 1.0:
            return categorical_sample(probabilities.view_as(generator_logits), probabilities=True)
        return categorical_sample(generator_logits.detach().float() / config.sampling_temperature)

    def discriminator_logits(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """`(B, T)` replaced-token logits (GDES: the word table is sg(shared) + the delta)."""
        embeddings = F.embedding(input_ids, self.discriminator_word_embedding_matrix()) if self.uses_gdes else None
        return self.backbone.discriminator_logits(self.discriminator, self.discriminator_head,
                                                  None if self.uses_gdes else input_ids, embeddings,
                                                  attention_mask, token_type_ids)


def generator_correct(logits: torch.Tensor, targets: torch.LongTensor) -> torch.BoolTensor:
    """Where the target is the generator's most likely token (argmax; the statistic training and
    evaluation both report as generator accuracy). `(..., V)`, `(...)` → `(...)`."""
    with torch.no_grad():
        return logits.detach().argmax(dim=-1) == targets


def discriminator_metrics(
    logits: torch.Tensor, replaced: torch.Tensor, attention_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accuracy over non-pad tokens, and precision/recall of the "replaced" class. `(B, T)` inputs."""
    with torch.no_grad():
        valid = torch.ones_like(replaced, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
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
