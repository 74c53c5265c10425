"""The generator's sampling and loss helpers: exact distributions and exact gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from electra_hf.modeling import categorical_sample, cross_entropy_with_probabilities


def zipf_log_probs(vocab: int, exponent: float = 1.1, seed: int = 0) -> torch.Tensor:
    """Log-probabilities of a Zipf-like distribution over a shuffled vocabulary `(V,)`, in fp64."""
    ranks = torch.randperm(vocab, generator=torch.Generator().manual_seed(seed)).double() + 1
    weights = ranks ** -exponent
    return (weights / weights.sum()).log()


def goodness_of_fit(samples: torch.Tensor, probabilities: torch.Tensor, top: int = 40, ranges: int = 10) -> float:
    """Chi-square p-value of `samples` against `probabilities (V,)`: the `top` most likely classes one
    by one, the others pooled into `ranges` bins of consecutive ids (so a wrong block or a wrong
    offset inside a block both show)."""
    vocab = probabilities.numel()
    counts = torch.bincount(samples.flatten(), minlength=vocab).double()
    top_classes = probabilities.topk(min(top, vocab)).indices
    rest = torch.ones(vocab, dtype=torch.bool)
    rest[top_classes] = False
    observed = [counts[top_classes]]
    expected = [probabilities[top_classes]]
    for bin_ids in torch.arange(vocab).tensor_split(ranges):
        keep = bin_ids[rest[bin_ids]]
        if keep.numel():
            observed.append(counts[keep].sum().view(1))
            expected.append(probabilities[keep].sum().view(1))
    observed, expected = torch.cat(observed), torch.cat(expected) * samples.numel()
    return float(chisquare(observed.numpy(), expected.numpy() * observed.sum().item() / expected.sum().item()).pvalue)


@pytest.mark.parametrize("vocab, samples", [(3, 20_000), (11, 20_000), (1_000, 40_000), (30_522, 30_000)])
@pytest.mark.parametrize("form", ["log_probs", "log_weights", "probabilities"])
def test_categorical_sample_follows_the_distribution(vocab, samples, form):
    torch.manual_seed(vocab)
    log_probs = zipf_log_probs(vocab, seed=vocab)
    rows = min(samples, 2_000_000 // vocab + 1)  # a (rows, V) matrix per call, a few MB
    drawn = []
    for _ in range(-(-samples // rows)):
        if form == "log_probs":
            drawn.append(categorical_sample(log_probs.float().expand(rows, vocab), normalized=True))
        elif form == "log_weights":  # unnormalised and shifted: the sampler normalises
            drawn.append(categorical_sample((log_probs.float() + 7.0).expand(rows, vocab)))
        else:
            drawn.append(categorical_sample((log_probs.exp() * 3.0).float().expand(rows, vocab), probabilities=True))
    drawn = torch.cat(drawn)[:samples]
    assert drawn.min() >= 0 and drawn.max() < vocab
    assert goodness_of_fit(drawn, log_probs.exp()) > 1e-4


def test_categorical_sample_never_draws_a_zero_probability_class():
    torch.manual_seed(0)
    weights = torch.zeros(5_000, 700)
    weights[:, [3, 255, 256, 699]] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # block edges and the tail block
    drawn = categorical_sample(weights, probabilities=True)
    assert set(drawn.unique().tolist()) == {3, 255, 256, 699}
    frequencies = torch.bincount(drawn, minlength=700)[[3, 255, 256, 699]].double() / drawn.numel()
    torch.testing.assert_close(frequencies, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), atol=0.02, rtol=0)


def test_cross_entropy_with_probabilities_matches_torch():
    torch.manual_seed(0)
    logits = (torch.randn(37, 501) * 4).requires_grad_()
    targets = torch.randint(0, 501, (37,))
    losses, probabilities = cross_entropy_with_probabilities(logits, targets)
    reference_logits = logits.detach().clone().requires_grad_()
    reference = F.cross_entropy(reference_logits, targets, reduction="none")
    torch.testing.assert_close(losses, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(probabilities, reference_logits.softmax(-1).detach(), rtol=1e-6, atol=1e-7)
    assert not probabilities.requires_grad
    upstream = torch.rand(37)  # a weighted mean, as the pre-training loss uses
    (losses * upstream).sum().backward()
    (reference * upstream).sum().backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad, rtol=1e-5, atol=1e-7)


def test_cross_entropy_with_probabilities_under_torch_compile():
    """Traced by torch.compile as one graph (fullgraph), with the eager loss and gradient. With torch
    2.11 and an in-place `neg_()` on the losses, the compiled gradient was all zero: a whole-model
    compile then did not train the generator (seen on an H100, reproduced on the CPU with torch 2.11,
    where this test failed; torch 2.13 traced it correctly either way)."""
    torch.manual_seed(0)
    logits = torch.randn(12, 300, requires_grad=True)
    targets = torch.randint(0, 300, (12,))

    def mean_loss(x):
        losses, probabilities = cross_entropy_with_probabilities(x, targets)
        return losses.mean(), probabilities

    results = []
    for fn in (mean_loss, torch.compile(mean_loss, fullgraph=True, dynamic=False)):
        logits.grad = None
        loss, probabilities = fn(logits)
        loss.backward()
        results.append((loss.detach(), probabilities, logits.grad.clone()))
    expected = torch.nn.functional.cross_entropy(logits, targets)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    for loss, probabilities, grad in results:
        torch.testing.assert_close(loss, expected.detach())
        torch.testing.assert_close(grad, expected_grad)
        torch.testing.assert_close(probabilities, logits.detach().softmax(-1))


def test_cross_entropy_with_probabilities_gradient_is_exact_in_double():
    torch.manual_seed(1)
    logits = torch.randn(4, 9, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 8, 3, 3])
    assert torch.autograd.gradcheck(lambda x: cross_entropy_with_probabilities(x, targets)[0], (logits,))
    # Nothing flows back from the probabilities, and using only them needs no backward at all.
    _, probabilities = cross_entropy_with_probabilities(logits, targets)
    assert probabilities.grad_fn is None and np.isclose(probabilities.sum().item(), 4.0)
