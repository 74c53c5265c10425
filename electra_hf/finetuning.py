"""The fine-tuning loop shared by every task family (GLUE, tagging, QA), with Accelerate.

Nothing here knows about a task: callers describe one with a `FinetuningTask` (tokenized data
sets, a collator, a `compute_metrics(split, EvalPrediction)` callback) and get metrics back.
The ELECTRA recipe lives in `electra_hf.arguments.FinetuningArguments` (the paper's defaults)
and `electra_hf.optimization` (layer-wise LR decay, Adam, schedule); several seeds and their
median in `electra_hf.finetuning_runs`.

Under `accelerate launch` the loop runs on CPU, one or several GPUs, with gradient accumulation
(optimizer steps are counted, not micro-batches) and mixed precision; evaluation gathers with
`gather_for_metrics`, so every example is counted exactly once. A run interrupted with
`--checkpointing_steps` resumes from its newest checkpoint (`--resume_from_checkpoint latest`)
with the same data order, random streams and schedule.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler

from .arguments import OFFICIAL_LAYER_DECAY, OFFICIAL_LEARNING_RATES, FinetuningArguments
from .checkpoints import find_latest_checkpoint, load_checkpoint, save_checkpoint
from .optimization import ElectraAdamW, build_scheduler, layerwise_lr_parameter_groups
from .prediction import predict
from .run_records import FinetuningResult, refuse_another_run, run_fingerprint, write_run_result
from .samplers import EpochShuffleSampler, LengthGroupedSampler
from .training import build_accelerator, train_micro_batch

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuningArguments",
    "FinetuningTask",
    "FinetuningResult",
    "resolve_model_size",
    "resolve_learning_rate_and_layer_decay",
    "make_collator",
    "LengthGroupedSampler",
    "EpochShuffleSampler",
    "build_optimizer",
    "predict",
    "finetune",
    "save_finetuned_model",
]

#: hidden_size → size name, for the official architectures.
_SIZE_BY_HIDDEN: dict[int, str] = {256: "small", 768: "base", 1024: "large"}
_DEFAULT_EPOCHS = 3.0


@dataclass
class FinetuningTask:
    """What a fine-tuning run trains on and how it is scored.

    Attributes:
        train_dataset: tokenized examples (columns the model accepts + `label`/`labels`; other
            columns are dropped). For `group_by_length` it needs `input_ids`.
        data_collator: batch builder (see `make_collator`).
        eval_datasets: split name → tokenized labeled data set, evaluated at the end (and every
            `eval_steps`).
        compute_metrics: `(split, EvalPrediction) → {name: value}`; reported as `"<split>/<name>"`.
        predict_datasets: split name → tokenized data set (labels not needed), predicted at the
            end with the returned weights (test sets).
        tokenizer: saved beside the model.
        label_names: batch keys holding labels (popped before the forward pass at evaluation).
    """

    train_dataset: Any
    data_collator: Callable
    eval_datasets: Mapping[str, Any] = field(default_factory=dict)
    compute_metrics: Callable[[str, Any], Mapping[str, float]] | None = None
    predict_datasets: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: Any = None
    label_names: Sequence[str] = ("labels",)


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
def make_collator(tokenizer, args: FinetuningArguments):
    """Dynamic padding (`DataCollatorWithPadding`) by default; with `pad_to_max_length` the
    datasets are already padded and are only stacked."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if args.pad_to_max_length:
        return default_data_collator
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=args.pad_to_multiple_of)


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


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
@dataclass
class FinetuningState:
    """Where a fine-tuning run is: checkpoints save it, resume restores it."""

    step: int = 0
    loss_history: list[float] = field(default_factory=list)  # mean training loss of every optimizer step
    eval_history: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    best_value: float | None = None  # of --metric_for_best_model
    best_metrics: dict[str, float] | None = None
    window_loss: float = 0.0  # sum of step losses since the last log (mean over processes)
    window_steps: int = 0
    last_logged_loss: float = float("nan")


@dataclass
class _Plan:
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


class _LossTracker:
    """The training loss on the device (no host sync per step): per micro-batch, one mean per
    optimizer step, and sums over the logging window."""

    def __init__(self, device, state: FinetuningState):
        self.device = device
        self.history = [torch.tensor(value, device=device) for value in state.loss_history]
        self.window = torch.tensor(state.window_loss, device=device)
        self.window_steps = state.window_steps
        self.step_sum, self.micro_batches = torch.zeros((), device=device), 0

    def add_micro_batch(self, loss: torch.Tensor) -> None:
        self.step_sum += loss.detach().float()
        self.micro_batches += 1

    def end_step(self) -> None:
        mean = self.step_sum / self.micro_batches
        self.history.append(mean)
        self.window += mean
        self.window_steps += 1
        self.step_sum, self.micro_batches = torch.zeros((), device=self.device), 0

    def window_mean(self, accelerator) -> float:
        """The mean step loss of the window over all processes (one host sync); resets the window."""
        mean = accelerator.reduce(self.window / max(self.window_steps, 1), "mean").item()
        self.window.zero_()
        self.window_steps = 0
        return mean

    def save_into(self, state: FinetuningState, accelerator) -> None:
        state.loss_history = torch.stack(self.history).tolist() if self.history else []
        state.window_loss = float(accelerator.reduce(self.window, "mean"))
        state.window_steps = self.window_steps


@dataclass
class _Run:
    """One fine-tuning run's prepared pieces."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    sampler: Any
    eval_loaders: dict[str, Any]
    predict_loaders: dict[str, Any]
    task: FinetuningTask
    args: FinetuningArguments
    plan: _Plan
    output_dir: str
    fingerprint: dict[str, Any]
    log_prefix: str = ""
    log_step_offset: int = 0
    best_state: dict[str, torch.Tensor] | None = None  # weights of the best evaluation so far

    @property
    def checkpoints_root(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    def log(self, values: Mapping[str, float], step: int) -> None:
        self.accelerator.log({f"{self.log_prefix}{key}": value for key, value in values.items()},
                             step=self.log_step_offset + step)


def finetune(model: torch.nn.Module, task: FinetuningTask, args: FinetuningArguments, *, accelerator=None,
             seed: int | None = None, output_dir: str | None = None, log_prefix: str = "",
             log_step_offset: int = 0) -> FinetuningResult:
    """Fine-tune `model` on `task` with the recipe of `args`, then evaluate and predict.

    `model` is a transformers model whose forward returns `loss` when labels are in the batch.
    `accelerator`: one per process, reused across runs (default: built from `args`). `seed` seeds
    python/numpy/torch and the data order (None: not reseeded, order seed 0). `output_dir`
    (default `args.output_dir`) receives the model and the run record. `log_prefix` and
    `log_step_offset` keep several runs apart in one tracker.
    """
    from accelerate.utils import set_seed

    accelerator = accelerator or build_accelerator(args)
    accelerator.gradient_accumulation_steps = args.gradient_accumulation_steps
    if seed is not None:
        set_seed(seed)
    run = _prepare_run(model, task, args, accelerator, seed, output_dir or args.output_dir)
    run.log_prefix, run.log_step_offset = log_prefix, log_step_offset
    state = _restore(run) if args.resume_from_checkpoint else None
    start = time.perf_counter()
    state = _train(run, state or FinetuningState())
    runtime = time.perf_counter() - start
    metrics = _final_metrics(run, state)
    predictions = {split: predict(run.model, loader, accelerator, task.label_names, desc=f"predict {split}",
                                  disable_tqdm=args.disable_tqdm)
                   for split, loader in run.predict_loaders.items()}
    metrics.update(train_loss=state.last_logged_loss, train_runtime=runtime,
                   train_steps_per_second=state.step / runtime if runtime > 0 else float("nan"))
    return _finish(run, state, metrics, predictions, seed)


def _prepare_run(model, task: FinetuningTask, args: FinetuningArguments, accelerator, seed, output_dir) -> _Run:
    learning_rate, layer_decay = resolve_learning_rate_and_layer_decay(args, getattr(model, "config", None))
    train_dataset = _drop_unused_columns(task.train_dataset, model, task.label_names)
    if len(train_dataset) == 0:
        raise ValueError("The training set is empty")
    order_seed = seed if seed is not None else 0
    sampler = _train_sampler(train_dataset, args, order_seed)
    train_loader = DataLoader(train_dataset, sampler=sampler, batch_size=args.per_device_train_batch_size,
                              **_loader_kwargs(task, args, order_seed))
    eval_loaders, predict_loaders = (
        {split: accelerator.prepare(_eval_loader(dataset, model, task, args, order_seed)) for split, dataset in datasets.items()}
        for datasets in (task.eval_datasets or {}, task.predict_datasets or {}))
    optimizer = build_optimizer(model, args, learning_rate, layer_decay)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    plan = _plan(args, train_loader)
    # Stepped by hand once per real optimizer step (a prepared scheduler would step once per
    # process and per skipped fp16 step).
    scheduler = build_scheduler(args.lr_scheduler_type, optimizer, plan.warmup_steps, plan.total_steps)
    logger.info("fine-tuning: %d examples, %d epochs, %d optimizer steps (%d warm-up), lr %.3g, layer decay %.3g, "
                "batch %d × %d accumulation × %d processes", len(train_dataset), plan.num_epochs, plan.total_steps,
                plan.warmup_steps, learning_rate, layer_decay, args.per_device_train_batch_size,
                args.gradient_accumulation_steps, accelerator.num_processes)
    # What makes a checkpoint (or a finished run's record) this run's: checked before reusing it.
    fingerprint = {**run_fingerprint(args, len(train_dataset), accelerator.num_processes), "seed": seed,
                   "total_steps": plan.total_steps}
    return _Run(accelerator, model, optimizer, scheduler, train_loader, sampler, eval_loaders, predict_loaders, task,
                args, plan, output_dir, fingerprint)


def _loader_kwargs(task: FinetuningTask, args: FinetuningArguments, order_seed: int) -> dict[str, Any]:
    # Every DataLoader iterator draws a worker base seed from its generator; with none it would
    # draw from the global RNG, and a resumed run (a new iterator) would see other dropout masks.
    return dict(collate_fn=task.data_collator, num_workers=args.dataloader_num_workers,
                generator=torch.Generator().manual_seed(order_seed))


def _train_sampler(train_dataset, args: FinetuningArguments, order_seed: int) -> Sampler[int]:
    if not args.group_by_length:
        return EpochShuffleSampler(len(train_dataset), seed=order_seed)
    if "input_ids" not in train_dataset.column_names:
        raise ValueError("--group_by_length needs an input_ids column")
    lengths = [len(ids) for ids in train_dataset["input_ids"]]
    return LengthGroupedSampler(lengths, args.per_device_train_batch_size, seed=order_seed)


def _eval_loader(dataset, model, task: FinetuningTask, args: FinetuningArguments, order_seed: int) -> DataLoader:
    return DataLoader(_drop_unused_columns(dataset, model, task.label_names), batch_size=args.per_device_eval_batch_size,
                      **_loader_kwargs(task, args, order_seed))


def _plan(args: FinetuningArguments, train_loader) -> _Plan:
    """Optimizer steps, not micro-batches: the last partial accumulation of an epoch still steps
    (Accelerate syncs at the end of the data)."""
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    epochs = args.num_train_epochs if args.num_train_epochs is not None else _DEFAULT_EPOCHS
    total = args.max_train_steps if args.max_train_steps else max(1, math.ceil(epochs * steps_per_epoch))
    return _Plan(total, steps_per_epoch, args.warmup_steps(total))


def _train(run: _Run, state: FinetuningState) -> FinetuningState:
    """The optimizer steps from `state.step` to the planned total."""
    from tqdm.auto import tqdm

    accelerator, args, plan = run.accelerator, run.args, run.plan
    losses = _LossTracker(accelerator.device, state)
    progress = tqdm(total=plan.total_steps, initial=state.step, desc=f"{run.log_prefix}train".strip("/"),
                    disable=args.disable_tqdm or not accelerator.is_local_main_process)
    run.model.train()
    for epoch in range(state.step // plan.steps_per_epoch, plan.num_epochs):
        for batch in _epoch_batches(run, epoch, state.step):
            _, loss = train_micro_batch(accelerator, run.model, run.optimizer, batch, args.max_grad_norm)
            losses.add_micro_batch(loss)
            if not accelerator.sync_gradients:
                continue  # a micro-batch inside an accumulation: no optimizer step happened
            if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the learning rate stays put
                run.scheduler.step()
            state.step += 1
            losses.end_step()
            progress.update(1)
            _after_step(run, state, losses, progress)
            if state.step >= plan.total_steps:
                break
        if state.step >= plan.total_steps:
            break
    progress.close()
    losses.save_into(state, accelerator)
    if state.window_steps:  # a tail shorter than logging_steps (or logging disabled)
        state.last_logged_loss = losses.window_mean(accelerator)
    return state


def _epoch_batches(run: _Run, epoch: int, step: int):
    """This epoch's batches; a run resumed inside the epoch gets the same order, minus what it trained on."""
    run.sampler.set_epoch(epoch)
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(epoch)
    batches_done = (step - epoch * run.plan.steps_per_epoch) * run.args.gradient_accumulation_steps
    if batches_done > 0:
        return run.accelerator.skip_first_batches(run.train_loader, min(batches_done, len(run.train_loader)))
    return run.train_loader


def _after_step(run: _Run, state: FinetuningState, losses: _LossTracker, progress) -> None:
    """Logging, evaluation (keeping the best weights) and checkpoints, as due after an optimizer step."""
    args, step, total = run.args, state.step, run.plan.total_steps
    if args.logging_steps > 0 and (step % args.logging_steps == 0 or step == total):
        state.last_logged_loss = losses.window_mean(run.accelerator)
        progress.set_postfix(loss=f"{state.last_logged_loss:.4f}")
        run.log({"train/loss": state.last_logged_loss, "train/learning_rate": run.scheduler.get_last_lr()[-1],
                 "train/epoch": step / run.plan.steps_per_epoch}, step)
    if args.eval_steps > 0 and step % args.eval_steps == 0 and step != total and run.eval_loaders:
        metrics = _evaluate_all(run.model, run.eval_loaders, run.task.compute_metrics, run.accelerator, args,
                                run.task.label_names)
        state.eval_history.append((step, metrics))
        run.log({f"eval/{key}": value for key, value in metrics.items()}, step)
        if args.metric_for_best_model:
            value = metrics.get(args.metric_for_best_model)
            if _is_better(value, state.best_value, args.greater_is_better):  # the same decision on every process
                state.best_value, state.best_metrics = value, metrics
                run.best_state = _full_state_copy(run.accelerator, run.model)
    if args.checkpointing_steps > 0 and step % args.checkpointing_steps == 0 and step < total:
        losses.save_into(state, run.accelerator)
        _checkpoint(run, state)


def _checkpoint(run: _Run, state: FinetuningState) -> None:
    """A collective (DeepSpeed saves shards on every process); crash-safe (see save_checkpoint)."""

    def extras(folder: Path) -> None:
        if run.best_state is not None:
            torch.save(run.best_state, folder / "best_model_state.pt")

    saved = {**asdict(state), "fingerprint": run.fingerprint}
    save_checkpoint(run.accelerator, run.checkpoints_root, state.step, saved, scheduler=run.scheduler, total_limit=1,
                    save_extras=extras)


def _restore(run: _Run) -> FinetuningState | None:
    """The state of this run's newest checkpoint, with weights, optimizer, schedule and RNG states
    restored; None when it has none (a finished run deletes its checkpoints)."""
    path = find_latest_checkpoint(run.checkpoints_root)
    if path is None:
        return None
    saved = load_checkpoint(run.accelerator, path, run.scheduler)
    refuse_another_run(saved.get("fingerprint", {}), run.fingerprint, path)
    state = FinetuningState(**{f.name: saved[f.name] for f in fields(FinetuningState)})
    state.eval_history = [(step, metrics) for step, metrics in state.eval_history]
    best = path / "best_model_state.pt"
    if best.is_file() and (run.accelerator.is_main_process or not _is_zero3(run.accelerator)):
        run.best_state = torch.load(best, weights_only=True)
    logger.info("resumed %s at optimizer step %d of %d", path, state.step, run.plan.total_steps)
    return state


def _final_metrics(run: _Run, state: FinetuningState) -> dict[str, float]:
    """The last evaluation, or with --metric_for_best_model the best one (its weights restored)."""
    args = run.args
    metrics = {}
    if run.eval_loaders:
        metrics = _evaluate_all(run.model, run.eval_loaders, run.task.compute_metrics, run.accelerator, args,
                                run.task.label_names)
        state.eval_history.append((state.step, metrics))
        run.log({f"eval/{key}": value for key, value in metrics.items()}, state.step)
    if args.metric_for_best_model:
        if args.metric_for_best_model not in metrics:
            raise KeyError(f"--metric_for_best_model {args.metric_for_best_model!r} is not among the metrics "
                           f"{sorted(metrics)}")
        value = metrics[args.metric_for_best_model]
        if state.best_value is not None and not _is_better(value, state.best_value, args.greater_is_better):
            _load_full_state(run.accelerator, run.model, run.best_state)
            best_step = next(step for step, m in state.eval_history if m == state.best_metrics)
            logger.info("kept the weights of step %d (%s %.4g; final %.4g)", best_step, args.metric_for_best_model,
                        state.best_value, value)
            metrics = state.best_metrics
    return metrics


def _finish(run: _Run, state: FinetuningState, metrics, predictions, seed) -> FinetuningResult:
    """Save the model, record the finished run (for --resume_from_checkpoint), drop its checkpoints."""
    accelerator = run.accelerator
    saved_to = None
    if run.args.save_model:
        saved_to = run.output_dir
        save_finetuned_model(accelerator, run.model, run.output_dir, run.task.tokenizer)
    result = FinetuningResult(seed=seed, metrics=metrics, loss_history=state.loss_history,
                              eval_history=state.eval_history, predictions=predictions, global_step=state.step,
                              output_dir=saved_to, model=accelerator.unwrap_model(run.model))
    if accelerator.is_main_process:
        write_run_result(result, run.output_dir, run.fingerprint)
        shutil.rmtree(run.checkpoints_root, ignore_errors=True)  # the run is complete: nothing to resume
    accelerator.wait_for_everyone()
    return result


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------
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
    # save_original_format=False: a model that transformers builds under ZeRO-3 carries the legacy
    # LayerNorm renaming in its load-time conversions and would be saved as LayerNorm.gamma/beta
    # (tests/test_distributed.py checks the saved names); the weights keep the model's own names.
    unwrapped.save_pretrained(output_dir, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
                              state_dict=state_dict, save_original_format=False)
    if tokenizer is not None and accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()


