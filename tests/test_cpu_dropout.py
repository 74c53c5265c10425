"""The CPU dropout of electra_hf.modeling: same distribution as torch's, reproducible, cheaper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from transformers import ElectraConfig
from transformers.models.electra.modeling_electra import ElectraSelfAttention

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
    # The same bits as one draw of the whole stream: uniform int32s, kept iff >= p·2³² - 2³¹.
    numel = shape.numel()
    bits = np.random.SFC64(123).random_raw((numel + 1) // 2).view(np.int32)[:numel]
    expected = torch.from_numpy(bits >= -(2**31) + round(p * 2**32)).view(shape) * (1 / (1 - p))
    assert torch.equal(mask, expected.float())


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
    assert all(type(m) is not ElectraSelfAttention for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_training_attention_path_equals_transformers_attention(attn):
    """With a dropout probability so small that every position is kept (threshold = -2³¹), the
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
