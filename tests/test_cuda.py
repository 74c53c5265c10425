"""The pre-training step on a CUDA device: same numbers as the CPU, no host syncs, fused optimizer,
bf16 autocast, compiled paths (losses and gradients equal eager's; the script learns). Skipped where no CUDA device is present (CI has none); run on a GPU
machine with `python -m pytest -q tests/test_cuda.py`."""

from __future__ import annotations

import pytest
import torch

from electra_hf.collator import DataCollatorForElectra
from electra_hf.modeling import ElectraForRTDPretraining
from electra_hf.optimization import ElectraAdamW, build_scheduler, parameter_groups

from .conftest import tiny_config, tokenize_sentences
from .test_scripts_pretrain import read_metrics, tiny_args, train_pretrain, train_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def packed_batch(tiny_tokenizer):
    """Rows of one length (no padding), as pre-training's packed examples are, without attention_mask."""
    collator = DataCollatorForElectra(tiny_tokenizer, seed=0, mask_prob=0.3)
    rows = tokenize_sentences(tiny_tokenizer)
    length = min(len(row["input_ids"]) for row in rows)
    rows = [{key: value[: length - 1] + value[-1:] for key, value in row.items()} for row in rows]
    batch = collator(rows)
    assert bool(batch["attention_mask"].all())
    return {key: value for key, value in batch.items() if key != "attention_mask"}


def build(tiny_tokenizer, device, **overrides):
    torch.manual_seed(0)
    return ElectraForRTDPretraining(tiny_config(vocab_size=len(tiny_tokenizer), **overrides)).to(device)


def to(batch, device):
    return {key: value.to(device) for key, value in batch.items()}


@pytest.fixture(autouse=True)
def _exact_fp32():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def test_generator_loss_and_gradients_match_the_cpu(tiny_tokenizer, packed_batch):
    """No sampling is involved in the generator loss: CPU and CUDA must agree to fp32 rounding."""
    results = {}
    for device in ("cpu", "cuda"):
        model = build(tiny_tokenizer, device).eval()
        out = model(**to(packed_batch, device))
        out.generator_loss.backward()
        grad = model.generator.electra.encoder.layer[0].attention.self.query.weight.grad
        results[device] = (out.generator_loss.detach().cpu(), grad.cpu())
    torch.testing.assert_close(results["cuda"][0], results["cpu"][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results["cuda"][1], results["cpu"][1], rtol=1e-3, atol=1e-5)


def test_training_step_makes_no_host_sync(tiny_tokenizer, packed_batch):
    """Forward, backward, clipping, ElectraAdamW and the schedule queue work without waiting for the
    GPU (a sync would raise here), so the host stays ahead of the device."""
    model = build(tiny_tokenizer, "cuda").train()
    optimizer = ElectraAdamW(parameter_groups(model, 0.01), lr=1e-3)
    scheduler = build_scheduler("electra", optimizer, 10, 100)
    batch = to(packed_batch, "cuda")

    def step():
        out = model(**batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return out

    step()  # first step: lazy initialisation (optimizer state, cuBLAS handles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(out.loss).item()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_fused_optimizer_matches_foreach_on_cuda(weight_decay):
    torch.manual_seed(0)
    shapes = [(64, 32), (32,), (1000, 16)]
    params = {kind: [torch.randn(s, device="cuda", requires_grad=True) for s in shapes] for kind in ("fused", "foreach")}
    with torch.no_grad():
        for a, b in zip(params["fused"], params["foreach"]):
            b.copy_(a)
    optimizers = {kind: ElectraAdamW(params[kind], lr=1e-2, weight_decay=weight_decay, fused=kind == "fused",
                                     foreach=True if kind == "foreach" else None) for kind in params}
    for step in range(5):
        grads = [torch.randn(s, device="cuda") for s in shapes]
        for kind, optimizer in optimizers.items():
            for p, g in zip(params[kind], grads):
                p.grad = g.clone()
            optimizer.step()
    for a, b in zip(params["fused"], params["foreach"]):  # the kernels round differently: ~1e-6 after 5 steps
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    default = ElectraAdamW(params["fused"], lr=1e-2)  # official optimizer (no bias correction): fused on CUDA
    assert default.param_groups[0]["fused"]
    assert all(state["step"].device.type == "cuda" for state in optimizers["fused"].state.values())


def test_bf16_autocast_step_learns(tiny_tokenizer, packed_batch):
    model = build(tiny_tokenizer, "cuda").train()
    optimizer = ElectraAdamW(parameter_groups(model, 0.01), lr=3e-3)
    batch = to(packed_batch, "cuda")
    losses = []
    for _ in range(30):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(**batch)
        assert out.generator_logits.dtype == torch.bfloat16  # the matmuls ran in bf16
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(out.generator_loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5  # memorising one batch


@pytest.mark.parametrize("scope,mode", [("model", None), ("model", "reduce-overhead"), ("layers", None)])
def test_compiled_paths_give_the_eager_gradients_on_cuda(tiny_tokenizer, packed_batch, scope, mode):
    """Generator and discriminator loss gradients of each compiled path equal eager's (dropout off,
    eager random numbers): a compiled graph can cut a loss off its autograd Function, which leaves
    its gradient all zero while the loss values still agree."""
    from electra_hf.performance import compare_compiled_gradients

    compilation = {"scope": scope, **({"mode": mode} if mode else {})}
    report = compare_compiled_gradients(lambda: build(tiny_tokenizer, "cuda").train(), to(packed_batch, "cuda"),
                                        compilation)
    for loss_name, result in report.items():
        assert result["largest_relative_difference"] <= 1e-3, (loss_name, result)
        assert not result["parameters_without_gradient"], (loss_name, result)


def test_pretraining_script_with_whole_model_cuda_graphs(corpus, tmp_path):  # noqa: F811
    """train_pretrain.py with the GPU's fastest path (whole-model compile replayed as CUDA graphs, bf16):
    it learns, evaluates, checkpoints and exports a plain transformers model."""
    from transformers import ElectraForPreTraining

    out = tmp_path / "run"
    results = train_pretrain.main(tiny_args(
        corpus, out, tmp_path / "cache", "--max_train_steps", "30", "--mixed_precision", "bf16",
        "--torch_compile", "--torch_compile_scope", "model", "--torch_compile_mode", "reduce-overhead"))
    rows = train_rows(read_metrics(out))
    assert results["completed_steps"] == 30
    assert all(torch.isfinite(torch.tensor(row["train/loss"])) for row in rows.values())
    assert rows[30]["train/generator_loss"] < rows[5]["train/generator_loss"] - 0.25
    assert {"loss", "generator_loss", "discriminator_loss"} <= set(results["eval"])
    assert (out / "checkpoints" / "step_00000030").is_dir()
    ElectraForPreTraining.from_pretrained(out / "export" / "discriminator")  # plain weights, no `_orig_mod.`


def test_whole_model_cuda_graphs_with_gradient_accumulation_follow_eager(corpus, tmp_path):
    """Gradients summed over two CUDA-graph replays give eager's training (fp32, dropout off): the
    check that would let the compiled default cover runs with gradient accumulation."""
    losses = {}
    for name, flags in (("eager", ("--torch_compile", "false")),
                        ("graphs", ("--torch_compile", "--torch_compile_scope", "model",
                                    "--torch_compile_mode", "reduce-overhead"))):
        out = tmp_path / name
        train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "12",
                                      "--gradient_accumulation_steps", "2", "--per_device_train_batch_size", "8",
                                      "--logging_steps", "1", "--hidden_dropout_prob", "0",
                                      "--attention_probs_dropout_prob", "0", *flags))
        losses[name] = [row["train/generator_loss"] for row in train_rows(read_metrics(out)).values()]
    # within 1%: compiled code draws the generator's samples from another random stream
    assert losses["graphs"] == pytest.approx(losses["eager"], rel=1e-2)
