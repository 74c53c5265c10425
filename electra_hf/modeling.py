"""The ELECTRA pre-training model: a generator and a discriminator with shared embeddings.

`ElectraForRTDPretraining` holds a `transformers.ElectraForMaskedLM` (the generator) and a
`transformers.ElectraForPreTraining` (the discriminator). Embedding sharing is declared through
transformers' tied-weights mechanism (`_tied_weights_keys`), so `save_pretrained` /
`from_pretrained` keep the tie and nothing is silently dropped from the checkpoint.

One training step, as the official implementation does it (see `forward`):

    generator(masked ids) → hidden states → logits at the masked positions only → MLM loss
    → sample from the generator (fp32, no gradient) → corrupted sequence, replaced labels
    → discriminator(corrupted) → per-token logits → BCE over non-padding tokens
    loss = generator_loss_weight · MLM + discriminator_loss_weight · BCE
"""

from __future__ import annotations

import ctypes
import math
import platform
import sys
from dataclasses import dataclass

import numpy as np
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
from transformers.models.electra.modeling_electra import (
    ElectraEmbeddings,
    ElectraLayer,
    ElectraOutput,
    ElectraSelfAttention,
    ElectraSelfOutput,
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
        # Out of place: with an in-place `neg_()` on this (view of a) gathered output, torch.compile
        # in torch 2.11 cut the losses off the Function, and a whole-model compile trained the
        # generator with an all-zero gradient (tests/test_sampling.py; benchmarks/check_compiled_gradients.py).
        losses = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1).neg()
        probabilities = log_probs.exp_()  # log_probs is not needed any more
        ctx.save_for_backward(probabilities, targets)
        ctx.mark_non_differentiable(probabilities)
        # No (N, V) zero gradient for the non-differentiable probabilities in eager autograd. (Dynamo
        # traces the backward with materialised gradients anyway, and does not trace this private flag.)
        if not torch.compiler.is_compiling():
            ctx._materialize_non_diff_grads = False
        return losses, probabilities

    @staticmethod
    def backward(ctx, grad_losses, grad_probabilities):
        probabilities, targets = ctx.saved_tensors
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


# --- dropout on the CPU -----------------------------------------------------------------------
# torch's CPU dropout draws one fp32 uniform per element from a single-threaded Mersenne Twister
# (`bernoulli_`, ~10 ns per element), then applies the mask in two more passes; an ELECTRA-Small
# step drops ~63M activations (hidden states and attention probabilities of both networks), which
# took ~0.7 s of a ~3.5 s step. Here the random bits come from numpy's SFC64 generator (raw 64-bit
# output, ~0.35 ns per byte), seeded by one draw from torch's default CPU generator — so
# `torch.manual_seed` makes runs reproducible and activation checkpointing's RNG-state replay
# regenerates the same masks — and the mask is one fp32 tensor holding 0 or 1/(1 - p) (one
# multiply forward, one backward).
# Random bits are what the mask costs, so each element gets one byte, not a 32-bit uniform: an
# element is dropped iff U < p for a uniform U whose binary expansion is read byte by byte. The
# first byte b decides unless it equals floor(256·p) (probability 1/256): b < floor(256·p) drops,
# b > floor(256·p) keeps, and a tie reads 32 more bits of U (from a second SFC64 stream, in
# element order). The drop probability is p to within 2⁻⁴¹ (torch's own float path resolves p to
# 2⁻²⁴), for ~8.1 random bits per element. Used for fp32/fp64 CPU tensors (under torch.compile
# through a custom op, below); accelerators keep torch's fused dropout kernels.


def _draw_seed() -> torch.Tensor:
    """One int64 from torch's default CPU generator (inside torch.compile: from inductor's)."""
    return torch.randint(0, 2**62, (), dtype=torch.int64)


# Elements per chunk of the mask generator: a chunk's bytes and comparison results (256 KiB each)
# are still in cache when they are used, instead of mask-sized buffers going through memory.
_MASK_CHUNK = 1 << 18


_KERNEL_NOT_LOADED = object()
# `cpu_kernels.sfc64_dropout_bytes`, loaded on the first CPU mask (numba's import takes ~0.3 s, which
# GPU and inference users need not pay); None where numba is not installed.
sfc64_dropout_bytes = _KERNEL_NOT_LOADED


def dropout_kernel():
    """The compiled mask kernel, importing numba on first use; None without numba (numpy path)."""
    global sfc64_dropout_bytes
    if sfc64_dropout_bytes is _KERNEL_NOT_LOADED:
        from .cpu_kernels import sfc64_dropout_bytes as kernel  # None there when numba is missing

        sfc64_dropout_bytes = kernel
    return sfc64_dropout_bytes


def dropout_byte_thresholds(p: float) -> tuple[int, int]:
    """(first-byte threshold k, tie threshold t) for dropping with probability `p` ∈ (0, 1):
    drop iff byte < k, or byte == k and a uniform uint32 < t."""
    level = p * 256.0  # exact in binary floating point
    first_byte = math.floor(level)
    return first_byte, min(int(round((level - first_byte) * 2**32)), 2**32)


def dropout_scale_mask(shape: torch.Size, p: float, dtype: torch.dtype = torch.float32, seed: int | None = None) -> torch.Tensor:
    """A CPU dropout mask: 1/(1 - p) with probability 1 - p, else 0 (see the comment above).

    `seed` (default: drawn from torch's generator) seeds the two SFC64 streams (bytes, tie bits);
    the mask is a pure function of (seed, shape, p). The first bytes come from a compiled kernel
    (`cpu_kernels`, numba) or, without numba, from numpy chunk by chunk: the same stream in the
    same order, so both give the same mask."""
    if seed is None:
        seed = int(_draw_seed())
    numel = math.prod(shape)
    first_byte, tie_threshold = dropout_byte_thresholds(p)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    scale = np_dtype(1.0 / (1.0 - p))
    mask = np.empty(numel, dtype=np_dtype)
    byte_stream = np.random.SFC64(int(seed))
    ties = None
    kernel = dropout_kernel()
    if kernel is not None and numel:
        state = np.array(byte_stream.state["state"]["state"], dtype=np.uint64)
        # Expected numel/256 ties; a full buffer (never seen in practice) falls back to numpy.
        tie_buffer = np.empty(numel if numel <= 1 << 16 else numel // 64, dtype=np.int64)
        count = kernel(state, first_byte, scale, mask, tie_buffer)
        if count >= 0:
            ties = tie_buffer[:count]
    if ties is None:
        ties = _numpy_first_bytes(byte_stream, first_byte, scale, mask)
    if ties.size:
        # One 64-bit draw per tie (its upper 32 bits), in element order.
        tie_bits = np.random.SFC64([int(seed), 1]).random_raw(ties.size) >> np.uint64(32)
        mask[ties] = np.where(tie_bits >= tie_threshold, scale, np_dtype(0))
    result = torch.from_numpy(mask).view(shape)
    return result if result.dtype == dtype else result.to(dtype)


def _numpy_first_bytes(byte_stream, first_byte: int, scale, mask: np.ndarray) -> np.ndarray:
    """The numpy path of `dropout_scale_mask`: `mask[i]` = scale iff byte i > `first_byte`, chunk by
    chunk; returns the indices of the ties (bytes equal to `first_byte`), ascending."""
    numel = mask.shape[0]
    kept = np.empty(min(numel, _MASK_CHUNK), dtype=np.bool_)
    tied = np.empty_like(kept)
    ties = []
    for start in range(0, numel, _MASK_CHUNK):  # _MASK_CHUNK is a multiple of 8: whole 64-bit draws
        out = mask[start : start + _MASK_CHUNK]
        size = out.shape[0]
        first_bytes = byte_stream.random_raw((size + 7) // 8).view(np.uint8)[:size]
        np.greater(first_bytes, first_byte, out=kept[:size])
        np.multiply(kept[:size], scale, out=out)
        ties.append(np.flatnonzero(np.equal(first_bytes, first_byte, out=tied[:size])) + start)
    return np.concatenate(ties) if ties else np.empty(0, dtype=np.int64)


class _CPUDropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        mask = dropout_scale_mask(x.shape, p, x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad_output * mask, None


def _define_dropout_mask_op():
    """`electra_hf::dropout_mask(seed, shape, p, dtype)` for torch.compile: inductor calls it as an
    opaque kernel (and fuses the multiplication by the mask into its neighbours) instead of
    lowering dropout to its own per-element Philox generator, which is slower on a CPU. The seed is
    an input drawn by `torch.randint` in the graph, so two dropout sites never share a mask (graph
    CSE keeps distinct random draws apart) and the op is a pure function of its inputs."""
    try:
        @torch.library.custom_op("electra_hf::dropout_mask", mutates_args=(), device_types="cpu")
        def dropout_mask(seed: torch.Tensor, shape: list[int], p: float, dtype: torch.dtype) -> torch.Tensor:
            return dropout_scale_mask(torch.Size(shape), p, dtype, seed=int(seed))

        @dropout_mask.register_fake
        def _(seed, shape, p, dtype):
            return torch.empty(shape, dtype=dtype, device=seed.device)

        return dropout_mask
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None  # an older torch: compiled graphs keep torch's dropout


_DROPOUT_MASK_OP = _define_dropout_mask_op()


def _fast_cpu_dropout_applies(x: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return False
    return _DROPOUT_MASK_OP is not None or not torch.compiler.is_compiling()


def cpu_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`F.dropout(x, p, training)` with a cheaper random number generator on the CPU (same distribution)."""
    if not training or p == 0.0:
        return x
    if p == 1.0 or not _fast_cpu_dropout_applies(x):
        return F.dropout(x, p, training)
    if torch.compiler.is_compiling():
        return x * _DROPOUT_MASK_OP(_draw_seed(), list(x.shape), p, x.dtype)
    return _CPUDropoutFunction.apply(x, p)


class _CPUDropoutAddFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, residual: torch.Tensor, p: float) -> torch.Tensor:
        mask = dropout_scale_mask(x.shape, p, x.dtype)
        ctx.save_for_backward(mask)
        return torch.addcmul(residual, x, mask)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (mask,) = ctx.saved_tensors
        return grad_output * mask, grad_output, None


def cpu_dropout_add(x: torch.Tensor, residual: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """`residual + cpu_dropout(x, p, training)`; on the CPU in one pass (`addcmul`) instead of two."""
    if not training or p == 0.0 or p == 1.0 or not _fast_cpu_dropout_applies(x) or torch.compiler.is_compiling():
        return residual + cpu_dropout(x, p, training)  # inductor fuses the addition itself
    return _CPUDropoutAddFunction.apply(x, residual, p)


class FastCPUDropout(nn.Dropout):
    """`nn.Dropout` whose CPU path uses `cpu_dropout` (same distribution, several times cheaper); elsewhere unchanged."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(input)
        return cpu_dropout(input, self.p, self.training)


class _SplitHeads(torch.autograd.Function):
    """`(B, T, 3, heads, d)` projections + bias `(3·heads·d,)` → contiguous queries, keys, values
    `(B, heads, T, d)` each.

    One pass each way: the bias is added while copying into the head-major layout (so the
    projection is a plain matmul, without `addmm`'s copy of the broadcast bias into its output),
    and the backward writes the three gradients straight into the projection's layout.
    (`permute(...).contiguous().unbind(0)` first stacks the three gradients into a new tensor.)
    """

    @staticmethod
    def forward(ctx, projected: torch.Tensor, bias: torch.Tensor):
        batch, length, _, heads, head_size = projected.shape
        split = projected.new_empty(3, batch, heads, length, head_size)
        torch.add(projected.permute(2, 0, 3, 1, 4), bias.view(3, 1, heads, 1, head_size), out=split)
        return split[0], split[1], split[2]

    @staticmethod
    def backward(ctx, *grads):
        like = next(g for g in grads if g is not None)
        batch, heads, length, head_size = like.shape
        grad = like.new_empty(batch, length, 3, heads, head_size)
        for index, part in enumerate(grads):
            target = grad[:, :, index].transpose(1, 2)  # (B, heads, T, d) view
            if part is None:
                target.zero_()
            else:
                target.copy_(part)
        return grad, grad.view(batch * length, -1).sum(0)


class _FastCPUDropoutSelfAttention(ElectraSelfAttention):
    """transformers' `ElectraSelfAttention`, whose training-mode CPU path applies attention dropout
    with `cpu_dropout`.

    With dropout, `scaled_dot_product_attention` on a CPU falls back to its math path anyway
    (matmul, softmax, `bernoulli_` dropout, matmul); this is the same computation with the cheaper
    dropout (also under torch.compile, through `electra_hf::dropout_mask`), one projection for
    queries, keys and values (the three `nn.Linear` parameters are concatenated per call, so state
    dicts do not change) and one pass into the head-major layout (`_SplitHeads`). Evaluation,
    accelerators, returned attention weights and KV caches go to transformers' own forward (sdpa /
    eager as configured).
    """

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, **kwargs):
        p = self.dropout.p if self.training else 0.0
        if (
            p == 0.0
            or past_key_values is not None
            or kwargs.get("output_attentions")
            or not _fast_cpu_dropout_applies(hidden_states)
        ):
            return super().forward(hidden_states, attention_mask, past_key_values, **kwargs)
        batch, length = hidden_states.shape[:2]
        heads, head_size = self.num_attention_heads, self.attention_head_size
        # Queries, keys and values from one projection: one GEMM forward and one per gradient, and no
        # sum of three input gradients. The 1/sqrt(d) scaling is folded into the (H, H) query weights
        # instead of a pass over the (B, T, H) queries or the (B, heads, T, T) scores.
        weight = torch.cat((self.query.weight * self.scaling, self.key.weight, self.value.weight))
        bias = torch.cat((self.query.bias * self.scaling, self.key.bias, self.value.bias))
        projected = F.linear(hidden_states, weight).view(batch, length, 3, heads, head_size)
        query, key, value = _SplitHeads.apply(projected, bias)
        scores = torch.matmul(query, key.transpose(2, 3))
        if attention_mask is not None:
            if attention_mask.dtype == torch.bool:  # sdpa-style mask: True = attend
                scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
            else:  # eager-style additive mask
                scores = scores + attention_mask
        probs = cpu_dropout(F.softmax(scores, dim=-1), p)
        context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, length, heads * head_size)
        return context, probs


class _FastCPUDropoutResidualOutput(nn.Module):
    """The forward of transformers' `ElectraSelfOutput` and `ElectraOutput` (dense, dropout, residual,
    LayerNorm) with the dropout and the residual addition in one pass on the CPU. A mixin: the
    installed classes are `(_FastCPUDropoutResidualOutput, ElectraSelfOutput)` and
    `(_FastCPUDropoutResidualOutput, ElectraOutput)`."""

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dense(hidden_states)
        return self.LayerNorm(cpu_dropout_add(hidden_states, input_tensor, self.dropout.p, self.training))


class _FastCPUDropoutSelfOutput(_FastCPUDropoutResidualOutput, ElectraSelfOutput):
    pass


class _FastCPUDropoutOutput(_FastCPUDropoutResidualOutput, ElectraOutput):
    pass


_FAST_CPU_DROPOUT_CLASSES = {
    ElectraSelfAttention: _FastCPUDropoutSelfAttention,
    ElectraSelfOutput: _FastCPUDropoutSelfOutput,
    ElectraOutput: _FastCPUDropoutOutput,
}


def install_fast_cpu_dropout(module: nn.Module) -> nn.Module:
    """Make every `nn.Dropout` (and Electra self-attention's dropout) of `module` use `cpu_dropout`.

    Electra's self-attention, `ElectraSelfOutput` and `ElectraOutput` also get training-mode CPU
    forwards that do the same computation with fewer passes (see their classes).

    Parameters, buffers and state dicts are untouched; only the random number generator of
    dropout on CPU tensors changes (not its distribution). Returns `module`.
    """
    for parent in module.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastCPUDropout(child.p, child.inplace))
        if type(parent) in _FAST_CPU_DROPOUT_CLASSES:
            parent.__class__ = _FAST_CPU_DROPOUT_CLASSES[type(parent)]
    return module


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
        install_fast_cpu_dropout(self)
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
        generator_hidden = self.generator.electra(
            input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
        ).last_hidden_state
        generator_logits = self.generator.generator_lm_head(
            self.generator.generator_predictions(gather_positions(generator_hidden, positions))
        )
        # = F.cross_entropy, which also returns the probabilities for the sampling below.
        token_losses, probabilities = cross_entropy_with_probabilities(
            generator_logits.float().flatten(0, 1), targets.flatten()
        )
        generator_loss = masked_mean(token_losses.view_as(targets), weights)

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
        if config.sampling_method == "gumbel":  # the official algorithm, bit for bit in spirit
            sampled = gumbel_sample(generator_logits, config.sampling_temperature)
        elif config.sampling_temperature == 1.0:
            sampled = categorical_sample(probabilities.view_as(generator_logits), probabilities=True)
        else:
            sampled = categorical_sample(generator_logits.detach().float() / config.sampling_temperature)
        samples = torch.where(weights, sampled, targets)
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
        discriminator_loss = token_bce.mean() if attention_mask is None else masked_mean(token_bce, attention_mask)

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
        """Share of masked positions whose target has the highest logit (a tie counts as correct;
        `amax` is ~4× cheaper than `argmax` over a 30k vocabulary on a CPU)."""
        with torch.no_grad():
            logits = logits.detach()
            correct = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) >= logits.amax(dim=-1)
            return masked_mean(correct.float(), weights)


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


def configure_cpu_training(num_threads: int | None = None, keep_freed_memory: bool = True) -> dict:
    """Process-wide settings that make CPU training faster; call once at start-up. Returns what was set.

    - `keep_freed_memory` (Linux/glibc): a training step allocates and frees the same large buffers
      every step (activations, vocabulary-sized logits and their gradients). By default glibc
      serves blocks above a size threshold with fresh `mmap`s and returns freed memory to the
      kernel, so every step page-faults a few hundred MB back in (~0.2–0.3 s of kernel time per
      ELECTRA-Small step on 2 cores). Raising the mmap threshold to 1 GiB and disabling heap
      trimming keeps freed blocks for reuse: the resident set stays at its high-water mark (which
      it reaches anyway) and steady-state steps page-fault almost never.
    - `num_threads`: `torch.set_num_threads` (torch's default, the number of physical cores, is
      right for a dedicated machine; DataLoader workers use one thread each).
    """
    applied: dict = {}
    if num_threads is not None:
        torch.set_num_threads(num_threads)
        applied["num_threads"] = num_threads
    if keep_freed_memory and sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = libc.mallopt(m_mmap_threshold, ctypes.c_int(2**30)) == 1
            ok = libc.mallopt(m_trim_threshold, ctypes.c_int(2**31 - 1)) == 1 and ok
            applied["glibc_keep_freed_memory"] = ok
        except (OSError, AttributeError):
            applied["glibc_keep_freed_memory"] = False
    return applied


def compile_for_training(model: nn.Module, scope: str = "layers", **compile_kwargs) -> nn.Module:
    """`torch.compile` for pre-training; returns the model to call (like `torch.compile`).

    scope="layers" (default): compile every transformer layer and embedding block of both networks
    in place. The 12 layers of a network share one compiled graph (same code and shapes), so
    compiling takes about a minute on a small CPU instead of many, and the vocabulary head, the
    sampling and the losses stay in eager mode, where they are already efficient. On a CPU inductor
    fuses layer norms, GELU, softmax, bias additions, residuals and the dropout multiplications
    into C++ kernels; dropout masks come from `electra_hf::dropout_mask` (same generator as eager).
    scope="model": `torch.compile(model)` as a whole (a much longer compile; on a CPU its fused
    vocabulary-sized kernels were slower than eager's in our measurements).
    Pre-training batches are packed to one length, so shapes are static (`dynamic=False`).
    `compile_kwargs` go to `torch.compile`.
    """
    compile_kwargs.setdefault("dynamic", False)
    if scope == "model":
        return torch.compile(model, **compile_kwargs)
    if scope != "layers":
        raise ValueError(f"scope must be 'layers' or 'model', got {scope!r}")
    for module in model.modules():
        if isinstance(module, (ElectraLayer, ElectraEmbeddings)):
            module.compile(**compile_kwargs)
    return model


AutoModel.register(ElectraPretrainingConfig, ElectraForRTDPretraining)
# So that a Hub copy carries the code and loads with trust_remote_code=True.
ElectraPretrainingConfig.register_for_auto_class()
ElectraForRTDPretraining.register_for_auto_class("AutoModel")
