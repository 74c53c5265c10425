"""electra_hf.performance: the CPU attention function, the allocator setting, compiled layers."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModel

from electra_hf.performance import (
    CPU_ATTENTION,
    configure_cpu_training,
    cpu_attention_forward,
    dropout_keep_mask,
    training_attn_implementation,
)

from .conftest import tiny_config


class _Module(torch.nn.Module):
    pass


def _qkv(seed=0, shape=(2, 3, 16, 8)):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator, requires_grad=True) for _ in range(3)]


def test_without_dropout_it_is_transformers_sdpa():
    query, key, value = _qkv()
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[1, :, :, 12:] = False  # padding in the second row
    module = _Module().train()
    ours, _ = cpu_attention_forward(module, query, key, value, mask, scaling=0.3, dropout=0.0)
    reference = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=0.3)
    torch.testing.assert_close(ours, reference.transpose(1, 2))


def test_dropout_mask_rate_reproducibility_and_gradient():
    torch.manual_seed(5)
    keep = dropout_keep_mask(torch.Size((400, 1000)), 0.1)
    assert abs(1 - keep.float().mean().item() - 0.1) < 0.003  # 400k draws: σ ≈ 0.0005
    torch.manual_seed(5)
    assert torch.equal(keep, dropout_keep_mask(torch.Size((400, 1000)), 0.1))
    assert not torch.equal(keep, dropout_keep_mask(torch.Size((400, 1000)), 0.1))  # the stream moves on

    query, key, value = _qkv(1)
    module = _Module().train()
    torch.manual_seed(9)
    output, probabilities = cpu_attention_forward(module, query, key, value, None, dropout=0.25)
    output.sum().backward()
    # The same mask in forward and backward: value's gradient is the kept, rescaled probabilities' column sums.
    expected = (probabilities / 0.75).sum(dim=2).unsqueeze(-1).expand_as(value)
    torch.testing.assert_close(value.grad, expected)
    dropped = (probabilities == 0).float().mean().item()
    assert 0.2 < dropped < 0.3


def test_a_model_trains_with_it_and_matches_sdpa_without_dropout(tiny_tokenizer):
    config = tiny_config()  # dropout 0
    torch.manual_seed(0)
    ours = AutoModel.from_config(config, attn_implementation=training_attn_implementation(None, on_cpu=True))
    reference = AutoModel.from_config(copy.deepcopy(config), attn_implementation="sdpa")  # from_config sets it on the config
    reference.load_state_dict(ours.state_dict())
    assert ours.discriminator.config._attn_implementation == CPU_ATTENTION
    ids = torch.randint(5, 96, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[:, 4] = ids[:, 4]
    for model in (ours, reference):
        model.train()
    torch.manual_seed(1)
    a = ours(input_ids=ids, labels=labels)
    torch.manual_seed(1)
    b = reference(input_ids=ids, labels=labels)
    torch.testing.assert_close(a.loss, b.loss)
    assert training_attn_implementation(None, on_cpu=False) == "sdpa"
    assert training_attn_implementation("eager", on_cpu=True) == "eager"


def test_configure_cpu_training_reports_what_it_set():
    applied = configure_cpu_training(num_threads=torch.get_num_threads())
    assert applied["num_threads"] == torch.get_num_threads()
    if "glibc_keep_freed_memory" in applied:
        assert applied["glibc_keep_freed_memory"] is True


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_probability_is_exact_to_2_to_the_minus_17(p):
    torch.manual_seed(0)
    keep = dropout_keep_mask(torch.Size((2_000_000,)), p)
    assert abs((1 - keep.float().mean().item()) - p) < 5 * (p * (1 - p) / 2e6) ** 0.5 + 2**-17


def test_training_compilation_leaves_accumulating_runs_eager_unless_asked():
    from electra_hf.performance import training_compilation

    assert training_compilation(None, torch.device("cuda"), True, accumulating=True) is None
    assert training_compilation(True, torch.device("cuda"), True, accumulating=True) == {"scope": "model"}


@pytest.mark.parametrize("requested, device, single, scope, mode, expected", [
    (None, "cuda", True, None, None, {"scope": "model", "mode": "reduce-overhead"}),  # the one-GPU fast path
    (None, "cuda", False, None, None, None),  # distributed engines stay eager unless asked
    (None, "cpu", True, None, None, None),
    (True, "cpu", True, None, None, {"scope": "layers"}),
    (True, "cuda", False, None, None, {"scope": "model"}),
    (None, "cpu", True, "model", None, {"scope": "model"}),  # a scope or mode given asks to compile
    (None, "cuda", True, "layers", "max-autotune", {"scope": "layers", "mode": "max-autotune"}),
    (False, "cuda", True, None, None, None),
])
def test_training_compilation_chooses_per_device(requested, device, single, scope, mode, expected):
    from electra_hf.performance import training_compilation

    assert training_compilation(requested, torch.device(device), single, scope=scope, mode=mode) == expected
