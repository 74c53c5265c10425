"""Optimisation pieces shared by pre-training and fine-tuning.

* :class:`ElectraAdamW` — Adam with decoupled weight decay as in the official ELECTRA code
  (``AdamWeightDecayOptimizer``: beta = (0.9, 0.999), eps = 1e-6, **no bias correction**);
  ``bias_correction=True`` turns it into standard AdamW (identical to ``torch.optim.AdamW``).
* :func:`parameter_groups` — weight decay on everything except LayerNorm weights and biases.
* :func:`layerwise_lr_parameter_groups` — layer-wise learning-rate decay for fine-tuning
  (paper formula, and the official code's off-by-one as a switch).
* :func:`get_official_schedule` / :func:`build_scheduler` — the official schedule
  ``lr · (1 − step/total) · min(1, step/warmup)`` (warm-up *multiplied* with a linear decay
  over the whole run) and transformers' named schedules.

Only torch (and transformers for its named schedules) is imported here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "DEFAULT_NO_DECAY",
    "ElectraAdamW",
    "parameter_groups",
    "layer_depth",
    "layerwise_lr_parameter_groups",
    "official_schedule_factor",
    "get_official_schedule",
    "build_scheduler",
]

# Substrings of parameter names that get no weight decay. The official code excludes
# "LayerNorm", "layer_norm" and "bias" (matched with re.search); we match substrings the same way.
DEFAULT_NO_DECAY: tuple[str, ...] = ("bias", "LayerNorm.weight", "layer_norm", "LayerNorm.bias")


# --------------------------------------------------------------------------------------------
# Optimizer
# --------------------------------------------------------------------------------------------
class ElectraAdamW(Optimizer):
    """Adam with decoupled weight decay, the ELECTRA way.

    Per parameter ``p`` with gradient ``g`` (all element-wise)::

        m = beta1 · m + (1 − beta1) · g
        v = beta2 · v + (1 − beta2) · g²
        p = p − lr · weight_decay · p                        # decoupled, on the old p
        bias_correction=False (official):  p = p − lr · m / (sqrt(v) + eps)
        bias_correction=True  (AdamW):     p = p − lr/(1 − beta1^t) · m / (sqrt(v)/sqrt(1 − beta2^t) + eps)

    With ``bias_correction=True`` the update is exactly ``torch.optim.AdamW``'s (same formula,
    same operation order). Without it, early steps are smaller by ``1 − beta1^t`` in the
    numerator; that is what the official pre-training used and why it needs warm-up.

    Args:
        params: parameters or parameter groups (groups may carry extra keys such as ``depth``).
        lr: learning rate (the schedule multiplies it).
        betas: (beta1, beta2) for the moving averages.
        eps: added to the denominator (official 1e-6, not torch's 1e-8).
        weight_decay: decoupled weight-decay rate (scaled by lr, as AdamW and the official code).
        bias_correction: False = official ELECTRA optimizer; True = standard AdamW.
        foreach: True = the multi-tensor ``torch._foreach_*`` kernels; False = one parameter at a
            time (same result); None (default) = the fused kernel where it applies (see ``fused``),
            otherwise foreach.
        fused: use torch's fused AdamW kernel (``torch._fused_adamw_``: one pass over each
            parameter, instead of ~8 foreach passes and ~3 small ops per parameter on a CPU,
            where foreach falls back to per-tensor loops). It computes the same update up to
            floating-point rounding (≤ 1 ulp per step); without bias correction it is given
            an infinite step count, which makes both correction factors exactly 1. True accepts
            CPU parameters, and CUDA parameters without bias correction (the per-parameter step
            counts stay on the CPU). None (default) = fused wherever True is accepted, unless
            ``foreach`` is set; on CUDA that is a handful of kernel launches per step instead of
            ~10 multi-tensor passes (the step is launch-bound for small models).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        bias_correction: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
    ):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid betas: {betas} (each must be in [0, 1))")
        if eps < 0.0:
            raise ValueError(f"Invalid eps: {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay: {weight_decay}")
        if fused and foreach:
            raise ValueError("fused=True and foreach=True are exclusive")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
            bias_correction=bias_correction, foreach=foreach, fused=fused,
        )
        super().__init__(params, defaults)
        self._infinite_steps: dict[torch.device, torch.Tensor] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._infinite_steps = {}
        for group in self.param_groups:
            group.setdefault("bias_correction", False)
            group.setdefault("foreach", True)  # what optimizers saved before `fused` existed used
            group.setdefault("fused", None)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Performs one optimisation step. Parameters without a gradient are skipped."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ElectraAdamW does not support sparse gradients (neither does AdamW).")
                state = self.state[p]
                if len(state) == 0:
                    # 'step' as a float32 CPU tensor, like torch's Adam: torch's state_dict loading
                    # keeps it on CPU/float32 while moving moments to the parameter's device/dtype.
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            if self._use_fused(group, params):
                for idx in _group_indices_by_device_and_dtype(params):
                    self._fused_update([params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx],
                                       [exp_avg_sqs[i] for i in idx], [steps[i] for i in idx], group)
                continue
            steps = [int(t.item()) for t in steps]  # CPU tensors: no device sync
            use_foreach = group["foreach"] is not False and not any(torch.is_complex(p) for p in params)
            update = _foreach_update if use_foreach else _single_tensor_update
            if use_foreach:
                # Multi-tensor kernels need one device and one dtype per call.
                for idx in _group_indices_by_device_and_dtype(params):
                    update(
                        [params[i] for i in idx], [grads[i] for i in idx], [exp_avgs[i] for i in idx],
                        [exp_avg_sqs[i] for i in idx], [steps[i] for i in idx], group,
                    )
            else:
                update(params, grads, exp_avgs, exp_avg_sqs, steps, group)
        return loss

    def _use_fused(self, group: dict[str, Any], params: list[torch.Tensor]) -> bool:
        fused = group.get("fused")
        if fused is False or (fused is None and group.get("foreach") is not None):
            return False
        devices = {p.device.type for p in params}
        floating = all(p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)
        supported = hasattr(torch, "_fused_adamw_") and floating and (
            devices == {"cpu"} or (devices == {"cuda"} and not group["bias_correction"]))
        if fused is None:  # automatic: wherever it applies
            return supported
        if not supported:
            raise RuntimeError(
                "ElectraAdamW(fused=True) needs floating-point parameters on the CPU, or on CUDA without bias correction"
            )
        return True

    def _fused_update(self, params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
        beta1, beta2 = group["betas"]
        if group["bias_correction"]:
            state_steps = steps  # per-parameter counts, already incremented (CPU float32 tensors)
        else:
            # beta^inf = 0: both bias-correction factors are exactly 1, the official update.
            device = params[0].device
            if device not in self._infinite_steps:
                self._infinite_steps[device] = torch.tensor(math.inf, dtype=torch.float32, device=device)
            state_steps = [self._infinite_steps[device]] * len(params)
        torch._fused_adamw_(
            params, grads, exp_avgs, exp_avg_sqs, [], state_steps,
            lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
            amsgrad=False, maximize=False,
        )


def _group_indices_by_device_and_dtype(tensors: Sequence[torch.Tensor]) -> list[list[int]]:
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return list(groups.values())


def _foreach_update(params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    # m ← m + (1 − beta1)(g − m)  ==  beta1·m + (1 − beta1)·g
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    if group["bias_correction"]:
        # Per-parameter step counts (a parameter may have joined late): scalar lists.
        torch._foreach_div_(denom, [math.sqrt(1.0 - beta2**t) for t in steps])
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, [-lr / (1.0 - beta1**t) for t in steps])
    else:
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr)


def _single_tensor_update(params, grads, exp_avgs, exp_avg_sqs, steps, group) -> None:
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g.conj() if torch.is_complex(g) else g, value=1.0 - beta2)
        if weight_decay != 0.0:
            p.mul_(1.0 - lr * weight_decay)
        denom = v.sqrt()
        if group["bias_correction"]:
            denom.div_(math.sqrt(1.0 - beta2**t)).add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))
        else:
            p.addcdiv_(m, denom.add_(eps), value=-lr)


# --------------------------------------------------------------------------------------------
# Parameter groups
# --------------------------------------------------------------------------------------------
def _is_no_decay(name: str, no_decay: Sequence[str]) -> bool:
    return any(key in name for key in no_decay)


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    no_decay: Sequence[str] = DEFAULT_NO_DECAY,
) -> list[dict[str, Any]]:
    """Two optimizer groups: with ``weight_decay``, and without (names containing any of
    ``no_decay``: biases and LayerNorm weights). Frozen parameters are left out; shared (tied)
    parameters appear once. Empty groups are dropped."""
    decay, no_decay_params = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay_params if _is_no_decay(name, no_decay) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay_params, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


_LAYER_RE = re.compile(r"(?:^|\.)encoder\.layer\.(\d+)\.")
# `embeddings_project` (hidden ≠ embedding size) sits with the embeddings, as in the official code.
_EMBEDDINGS_RE = re.compile(r"(?:^|\.)embeddings(?:_project)?\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: embeddings (and ``embeddings_project``) 0,
    ``encoder.layer.{i}`` → i + 1, everything else (head, pooler, classifier) ``num_layers + 1``."""
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    if _EMBEDDINGS_RE.search(name):
        return 0
    return num_layers + 1


def _num_hidden_layers(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None)
    if n is not None:
        return int(n)
    # Not a transformers model: count the encoder layers by name.
    indices = [int(m.group(1)) for name, _ in model.named_parameters() if (m := _LAYER_RE.search(name))]
    if not indices:
        raise ValueError("Cannot find the number of layers: the model has no config.num_hidden_layers and "
                         "no parameters named '...encoder.layer.<i>...'")
    return max(indices) + 1


def layerwise_lr_parameter_groups(
    model: nn.Module,
    learning_rate: float,
    layer_decay: float,
    weight_decay: float,
    official_off_by_one: bool = False,
    no_decay: Sequence[str] = DEFAULT_NO_DECAY,
) -> list[dict[str, Any]]:
    """Optimizer groups with layer-wise learning-rate decay (ELECTRA fine-tuning).

    A parameter at depth ``d`` (:func:`layer_depth`: embeddings 0, encoder layer i → i + 1,
    head n + 1 with n = number of layers) gets ``learning_rate · layer_decay^(n + 1 − d)``
    (paper). With ``official_off_by_one=True`` every non-head parameter gets one more power
    (top layer decay², embeddings decay^(n+2)), as the official code does (it puts its
    task-specific head at depth n + 2); the head keeps ``learning_rate``.

    Works for any model whose encoder parameters are named like transformers' Electra/BERT
    (``electra.embeddings.…``, ``electra.encoder.layer.{i}.…``).

    Returns one group per (depth, decay/no-decay), each with keys ``params``, ``lr``,
    ``weight_decay``, ``depth``, ``lr_scale`` (= lr / learning_rate) and ``name``, sorted by depth.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    num_layers = _num_hidden_layers(model)
    head_depth = num_layers + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        depth = layer_depth(name, num_layers)
        exponent = head_depth - depth
        if official_off_by_one and depth != head_depth:
            exponent += 1
        skip_decay = _is_no_decay(name, no_decay)
        key = (depth, skip_decay)
        if key not in groups:
            scale = layer_decay**exponent
            groups[key] = {
                "params": [],
                "param_names": [],
                "lr": learning_rate * scale,
                "lr_scale": scale,
                "weight_decay": 0.0 if skip_decay else weight_decay,
                "depth": depth,
                "name": f"depth_{depth}" + ("_no_decay" if skip_decay else ""),
            }
        groups[key]["params"].append(param)
        groups[key]["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------
def official_schedule_factor(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """``(1 − step/total) · min(1, step/warmup)``, clamped at 0 (official ELECTRA schedule)."""
    if num_training_steps <= 0:
        raise ValueError(f"num_training_steps must be positive, got {num_training_steps}")
    decay = max(0.0, 1.0 - step / num_training_steps)
    warmup = min(1.0, step / num_warmup_steps) if num_warmup_steps > 0 else 1.0
    return decay * warmup


def get_official_schedule(optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int,
                          last_epoch: int = -1) -> LambdaLR:
    """LambdaLR with the official factor: linear warm-up over ``num_warmup_steps`` *multiplied*
    by a linear decay to 0 over all ``num_training_steps`` (they overlap: at the end of warm-up
    the factor is ``1 − warmup/total``, not 1). Each group's own ``lr`` is scaled (LLRD-safe)."""
    def factor(step: int) -> float:
        return official_schedule_factor(step, num_warmup_steps, num_training_steps)

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def build_scheduler(name: str, optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int):
    """``"electra"`` → :func:`get_official_schedule`; any other name → transformers'
    ``get_scheduler`` (``"linear"`` = warm-up to the peak then linear decay to 0, ``"cosine"``,
    ``"constant_with_warmup"``, …)."""
    if name == "electra":
        return get_official_schedule(optimizer, num_warmup_steps, num_training_steps)
    from transformers import get_scheduler  # local: keep this module importable with torch alone

    try:
        return get_scheduler(name, optimizer, num_warmup_steps=num_warmup_steps,
                             num_training_steps=num_training_steps)
    except ValueError as err:
        raise ValueError(f"Unknown lr scheduler {name!r}: use 'electra' or a transformers "
                         f"SchedulerType name ('linear', 'cosine', ...). ({err})") from err
