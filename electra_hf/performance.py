"""What makes pre-training faster without changing what it computes, chosen by the scripts.

Nothing here is applied by a model's constructor: the scripts opt in (and `benchmarks/` measures
each choice against the naive composition of transformers' pieces).

- `configure_cpu_training`: a process-wide glibc allocator setting for CPU training.
- `CPU_ATTENTION` (`register_cpu_attention`): an attention function for transformers'
  `AttentionInterface` whose dropout masks on the CPU come from numpy's SFC64 generator instead of
  torch's `bernoulli_` (about 6× cheaper per mask; the same distribution).
- `compile_for_training`: `torch.compile` of the transformer layers, or of the whole step.
"""

from __future__ import annotations

import ctypes
import platform
import sys

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface

CPU_ATTENTION = "electra_hf_cpu"
# Dropout compares 16 random bits with round(p · 2^16): the drop probability is p to within 2^-17.
_MASK_BITS = 16


def configure_cpu_training(num_threads: int | None = None, keep_freed_memory: bool = True) -> dict:
    """Process-wide settings that make CPU training faster; call once at start-up. Returns what was set.

    - `keep_freed_memory` (Linux/glibc): a training step allocates and frees the same large buffers
      every step (activations, vocabulary-sized logits and their gradients). By default glibc
      serves blocks above a size threshold with fresh `mmap`s and returns freed memory to the
      kernel, so every step page-faults a few hundred MB back in. Raising the mmap threshold to
      1 GiB and disabling heap trimming keeps freed blocks for reuse: the resident set stays at its
      high-water mark (which it reaches anyway) and steady-state steps page-fault almost never.
    - `num_threads`: `torch.set_num_threads` (torch's default, the number of physical cores, is
      right for a dedicated machine).
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


def dropout_keep_mask(shape: torch.Size, p: float) -> torch.BoolTensor:
    """True where an element is kept (probability 1 - p, see `_MASK_BITS`), as a CPU tensor.

    The bits come from numpy's SFC64 generator, seeded by one draw from torch's default generator:
    `torch.manual_seed` makes masks reproducible, and activation checkpointing, which replays
    torch's RNG state, regenerates the same masks in its recomputation.
    """
    seed = int(torch.randint(0, 2**62, ()))
    count = int(np.prod(shape))
    words = np.random.SFC64(seed).random_raw((count + 3) // 4)
    bits = words.view(np.uint16)[:count].reshape(tuple(shape))
    return torch.from_numpy(bits >= round(p * (1 << _MASK_BITS)))


def cpu_attention_forward(module: nn.Module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention (matmul, mask, softmax, dropout, matmul), with the dropout mask
    of `dropout_keep_mask` on the CPU; anything else (evaluation, accelerators, compiled graphs)
    goes to transformers' `sdpa` function."""
    if dropout == 0.0 or query.device.type != "cpu" or torch.compiler.is_compiling():
        return AttentionInterface()["sdpa"](module, query, key, value, attention_mask, scaling=scaling,
                                             dropout=dropout, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # True = attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:  # additive
            scores = scores + attention_mask
    probabilities = torch.softmax(scores, dim=-1) * dropout_keep_mask(scores.shape, dropout)
    # 1/(1 - p) scales the (B, heads, T, d) output rather than the (B, heads, T, T) probabilities.
    output = torch.matmul(probabilities, value) * (1.0 / (1.0 - dropout))
    return output.transpose(1, 2).contiguous(), probabilities


def register_cpu_attention() -> str:
    """Register `cpu_attention_forward` with transformers under `CPU_ATTENTION`; returns the name
    to pass as `attn_implementation`."""
    AttentionInterface.register(CPU_ATTENTION, cpu_attention_forward)
    return CPU_ATTENTION


def training_attn_implementation(requested: str | None, on_cpu: bool) -> str:
    """The attention a training run uses: `requested`, else `CPU_ATTENTION` on a CPU (registered
    here) and `sdpa` elsewhere."""
    if requested:
        if requested == CPU_ATTENTION:
            register_cpu_attention()
        return requested
    return register_cpu_attention() if on_cpu else "sdpa"


def training_compilation(requested: bool | None, device: torch.device, single_process: bool = True,
                         scope: str | None = None, mode: str | None = None, accumulating: bool = False) -> dict | None:
    """How a training run compiles its step: `compile_for_training`'s keyword arguments, or None
    (eager).

    `requested` None (the default) compiles on one CUDA device (`single_process`: one process, no
    distributed engine): the whole step (`scope="model"`) replayed as CUDA graphs
    (`mode="reduce-overhead"`). The eager step of a model ELECTRA's size is bound by the host
    launching some 2,700 kernels a step, and a graph replays them in one call. Elsewhere the
    default stays eager: on a CPU compiling gives no measured gain, and with distributed engines
    (DDP, FSDP, DeepSpeed) or gradient accumulation (`accumulating`: gradients summed over several
    replays of one graph) CUDA graphs are unverified, so such a run asks for them explicitly.
    `requested` True (or a `scope`/`mode` given) compiles with `scope` (default: "model" on CUDA,
    "layers" elsewhere) and `mode`; False: eager.
    """
    on_cuda = torch.device(device).type == "cuda"
    if requested is None and scope is None and mode is None:
        return {"scope": "model", "mode": "reduce-overhead"} if on_cuda and single_process and not accumulating else None
    if requested is False:
        return None
    settings = {"scope": scope or ("model" if on_cuda else "layers")}
    if mode:
        settings["mode"] = mode
    return settings


def compile_for_training(model: nn.Module, scope: str = "layers", **compile_kwargs) -> nn.Module:
    """`torch.compile` for pre-training; returns the model to call (like `torch.compile`).

    scope="layers" (default): compile every transformer layer and the embedding block of each
    network in place (found by `model.backbone`, whatever the encoder family). The layers of a network share one compiled graph (same code and shapes), so
    compiling takes about a minute on a small CPU instead of many, and the vocabulary head, the
    sampling and the losses stay in eager mode, where they are already efficient.
    scope="model": `torch.compile(model)` as a whole (a much longer compile; with
    `mode="reduce-overhead"` the step replays as CUDA graphs).
    Shapes are static (`dynamic=False`): `pretraining.build_run` pads every training batch of a
    compiled run to the full sequence length (evaluation batches, mostly full-length packed
    examples too, may add a graph for another length).
    `compile_kwargs` go to `torch.compile`.
    """
    compile_kwargs.setdefault("dynamic", False)
    if scope == "model":
        return torch.compile(model, **compile_kwargs)
    if scope != "layers":
        raise ValueError(f"scope must be 'layers' or 'model', got {scope!r}")
    for network in (model.generator, model.discriminator):
        if network is None:
            continue
        model.backbone.embedding_block(network).compile(**compile_kwargs)
        for layer in model.backbone.transformer_layers(network):
            layer.compile(**compile_kwargs)
    return model


# torch.compile takes a mode or options, not both: the gradient check spells "reduce-overhead" as its
# inductor option, next to fallback_random (inductor then draws random numbers as eager does, so the
# generator's samples, hence the discriminator's input, are the same in both runs).
_MODE_OPTIONS = {None: {}, "reduce-overhead": {"triton.cudagraphs": True}}


def gradients_after(model, batch, loss_name: str, compilation: dict | None = None) -> dict[str, torch.Tensor]:
    """{parameter name: gradient} after a backward of `loss_name` alone, eager or through
    `compile_for_training(model, **compilation)`. CUDA graphs run their first call uncaptured, so
    with a mode the step runs 3 times and the last gradients count."""
    step = model
    if compilation is not None:
        torch.compiler.reset()
        options = {**_MODE_OPTIONS[compilation.get("mode")], "fallback_random": True}
        step = compile_for_training(model, scope=compilation.get("scope", "layers"), options=options)
    for _ in range(3 if compilation and compilation.get("mode") else 1):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        getattr(step(**batch), loss_name).backward()
    return {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None}


def largest_gradient_difference(eager: dict, compiled: dict) -> tuple[float, str | None]:
    """The largest difference between compiled and eager gradients, relative to the parameter's eager
    gradient floored at 1e-3 of the whole gradient's norm: some gradients are zero up to rounding
    (a key bias cannot change a softmax), and their rounding noise is no difference. A parameter
    the compiled run left without a gradient counts as a zero gradient."""
    floor = 1e-3 * float(torch.stack([g.norm() for g in eager.values()]).norm())
    worst, worst_name = 0.0, None
    for name, reference in eager.items():
        got = compiled.get(name, torch.zeros_like(reference))
        difference = float((got - reference).norm()) / max(float(reference.norm()), floor, 1e-12)
        if difference > worst:
            worst, worst_name = difference, name
    return worst, worst_name


def compare_compiled_gradients(build_model, batch, compilation: dict,
                               losses: tuple[str, ...] = ("generator_loss", "discriminator_loss")) -> dict[str, dict]:
    """Whether a compiled step computes the eager step's gradients, per loss: the largest relative
    difference (see `largest_gradient_difference`), its parameter, and the parameters the compiled
    step left without a non-zero gradient. `build_model()` returns the same initial model at every
    call, with dropout off and in training mode."""
    report = {}
    for loss_name in losses:
        eager = gradients_after(build_model(), batch, loss_name)
        compiled = gradients_after(build_model(), batch, loss_name, compilation)
        difference, parameter = largest_gradient_difference(eager, compiled)
        zero = sorted(name for name, grad in eager.items()
                      if bool(grad.abs().sum() > 0) and not bool(compiled.get(name, torch.zeros(1)).abs().sum() > 0))
        report[loss_name] = {"largest_relative_difference": difference, "parameter": parameter,
                             "parameters_without_gradient": zero}
    return report
