"""Do the compiled training paths give eager's gradients? Generator and discriminator loss separately.

On the H100 with torch 2.11 (2026-11-24), a whole-model compile (`compile_for_training(model,
scope="model")`) gave an all-zero gradient of the generator loss, so it did not train; eager and
compiled layers did. This script is the check to run on a machine before trusting a compiled path:

    python benchmarks/check_compiled_gradients.py                  # cuda if available, else cpu
    python benchmarks/check_compiled_gradients.py --device cuda --scopes model layers --mode reduce-overhead

Dropout is off and inductor draws random numbers the way eager does (`fallback_random`), so the
generator's samples, hence the discriminator's input, are the same in both runs. Prints one line per
(scope, loss) with the gradient norms and the largest relative difference, and exits with status 1
if a parameter's gradient differs by more than `--rtol` of its eager norm (floored at 1e-3 of the
whole gradient's norm, so that gradients that are zero up to rounding do not count).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
VOCAB_SIZE = 300  # above bench_pretrain_step's special ids (BERT's, up to 103)


def gradients(device: str, scope: str | None, mode: str | None, loss_name: str, vocab_size: int = VOCAB_SIZE) -> tuple[float, dict]:
    """Loss value and {parameter name: gradient} after a backward of `loss_name` (eager if scope is None).

    With a `mode` (e.g. reduce-overhead), forward and backward run 3 times on the same batch and the
    last gradients count: CUDA graphs run their first call uncaptured (a warm-up), so only later
    calls replay a graph. Without a mode, once.
    """
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fallback_random=True):  # not left set for later compiles in the process
        return _gradients(device, scope, mode, loss_name, vocab_size)


def _gradients(device, scope, mode, loss_name, vocab_size):
    from bench_pretrain_step import make_batches

    from electra_hf.configuration import ElectraPretrainingConfig
    from electra_hf.modeling import ElectraForRTDPretraining
    from electra_hf.performance import compile_for_training

    torch.manual_seed(0)
    config = ElectraPretrainingConfig.from_preset(
        "tiny", vocab_size=vocab_size, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ElectraForRTDPretraining(config).to(device).train()
    step = model
    if scope is not None:
        torch._dynamo.reset()
        step = compile_for_training(model, scope=scope, **({"mode": mode} if mode else {}))
    # One packed batch of random ids through the library's collator, sent without attention_mask.
    batch = {k: v.to(device) for k, v in make_batches(config, 4, 24, 1, seed=0)[0].items() if k != "attention_mask"}
    for _ in range(3 if mode else 1):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = step(**batch)
        loss = getattr(out, loss_name)
        loss.backward()
        value = float(loss.detach())
        grads = {name: p.grad.detach().float().cpu().clone() for name, p in model.named_parameters() if p.grad is not None}
    return value, grads


def compare(device: str, scope: str, mode: str | None = None, rtol: float = 1e-3) -> list[dict]:
    """One row per loss: eager vs compiled loss, gradient norms, and the largest relative difference."""
    rows = []
    for loss_name in ("generator_loss", "discriminator_loss"):
        eager_loss, eager = gradients(device, None, None, loss_name)
        compiled_loss, compiled = gradients(device, scope, mode, loss_name)
        # Relative to the parameter's gradient, floored at 1e-3 of the whole gradient's norm: some
        # gradients are zero up to rounding (a key bias cannot change a softmax), and their rounding
        # noise must not count as a difference.
        eager_norm = float(torch.stack([g.norm() for g in eager.values()]).norm())
        worst, worst_name = 0.0, None
        for name, reference in eager.items():
            got = compiled.get(name, torch.zeros_like(reference))
            difference = float((got - reference).norm()) / max(float(reference.norm()), 1e-3 * eager_norm, 1e-12)
            if difference > worst:
                worst, worst_name = difference, name
        rows.append({
            "scope": scope, "mode": mode, "loss": loss_name, "eager_loss": eager_loss, "compiled_loss": compiled_loss,
            "eager_grad_norm": eager_norm,
            "compiled_grad_norm": float(torch.stack([g.norm() for g in compiled.values()]).norm()) if compiled else 0.0,
            "max_relative_difference": worst, "worst_parameter": worst_name, "ok": worst <= rtol,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scopes", nargs="+", default=["model", "layers"], choices=["model", "layers"])
    parser.add_argument("--mode", default=None, help="torch.compile mode (e.g. reduce-overhead for CUDA graphs).")
    parser.add_argument("--rtol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    print(f"torch {torch.__version__} on {args.device}", flush=True)
    ok = True
    for scope in args.scopes:
        for row in compare(args.device, scope, args.mode, args.rtol):
            ok &= row["ok"]
            print(f"{'ok  ' if row['ok'] else 'FAIL'} scope={scope} mode={args.mode} {row['loss']}: loss eager {row['eager_loss']:.5f} "
                  f"compiled {row['compiled_loss']:.5f}; gradient norm eager {row['eager_grad_norm']:.4g} compiled "
                  f"{row['compiled_grad_norm']:.4g}; largest relative difference {row['max_relative_difference']:.2e} "
                  f"({row['worst_parameter']})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
