"""The CPU dropout of electra_hf.modeling: same distribution as torch's, reproducible, cheaper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import ElectraConfig
from transformers.models.electra.modeling_electra import ElectraOutput, ElectraSelfAttention, ElectraSelfOutput

from electra_hf import modeling
from electra_hf.modeling import FastCPUDropout, cpu_dropout, dropout_scale_mask, install_fast_cpu_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("shape", [(7,), (3, 1001), (2, modeling._MASK_CHUNK + 13)])
def test_mask_values_and_keep_rate(p, shape):
    mask = dropout_scale_mask(torch.Size(shape), p, seed=11)
    assert mask.shape == shape and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) <= {0.0, torch.tensor(1 / (1 - p), dtype=torch.float32).item()}
    n = mask.numel()
    kept = int((mask > 0).sum())
    # Binomial(n, 1 - p): within 5 standard deviations (fails with probability < 1e-6).
    assert abs(kept - n * (1 - p)) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_mask_is_a_pure_function_of_seed_and_chunking_does_not_change_it():
    shape = torch.Size((3, modeling._MASK_CHUNK + 5))  # several chunks, the last one odd-sized
    p = 0.1
    mask = dropout_scale_mask(shape, p, seed=123)
    assert torch.equal(mask, dropout_scale_mask(shape, p, seed=123))
    assert not torch.equal(mask, dropout_scale_mask(shape, p, seed=124))
    # The same bits as one draw of each whole stream: a byte per element decides unless it equals
    # floor(256·p) = 25; those ties read the upper 32 bits of one 64-bit draw each, in element order.
    numel = shape.numel()
    first_bytes = np.random.SFC64(123).random_raw((numel + 7) // 8).view(np.uint8)[:numel]
    ties = np.flatnonzero(first_bytes == 25)
    assert 0.5 * numel / 256 < ties.size < 2 * numel / 256  # the tie path is exercised
    tie_bits = np.random.SFC64([123, 1]).random_raw(ties.size) >> np.uint64(32)
    kept = first_bytes > 25
    kept[ties] = tie_bits >= round(0.6 * 2**32)
    expected = torch.from_numpy(kept).view(shape) * torch.tensor(1 / (1 - p), dtype=torch.float32)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("p", [0.1, 0.25, 1 / 3, 1e-12, 0.999])
def test_byte_thresholds_give_p_exactly(p):
    """P(drop) = k/256 + t/2⁴⁰ (k = first-byte threshold, t = tie threshold) equals p to 2⁻⁴¹."""
    first_byte, tie_threshold = modeling.dropout_byte_thresholds(p)
    assert 0 <= first_byte < 256 and 0 <= tie_threshold <= 2**32
    from fractions import Fraction

    drop = Fraction(first_byte, 256) + Fraction(tie_threshold, 2**40)
    assert abs(drop - Fraction(p)) <= Fraction(1, 2**41)


def test_mask_keep_rate_with_ties_only():
    """p = 25.5/256: half of the tie bytes must be dropped; a precise check of the tie path."""
    p = 25.5 / 256
    mask = dropout_scale_mask(torch.Size((4_000_000,)), p, seed=7)
    dropped = int((mask == 0).sum())
    n = mask.numel()
    assert abs(dropped - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    first_bytes = np.random.SFC64(7).random_raw(n // 8).view(np.uint8)
    tie_dropped = int((mask.numpy()[first_bytes == 25] == 0).sum())
    ties = int((first_bytes == 25).sum())
    assert abs(tie_dropped - ties / 2) <= 5 * math.sqrt(ties / 4)


def test_float64_mask():
    mask = dropout_scale_mask(torch.Size((4, 50)), 0.25, dtype=torch.float64, seed=3)
    assert mask.dtype == torch.float64
    assert set(torch.unique(mask).tolist()) <= {0.0, 1 / 0.75}


def test_cpu_dropout_is_reproducible_and_its_gradient_uses_the_same_mask():
    x = torch.randn(64, 300, requires_grad=True)
    torch.manual_seed(0)
    out = cpu_dropout(x, 0.2)
    torch.manual_seed(0)
    assert torch.equal(out, cpu_dropout(x, 0.2))
    mask = torch.where(out != 0, out / x, torch.zeros_like(out)).detach()
    assert set(torch.unique(mask.round(decimals=4)).tolist()) <= {0.0, 1.25}
    (out * 3).sum().backward()
    torch.testing.assert_close(x.grad, 3 * mask)
    assert torch.equal(cpu_dropout(x, 0.2, training=False), x) and torch.equal(cpu_dropout(x, 0.0), x)


def test_install_replaces_dropout_and_attention_without_touching_parameters():
    config = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32)
    from transformers import ElectraForPreTraining

    model = ElectraForPreTraining(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    install_fast_cpu_dropout(model)
    assert not any(type(m) is nn.Dropout for m in model.modules())
    assert any(isinstance(m, FastCPUDropout) for m in model.modules())
    assert all(type(m) not in (ElectraSelfAttention, ElectraSelfOutput, ElectraOutput) for m in model.modules())
    assert isinstance(model.electra.encoder.layer[0].output, ElectraOutput)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_training_attention_path_equals_transformers_attention(attn):
    """With a dropout probability so small that every position is kept (a first byte of 0 then reads
    32 more bits, which drop only if all are 0: probability 2⁻³² per tie), the
    training-mode CPU path (own math, cheap dropout) must equal transformers' own attention."""
    config = ElectraConfig(hidden_size=32, num_attention_heads=4, attention_probs_dropout_prob=1e-12,
                           hidden_dropout_prob=0.0)
    config._attn_implementation = attn
    torch.manual_seed(0)
    attention = ElectraSelfAttention(config)
    install_fast_cpu_dropout(attention)
    hidden = torch.randn(3, 10, 32)
    mask = torch.ones(3, 1, 10, 10, dtype=torch.bool)
    mask[1, :, :, 7:] = False  # padding in the second row
    additive = torch.zeros(3, 1, 10, 10).masked_fill(~mask, torch.finfo(torch.float32).min)
    reference_mask = mask if attn == "sdpa" else additive
    attention.eval()
    expected, _ = attention(hidden, attention_mask=reference_mask)
    attention.train()
    got, probs = attention(hidden, attention_mask=reference_mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert probs.shape == (3, 4, 10, 10)
    assert torch.all(probs[1, :, :, 7:] == 0)
    got_additive, _ = attention(hidden, attention_mask=additive)  # both mask styles are understood
    torch.testing.assert_close(got_additive, expected, rtol=1e-5, atol=1e-6)

    # Same gradients for the input and every parameter (fused projection, split heads, scaling).
    upstream = torch.randn_like(expected)

    def gradients(training: bool):
        attention.train(training)
        attention.zero_grad()
        inputs = hidden.clone().requires_grad_()
        (attention(inputs, attention_mask=reference_mask)[0] * upstream).sum().backward()
        return [inputs.grad] + [parameter.grad.clone() for parameter in attention.parameters()]

    for got_grad, expected_grad in zip(gradients(True), gradients(False)):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module_class", [ElectraSelfOutput, ElectraOutput])
def test_residual_outputs_drop_then_add_like_transformers(module_class):
    """dense → dropout → + residual → LayerNorm, with the dropout and the addition in one pass:
    the same values and gradients as transformers' module given the same mask."""
    config = ElectraConfig(hidden_size=16, intermediate_size=24, hidden_dropout_prob=0.3)
    torch.manual_seed(0)
    reference = module_class(config)
    fast = install_fast_cpu_dropout(module_class(config))
    fast.load_state_dict(reference.state_dict())
    inputs = torch.randn(3, 5, 24 if module_class is ElectraOutput else 16, requires_grad=True)
    residual = torch.randn(3, 5, 16, requires_grad=True)
    upstream = torch.randn(3, 5, 16)

    torch.manual_seed(7)
    got = fast(inputs, residual)
    (got * upstream).sum().backward()
    got_grads = [inputs.grad.clone(), residual.grad.clone(), fast.dense.weight.grad.clone()]
    torch.manual_seed(7)  # the mask the fast module drew
    mask = dropout_scale_mask(torch.Size((3, 5, 16)), 0.3)
    assert 0 < int((mask == 0).sum()) < mask.numel()

    inputs.grad = residual.grad = None
    expected = reference.LayerNorm(reference.dense(inputs) * mask + residual)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for got_grad, expected_grad in zip(got_grads, [inputs.grad, residual.grad, reference.dense.weight.grad]):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-5, atol=1e-6)
    fast.eval()
    reference.eval()
    torch.testing.assert_close(fast(inputs, residual), reference(inputs, residual))


@pytest.mark.skipif(modeling.dropout_kernel() is None, reason="numba is not installed")
@pytest.mark.parametrize("numel", [1, 7, 8, 1001, modeling._MASK_CHUNK * 2 + 13])
@pytest.mark.parametrize("p", [0.1, 0.5, 25 / 256])
def test_compiled_kernel_gives_the_numpy_mask(numel, p, monkeypatch):
    compiled = dropout_scale_mask(torch.Size((numel,)), p, seed=99)
    monkeypatch.setattr(modeling, "sfc64_dropout_bytes", None)
    assert torch.equal(compiled, dropout_scale_mask(torch.Size((numel,)), p, seed=99))


@pytest.mark.skipif(modeling.dropout_kernel() is None, reason="numba is not installed")
def test_compiled_kernel_reports_a_full_tie_buffer_and_replays_sfc64():
    state = np.array(np.random.SFC64(5).state["state"]["state"], dtype=np.uint64)
    out = np.empty(4096, dtype=np.float32)
    assert modeling.dropout_kernel()(state.copy(), 25, np.float32(2.0), out, np.empty(1, np.int64)) == -1
    ties = np.empty(4096, dtype=np.int64)
    count = modeling.dropout_kernel()(state, 25, np.float32(2.0), out, ties)
    first_bytes = np.random.SFC64(5).random_raw(512).view(np.uint8)
    assert np.array_equal(out, np.where(first_bytes > 25, 2.0, 0.0).astype(np.float32))
    assert np.array_equal(ties[:count], np.flatnonzero(first_bytes == 25))
    # The state advanced exactly as numpy's generator does after 512 draws.
    reference = np.random.SFC64(5)
    reference.random_raw(512)
    assert np.array_equal(state, np.array(reference.state["state"]["state"], dtype=np.uint64))
