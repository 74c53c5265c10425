"""Counting the useful FLOPs of a pre-training step (for compute-matched comparisons and MFU).

Matmul FLOPs only (2 per multiply-add), training = forward + backward = 3 × forward, as in the
ELECTRA paper's compute accounting and Kaplan et al. Embedding lookups, LayerNorm, softmax and
GELU are not counted (they are not matmuls). The generator's vocabulary projection is counted
only at the masked positions, where the official implementation computes it.
"""

from __future__ import annotations

from transformers import ElectraConfig

TRAINING_MULTIPLIER = 3  # forward + backward (grad wrt activations and weights)


def encoder_forward_flops_per_token(config: ElectraConfig, seq_len: int) -> float:
    """Forward matmul FLOPs per token of an Electra encoder at sequence length `seq_len`."""
    hidden, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    projection = 2 * config.embedding_size * hidden if config.embedding_size != hidden else 0
    per_layer = 8 * hidden * hidden + 4 * hidden * ffn + 4 * seq_len * hidden  # QKVO, FFN, QK^T and AV
    return projection + layers * per_layer


def mlm_head_forward_flops(config: ElectraConfig) -> float:
    """Forward FLOPs of the masked-LM head for ONE predicted position (dense + tied vocab projection)."""
    return 2 * config.hidden_size * config.embedding_size + 2 * config.embedding_size * config.vocab_size


def pretraining_flops_per_sequence(pretraining_config, seq_len: int, num_masked: float) -> dict[str, float]:
    """Training FLOPs of one sequence of `seq_len` tokens with `num_masked` predicted positions.

    Returns the parts (generator, generator head, discriminator, discriminator head) and `total`.
    For the "mlm" objective only the discriminator-sized masked LM is counted.
    """
    disc = pretraining_config.discriminator_config
    if pretraining_config.objective == "mlm":
        parts = {
            "encoder": seq_len * encoder_forward_flops_per_token(disc, seq_len),
            "mlm_head": num_masked * mlm_head_forward_flops(disc),
        }
    else:
        gen = pretraining_config.generator_config
        parts = {
            "generator": seq_len * encoder_forward_flops_per_token(gen, seq_len),
            "generator_head": num_masked * mlm_head_forward_flops(gen),
            "discriminator": seq_len * encoder_forward_flops_per_token(disc, seq_len),
            "discriminator_head": seq_len * (2 * disc.hidden_size * disc.hidden_size + 2 * disc.hidden_size),
        }
    parts = {name: TRAINING_MULTIPLIER * value for name, value in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def pretraining_flops_per_step(pretraining_config, batch_size: int, seq_len: int) -> float:
    """Training FLOPs of one optimizer step of `batch_size` sequences of `seq_len` tokens, with the
    config's `max_predictions_per_seq` predicted positions per sequence (what the generator or the
    masked LM's head computes)."""
    per_sequence = pretraining_flops_per_sequence(pretraining_config, seq_len, pretraining_config.max_predictions_per_seq)
    return batch_size * per_sequence["total"]
