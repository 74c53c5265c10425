"""The ELECTRA pre-training loop, with Accelerate, on any number of devices.

    run = build_run(config, tokenizer, train_dataset, eval_dataset, model_args, train_args, accelerator)
    state = pretrain(run, resume_from=checkpoint_or_None)
    results = finish(run, state, training_info)

`pretrain` reads top to bottom: a micro-batch, and after each optimizer step the schedule,
logging, evaluation and checkpoints. Where the run is lives in `PretrainingState`, which
checkpoints save and resume restores; a resumed run continues with the same data order, masks,
random streams and schedule as the uninterrupted one.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModel

from .checkpoints import NonFiniteGuard, load_checkpoint, read_training_state, resolve_resume_path, save_checkpoint
from .collator import DataCollatorForElectra
from .configuration import PRETRAINING_FIELDS, ElectraPretrainingConfig
from .continued import CONTINUED_LEARNING_RATE, CheckpointSource, load_initial_weights
from .export import export_pretrained
from .hub import push_exports_to_hub
from .modeling import ElectraForRTDPretraining
from .optimization import ElectraAdamW, build_scheduler, parameter_groups
from .performance import compile_for_training, training_attn_implementation, training_compilation
from .plotting import plot_pretraining_curves
from .pretraining_metrics import MetricWindow, evaluate, step_metric_names
from .training import enable_activation_checkpointing, flatten_for_trackers, log_metrics, train_micro_batch

logger = logging.getLogger(__name__)

#: Peak learning rate by preset when --learning_rate is not given (official: Small 5e-4, Base/Large 2e-4;
#: microsoft/DeBERTa rtd.sh: XSmall 3e-4, Base 1e-4, and no from-scratch Small recipe: Base's, its width).
DEFAULT_LEARNING_RATE = {"tiny": 1e-3, "mini": 1e-3, "small": 5e-4, "small++": 5e-4, "base": 2e-4, "large": 2e-4,
                         "deberta-v3-xsmall": 3e-4, "deberta-v3-small": 1e-4, "deberta-v3-base": 1e-4}


@dataclass
class PretrainingState:
    """Where a run is: checkpoints save it, resume restores it."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batches_into_epoch: int = 0  # micro-batches of this epoch each process has trained on
    tokens_seen: int = 0  # non-padding tokens, all processes, up to the last log or checkpoint

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> "PretrainingState":
        return cls(**{f.name: saved[f.name] for f in fields(cls)})


@dataclass
class PretrainingRun:
    """Everything the loop uses, built by `build_run`; models, optimizer and loaders are prepared."""

    accelerator: Any
    config: ElectraPretrainingConfig
    tokenizer: Any
    args: Any  # electra_hf.arguments.PretrainingArguments
    model: torch.nn.Module  # for evaluation, checkpoints and exports
    step_model: torch.nn.Module  # what the training step calls (`model`, or its compiled wrapper)
    optimizer: Any
    scheduler: Any
    train_loader: DataLoader
    train_collator: DataCollatorForElectra
    eval_loader: DataLoader | None
    eval_collator: DataCollatorForElectra
    max_steps: int
    run_config: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    @property
    def checkpoints_root(self) -> Path:
        return self.output_dir / "checkpoints"

    @property
    def global_batch_size(self) -> int:
        args = self.args
        return args.per_device_train_batch_size * self.accelerator.num_processes * args.gradient_accumulation_steps


# --------------------------------------------------------------------------------------------
# Building a run
# --------------------------------------------------------------------------------------------
def build_run(config, tokenizer, train_dataset, eval_dataset, model_args, train_args, accelerator,
              run_info: dict[str, Any] | None = None, resume_from: Path | None = None) -> PretrainingRun:
    """The model, optimizer, schedule and loaders of a run, prepared by `accelerator`. A run that
    resumes (`resume_from`) skips a continued run's source weights: the checkpoint holds its own."""
    on_cpu = accelerator.device.type == "cpu"
    attn_implementation = training_attn_implementation(model_args.attn_implementation, on_cpu=on_cpu)
    model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    source = CheckpointSource.from_arguments(model_args)
    if source is not None and resume_from is None:  # continued pre-training: the checkpoints' weights
        load_initial_weights(model, source, model_args.shared_embeddings_from)
    if model_args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    # One process without an engine: a one-process FSDP or DeepSpeed run stays eager unless asked.
    plain_process = accelerator.distributed_type == DistributedType.NO
    compilation = training_compilation(model_args.torch_compile, accelerator.device, plain_process,
                                       scope=model_args.torch_compile_scope, mode=model_args.torch_compile_mode,
                                       accumulating=train_args.gradient_accumulation_steps > 1)
    # Compiled graphs are specialised to one shape: every training batch is padded to the full length.
    static_length = config.max_seq_length if compilation else None
    train_loader, train_collator = _train_loader(train_dataset, tokenizer, config, train_args, accelerator, static_length)
    eval_loader, eval_collator = _eval_loader(eval_dataset, tokenizer, config, train_args, accelerator)
    learning_rate = train_args.learning_rate or (
        CONTINUED_LEARNING_RATE if source is not None else DEFAULT_LEARNING_RATE.get(model_args.preset, 5e-4))
    logger.info("peak learning rate %g%s", learning_rate, "" if train_args.learning_rate else
                " (the default of a continued run)" if source is not None else f" (preset {model_args.preset}'s default)")
    optimizer = ElectraAdamW(parameter_groups(model, train_args.weight_decay), lr=learning_rate,
                             betas=(train_args.adam_beta1, train_args.adam_beta2), eps=train_args.adam_epsilon,
                             bias_correction=train_args.adam_bias_correction)
    max_steps = _max_steps(train_args, train_loader)
    # Stepped once per optimizer step on every process (not prepared: no per-process multiplication).
    scheduler = build_scheduler(train_args.lr_scheduler_type, optimizer, train_args.warmup_steps(max_steps), max_steps)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if eval_loader is not None:
        eval_loader = accelerator.prepare(eval_loader)
    # The model was initialised alike on every process (same seed); from here on each process draws
    # its own dropout and generator samples, or every process would apply the same noise pattern.
    set_seed(train_args.seed, device_specific=True)
    step_model = _step_model(model, compilation, accelerator)
    run = PretrainingRun(accelerator, config, tokenizer, train_args, model, step_model, optimizer, scheduler,
                         train_loader, train_collator, eval_loader, eval_collator, max_steps)
    run.run_config = {**(run_info or {}), "model_config": config.to_dict(), "learning_rate": learning_rate,
                      "attn_implementation": attn_implementation, "compilation": compilation,
                      "num_processes": accelerator.num_processes,
                      "distributed_type": accelerator.distributed_type.value,
                      "global_batch_size": run.global_batch_size}
    return run


def _step_model(model, compilation: dict | None, accelerator) -> torch.nn.Module:
    """What the training step calls: `model`, its layers compiled in place (under any wrapper), or
    the whole prepared model compiled."""
    logger.info("training step: %s", f"compiled {compilation}" if compilation else "eager")
    if not compilation:
        return model
    if compilation["scope"] == "layers":
        compile_for_training(accelerator.unwrap_model(model), **compilation)
        return model
    return compile_for_training(model, **compilation)


def _train_loader(dataset, tokenizer, config, args, accelerator,
                  static_length: int | None = None) -> tuple[DataLoader, DataCollatorForElectra]:
    """`static_length`: pad every batch to it (a multiple of it that no example exceeds)."""
    on_gpu = accelerator.device.type != "cpu"
    collator = DataCollatorForElectra.from_config(tokenizer, config, seed=args.seed, process_index=accelerator.process_index,
                                                  pad_to_multiple_of=static_length or (8 if on_gpu else None))
    streaming = not hasattr(dataset, "__len__")
    global_batch = args.per_device_train_batch_size * accelerator.num_processes
    if not streaming and len(dataset) < global_batch:
        raise ValueError(
            f"the corpus gives {len(dataset)} training examples, fewer than one batch ({args.per_device_train_batch_size} "
            f"per device × {accelerator.num_processes} processes); add text or lower --per_device_train_batch_size")
    loader = DataLoader(
        dataset, batch_size=args.per_device_train_batch_size, shuffle=not streaming,
        drop_last=True,  # packed examples: every step the same size
        collate_fn=collator, num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed), pin_memory=on_gpu,
    )
    return loader, collator


def _eval_loader(dataset, tokenizer, config, args, accelerator) -> tuple[DataLoader | None, DataCollatorForElectra]:
    collator = DataCollatorForElectra.from_config(tokenizer, config, seed=args.seed + 1,
                                                  process_index=accelerator.process_index)
    if dataset is None:
        return None, collator
    if args.max_eval_batches is not None:  # the same examples at every evaluation
        dataset = first_examples(dataset, args.max_eval_batches * args.per_device_eval_batch_size * accelerator.num_processes)
    return DataLoader(dataset, batch_size=args.per_device_eval_batch_size, collate_fn=collator), collator


def first_examples(dataset, count: int):
    """The first `count` examples of a data set, as a map-style data set (a stream is read once)."""
    if not hasattr(dataset, "__len__"):
        return datasets.Dataset.from_list(list(itertools.islice(dataset, count)))
    indices = range(min(count, len(dataset)))
    return dataset.select(indices) if hasattr(dataset, "select") else torch.utils.data.Subset(dataset, indices)


def _max_steps(args, train_loader) -> int:
    if args.max_train_steps is not None:
        return args.max_train_steps
    if not hasattr(train_loader.dataset, "__len__"):
        raise ValueError("--streaming needs --max_train_steps (a stream has no known epoch length)")
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    return math.ceil(args.num_train_epochs * steps_per_epoch)


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------
def pretrain(run: PretrainingRun, resume_from: Path | None = None) -> PretrainingResult:
    """Train until `run.max_steps` optimizer steps are done, then write the final checkpoint."""
    accelerator, args = run.accelerator, run.args
    state = restore(run, resume_from) if resume_from is not None else PretrainingState()
    window = MetricWindow(step_metric_names(run.config.objective), accelerator.device)
    tokens = Throughput(accelerator, state.tokens_seen, state.step)
    guard = NonFiniteGuard(accelerator.device)
    last_eval: dict[str, float] = {}
    progress = tqdm(total=run.max_steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc="pre-training", unit="step", dynamic_ncols=True)
    run.model.train()
    while state.step < run.max_steps:
        for batch in epoch_batches(run, state):
            output, loss = train_micro_batch(accelerator, run.model, run.optimizer, batch, args.max_grad_norm,
                                             step_model=run.step_model)
            state.batches_into_epoch += 1
            window.add(output)
            tokens.add(batch["attention_mask"])
            guard.update(loss, state.step + 1)
            if not accelerator.sync_gradients:
                continue
            run.scheduler.step()
            state.step += 1
            progress.update(1)
            if due(state.step, args.logging_steps, run.max_steps):
                guard.check(accelerator)
                log_training(run, state, window, tokens, progress)
            if run.eval_loader is not None and due(state.step, args.eval_steps, run.max_steps):
                last_eval = evaluate_and_log(run, state)
            if due(state.step, args.checkpointing_steps) and state.step < run.max_steps:
                checkpoint(run, state, tokens, guard)
            if state.step >= run.max_steps:
                break
        else:  # the data ran out: the next epoch
            state.epoch, state.batches_into_epoch = state.epoch + 1, 0
    progress.close()
    final_model = checkpoint(run, state, tokens, guard)
    return PretrainingResult(state, last_eval, final_model)


@dataclass
class PretrainingResult:
    state: PretrainingState
    last_eval: dict[str, float]
    final_model: ElectraForRTDPretraining | None  # the whole model on the main process, None elsewhere


def due(step: int, every: int, last: int | None = None) -> bool:
    """True every `every` steps (never for 0), and at the `last` step."""
    return (every > 0 and step % every == 0) or step == last


def epoch_batches(run: PretrainingRun, state: PretrainingState):
    """This epoch's batches, from where `state` says (the same order and masks after a resume)."""
    if hasattr(run.train_loader, "set_epoch"):
        run.train_loader.set_epoch(state.epoch)
    run.train_collator.set_epoch(state.epoch, start_batch=state.batches_into_epoch)
    if state.batches_into_epoch:
        return run.accelerator.skip_first_batches(run.train_loader, state.batches_into_epoch)
    return run.train_loader


class Throughput:
    """Non-padding tokens trained on by all processes (counted on the device, summed when read),
    and the rates since the previous log."""

    def __init__(self, accelerator, seen_before: int, step: int):
        self.accelerator, self.seen_before = accelerator, seen_before
        self.local = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self.last_total, self.last_step, self.last_time = seen_before, step, time.perf_counter()

    def add(self, attention_mask: torch.Tensor) -> None:
        self.local += attention_mask.sum()

    def total(self) -> int:
        """A collective call: every process must make it."""
        return self.seen_before + int(self.accelerator.reduce(self.local.clone(), reduction="sum"))

    def rates(self, step: int) -> tuple[int, float, float]:
        """(the total, tokens per second, optimizer steps per second) since the previous call. A
        collective call."""
        total, now = self.total(), time.perf_counter()
        elapsed = max(now - self.last_time, 1e-9)
        rates = (total - self.last_total) / elapsed, (step - self.last_step) / elapsed
        self.last_total, self.last_step, self.last_time = total, step, now
        return total, *rates


def log_training(run: PretrainingRun, state: PretrainingState, window: MetricWindow, tokens: Throughput,
                 progress) -> None:
    means = window.means(run.accelerator)
    state.tokens_seen, tokens_per_second, steps_per_second = tokens.rates(state.step)
    values = {f"train/{name}": value for name, value in means.items()}
    values.update({"train/learning_rate": run.scheduler.get_last_lr()[0], "train/tokens_per_second": tokens_per_second,
                   "train/steps_per_second": steps_per_second, "train/tokens_seen": state.tokens_seen,
                   "train/epoch": state.epoch})
    log_metrics(run.accelerator, values, state.step, run.output_dir / "metrics.jsonl")
    shown = {"loss": "loss", "gen": "generator_loss", "gen_acc": "generator_accuracy",
             "disc": "discriminator_loss", "disc_acc": "discriminator_accuracy"}
    postfix = {short: f"{means[name]:.3f}" for short, name in shown.items() if name in means}
    progress.set_postfix({**postfix, "tok/s": f"{tokens_per_second:,.0f}"})


def evaluate_and_log(run: PretrainingRun, state: PretrainingState) -> dict[str, float]:
    metrics = evaluate(run.model, run.eval_loader, run.eval_collator, run.accelerator, seed=run.args.seed + 1)
    log_metrics(run.accelerator, {f"eval/{key}": value for key, value in metrics.items()}, state.step,
                run.output_dir / "metrics.jsonl")
    logger.info("step %d eval: %s", state.step, {key: round(value, 4) for key, value in metrics.items()})
    return metrics


# --------------------------------------------------------------------------------------------
# Checkpoints and resume
# --------------------------------------------------------------------------------------------
def checkpoint(run: PretrainingRun, state: PretrainingState, tokens: Throughput, guard: NonFiniteGuard):
    """Write a checkpoint (every process takes part); returns the whole model on the main process
    under DeepSpeed/FSDP (gathered for the checkpoint anyway), else None."""
    guard.check(run.accelerator)  # never write a checkpoint of a diverged model
    state.tokens_seen = tokens.total()
    sharded = run.accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    # DeepSpeed/FSDP save their own (sharded) layout; the gathered full weights go beside it so
    # that the checkpoint loads with from_pretrained (fine-tuning, exports).
    whole = full_model(run.accelerator, run.model, run.config) if sharded else None

    def extras(folder: Path) -> None:
        if whole is not None:
            whole.save_pretrained(folder)
        run.config.save_pretrained(folder)  # config.json beside the weights: loadable for fine-tuning
        run.tokenizer.save_pretrained(folder)
        (folder / "run_config.json").write_text(json.dumps(run.run_config, indent=2, default=str))

    saved = {**asdict(state), "max_train_steps": run.max_steps, "num_processes": run.accelerator.num_processes,
             "global_batch_size": run.global_batch_size}
    path = save_checkpoint(run.accelerator, run.checkpoints_root, state.step, saved, scheduler=run.scheduler,
                           total_limit=run.args.checkpoints_total_limit, save_extras=extras)
    if run.args.export_every_checkpoint:
        exportable = whole if sharded else full_model(run.accelerator, run.model, run.config)
        if run.accelerator.is_main_process:
            export_pretrained(exportable, path / "export", run.tokenizer, {"steps": state.step})
    logger.info("checkpoint written: %s", path)
    return whole if sharded else full_model(run.accelerator, run.model, run.config)


def restore(run: PretrainingRun, checkpoint_path: Path) -> PretrainingState:
    state = PretrainingState.from_checkpoint(load_checkpoint(run.accelerator, checkpoint_path, run.scheduler))
    logger.info("resumed from %s at step %d (epoch %d, batch %d)", checkpoint_path, state.step, state.epoch,
                state.batches_into_epoch)
    return state


def resume_checkpoint(args, accelerator, allow_existing_run: bool) -> Path | None:
    """The checkpoint `--resume_from_checkpoint` names (None: start afresh), checked to fit this run.
    A new run refuses an output folder that holds checkpoints unless `allow_existing_run`."""
    root = Path(args.output_dir) / "checkpoints"
    path = resolve_resume_path(args.resume_from_checkpoint, root)
    if path is not None:
        check_resume_batch(read_training_state(path), args, accelerator.num_processes, path)
    elif args.resume_from_checkpoint == "latest":
        logger.info("--resume_from_checkpoint latest: no finished checkpoint in %s, starting from scratch", root)
    elif accelerator.is_main_process and not allow_existing_run and root.is_dir() and any(root.iterdir()):
        raise FileExistsError(f"{args.output_dir} already holds checkpoints; pass --resume_from_checkpoint latest to "
                              "continue, or --overwrite_output_dir to start a new run there")
    return path


def check_resume_config(checkpoint_path: Path, config: ElectraPretrainingConfig) -> None:
    """A resumed run trains the model its checkpoint was written with: the RTD fields (masking,
    losses, sampling, sharing) and the networks' sizes must be the checkpoint's. A field the saved
    config lacks (written by an older electra_hf) takes this run's value, with a warning."""
    saved = json.loads((checkpoint_path / "config.json").read_text())
    now = config.to_dict()
    names = [name for name in PRETRAINING_FIELDS if name != "compute_metrics"]
    differ = [f"{name}: checkpoint {saved[name]!r}, this run {now[name]!r}"
              for name in names if name in saved and saved[name] != now[name]]
    for network in ("discriminator_config", "generator_config"):
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
            before, after = (saved.get(network) or {}).get(name), (now.get(network) or {}).get(name)
            if before is not None and before != after:
                differ.append(f"{network}.{name}: checkpoint {before!r}, this run {after!r}")
    if differ:
        raise ValueError(f"{checkpoint_path} was written by another model than this run's: " + "; ".join(differ)
                         + ". Resume with the flags of the run that wrote it.")
    for name in names:
        if name not in saved:
            logger.warning("%s predates the config field %s: the resumed run uses %s=%r", checkpoint_path, name,
                           name, now[name])


def check_resume_batch(saved: dict, args, num_processes: int, checkpoint_path: Path) -> None:
    """A run may resume on another number of processes, but only with the same global batch.

    The position in the epoch is stored as a count of batches per process; with the same global
    batch (per device × processes × accumulation) that is the same place in the shared data
    order, whatever the number of processes. (Masks, dropout and sampling then come from other
    per-process streams: the continuation is equivalent, not bit-identical.)
    """
    before = saved.get("global_batch_size")
    now = args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps
    if before is not None and before != now:
        raise ValueError(
            f"{checkpoint_path} was written with a global batch of {before} sequences ({saved.get('num_processes', '?')} "
            f"processes); this run's is {now} ({args.per_device_train_batch_size} per device × {num_processes} processes "
            f"× {args.gradient_accumulation_steps} accumulation). Resuming would continue at the wrong place in the "
            "epoch with another optimisation: keep per_device_train_batch_size × processes × "
            "gradient_accumulation_steps equal to the checkpoint's.")


def full_model(accelerator, model, config) -> ElectraForRTDPretraining | None:
    """The whole pre-training model with all its weights, on the main process (None elsewhere).

    A collective: call it on every process. Under DeepSpeed ZeRO-3 or FSDP the prepared model only
    holds this process's shard, so the full state dict is gathered with `accelerator.get_state_dict`
    and loaded into a fresh CPU model, built by its constructor (which, unlike `from_config`, never
    partitions it with ZeRO-3).
    """
    if accelerator.distributed_type not in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        return accelerator.unwrap_model(model) if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    fresh = ElectraForRTDPretraining(config)
    state_dict = {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}
    missing, unexpected = fresh.load_state_dict(state_dict, strict=False)
    missing = set(missing) - set(fresh.all_tied_weights_keys)  # ties: the source key loaded them
    if missing or unexpected:
        raise RuntimeError(f"gathered weights do not fit the model: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return fresh


# --------------------------------------------------------------------------------------------
# The end of a run
# --------------------------------------------------------------------------------------------
def finish(run: PretrainingRun, result: PretrainingResult, training_info: dict[str, Any]) -> dict[str, Any]:
    """Plain-transformers exports, the loss-curve plot, `results.json` and the Hub push."""
    accelerator, output_dir = run.accelerator, run.output_dir
    results = {"completed_steps": result.state.step, "tokens_seen": result.state.tokens_seen,
               "eval": result.last_eval, "exports": {}}
    if accelerator.is_main_process:
        info = {**training_info, "optimizer steps": result.state.step, "tokens seen": result.state.tokens_seen,
                "global batch size": run.global_batch_size, "final_metrics": result.last_eval}
        exports = export_pretrained(result.final_model, output_dir / "export", run.tokenizer, info)
        plot_pretraining_curves(output_dir / "metrics.jsonl", output_dir / "export" / "loss_curves.png")
        results["exports"] = {kind: str(path) for kind, path in exports.items()}
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        logger.info("exports written: %s", results["exports"])
        if run.args.push_to_hub:
            push_exports_to_hub(exports, run.args.hub_model_id, token=run.args.hub_token,
                                private=run.args.hub_private_repo)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def start_run(run: PretrainingRun) -> None:
    """Trackers and `run_config.json` (every argument, the model config) before the first step."""
    if run.args.trackers:
        run.accelerator.init_trackers(run.args.project_name, config=flatten_for_trackers(run.run_config))
    if run.accelerator.is_main_process:
        run.output_dir.mkdir(parents=True, exist_ok=True)
        (run.output_dir / "run_config.json").write_text(json.dumps(run.run_config, indent=2, default=str))
        run.tokenizer.save_pretrained(run.output_dir / "tokenizer")
