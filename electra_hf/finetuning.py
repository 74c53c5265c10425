"""The one fine-tuning loop shared by every task family (GLUE, tagging, QA).

Nothing here knows about a task: callers pass a model (or a ``model_init`` callable for
several seeds), tokenized datasets, a collator and a ``compute_metrics(split, EvalPrediction)``
callback; they get metrics back. The ELECTRA recipe lives in :class:`FinetuningArguments`
(official defaults) and in :mod:`electra_hf.optimization` (layer-wise LR decay, Adam,
schedule).

Under ``accelerate launch`` the loop runs on CPU, one or several GPUs, with gradient
accumulation (optimizer steps are counted, not micro-batches) and mixed precision; evaluation
gathers with ``gather_for_metrics`` so every example is counted exactly once.

Recipe defaults (paper; the official code differs in four switches, see the field helps):
Adam with bias correction, eps 1e-6, weight decay 0, layer-wise LR decay 0.8 (Small/Base) /
0.9 (Large), LR 3e-4 / 1e-4 / 5e-5, 10% warm-up then linear decay, batch 32, length 128,
3 epochs, gradient clipping at 1. The official code's recipe: ``--adam_bias_correction false
--weight_decay 0.01 --official_layer_decay_off_by_one --lr_scheduler_type electra``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from .optimization import ElectraAdamW, build_scheduler, layerwise_lr_parameter_groups
from .training import find_latest_checkpoint, read_training_state, save_checkpoint

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuningArguments",
    "FinetuningResult",
    "SeedsResult",
    "OFFICIAL_LEARNING_RATES",
    "OFFICIAL_LAYER_DECAY",
    "resolve_model_size",
    "resolve_learning_rate_and_layer_decay",
    "make_accelerator",
    "make_collator",
    "LengthGroupedSampler",
    "EpochShuffleSampler",
    "build_optimizer",
    "predict",
    "finetune",
    "run_with_seeds",
    "median_metrics",
    "save_finetuned_model",
    "args_to_dict",
]

#: ELECTRA fine-tuning learning rate per model size (paper, Table 7).
OFFICIAL_LEARNING_RATES: dict[str, float] = {"small": 3e-4, "base": 1e-4, "large": 5e-5}
#: Layer-wise learning-rate decay per model size (paper, Table 7).
OFFICIAL_LAYER_DECAY: dict[str, float] = {"small": 0.8, "base": 0.8, "large": 0.9}
#: hidden_size → size name, for the official architectures.
_SIZE_BY_HIDDEN: dict[int, str] = {256: "small", 768: "base", 1024: "large"}
_DEFAULT_EPOCHS = 3.0


@dataclass
class FinetuningArguments:
    """Hyper-parameters and run settings of the fine-tuning loop (paper defaults)."""

    output_dir: str = field(default="outputs/finetune", metadata={"help": "Where models, results and logs go."})
    model_size: str | None = field(
        default=None,
        metadata={"help": "small | base | large: picks the official learning rate and layer decay. "
                          "None: detected from hidden_size (256 / 768 / 1024)."},
    )
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (of the head). None: 3e-4 small, 1e-4 base, 5e-5 large."})
    layer_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise LR decay: depth d gets lr·decay^(n+1−d). None: 0.8 small/base, 0.9 large. "
                          "1.0 disables it."},
    )
    official_layer_decay_off_by_one: bool = field(
        default=False,
        metadata={"help": "Reproduce the official code's off-by-one: every non-head layer one more power of decay."},
    )
    weight_decay: float = field(default=0.0, metadata={"help": "Decoupled weight decay: 0 (paper); 0.01 (official code)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (ELECTRA: 1e-6)."})
    adam_bias_correction: bool = field(
        default=True,
        metadata={"help": "Standard Adam bias correction (True). The official ELECTRA optimizer has none (False)."},
    )
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "'linear': warm-up to the peak, then linear decay to 0 (paper). 'electra': the official "
                          "code's (1 − step/total)·min(1, step/warmup). Or any transformers schedule name."},
    )
    warmup_ratio: float = field(default=0.1, metadata={"help": "Fraction of the optimizer steps used for warm-up."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs. None: the task's default (3; GLUE: 10 for RTE and STS-B)."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0: train exactly this many optimizer steps (overrides epochs)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per process."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Evaluation batch size per process."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step (effective batch = this × batch × processes)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this global norm (0: no clipping)."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokenized inputs are truncated to this length."})
    seeds: list[int] = field(
        default_factory=lambda: [42],
        metadata={"help": "Fine-tuning seeds; each one fine-tunes the same checkpoint, the median is reported "
                          "(the paper uses ≥ 10)."},
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no | fp16 | bf16. None: whatever `accelerate launch`/config says (default no). "
                          "bf16 on a CPU without bf16 hardware (10-100× slower) is refused unless --allow_slow_bf16."},
    )
    allow_slow_bf16: bool = field(default=False, metadata={"help": "Permit bf16 on a CPU without native bf16."})
    report_to: list[str] = field(
        default_factory=list, metadata={"help": "Trackers for accelerate (tensorboard, wandb, ...). Empty: none."})
    tracker_project_name: str = field(default="electra_hf_finetune", metadata={"help": "Project name for trackers."})
    group_by_length: bool = field(
        default=False, metadata={"help": "Batch training examples of similar length (less padding, faster)."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to max_seq_length (static shapes) instead of dynamic padding."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "With dynamic padding, round lengths up to a multiple of this (8 for tensor cores)."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training loss every N optimizer steps."})
    eval_steps: int = field(default=0, metadata={"help": "Also evaluate every N optimizer steps (0: only at the end)."})
    metric_for_best_model: str | None = field(
        default=None,
        metadata={"help": "With eval_steps: keep the weights that scored best on this key (e.g. 'dev/accuracy'). "
                          "None: the final weights (the paper's protocol)."},
    )
    greater_is_better: bool = field(default=True, metadata={"help": "Direction of metric_for_best_model."})
    save_model: bool = field(default=True, metadata={"help": "save_pretrained the fine-tuned model (+ tokenizer) per seed."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    checkpointing_steps: int = field(
        default=0,
        metadata={"help": "Every N optimizer steps, save a resumable checkpoint of the running fine-tuning (model, "
                          "optimizer, schedule, RNG states, position in the data) into <run dir>/checkpoints/; only "
                          "the newest is kept and it is deleted when the run finishes. 0: none."},
    )
    resume: bool = field(
        default=False,
        metadata={"help": "Continue an interrupted run in the same output_dir: finished (task, seed) runs are read "
                          "back from their run_result.json instead of being trained again, and an unfinished one "
                          "continues from its newest checkpoint (from the start if it has none)."},
    )

    def __post_init__(self):
        if self.model_size is not None and self.model_size not in OFFICIAL_LEARNING_RATES:
            raise ValueError(f"--model_size must be one of {list(OFFICIAL_LEARNING_RATES)}, got {self.model_size!r}")
        if not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"--warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError("--gradient_accumulation_steps must be ≥ 1")
        if self.checkpointing_steps < 0:
            raise ValueError(f"--checkpointing_steps must be ≥ 0, got {self.checkpointing_steps}")
        if not self.seeds:
            raise ValueError("--seeds needs at least one seed")
        if self.metric_for_best_model is not None and self.eval_steps <= 0:
            raise ValueError("--metric_for_best_model needs --eval_steps > 0 (otherwise only the end is evaluated)")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [r for r in self.report_to if r not in ("none", "")]


# --------------------------------------------------------------------------------------------
# Hyper-parameter resolution
# --------------------------------------------------------------------------------------------
def resolve_model_size(config: Any, model_size: str | None = None) -> str | None:
    """``model_size`` if given, else the official size whose hidden_size matches, else None."""
    if model_size is not None:
        return model_size
    return _SIZE_BY_HIDDEN.get(getattr(config, "hidden_size", None))


def resolve_learning_rate_and_layer_decay(args: FinetuningArguments, config: Any) -> tuple[float, float]:
    """The learning rate and layer decay to use: explicit values win, else the official ones for
    the model size (``--model_size`` or detected from ``hidden_size``)."""
    size = resolve_model_size(config, args.model_size)
    lr, decay = args.learning_rate, args.layer_decay
    if (lr is None or decay is None) and size is None:
        raise ValueError(
            f"Cannot pick the official learning rate / layer decay: hidden_size="
            f"{getattr(config, 'hidden_size', None)} is not an official size (256 small, 768 base, 1024 large). "
            f"Pass --model_size small|base|large, or --learning_rate and --layer_decay."
        )
    if lr is None:
        lr = OFFICIAL_LEARNING_RATES[size]
    if decay is None:
        decay = OFFICIAL_LAYER_DECAY[size]
    return lr, decay


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def make_accelerator(args: FinetuningArguments, **kwargs):
    """An ``Accelerator`` for ``args`` (mixed precision, accumulation, trackers), after checking
    that the requested trackers are installed (accelerate silently drops a missing tensorboard)
    and that the precision suits the hardware (bf16 on a CPU without bf16 units is refused).

    Built by :func:`electra_hf.training.build_accelerator`, as in pre-training: multi-process CPU
    launches get DDP over gloo, DeepSpeed "auto" values come from these arguments (and a JSON
    that contradicts them is refused), launches that would not train together are refused.
    """
    from .training import build_accelerator, resolve_report_to

    trackers = resolve_report_to(",".join(args.report_to) if args.report_to else "none")
    return build_accelerator(args, log_with=trackers or None, project_dir=args.output_dir, **kwargs)


def make_collator(tokenizer, args: FinetuningArguments):
    """Dynamic padding (``DataCollatorWithPadding``) by default; with ``pad_to_max_length`` the
    datasets are already padded and are only stacked."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if args.pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)


class EpochShuffleSampler(Sampler[int]):
    """A random order that is a pure function of (seed, epoch), identical on every process.

    Unlike a DataLoader's ``shuffle=True`` with one generator (whose epoch-k order depends on the
    k earlier epochs having been drawn in the same process), a run resumed in the middle of
    epoch k sees exactly the order the uninterrupted run saw. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, num_examples: int, seed: int = 0):
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from torch.randperm(self.num_examples, generator=generator).tolist()


class LengthGroupedSampler(Sampler[int]):
    """Random order, but examples of similar length end up in the same batch (less padding).

    Indices are shuffled (seed + epoch, identical on every process), cut into mega-batches of
    ``mega_batch_mult × batch_size``, each sorted by length (longest first), then batches are
    shuffled so that lengths are not visited in order. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        mega = self.mega_batch_mult * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        # Keep the very last (possibly short) batch last so that BatchSampler cuts the same batches.
        head, tail = batches[:-1], batches[-1:]
        perm = torch.randperm(len(head), generator=generator).tolist()
        for batch in [head[i] for i in perm] + tail:
            yield from batch


def build_optimizer(model: torch.nn.Module, args: FinetuningArguments, learning_rate: float,
                    layer_decay: float) -> ElectraAdamW:
    """ElectraAdamW over layer-wise-decayed groups (LayerNorm weights and biases without decay)."""
    groups = layerwise_lr_parameter_groups(
        model, learning_rate=learning_rate, layer_decay=layer_decay, weight_decay=args.weight_decay,
        official_off_by_one=args.official_layer_decay_off_by_one,
    )
    return ElectraAdamW(groups, lr=learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon,
                        weight_decay=args.weight_decay, bias_correction=args.adam_bias_correction)


def _model_input_names(model: torch.nn.Module) -> set[str]:
    forward = getattr(model, "forward")
    return set(inspect.signature(forward).parameters) - {"self", "kwargs"}


def _drop_unused_columns(dataset, model, label_names: Sequence[str]):
    """Keep only columns the model's forward accepts, plus labels (``label`` is renamed to
    ``labels`` by the transformers collators). Other columns (text, idx) would break collation."""
    if not hasattr(dataset, "column_names"):
        return dataset
    keep = _model_input_names(model) | set(label_names) | {"label", "label_ids"}
    drop = [c for c in dataset.column_names if c not in keep]
    return dataset.remove_columns(drop) if drop else dataset


def _output_tensors(outputs) -> tuple[torch.Tensor, ...]:
    """Prediction tensors of a model output: everything except loss/hidden states/attentions
    (classification: logits (B, C); tagging: (B, L, C); QA: start and end logits (B, L))."""
    skip = {"loss", "hidden_states", "attentions", "cross_attentions", "past_key_values"}
    if isinstance(outputs, Mapping):
        return tuple(v for k, v in outputs.items() if k not in skip and isinstance(v, torch.Tensor))
    return tuple(v for v in outputs if isinstance(v, torch.Tensor))


def _concat_padded(arrays: list[np.ndarray], pad_value: float = -100) -> np.ndarray:
    """Concatenate along dim 0; arrays whose dim 1 differ (token-level outputs of batches with
    different lengths) are padded with ``pad_value`` first."""
    if arrays[0].ndim < 2 or len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays, axis=0)
    max_len = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        width = [(0, 0)] * a.ndim
        width[1] = (0, max_len - a.shape[1])
        padded.append(np.pad(a, width, constant_values=pad_value))
    return np.concatenate(padded, axis=0)


@torch.no_grad()
def predict(model, dataloader, accelerator, label_names: Sequence[str] = ("labels",), desc: str = "predict",
            disable_tqdm: bool = False):
    """Run ``model`` over a **prepared** dataloader; return a ``transformers.EvalPrediction``
    whose ``predictions`` are the output tensors as numpy (one array, or a tuple for several,
    e.g. QA start/end logits) and ``label_ids`` the gathered labels (None if the batches have
    none), both over the whole dataset in order, each example exactly once (gather_for_metrics
    drops the duplicates that even batches add on several processes)."""
    from tqdm.auto import tqdm
    from transformers import EvalPrediction

    was_training = model.training
    model.eval()
    all_preds: list[list[np.ndarray]] = []
    all_labels: list[list[np.ndarray]] = []
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=disable_tqdm or not accelerator.is_local_main_process):
        labels = tuple(batch.pop(name) for name in label_names if name in batch)
        outputs = model(**batch)
        preds = tuple(t.float() if t.is_floating_point() else t for t in _output_tensors(outputs))
        if accelerator.num_processes > 1:
            # Token-level outputs differ in length between processes: pad before gathering.
            preds = tuple(accelerator.pad_across_processes(t, dim=1, pad_index=-100) if t.ndim >= 2 else t for t in preds)
            labels = tuple(accelerator.pad_across_processes(t, dim=1, pad_index=-100) if t.ndim >= 2 else t for t in labels)
        preds, labels = accelerator.gather_for_metrics((preds, labels))
        if not all_preds:
            all_preds = [[] for _ in preds]
            all_labels = [[] for _ in labels]
        for store, t in zip(all_preds, preds):
            store.append(t.cpu().numpy())
        for store, t in zip(all_labels, labels):
            store.append(t.cpu().numpy())
    if was_training:
        model.train()
    predictions = tuple(_concat_padded(parts) for parts in all_preds)
    label_ids = tuple(_concat_padded(parts) for parts in all_labels)
    return EvalPrediction(
        predictions=predictions[0] if len(predictions) == 1 else predictions,
        label_ids=(label_ids[0] if len(label_ids) == 1 else label_ids) if label_ids else None,
    )


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuningResult:
    """What one fine-tuning run returns.

    Attributes:
        seed: the seed of the run.
        metrics: final (or best, with ``metric_for_best_model``) evaluation metrics keyed
            ``"<split>/<name>"``, plus ``train_loss`` (mean over the last logging window),
            ``train_runtime`` (s), ``train_steps_per_second``.
        loss_history: training loss of every optimizer step (mean over its micro-batches, this process).
        eval_history: (step, metrics) of every evaluation.
        predictions: ``EvalPrediction`` per predict split (test sets), from the returned weights.
        global_step: optimizer steps done.
        output_dir: where the model was saved (None if not saved).
        model: the unwrapped model (``run_with_seeds`` drops it unless asked to keep it).
    """

    seed: int | None
    metrics: dict[str, float]
    loss_history: list[float]
    eval_history: list[tuple[int, dict[str, float]]]
    predictions: dict[str, Any]
    global_step: int
    output_dir: str | None
    model: Any = None


def _evaluate_all(model, eval_loaders, compute_metrics, accelerator, args, label_names) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for split, loader in eval_loaders.items():
        output = predict(model, loader, accelerator, label_names, desc=f"eval {split}", disable_tqdm=args.disable_tqdm)
        if compute_metrics is not None:
            for name, value in compute_metrics(split, output).items():
                metrics[f"{split}/{name}"] = float(value)
    return metrics


def _is_better(value: float, best: float | None, greater_is_better: bool) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value > best if greater_is_better else value < best


def finetune(
    model: torch.nn.Module,
    train_dataset,
    data_collator: Callable,
    args: FinetuningArguments,
    *,
    eval_datasets: Mapping[str, Any] | None = None,
    compute_metrics: Callable[[str, Any], Mapping[str, float]] | None = None,
    predict_datasets: Mapping[str, Any] | None = None,
    tokenizer=None,
    accelerator=None,
    seed: int | None = None,
    output_dir: str | None = None,
    label_names: Sequence[str] = ("labels",),
    log_prefix: str = "",
    log_step_offset: int = 0,
) -> FinetuningResult:
    """Fine-tune ``model`` on ``train_dataset`` and evaluate; the ELECTRA recipe from ``args``.

    Args:
        model: a transformers model whose forward returns ``loss`` when labels are in the batch.
        train_dataset: tokenized examples (columns the model accepts + ``label``/``labels``;
            other columns are dropped). For ``group_by_length`` it needs ``input_ids``.
        data_collator: batch builder (see :func:`make_collator`).
        args: :class:`FinetuningArguments`. ``learning_rate``/``layer_decay`` None → official
            values for the model size; ``num_train_epochs`` None → 3.
        eval_datasets: split name → tokenized labeled dataset, evaluated at the end (and every
            ``eval_steps``).
        compute_metrics: ``(split, EvalPrediction) → {name: value}``; keys are reported as
            ``"<split>/<name>"``.
        predict_datasets: split name → tokenized dataset (labels not needed), predicted at the
            end with the returned weights (test sets).
        tokenizer: saved next to the model.
        accelerator: an ``Accelerator`` (one per process, reused across runs); None → :func:`make_accelerator`.
        seed: seeds python/numpy/torch and the data order (None: not reseeded, order seed 0).
        output_dir: where to save the model (default ``args.output_dir``).
        label_names: batch keys holding labels (popped before forward at evaluation).
        log_prefix, log_step_offset: tracker keys are prefixed, steps offset (several runs, one tracker).
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    accelerator = accelerator or make_accelerator(args)
    if accelerator.gradient_accumulation_steps != args.gradient_accumulation_steps:
        accelerator.gradient_accumulation_steps = args.gradient_accumulation_steps
    if seed is not None:
        set_seed(seed)
    output_dir = output_dir or args.output_dir
    learning_rate, layer_decay = resolve_learning_rate_and_layer_decay(args, getattr(model, "config", None))
    epochs = args.num_train_epochs if args.num_train_epochs is not None else _DEFAULT_EPOCHS

    # Data
    train_dataset = _drop_unused_columns(train_dataset, model, label_names)
    if len(train_dataset) == 0:
        raise ValueError("The training set is empty")
    order_seed = seed if seed is not None else 0
    # Every DataLoader iterator draws a worker base seed from its generator; with none it would
    # draw from the global RNG, so a resumed run (which starts a new iterator) would see other
    # dropout masks than the uninterrupted one.
    loader_kwargs = dict(batch_size=args.per_device_train_batch_size, collate_fn=data_collator,
                         num_workers=args.dataloader_num_workers, generator=torch.Generator().manual_seed(order_seed))
    if args.group_by_length:
        if "input_ids" not in train_dataset.column_names:
            raise ValueError("--group_by_length needs an input_ids column")
        lengths = [len(ids) for ids in train_dataset["input_ids"]]
        sampler = LengthGroupedSampler(lengths, args.per_device_train_batch_size, seed=order_seed)
    else:
        sampler = EpochShuffleSampler(len(train_dataset), seed=order_seed)
    train_loader = DataLoader(train_dataset, sampler=sampler, **loader_kwargs)
    eval_loaders = {
        split: DataLoader(_drop_unused_columns(ds, model, label_names), batch_size=args.per_device_eval_batch_size,
                          collate_fn=data_collator, num_workers=args.dataloader_num_workers,
                          generator=torch.Generator().manual_seed(order_seed))
        for split, ds in (eval_datasets or {}).items()
    }
    predict_loaders = {
        split: DataLoader(_drop_unused_columns(ds, model, label_names), batch_size=args.per_device_eval_batch_size,
                          collate_fn=data_collator, num_workers=args.dataloader_num_workers,
                          generator=torch.Generator().manual_seed(order_seed))
        for split, ds in (predict_datasets or {}).items()
    }

    optimizer = build_optimizer(model, args, learning_rate, layer_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}
    predict_loaders = {k: accelerator.prepare(v) for k, v in predict_loaders.items()}

    # Optimizer steps, not micro-batches: the last partial accumulation of an epoch still steps
    # (accelerate syncs at the end of the dataloader).
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    total_steps = args.max_steps if args.max_steps > 0 else max(1, math.ceil(epochs * steps_per_epoch))
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(total_steps * args.warmup_ratio)
    # Stepped by hand once per real optimizer step (a prepared scheduler would step once per
    # process and per skipped fp16 step).
    scheduler = build_scheduler(args.lr_scheduler_type, optimizer, warmup_steps, total_steps)

    if accelerator.is_main_process:
        logger.info("fine-tuning: %d examples, %d epochs, %d optimizer steps (%d warm-up), lr %.3g, layer decay %.3g, "
                    "batch %d × %d accumulation × %d processes", len(train_dataset), num_epochs, total_steps,
                    warmup_steps, learning_rate, layer_decay, args.per_device_train_batch_size,
                    args.gradient_accumulation_steps, accelerator.num_processes)

    loss_history: list[torch.Tensor] = []
    eval_history: list[tuple[int, dict[str, float]]] = []
    best_value, best_metrics, best_state = None, None, None
    window_loss = torch.zeros((), device=accelerator.device)
    window_steps = 0
    last_logged_loss = float("nan")
    step_loss = torch.zeros((), device=accelerator.device)
    micro_batches = 0
    global_step = 0
    # What makes a checkpoint (or a finished run's record) this run's: checked before reusing it.
    fingerprint = {**run_fingerprint(args, len(train_dataset), accelerator.num_processes), "seed": seed,
                   "total_steps": total_steps}
    checkpoints_root = Path(output_dir) / "checkpoints"
    resume_path = find_latest_checkpoint(checkpoints_root) if args.resume else None
    if resume_path is not None:
        state = read_training_state(resume_path)
        _refuse_another_run(state.get("fingerprint", {}), fingerprint, resume_path)
        accelerator.load_state(str(resume_path))  # weights, optimizer, RNG states of every process
        scheduler.load_state_dict(torch.load(resume_path / "scheduler.pt", weights_only=True))
        global_step = state["global_step"]
        loss_history = [torch.tensor(v, device=accelerator.device) for v in state["loss_history"]]
        eval_history = [(step, metrics) for step, metrics in state["eval_history"]]
        best_value, best_metrics = state["best_value"], state["best_metrics"]
        if (resume_path / "best_model_state.pt").is_file() and (accelerator.is_main_process or not _is_zero3(accelerator)):
            best_state = torch.load(resume_path / "best_model_state.pt", weights_only=True)
        window_loss.fill_(state["window_loss"])
        window_steps = state["window_steps"]
        last_logged_loss = state["last_logged_loss"]
        logger.info("resumed %s at optimizer step %d of %d", resume_path, global_step, total_steps)

    def save_running_checkpoint() -> None:
        """A collective (DeepSpeed saves shards on every process); crash-safe (see save_checkpoint)."""
        state = {"global_step": global_step, "fingerprint": fingerprint,
                 "loss_history": torch.stack(loss_history).tolist() if loss_history else [],
                 "eval_history": eval_history, "best_value": best_value, "best_metrics": best_metrics,
                 "window_loss": float(accelerator.reduce(window_loss, "mean")), "window_steps": window_steps,
                 "last_logged_loss": last_logged_loss}

        def extras(folder: Path) -> None:
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            if best_state is not None:
                torch.save(best_state, folder / "best_model_state.pt")

        save_checkpoint(accelerator, checkpoints_root, global_step, state, total_limit=1, save_extras=extras)

    progress = tqdm(total=total_steps, initial=global_step, desc=f"{log_prefix}train".strip("/"),
                    disable=args.disable_tqdm or not accelerator.is_local_main_process)
    start = time.perf_counter()
    model.train()
    start_epoch = global_step // steps_per_epoch
    for epoch in range(start_epoch, num_epochs):
        if global_step >= total_steps:
            break
        sampler.set_epoch(epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        epoch_loader = train_loader
        batches_done = (global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
        if batches_done > 0:  # resumed inside this epoch: the same order, minus what was trained on
            epoch_loader = accelerator.skip_first_batches(train_loader, min(batches_done, len(train_loader)))
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                outputs = model(**batch)
                loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs[0]
                accelerator.backward(loss)
                step_loss += loss.detach().float()
                micro_batches += 1
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if not accelerator.sync_gradients:
                continue  # a micro-batch inside an accumulation: no optimizer step happened
            if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: lr stays put
                scheduler.step()
            global_step += 1
            mean_step_loss = step_loss / micro_batches
            loss_history.append(mean_step_loss)
            window_loss += mean_step_loss
            window_steps += 1
            step_loss = torch.zeros((), device=accelerator.device)
            micro_batches = 0
            progress.update(1)

            if args.logging_steps > 0 and (global_step % args.logging_steps == 0 or global_step == total_steps):
                last_logged_loss = accelerator.reduce(window_loss / window_steps, "mean").item()
                window_loss.zero_()
                window_steps = 0
                progress.set_postfix(loss=f"{last_logged_loss:.4f}")
                accelerator.log({f"{log_prefix}train/loss": last_logged_loss,
                                 f"{log_prefix}train/learning_rate": scheduler.get_last_lr()[-1],
                                 f"{log_prefix}train/epoch": global_step / steps_per_epoch},
                                step=log_step_offset + global_step)

            if args.eval_steps > 0 and global_step % args.eval_steps == 0 and global_step != total_steps and eval_loaders:
                metrics = _evaluate_all(model, eval_loaders, compute_metrics, accelerator, args, label_names)
                eval_history.append((global_step, metrics))
                accelerator.log({f"{log_prefix}eval/{k}": v for k, v in metrics.items()}, step=log_step_offset + global_step)
                if args.metric_for_best_model:
                    value = metrics.get(args.metric_for_best_model)
                    if _is_better(value, best_value, args.greater_is_better):  # same decision on every process
                        best_value, best_metrics = value, metrics
                        best_state = _full_state_copy(accelerator, model)
            if args.checkpointing_steps > 0 and global_step % args.checkpointing_steps == 0 and global_step < total_steps:
                save_running_checkpoint()
            if global_step >= total_steps:
                break
    progress.close()
    runtime = time.perf_counter() - start
    if window_steps:  # a tail shorter than logging_steps (or logging disabled)
        last_logged_loss = accelerator.reduce(window_loss / window_steps, "mean").item()

    metrics = _evaluate_all(model, eval_loaders, compute_metrics, accelerator, args, label_names) if eval_loaders else {}
    if eval_loaders:
        eval_history.append((global_step, metrics))
        accelerator.log({f"{log_prefix}eval/{k}": v for k, v in metrics.items()}, step=log_step_offset + global_step)
    if args.metric_for_best_model:
        value = metrics.get(args.metric_for_best_model)
        if args.metric_for_best_model not in metrics:
            raise KeyError(f"--metric_for_best_model {args.metric_for_best_model!r} is not among the metrics "
                           f"{sorted(metrics)}")
        if best_value is not None and not _is_better(value, best_value, args.greater_is_better):
            _load_full_state(accelerator, model, best_state)
            best_step = next(step for step, m in eval_history if m is best_metrics or m == best_metrics)
            logger.info("kept the weights of step %d (%s %.4g; final %.4g)", best_step, args.metric_for_best_model,
                        best_value, value)
            metrics = best_metrics
    metrics = {**metrics, "train_loss": last_logged_loss, "train_runtime": runtime,
               "train_steps_per_second": global_step / runtime if runtime > 0 else float("nan")}

    predictions = {
        split: predict(model, loader, accelerator, label_names, desc=f"predict {split}", disable_tqdm=args.disable_tqdm)
        for split, loader in predict_loaders.items()
    }

    saved_to = None
    if args.save_model:
        saved_to = output_dir
        save_finetuned_model(accelerator, model, output_dir, tokenizer)
    unwrapped = accelerator.unwrap_model(model)
    result = FinetuningResult(
        seed=seed,
        metrics=metrics,
        loss_history=torch.stack(loss_history).tolist() if loss_history else [],
        eval_history=eval_history,
        predictions=predictions,
        global_step=global_step,
        output_dir=saved_to,
        model=unwrapped,
    )
    if accelerator.is_main_process:
        write_run_result(result, output_dir, fingerprint)
        shutil.rmtree(checkpoints_root, ignore_errors=True)  # the run is complete: nothing to resume
    accelerator.wait_for_everyone()
    return result


RUN_RESULT_FILE = "run_result.json"
_PREDICTIONS_FILE = "run_predictions.npz"
#: The arguments a finished run is reused under ``--resume`` only if they are unchanged.
_FINGERPRINT_FIELDS = ("learning_rate", "layer_decay", "official_layer_decay_off_by_one", "weight_decay", "adam_beta1",
                       "adam_beta2", "adam_epsilon", "adam_bias_correction", "lr_scheduler_type", "warmup_ratio",
                       "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                       "max_grad_norm", "max_seq_length", "group_by_length", "pad_to_max_length", "metric_for_best_model",
                       "greater_is_better", "eval_steps")


def run_fingerprint(args: FinetuningArguments, num_train_examples: int, num_processes: int) -> dict[str, Any]:
    """What makes two fine-tuning runs of one seed the same run (recorded in run_result.json)."""
    return {**{name: getattr(args, name) for name in _FINGERPRINT_FIELDS},
            "num_train_examples": num_train_examples, "num_processes": num_processes}


def write_run_result(result: FinetuningResult, run_dir: str | os.PathLike,
                     fingerprint: Mapping[str, Any] | None = None) -> Path:
    """Record a finished run (metrics, histories, test-set predictions) in ``run_dir`` so that
    ``--resume`` can skip it; written atomically (temp file + rename) after the predictions."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}

    def store(value) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return [store(v) for v in value]
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return key

    predictions = {split: {"predictions": store(p.predictions), "label_ids": store(p.label_ids)}
                   for split, p in result.predictions.items()}
    if arrays:
        with open(run_dir / (_PREDICTIONS_FILE + ".tmp"), "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(run_dir / (_PREDICTIONS_FILE + ".tmp"), run_dir / _PREDICTIONS_FILE)
    record = {"seed": result.seed, "metrics": result.metrics, "loss_history": result.loss_history,
              "eval_history": result.eval_history, "global_step": result.global_step, "output_dir": result.output_dir,
              "predictions": predictions, "fingerprint": dict(fingerprint or {})}
    path = run_dir / RUN_RESULT_FILE
    (run_dir / (RUN_RESULT_FILE + ".tmp")).write_text(json.dumps(record, indent=2, allow_nan=True))
    os.replace(run_dir / (RUN_RESULT_FILE + ".tmp"), path)
    return path


def read_run_result(run_dir: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None) -> FinetuningResult | None:
    """The finished run recorded in ``run_dir`` by :func:`write_run_result` (None if there is none).
    With ``fingerprint``, a record made under other arguments or data is refused (ValueError)."""
    from transformers import EvalPrediction

    run_dir = Path(run_dir)
    if not (run_dir / RUN_RESULT_FILE).is_file():
        return None
    record = json.loads((run_dir / RUN_RESULT_FILE).read_text())
    if fingerprint is not None:
        _refuse_another_run(record.get("fingerprint", {}), fingerprint, run_dir / RUN_RESULT_FILE)
    arrays = dict(np.load(run_dir / _PREDICTIONS_FILE)) if (run_dir / _PREDICTIONS_FILE).is_file() else {}

    def load(value):
        if value is None:
            return None
        if isinstance(value, list):
            return tuple(load(v) for v in value)
        return arrays[value]

    predictions = {split: EvalPrediction(predictions=load(p["predictions"]), label_ids=load(p["label_ids"]))
                   for split, p in record["predictions"].items()}
    return FinetuningResult(seed=record["seed"], metrics=record["metrics"], loss_history=record["loss_history"],
                            eval_history=[(step, metrics) for step, metrics in record["eval_history"]],
                            predictions=predictions, global_step=record["global_step"], output_dir=record["output_dir"])


def _refuse_another_run(recorded: Mapping[str, Any], expected: Mapping[str, Any], source: Path) -> None:
    """ValueError naming every setting in which ``source`` (checkpoint or run record) differs from
    this run (only the keys of ``expected`` are compared)."""
    different = {k: (recorded.get(k), v) for k, v in expected.items() if recorded.get(k) != v}
    if different:
        raise ValueError(
            f"--resume: {source} was made by another run ("
            + ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in sorted(different.items()))
            + "); resume with the same arguments, data and seed, or use another --output_dir.")


def _is_zero3(accelerator) -> bool:
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return False
    return accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage") == 3


def _full_state_copy(accelerator, model) -> dict[str, torch.Tensor] | None:
    """A CPU copy of the full weights. A collective: call on every process. Under DeepSpeed
    ZeRO-3 only the main process gets it (None elsewhere); otherwise every process its replica's."""
    state_dict = accelerator.get_state_dict(model)
    if _is_zero3(accelerator) and not accelerator.is_main_process:
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in state_dict.items()}


def _load_full_state(accelerator, model, state_dict) -> None:
    """Load weights from :func:`_full_state_copy` into the prepared model (a collective). Under
    ZeRO-3 the parameters are gathered, the main process loads them and DeepSpeed re-partitions."""
    unwrapped = accelerator.unwrap_model(model)
    if _is_zero3(accelerator):
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(unwrapped.parameters()), modifier_rank=0):
            if accelerator.is_main_process:
                unwrapped.load_state_dict(state_dict, strict=False)
        return
    missing, unexpected = unwrapped.load_state_dict(state_dict, strict=False)
    if unexpected or set(missing) - set(getattr(unwrapped, "all_tied_weights_keys", None) or {}):
        raise RuntimeError(f"best-model weights do not fit the model: missing {missing}, unexpected {unexpected}")


def save_finetuned_model(accelerator, model, output_dir: str, tokenizer=None) -> None:
    """``save_pretrained`` the unwrapped model (and tokenizer) from the main process."""
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # full weights also under DeepSpeed ZeRO-3
    if accelerator.is_main_process:
        os.makedirs(output_dir, exist_ok=True)
    # save_original_format=False: a model that transformers built under ZeRO-3 carries the legacy
    # LayerNorm renaming in its load-time conversions and would be saved as LayerNorm.gamma/beta
    # (observed with transformers 5.23); the weights are saved under the model's own names.
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
                              state_dict=state_dict, save_original_format=False)
    if tokenizer is not None and accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()


# --------------------------------------------------------------------------------------------
# Several seeds
# --------------------------------------------------------------------------------------------
@dataclass
class SeedsResult:
    """Per-seed results and the median of every metric over seeds (the paper's protocol)."""

    per_seed: list[FinetuningResult]
    median: dict[str, float]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.per_seed]

    def best_seed(self, metric: str, greater_is_better: bool = True) -> FinetuningResult:
        """The run with the best value of ``metric`` (e.g. to write test predictions from)."""
        scored = [r for r in self.per_seed if metric in r.metrics and not math.isnan(r.metrics[metric])]
        if not scored:
            return self.per_seed[0]
        key = (lambda r: r.metrics[metric]) if greater_is_better else (lambda r: -r.metrics[metric])
        return max(scored, key=key)


def median_metrics(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Median over runs of every metric present in all of them (NaNs ignored; all-NaN → NaN)."""
    if not runs:
        return {}
    keys = [k for k in runs[0] if all(k in r for r in runs[1:])]
    out = {}
    for key in keys:
        values = np.asarray([float(r[key]) for r in runs], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[key] = float(np.median(finite)) if finite.size else float("nan")
    return out


def run_with_seeds(
    model_init: Callable[[], torch.nn.Module],
    train_dataset,
    data_collator: Callable,
    args: FinetuningArguments,
    *,
    eval_datasets: Mapping[str, Any] | None = None,
    compute_metrics: Callable[[str, Any], Mapping[str, float]] | None = None,
    predict_datasets: Mapping[str, Any] | None = None,
    tokenizer=None,
    accelerator=None,
    run_name: str = "",
    label_names: Sequence[str] = ("labels",),
    keep_models: bool = False,
) -> SeedsResult:
    """Fine-tune a fresh ``model_init()`` (same checkpoint, new head) once per seed in
    ``args.seeds``; models go to ``<output_dir>/<run_name>/seed_<seed>``. Returns the per-seed
    results and the median over seeds of every metric."""
    from accelerate.utils import set_seed

    accelerator = accelerator or make_accelerator(args)
    results: list[FinetuningResult] = []
    step_offset = 0
    for seed in args.seeds:
        run_dir = os.path.join(args.output_dir, run_name, f"seed_{seed}")
        fingerprint = {**run_fingerprint(args, len(train_dataset), accelerator.num_processes), "seed": seed}
        finished = read_run_result(run_dir, fingerprint) if args.resume else None
        if finished is not None:
            logger.info("--resume: %s already finished (%s); not trained again", run_dir, RUN_RESULT_FILE)
            step_offset += finished.global_step
            results.append(finished)
            continue
        set_seed(seed)  # before model_init: the new head's initialisation depends on the seed
        model = model_init()
        prefix = f"{run_name}/seed_{seed}/" if run_name else f"seed_{seed}/"
        result = finetune(
            model, train_dataset, data_collator, args,
            eval_datasets=eval_datasets, compute_metrics=compute_metrics, predict_datasets=predict_datasets,
            tokenizer=tokenizer, accelerator=accelerator, seed=seed,
            output_dir=run_dir,
            label_names=label_names, log_prefix=prefix, log_step_offset=step_offset,
        )
        step_offset += result.global_step
        if not keep_models:
            result.model = None
        del model
        accelerator.free_memory()
        results.append(result)
    return SeedsResult(per_seed=results, median=median_metrics([r.metrics for r in results]))


def args_to_dict(args: Any) -> dict[str, Any]:
    """A dataclass as a flat dict of tracker-friendly values (lists → strings)."""
    out = {}
    for key, value in dataclasses.asdict(args).items():
        # Trackers (tensorboard hparams) accept only scalars and strings.
        out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
