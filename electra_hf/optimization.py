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
class ElectraAdamW(torch.optim.AdamW):
    """Adam with decoupled weight decay, the ELECTRA way: ``torch.optim.AdamW`` without bias correction.

    Per parameter ``p`` with gradient ``g`` (all element-wise)::

        m = beta1 · m + (1 − beta1) · g
        v = beta2 · v + (1 − beta2) · g²
        p = p − lr · weight_decay · p                        # decoupled, on the old p
        bias_correction=False (official):  p = p − lr · m / (sqrt(v) + eps)
        bias_correction=True  (AdamW):     p = p − lr/(1 − beta1^t) · m / (sqrt(v)/sqrt(1 − beta2^t) + eps)

    The update is ``torch.optim.AdamW``'s own (fused where it applies: one kernel pass per
    parameter). Without bias correction each parameter's step count starts at +inf, which makes
    both correction factors ``1 − beta^t`` exactly 1: the official optimizer
    (``AdamWeightDecayOptimizer``), whose early steps are smaller by ``1 − beta1^t`` and need warm-up.
    ``tests/test_optimization.py`` checks this against the formula for every kernel torch has.

    Args:
        params: parameters or parameter groups (groups may carry extra keys such as ``depth``).
        lr, betas, weight_decay: as ``torch.optim.AdamW`` (weight decay is scaled by lr).
        eps: added to the denominator (official 1e-6, not torch's 1e-8).
        bias_correction: False = official ELECTRA optimizer; True = standard AdamW.
        foreach, fused: torch's kernel choice (``foreach=False``: one parameter at a time). Default:
            fused, unless ``foreach`` is given.
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
        if fused is None and foreach is None:
            fused = True
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         foreach=foreach, fused=fused)
        self.defaults["bias_correction"] = bias_correction  # add_param_group reads it for later groups
        for group in self.param_groups:
            group.setdefault("bias_correction", bias_correction)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._start_uncorrected_states(new=False)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        self._start_uncorrected_states(new=True)
        return super().step(closure)

    def _start_uncorrected_states(self, new: bool) -> None:
        """An infinite step count for each parameter of a group without bias correction: `new`,
        the parameters AdamW is about to initialise; else the states just loaded, whatever
        count they carry."""
        for group in self.param_groups:
            if group["bias_correction"]:
                continue
            on_device = group["fused"] or group["capturable"]
            for p in group["params"]:
                state = self.state.get(p)
                if (new and (p.grad is None or state)) or (not new and not state):
                    continue
                state = self.state[p]
                state["step"] = torch.tensor(math.inf, dtype=torch.float32,
                                             device=p.device if on_device else torch.device("cpu"))
                state.setdefault("exp_avg", torch.zeros_like(p, memory_format=torch.preserve_format))
                state.setdefault("exp_avg_sq", torch.zeros_like(p, memory_format=torch.preserve_format))


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


# `encoder.layer.{i}` (ELECTRA, BERT, RoBERTa, DeBERTa), `layers.{i}` (ModernBERT).
_LAYER_RE = re.compile(r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\.")
# `embeddings_project` (hidden ≠ embedding size) sits with the embeddings, as in the official code;
# DeBERTa's relative-position table and its LayerNorm, which every layer reads, too.
_EMBEDDINGS_RE = re.compile(r"(?:^|\.)(?:embeddings(?:_project)?|encoder\.rel_embeddings|encoder\.LayerNorm)\.")


def layer_depth(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise LR decay: embeddings (and ``embeddings_project``,
    DeBERTa's relative-position table) 0, ``encoder.layer.{i}`` or ``layers.{i}`` → i + 1,
    everything else (head, pooler, classifier, a final norm) ``num_layers + 1``."""
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

    Works for models whose encoder parameters are named like transformers' ELECTRA, BERT,
    DeBERTa (``….embeddings.…``, ``….encoder.layer.{i}.…``) or ModernBERT (``….layers.{i}.…``);
    a model with layers under other names is refused.

    Returns one group per (depth, decay/no-decay), each with keys ``params``, ``lr``,
    ``weight_decay``, ``depth``, ``lr_scale`` (= lr / learning_rate) and ``name``, sorted by depth.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    num_layers = _num_hidden_layers(model)
    head_depth = num_layers + 1
    names = [name for name, _ in model.named_parameters()]
    if num_layers > 0 and not any(_LAYER_RE.search(name) for name in names):
        raise ValueError(f"layer-wise LR decay finds none of the {num_layers} layers of {type(model).__name__} (it "
                         "knows parameters named '…encoder.layer.<i>.…' and '…layers.<i>.…'); pass --layer_decay 1")
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
