"""Tests of electra_hf.optimization: ElectraAdamW, parameter groups, layer-wise LR decay, schedules."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

from electra_hf.optimization import (
    ElectraAdamW,
    build_scheduler,
    get_official_schedule,
    layer_depth,
    layerwise_lr_parameter_groups,
    official_schedule_factor,
    parameter_groups,
)


class _Toy(nn.Module):
    """Linear → LayerNorm → Linear: decayed weights, non-decayed LayerNorm weight and biases."""

    def __init__(self):
        super().__init__()
        self.dense = nn.Linear(6, 5)
        self.LayerNorm = nn.LayerNorm(5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        return self.out(self.LayerNorm(self.dense(x)))


def _train(model, optimizer, steps, seed=0, skip_first_for=None):
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        x = torch.randn(8, 6, generator=gen)
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        if skip_first_for is not None and step < 2:
            skip_first_for.grad = None  # this parameter joins the optimisation late
        optimizer.step()


# ---------------------------------------------------------------------------- ElectraAdamW
@pytest.mark.parametrize("foreach", [True, False])
def test_bias_correction_true_matches_torch_adamw(foreach):
    torch.manual_seed(0)
    reference = _Toy()
    ours = copy.deepcopy(reference)
    torch_opt = torch.optim.AdamW(parameter_groups(reference, 0.1), lr=3e-3, betas=(0.9, 0.999), eps=1e-6)
    our_opt = ElectraAdamW(parameter_groups(ours, 0.1), lr=3e-3, eps=1e-6, bias_correction=True, foreach=foreach)
    _train(reference, torch_opt, 15)
    _train(ours, our_opt, 15)
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_late_joining_parameter_uses_its_own_step_count():
    """Bias correction per parameter: a parameter without gradient for two steps has t = steps − 2."""
    torch.manual_seed(1)
    reference = _Toy()
    ours = copy.deepcopy(reference)
    torch_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, eps=1e-6, weight_decay=0.0)
    our_opt = ElectraAdamW(ours.parameters(), lr=1e-2, bias_correction=True)
    _train(reference, torch_opt, 6, skip_first_for=reference.out.weight)
    _train(ours, our_opt, 6, skip_first_for=ours.out.weight)
    torch.testing.assert_close(ours.out.weight, reference.out.weight, rtol=0, atol=1e-7)
    assert our_opt.state[ours.out.weight]["step"].item() == 4
    assert our_opt.state[ours.dense.weight]["step"].item() == 6


KERNELS = {"fused": dict(fused=True), "foreach": dict(foreach=True), "single_tensor": dict(foreach=False)}
UPSTREAM_CHANGE = ("torch.optim.AdamW no longer treats an infinite step count as 'no bias correction' "
                   "(1 - beta**inf == 1): ElectraAdamW relies on it for the official ELECTRA update")


@pytest.mark.parametrize("kernel", sorted(KERNELS))
def test_official_update_without_bias_correction_by_hand(kernel):
    """Canary: ElectraAdamW is torch.optim.AdamW with infinite step counts; this fails, naming the
    upstream change, if torch's AdamW stops giving the official update that way."""
    kernel_args = KERNELS[kernel]
    p = nn.Parameter(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64))
    grads = [torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), torch.tensor([-0.4, 0.5, 0.0], dtype=torch.float64)]
    lr, wd, b1, b2, eps = 0.1, 0.01, 0.9, 0.999, 1e-6
    opt = ElectraAdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, bias_correction=False, **kernel_args)
    expected = p.detach().clone()
    m = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    for g in grads:
        p.grad = g.clone()
        opt.step()
        # official AdamWeightDecayOptimizer: update = m/(sqrt(v)+eps) + wd·p ; p -= lr·update
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        expected = expected - lr * (m / (v.sqrt() + eps) + wd * expected)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-12, msg=lambda m: f"{UPSTREAM_CHANGE}\n{m}")
    # Without bias correction the first step is (1 − b1) = 10× smaller than Adam's ±lr.
    q = nn.Parameter(torch.tensor([0.0], dtype=torch.float64))
    q.grad = torch.tensor([1.0], dtype=torch.float64)
    ElectraAdamW([q], lr=1.0, eps=0.0, bias_correction=False, **kernel_args).step()
    assert q.item() == pytest.approx(-(1 - b1) / math.sqrt(1 - b2)), UPSTREAM_CHANGE


def test_state_dict_roundtrip_resumes_identically():
    torch.manual_seed(2)
    straight = _Toy()
    resumed = copy.deepcopy(straight)
    opt = ElectraAdamW(parameter_groups(straight, 0.01), lr=1e-2)
    _train(straight, opt, 3, seed=5)
    opt_a = ElectraAdamW(parameter_groups(resumed, 0.01), lr=1e-2)
    _train(resumed, opt_a, 3, seed=5)
    saved = copy.deepcopy(opt_a.state_dict())
    opt_b = ElectraAdamW(parameter_groups(resumed, 0.01), lr=1e-2)
    opt_b.load_state_dict(saved)
    assert opt_b.param_groups[0]["bias_correction"] is False
    assert all(state["step"].item() == math.inf for state in opt_b.state.values())
    _train(straight, opt, 2, seed=6)
    _train(resumed, opt_b, 2, seed=6)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_accelerate_save_state_and_load_state(tmp_path):
    from accelerate import Accelerator

    torch.manual_seed(3)
    model = _Toy()
    accelerator = Accelerator(cpu=True)
    optimizer = ElectraAdamW(parameter_groups(model, 0.01), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    _train(model, optimizer, 2)
    accelerator.save_state(str(tmp_path / "ckpt"))
    saved_m = {k: v.clone() for k, v in optimizer.optimizer.state[model.dense.weight].items()}
    _train(model, optimizer, 1)  # move away, then restore
    accelerator.load_state(str(tmp_path / "ckpt"))
    state = optimizer.optimizer.state[model.dense.weight]
    assert state["step"].item() == math.inf  # no bias correction: the official update
    torch.testing.assert_close(state["exp_avg"], saved_m["exp_avg"])
    torch.testing.assert_close(state["exp_avg_sq"], saved_m["exp_avg_sq"])


def test_invalid_hyperparameters_raise():
    p = [nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="learning rate"):
        ElectraAdamW(p, lr=-1)
    with pytest.raises(ValueError, match="beta"):
        ElectraAdamW(p, betas=(1.0, 0.999))


# ---------------------------------------------------------------------------- parameter groups
def test_parameter_groups_exclude_layernorm_and_bias():
    model = _Toy()
    names_by_id = {}
    groups = parameter_groups(model, 0.01)
    for name, param in model.named_parameters():
        names_by_id[id(param)] = name
    decayed = sorted(names_by_id[id(p)] for p in groups[0]["params"])
    not_decayed = sorted(names_by_id[id(p)] for p in groups[1]["params"])
    assert decayed == ["dense.weight", "out.weight"]
    assert not_decayed == ["LayerNorm.bias", "LayerNorm.weight", "dense.bias", "out.bias"]
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0


def _tiny_classifier(num_layers=3, embedding_size=16, hidden_size=32, head="official"):
    from transformers import ElectraConfig, ElectraForSequenceClassification

    from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification

    kwargs = dict(vocab_size=50, embedding_size=embedding_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=2, intermediate_size=64, max_position_embeddings=32, num_labels=3)
    if head == "official":
        return ElectraOfficialHeadForSequenceClassification(ElectraOfficialHeadConfig(**kwargs))
    return ElectraForSequenceClassification(ElectraConfig(**kwargs))


def _expected_exponent(name: str, n: int, off_by_one: bool) -> int:
    """The formula written out independently of the implementation."""
    if name.startswith("electra.embeddings.") or name.startswith("electra.embeddings_project."):
        depth = 0
    elif name.startswith("electra.encoder.layer."):
        depth = int(name.split(".")[3]) + 1
    else:
        depth = n + 1  # classifier (any head)
    exponent = n + 1 - depth
    if off_by_one and depth != n + 1:
        exponent += 1
    return exponent


@pytest.mark.parametrize("off_by_one", [False, True])
@pytest.mark.parametrize("head", ["official", "hf"])
def test_layerwise_lr_per_parameter_equals_formula(off_by_one, head):
    n, lr, decay = 3, 1e-3, 0.8
    model = _tiny_classifier(num_layers=n, head=head)
    groups = layerwise_lr_parameter_groups(model, lr, decay, weight_decay=0.01, official_off_by_one=off_by_one)
    lr_of = {}
    for group in groups:
        for name, param in zip(group["param_names"], group["params"]):
            assert name not in lr_of, f"{name} in two groups"
            lr_of[name] = (group["lr"], group["weight_decay"], group["depth"])
    all_names = [name for name, _ in model.named_parameters()]
    assert sorted(lr_of) == sorted(all_names)
    assert any("embeddings_project" in name for name in all_names)  # embedding 16 ≠ hidden 32
    for name in all_names:
        group_lr, group_wd, _ = lr_of[name]
        assert group_lr == pytest.approx(lr * decay ** _expected_exponent(name, n, off_by_one)), name
        no_decay = "bias" in name or "LayerNorm" in name
        assert group_wd == (0.0 if no_decay else 0.01), name
    # Spot values: head keeps lr; top layer decay (paper) or decay² (official); embeddings decay^(n+1|n+2).
    assert lr_of["classifier.weight" if head == "official" else "classifier.out_proj.weight"][0] == pytest.approx(lr)
    top = lr_of[f"electra.encoder.layer.{n - 1}.attention.self.query.weight"][0]
    assert top == pytest.approx(lr * decay ** (2 if off_by_one else 1))
    emb = lr_of["electra.embeddings.word_embeddings.weight"][0]
    assert emb == pytest.approx(lr * decay ** (n + 2 if off_by_one else n + 1))


def test_layer_depth_of_names():
    assert layer_depth("electra.embeddings.word_embeddings.weight", 12) == 0
    assert layer_depth("electra.embeddings_project.weight", 12) == 0
    assert layer_depth("electra.encoder.layer.0.output.dense.weight", 12) == 1
    assert layer_depth("electra.encoder.layer.11.output.dense.weight", 12) == 12
    assert layer_depth("classifier.weight", 12) == 13
    assert layer_depth("bert.pooler.dense.weight", 12) == 13
    assert layer_depth("deberta.encoder.rel_embeddings.weight", 12) == 0
    assert layer_depth("deberta.encoder.LayerNorm.weight", 12) == 0
    assert layer_depth("deberta.encoder.layer.3.attention.self.query_proj.weight", 12) == 4


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_layer_decay_follows_the_layers_of_other_families(family, tiny_tokenizer):
    """Every layer of another family gets its own rate, below the head's and above the embeddings'."""
    from transformers import AutoModelForSequenceClassification

    from .conftest import tiny_family_config

    config = tiny_family_config(family, vocab_size=len(tiny_tokenizer)).discriminator_config
    config.num_labels = 2
    model = AutoModelForSequenceClassification.from_config(config)
    groups = layerwise_lr_parameter_groups(model, 1.0, 0.8, 0.0)
    scale_of = {name: group["lr_scale"] for group in groups for name in group["param_names"]}
    layers = config.num_hidden_layers
    for name, scale in scale_of.items():
        match = re.search(r"(?:encoder\.layer|layers)\.(\d+)\.", name)
        if match:
            assert scale == pytest.approx(0.8 ** (layers - int(match.group(1)))), name
        elif "embeddings" in name:
            assert scale == pytest.approx(0.8 ** (layers + 1)), name
    assert sum(1 for name in scale_of if re.search(r"(?:encoder\.layer|layers)\.\d+\.", name)) > 0


def test_layer_decay_refuses_a_model_whose_layers_it_cannot_find():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.config = type("Config", (), {"num_hidden_layers": 2})()
    with pytest.raises(ValueError, match="finds none of the 2 layers"):
        layerwise_lr_parameter_groups(model, 1.0, 0.8, 0.0)


def test_layerwise_groups_drive_optimizer_and_schedule():
    model = _tiny_classifier()
    groups = layerwise_lr_parameter_groups(model, 1e-3, 0.5, weight_decay=0.0)
    optimizer = ElectraAdamW(groups, lr=1e-3)
    scheduler = get_official_schedule(optimizer, num_warmup_steps=2, num_training_steps=10)
    optimizer.step()
    scheduler.step()  # step 1: factor 0.9 · 0.5
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(1e-3 * group["lr_scale"] * 0.45)


# ---------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("step, expected", [
    (0, 0.0), (5, 0.5 * 0.95), (10, 0.9), (40, 0.6), (99, 0.01), (100, 0.0), (130, 0.0),
])
def test_official_schedule_values(step, expected):
    assert official_schedule_factor(step, 10, 100) == pytest.approx(expected)
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = get_official_schedule(optimizer, 10, 100)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2.0 * expected)


def test_build_scheduler_names():
    def lr_after(name, steps):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_scheduler(name, optimizer, 10, 100)
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
        return optimizer.param_groups[0]["lr"]

    assert lr_after("electra", 10) == pytest.approx(0.9)  # warm-up and decay overlap
    assert lr_after("linear", 10) == pytest.approx(1.0)  # transformers: peak after warm-up
    assert lr_after("linear", 55) == pytest.approx(0.5)
    assert lr_after("cosine", 100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="Unknown lr scheduler"):
        build_scheduler("no-such-schedule", torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), 1, 10)
