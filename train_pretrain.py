#!/usr/bin/env python
"""ELECTRA pre-training from raw text to Hub-ready checkpoints, with Accelerate.

    accelerate launch train_pretrain.py --train_files corpus/*.txt.gz --preset small --output_dir runs/small
    python train_pretrain.py                  # no data arguments: a few-minute CPU demo on pydoc text
    python train_pretrain.py run.yaml         # all arguments from a JSON/YAML file

The same code runs on one CPU, one GPU, several GPUs or nodes, FSDP or DeepSpeed: the
hardware comes from `accelerate launch` (see accelerate_configs/), the hyper-parameters from
the dataclasses below (official ELECTRA-Small defaults).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import datasets
import torch
from accelerate import DataLoaderConfiguration
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoModel, HfArgumentParser

from electra_hf import data as electra_data
from electra_hf.collator import DataCollatorForElectra
from electra_hf.configuration import PRESETS, ElectraPretrainingConfig
from electra_hf.export import export_pretrained
from electra_hf.hub import push_exports_to_hub
from electra_hf.modeling import ElectraForRTDPretraining
from electra_hf.optimization import ElectraAdamW, build_scheduler, parameter_groups
from electra_hf.performance import compile_for_training, configure_cpu_training, training_attn_implementation
from electra_hf.plotting import plot_pretraining_curves
from electra_hf.training import (
    NonFiniteGuard,
    build_accelerator,
    enable_activation_checkpointing,
    flatten_for_trackers,
    is_cpu_launch,
    read_training_state,
    resolve_report_to,
    resolve_resume_path,
    save_checkpoint,
)

logger = logging.getLogger("train_pretrain")


@dataclass
class ModelArguments:
    """The model: a preset or a saved config, with any field overridden (None = keep its value)."""

    preset: str = field(default="small", metadata={"help": f"Model size preset: one of {sorted(PRESETS)}."})
    config_name_or_path: str | None = field(
        default=None, metadata={"help": "An ElectraPretrainingConfig (folder or config.json) instead of a preset; "
                                        "the flags below override its fields."}
    )
    objective: str | None = field(default=None, metadata={"help": "'electra' (replaced token detection; default) or 'mlm' (BERT baseline)."})
    embedding_sharing: str | None = field(default=None, metadata={"help": "'all' (official, default), 'word', 'none' or 'gdes'."})
    generator_size_ratio: float | None = field(default=None, metadata={"help": "Generator width / discriminator width (preset: 1/4 Small, 1/3 Base)."})
    mask_prob: float | None = field(default=None, metadata={"help": "Fraction of tokens selected for prediction (preset: 0.15; 0.25 Large)."})
    mask_token_prob: float | None = field(default=None, metadata={"help": "Of the selected tokens, fraction replaced by [MASK] (official 0.85)."})
    random_token_prob: float | None = field(default=None, metadata={"help": "Of the selected tokens, fraction replaced by a random token (official 0)."})
    max_predictions_per_seq: int | None = field(default=None, metadata={"help": "Cap N on selected tokens per sequence (default int((p+0.005)*len))."})
    generator_loss_weight: float | None = field(default=None, metadata={"help": "Weight of the generator's MLM loss (official 1)."})
    discriminator_loss_weight: float | None = field(default=None, metadata={"help": "Weight of the discriminator's loss (official 50)."})
    sampling_temperature: float | None = field(default=None, metadata={"help": "Sampling temperature (official 1)."})
    sampling_method: str | None = field(default=None, metadata={"help": "'gumbel' (official Gumbel-max) or 'categorical' (default: an exact inverse-CDF sampler of the same distribution, cheaper)."})
    hidden_size: int | None = field(default=None, metadata={"help": "Override the discriminator hidden size."})
    embedding_size: int | None = field(default=None, metadata={"help": "Override the embedding size."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Override the number of layers."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Override the number of attention heads."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Override the FFN size."})
    hidden_dropout_prob: float | None = field(default=None, metadata={"help": "Dropout on hidden states (official 0.1)."})
    attention_probs_dropout_prob: float | None = field(default=None, metadata={"help": "Dropout on attention probabilities (official 0.1)."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "transformers' attention: 'sdpa', 'eager', or any registered name. None: 'electra_hf_cpu' on a CPU "
                "(eager attention with cheaper dropout masks, electra_hf.performance) and 'sdpa' elsewhere."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward (less memory, about a third slower)."})
    torch_compile: bool = field(default=False, metadata={"help": "Compile the training forward and backward with torch.compile (electra_hf.performance.compile_for_training)."})
    torch_compile_scope: str = field(default="layers", metadata={
        "help": "With --torch_compile: 'layers' (each transformer layer and embedding block; checked to train on a CPU and "
                "a GPU) or 'model' (the whole training forward and backward as one graph; with --torch_compile_mode "
                "reduce-overhead replayed as CUDA graphs, ~3x faster than eager at batch 32 on an H100, where the eager "
                "step waits on the host launching kernels). 'model' lost the generator's gradient under torch 2.11 "
                "until a fix in electra_hf, checked on the CPU but not yet on a GPU; "
                "benchmarks/check_compiled_gradients.py checks a machine (benchmarks/results/gpu_summary.md)."})
    torch_compile_mode: str | None = field(default=None, metadata={
        "help": "With --torch_compile: torch.compile's mode (None = its default; 'reduce-overhead' = CUDA graphs; 'max-autotune')."})

    def __post_init__(self):
        if self.torch_compile_mode and not self.torch_compile:
            raise ValueError("--torch_compile_mode needs --torch_compile")
        if self.torch_compile_scope not in ("layers", "model"):
            raise ValueError(f"--torch_compile_scope must be 'layers' or 'model', got {self.torch_compile_scope!r}")


@dataclass
class PretrainingArguments:
    """Optimisation, logging and checkpointing. Defaults: official ELECTRA-Small."""

    output_dir: str = field(default="runs/electra-pretrain", metadata={"help": "Where checkpoints, logs, plot and exports go."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow starting a new run in a non-empty output_dir."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order and masking."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Sequences per device per micro-batch (official Small: 128 total)."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Sequences per device for evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak LR (default by size: 5e-4 Small, 2e-4 Base/Large)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Decoupled weight decay (not on LayerNorm weights or biases)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (official 1e-6)."})
    adam_bias_correction: bool = field(default=False, metadata={"help": "Adam bias correction (official ELECTRA: off)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Global gradient-norm clipping."})
    lr_scheduler_type: str = field(default="electra", metadata={"help": "'electra' (warm-up × linear decay, overlapping) or a transformers scheduler name."})
    num_warmup_steps: int = field(default=10_000, metadata={"help": "Warm-up optimizer steps."})
    max_train_steps: int | None = field(default=1_000_000, metadata={"help": "Optimizer steps (official Small: 1M)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs instead of max_train_steps (used when max_train_steps is None)."})
    logging_steps: int = field(default=100, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(default=5_000, metadata={"help": "Evaluate on the validation split every N steps (0 = only at the end)."})
    max_eval_batches: int | None = field(default=50, metadata={"help": "Cap on validation batches per evaluation (None = all)."})
    checkpointing_steps: int = field(default=10_000, metadata={"help": "Save a resumable checkpoint every N steps (0 = only at the end)."})
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder, or 'latest'."})
    export_every_checkpoint: bool = field(default=False, metadata={"help": "Also write plain-transformers exports at each checkpoint."})
    report_to: str = field(default="none", metadata={"help": "Trackers: wandb, tensorboard, all or none (comma list allowed)."})
    project_name: str = field(default="electra_hf", metadata={"help": "Tracker project/run group name."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16, bf16 (default: accelerate's config / launch flag)."})
    allow_slow_bf16: bool = field(default=False, metadata={"help": "Permit bf16 on a CPU without native bf16 (very slow)."})
    dataloader_num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes per device (masking runs there)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the final exports to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo for the discriminator (generator goes to '<id>-generator')."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repos as private."})
    demo: bool = field(default=False, metadata={"help": "Force the pydoc demo (automatic when no data argument is given)."})


DEFAULT_LEARNING_RATE = {"tiny": 1e-3, "mini": 1e-3, "small": 5e-4, "small++": 5e-4, "base": 2e-4, "large": 2e-4}
# The demo: a tiny model on the standard library's documentation, a few minutes on 2 CPU cores.
DEMO_SETTINGS = {
    "preset": "tiny", "vocab_size": 4000, "max_seq_length": 128, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32, "max_train_steps": 300, "num_warmup_steps": 30, "logging_steps": 10,
    "eval_steps": 100, "checkpointing_steps": 150, "output_dir": "runs/demo", "dataloader_num_workers": 0,
    "validation_split_percentage": 5.0,
}


def parse_args(argv: list[str] | None):
    parser = HfArgumentParser((ModelArguments, electra_data.PretrainingDataArguments, PretrainingArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def apply_demo_defaults(model_args, data_args, train_args, argv: list[str]) -> bool:
    """No data argument at all → the pydoc demo; settings the user gave explicitly are kept."""
    has_data = data_args.train_files or data_args.dataset_name
    if has_data and not train_args.demo:
        return False
    given = {arg.split("=")[0].lstrip("-") for arg in argv if arg.startswith("--")}
    for name, value in DEMO_SETTINGS.items():
        if name in given:
            continue
        for args in (model_args, data_args, train_args):
            if name in {f.name for f in fields(args)}:
                setattr(args, name, value)
    corpus_dir = Path(train_args.output_dir) / "demo_corpus"
    data_args.train_files = electra_data.write_demo_corpus(corpus_dir)
    return True


# ModelArguments fields that override fields of the pre-training config.
CONFIG_OVERRIDES = (
    "objective", "embedding_sharing", "generator_size_ratio", "mask_prob", "mask_token_prob", "random_token_prob",
    "max_predictions_per_seq", "generator_loss_weight", "discriminator_loss_weight", "sampling_temperature",
    "sampling_method", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_dropout_prob", "attention_probs_dropout_prob",
)


def base_config_max_seq_length(model_args: ModelArguments) -> int:
    """The sequence length of the preset or saved config, for a run that does not set --max_seq_length."""
    if model_args.config_name_or_path:
        return ElectraPretrainingConfig.from_pretrained(model_args.config_name_or_path).max_seq_length
    return PRESETS[model_args.preset].get("max_seq_length", 128)


def build_config(model_args: ModelArguments, data_args, vocab_size: int) -> ElectraPretrainingConfig:
    """The preset or saved config, with every model flag the user set and the data's sequence length."""
    overrides = {name: getattr(model_args, name) for name in CONFIG_OVERRIDES}
    overrides["max_seq_length"] = data_args.max_seq_length
    if not model_args.config_name_or_path:
        return ElectraPretrainingConfig.from_preset(model_args.preset, vocab_size=vocab_size, **overrides)
    config = ElectraPretrainingConfig.from_pretrained(model_args.config_name_or_path)
    if config.vocab_size != vocab_size:
        raise ValueError(
            f"--config_name_or_path {model_args.config_name_or_path} has vocab_size {config.vocab_size} but the "
            f"tokenizer has {vocab_size} tokens; use the tokenizer the config was made for (--tokenizer_name_or_path)"
        )
    positions = config.discriminator_config.max_position_embeddings
    if data_args.max_seq_length > positions:
        raise ValueError(
            f"--max_seq_length {data_args.max_seq_length} exceeds the {positions} positions of "
            f"--config_name_or_path {model_args.config_name_or_path} (max_position_embeddings)"
        )
    return config.with_overrides(**overrides)


EVAL_SUMS = ("generator_loss", "generator_correct", "masked", "discriminator_loss", "discriminator_correct",
             "tokens", "true_positives", "replaced")


def per_example_sums(out, batch) -> torch.Tensor:
    """`(B, 8)` float64 per-example sums (see EVAL_SUMS) from one pre-training forward pass.

    Summed over examples (not averaged per batch), so that metrics over a data set do not depend on
    how it was cut into batches or shared among processes.
    """
    labels, input_ids = batch["labels"], batch["input_ids"]
    positions, weights = out.masked_positions, out.masked_weights.float()
    targets = torch.where(labels != -100, labels, input_ids).gather(1, positions)
    logits = out.generator_logits.float()
    token_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    columns = [
        (token_loss.view_as(targets) * weights).sum(1),
        ((logits.argmax(-1) == targets).float() * weights).sum(1),
        weights.sum(1),
    ]
    if out.discriminator_logits is not None:
        valid = batch["attention_mask"].bool()
        disc_logits, replaced = out.discriminator_logits.float(), out.replaced_labels.bool()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="none")
        predicted, actual = (disc_logits > 0) & valid, replaced & valid
        columns += [(bce * valid).sum(1), ((predicted == actual) & valid).sum(1), valid.sum(1),
                    (predicted & actual).sum(1), actual.sum(1)]
    else:
        columns += [torch.zeros_like(columns[0])] * 5
    return torch.stack([c.double() for c in columns], dim=1)


def evaluate(model, dataloader, collator, accelerator, seed: int) -> dict[str, float]:
    """Losses/accuracies over the validation split (each example counted once, token-weighted)
    and the discriminator's ROC AUC.

    The validation masks are the same at every evaluation (the collator restarts its epoch 0),
    and so are the generator's samples (a private RNG stream seeded from `seed` and the process
    index, restored afterwards): successive evaluations are comparable, and evaluating does not
    change the training run's random stream. Per-example sums are gathered with
    `gather_for_metrics`, which drops the duplicates Accelerate adds to even out the last batch,
    so the result is the same for any number of processes.
    """
    from sklearn.metrics import roc_auc_score

    collator.set_epoch(0)
    model.eval()
    totals = torch.zeros(len(EVAL_SUMS), dtype=torch.float64)
    examples = 0
    scores, labels = [], []
    devices = [accelerator.device.index or 0] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + accelerator.process_index)
        for batch in dataloader:
            out = model(**batch)
            sums = accelerator.gather_for_metrics(per_example_sums(out, batch))
            totals += sums.sum(0).cpu()
            examples += sums.shape[0]
            if out.discriminator_logits is not None:
                # Same-shape tensors on every rank (T differs per batch), filtered to real tokens after the gather.
                logits, replaced, mask = (
                    accelerator.pad_across_processes(tensor, dim=1)
                    for tensor in (out.discriminator_logits.float(), out.replaced_labels, batch["attention_mask"])
                )
                logits, replaced, mask = accelerator.gather_for_metrics((logits, replaced, mask))
                valid = mask.bool()
                scores.append(logits[valid].cpu())
                labels.append(replaced[valid].cpu())
    model.train()
    t = dict(zip(EVAL_SUMS, totals.tolist()))
    config = accelerator.unwrap_model(model).config
    masked, tokens = max(t["masked"], 1.0), max(t["tokens"], 1.0)
    metrics = {"generator_loss": t["generator_loss"] / masked, "generator_accuracy": t["generator_correct"] / masked}
    metrics["loss"] = config.generator_loss_weight * metrics["generator_loss"]
    if scores:
        metrics["discriminator_loss"] = t["discriminator_loss"] / tokens
        metrics["discriminator_accuracy"] = t["discriminator_correct"] / tokens
        metrics["discriminator_recall"] = t["true_positives"] / max(t["replaced"], 1.0)
        metrics["loss"] += config.discriminator_loss_weight * metrics["discriminator_loss"]
        all_labels = torch.cat(labels).numpy()
        if 0 < all_labels.sum() < len(all_labels):
            metrics["discriminator_auc"] = float(roc_auc_score(all_labels, torch.cat(scores).numpy()))
    metrics["examples"] = float(examples)
    return metrics


def first_examples(dataset, count: int):
    """The first `count` examples of a data set, as a map-style data set (a stream is read once)."""
    if not hasattr(dataset, "__len__"):
        return datasets.Dataset.from_list(list(itertools.islice(dataset, count)))
    indices = range(min(count, len(dataset)))
    return dataset.select(indices) if hasattr(dataset, "select") else torch.utils.data.Subset(dataset, indices)


def check_resume_batch(state: dict, train_args, num_processes: int, checkpoint: Path) -> None:
    """A run may resume on another number of processes, but only with the same global batch.

    The position in the epoch is stored as a count of batches per process; with the same global
    batch (per device × processes × accumulation) that is the same place in the shared data
    order, whatever the number of processes. (Masks, dropout and sampling then come from other
    per-process streams: the continuation is equivalent, not bit-identical.)
    """
    saved = state.get("global_batch_size")
    now = train_args.per_device_train_batch_size * num_processes * train_args.gradient_accumulation_steps
    if saved is not None and saved != now:
        raise ValueError(
            f"{checkpoint} was written with a global batch of {saved} sequences "
            f"({state.get('num_processes', '?')} processes); this run's is {now} "
            f"({train_args.per_device_train_batch_size} per device × {num_processes} processes × "
            f"{train_args.gradient_accumulation_steps} accumulation). Resuming would continue at the wrong place "
            "in the epoch with another optimisation: keep per_device_train_batch_size × processes × "
            "gradient_accumulation_steps equal to the checkpoint's."
        )


def full_model(accelerator, model, config):
    """The whole pre-training model with all its weights, on the main process (None elsewhere).

    A collective: call it on every process. Under DeepSpeed ZeRO-3 or FSDP the prepared model only
    holds this process's shard (the unwrapped module's parameters are empty), so the full state
    dict is gathered with `accelerator.get_state_dict` and loaded into a fresh CPU model. The model
    is built by its constructor, which (unlike `from_config`) never partitions it with ZeRO-3.
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


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, train_args = parse_args(argv)
    is_demo = apply_demo_defaults(model_args, data_args, train_args, argv)

    if train_args.push_to_hub and not train_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (the Hub repository for the discriminator)")
    trackers = resolve_report_to(train_args.report_to)
    use_cpu = is_cpu_launch()
    if use_cpu:
        configure_cpu_training()  # keep freed buffers: no page faults on every step
    accelerator = build_accelerator(
        train_args,
        log_with=trackers or None,
        project_dir=train_args.output_dir,
        # The same shuffled order on every process (each takes its share of each global batch),
        # seeded by --seed rather than by whatever the global RNG holds when the loader is prepared.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_args.seed),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO if accelerator.is_main_process else logging.WARNING)
    if is_demo:
        logger.warning("DEMO RUN: no data arguments were given, so this pre-trains a tiny ELECTRA on the Python "
                       "standard library's documentation (pydoc_data) for %d steps. Pass --train_files or "
                       "--dataset_name for a real run.", train_args.max_train_steps)

    output_dir = Path(train_args.output_dir)
    checkpoints_root = output_dir / "checkpoints"
    resume_path = resolve_resume_path(train_args.resume_from_checkpoint, checkpoints_root)
    if resume_path is not None:
        check_resume_batch(read_training_state(resume_path), train_args, accelerator.num_processes, resume_path)
    if resume_path is None and accelerator.is_main_process and not train_args.overwrite_output_dir and not is_demo:
        if checkpoints_root.is_dir() and any(checkpoints_root.iterdir()):
            raise FileExistsError(
                f"{output_dir} already holds checkpoints; pass --resume_from_checkpoint latest to continue, or "
                "--overwrite_output_dir to start a new run there"
            )
    set_seed(train_args.seed)
    if data_args.max_seq_length is None:
        data_args.max_seq_length = base_config_max_seq_length(model_args)

    # ---- data: read, tokenizer, official example builder (prepared once, cached on disk) ----
    with accelerator.main_process_first():
        raw_datasets = electra_data.load_raw_datasets(data_args)
        tokenizer = electra_data.load_or_train_tokenizer(data_args, raw_datasets)
        examples = electra_data.build_pretraining_datasets(data_args, tokenizer, raw_datasets)
    train_dataset, eval_dataset = examples["train"], examples.get("validation")

    config = build_config(model_args, data_args, vocab_size=len(tokenizer))
    attn_implementation = training_attn_implementation(model_args.attn_implementation, on_cpu=use_cpu)
    model = AutoModel.from_config(config, attn_implementation=attn_implementation)
    if model_args.gradient_checkpointing:
        enable_activation_checkpointing(model)
    learning_rate = train_args.learning_rate or DEFAULT_LEARNING_RATE.get(model_args.preset, 5e-4)

    def make_collator(seed: int) -> DataCollatorForElectra:
        return DataCollatorForElectra(
            tokenizer,
            mask_prob=config.mask_prob,
            mask_token_prob=config.mask_token_prob,
            random_token_prob=config.random_token_prob,
            max_predictions_per_seq=config.max_predictions_per_seq,
            pad_to_multiple_of=8 if not use_cpu else None,
            seed=seed,
            process_index=accelerator.process_index,
        )

    train_collator = make_collator(train_args.seed)
    global_batch = train_args.per_device_train_batch_size * accelerator.num_processes
    streaming = data_args.streaming
    if not streaming and len(train_dataset) < global_batch:
        raise ValueError(
            f"the corpus gives {len(train_dataset)} training examples, fewer than one batch "
            f"({train_args.per_device_train_batch_size} per device × {accelerator.num_processes} processes); "
            "add text or lower --per_device_train_batch_size"
        )
    loader_generator = torch.Generator().manual_seed(train_args.seed)
    train_dataloader = DataLoader(
        train_dataset,
        batch_size=train_args.per_device_train_batch_size,
        shuffle=not streaming,
        drop_last=True,  # packed examples: keep every step the same size
        collate_fn=train_collator,
        num_workers=train_args.dataloader_num_workers,
        generator=loader_generator,
        pin_memory=not use_cpu,
    )
    eval_dataloader = None
    eval_collator = make_collator(train_args.seed + 1)
    if eval_dataset is not None:
        if train_args.max_eval_batches is not None:  # the same examples at every evaluation
            eval_dataset = first_examples(
                eval_dataset, train_args.max_eval_batches * train_args.per_device_eval_batch_size * accelerator.num_processes)
        eval_dataloader = DataLoader(
            eval_dataset, batch_size=train_args.per_device_eval_batch_size, collate_fn=eval_collator, num_workers=0,
        )

    optimizer = ElectraAdamW(
        parameter_groups(model, train_args.weight_decay),
        lr=learning_rate,
        betas=(train_args.adam_beta1, train_args.adam_beta2),
        eps=train_args.adam_epsilon,
        bias_correction=train_args.adam_bias_correction,
    )
    if not streaming:
        steps_per_epoch = math.ceil(len(train_dataloader) / train_args.gradient_accumulation_steps)
    if train_args.max_train_steps is None:
        if streaming or train_args.num_train_epochs is None:
            raise ValueError("give --max_train_steps (required with --streaming), or --num_train_epochs")
        train_args.max_train_steps = math.ceil(train_args.num_train_epochs * steps_per_epoch)
    max_steps = train_args.max_train_steps
    # The scheduler is stepped once per optimizer step on every process (not prepared: no
    # per-process step multiplication).
    scheduler = build_scheduler(train_args.lr_scheduler_type, optimizer, train_args.num_warmup_steps, max_steps)
    if eval_dataloader is not None:
        model, optimizer, train_dataloader, eval_dataloader = accelerator.prepare(model, optimizer, train_dataloader, eval_dataloader)
    else:
        model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    accelerator.register_for_checkpointing(scheduler)
    # The model was initialised identically on every process (same seed); from here on each
    # process draws its own dropout and generator samples (seed + process index), otherwise every
    # process would apply the same noise pattern to its different examples. One process: --seed.
    set_seed(train_args.seed, device_specific=True)
    # The model the training step calls. Evaluation, checkpoints and exports keep using `model`: a
    # whole-model compile is a wrapper (its outputs may live in CUDA-graph memory), layer
    # compilation happens in place.
    step_model = model
    if model_args.torch_compile:
        compile_kwargs = {"mode": model_args.torch_compile_mode} if model_args.torch_compile_mode else {}
        step_model = compile_for_training(model, scope=model_args.torch_compile_scope, **compile_kwargs)

    run_config = {
        "model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(train_args),
        "model_config": config.to_dict(), "learning_rate": learning_rate, "num_processes": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "global_batch_size": global_batch * train_args.gradient_accumulation_steps, "demo": is_demo,
    }
    if trackers:
        accelerator.init_trackers(train_args.project_name, config=flatten_for_trackers(run_config))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str))
        tokenizer.save_pretrained(output_dir / "tokenizer")

    # ---- resume ----
    completed_steps, epoch, batches_into_epoch, tokens_before_start = 0, 0, 0, 0
    if resume_path is not None:
        accelerator.load_state(str(resume_path))
        state = read_training_state(resume_path)
        completed_steps, epoch = state["completed_steps"], state["epoch"]
        batches_into_epoch, tokens_before_start = state["batches_into_epoch"], state["tokens_seen"]
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", resume_path, completed_steps, epoch, batches_into_epoch)
    elif train_args.resume_from_checkpoint == "latest":
        logger.info("--resume_from_checkpoint latest: no finished checkpoint in %s, starting from scratch", checkpoints_root)

    metrics_file = output_dir / "metrics.jsonl"
    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    guard = NonFiniteGuard(accelerator.device)
    window = torch.zeros(8, device=accelerator.device)  # loss, gen, disc, gen acc, disc acc, precision, recall, count
    local_tokens = torch.zeros((), device=accelerator.device, dtype=torch.long)  # this process, since start/resume
    logged_tokens = 0
    window_start = time.perf_counter()
    last_eval: dict[str, float] = {}

    def log_metrics(values: dict, step: int) -> None:
        if trackers:
            accelerator.log(values, step=step)
        if accelerator.is_main_process:
            with metrics_file.open("a") as handle:
                handle.write(json.dumps({"step": step, **values}) + "\n")

    def tokens_seen() -> int:
        """Non-padding tokens seen by all processes since the run began (a collective call)."""
        return tokens_before_start + int(accelerator.reduce(local_tokens.clone(), reduction="sum"))

    def training_state() -> dict:
        return {"completed_steps": completed_steps, "epoch": epoch, "batches_into_epoch": batches_into_epoch,
                "tokens_seen": tokens_seen(), "max_train_steps": max_steps, "num_processes": accelerator.num_processes,
                "global_batch_size": run_config["global_batch_size"]}

    def checkpoint():
        """Write a checkpoint (every process takes part); returns the gathered full model under
        DeepSpeed/FSDP (main process), else None."""
        guard.check(accelerator)  # never write a checkpoint of a diverged model

        # DeepSpeed/FSDP: save_state writes the engine's own (sharded) layout; the gathered full
        # weights go next to it so the checkpoint loads with from_pretrained (fine-tuning, exports).
        whole = full_model(accelerator, model, config) if sharded else None

        def extras(folder: Path) -> None:
            if whole is not None:
                whole.save_pretrained(folder)
            config.save_pretrained(folder)  # config.json next to the weights: loadable for fine-tuning
            tokenizer.save_pretrained(folder)
            (folder / "run_config.json").write_text(json.dumps(run_config, indent=2, default=str))

        path = save_checkpoint(accelerator, checkpoints_root, completed_steps, training_state(),
                               total_limit=train_args.checkpoints_total_limit, save_extras=extras)
        if train_args.export_every_checkpoint:
            exportable = whole if sharded else full_model(accelerator, model, config)
            if accelerator.is_main_process:
                export_pretrained(exportable, path / "export", tokenizer, {"steps": completed_steps})
        logger.info("checkpoint written: %s", path)
        return whole

    progress = tqdm(total=max_steps, initial=completed_steps, disable=not accelerator.is_local_main_process,
                    desc="pre-training", unit="step", dynamic_ncols=True)
    model.train()
    while completed_steps < max_steps:
        if hasattr(train_dataloader, "set_epoch"):
            train_dataloader.set_epoch(epoch)
        train_collator.set_epoch(epoch, start_batch=batches_into_epoch)
        epoch_loader = (
            accelerator.skip_first_batches(train_dataloader, batches_into_epoch) if batches_into_epoch else train_dataloader
        )
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                out = step_model(**batch)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), train_args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            batches_into_epoch += 1
            detached = [out.loss, out.generator_loss, out.generator_accuracy]
            if out.discriminator_loss is not None:
                detached += [out.discriminator_loss, out.discriminator_accuracy, out.discriminator_precision, out.discriminator_recall]
            else:
                detached += [torch.zeros((), device=accelerator.device)] * 4
            window[:7] += torch.stack([value.detach().float() for value in detached])
            window[7] += 1
            local_tokens += batch["attention_mask"].sum()
            guard.update(out.loss, completed_steps + 1)
            if not accelerator.sync_gradients:
                continue
            # ---- one optimizer step done ----
            scheduler.step()
            completed_steps += 1
            progress.update(1)

            if completed_steps % train_args.logging_steps == 0 or completed_steps == max_steps:
                guard.check(accelerator)
                totals = accelerator.reduce(window.clone(), reduction="sum")
                total_tokens = tokens_seen()
                step_tokens, logged_tokens = total_tokens - max(logged_tokens, tokens_before_start), total_tokens
                elapsed = time.perf_counter() - window_start
                count = max(float(totals[7]), 1.0)
                mean = (totals[:7] / count).tolist()
                values = {
                    "train/loss": mean[0], "train/generator_loss": mean[1], "train/generator_accuracy": mean[2],
                    "train/learning_rate": scheduler.get_last_lr()[0], "train/tokens_per_second": step_tokens / elapsed,
                    "train/tokens_seen": total_tokens, "train/epoch": epoch,
                }
                if config.objective == "electra":
                    values.update({"train/discriminator_loss": mean[3], "train/discriminator_accuracy": mean[4],
                                   "train/discriminator_precision": mean[5], "train/discriminator_recall": mean[6]})
                log_metrics(values, completed_steps)
                postfix = {"loss": f"{mean[0]:.3f}", "gen": f"{mean[1]:.3f}", "gen_acc": f"{mean[2]:.3f}",
                           "tok/s": f"{step_tokens / elapsed:,.0f}"}
                if config.objective == "electra":
                    postfix.update({"disc": f"{mean[3]:.4f}", "disc_acc": f"{mean[4]:.3f}"})
                progress.set_postfix(postfix)
                window.zero_()
                window_start = time.perf_counter()

            if eval_dataloader is not None and (
                (train_args.eval_steps and completed_steps % train_args.eval_steps == 0) or completed_steps == max_steps
            ):
                last_eval = evaluate(model, eval_dataloader, eval_collator, accelerator, seed=train_args.seed + 1)
                log_metrics({f"eval/{key}": value for key, value in last_eval.items()}, completed_steps)
                logger.info("step %d eval: %s", completed_steps, {k: round(v, 4) for k, v in last_eval.items()})

            if train_args.checkpointing_steps and completed_steps % train_args.checkpointing_steps == 0 and completed_steps < max_steps:
                checkpoint()
            if completed_steps >= max_steps:
                break
        else:
            epoch += 1
            batches_into_epoch = 0
            continue
        break
    progress.close()

    # ---- the end: final checkpoint, exports, plot, Hub ----
    gathered = checkpoint()
    results = {"completed_steps": completed_steps, "tokens_seen": tokens_seen(), "eval": last_eval}
    exports = {}
    # DeepSpeed/FSDP: the full weights the checkpoint just gathered (main process; None elsewhere).
    final_model = gathered if sharded else full_model(accelerator, model, config)
    if accelerator.is_main_process:
        training_info = {
            "training data": ", ".join(map(str, data_args.train_files)) or f"{data_args.dataset_name} ({data_args.dataset_config_name})",
            "optimizer steps": completed_steps,
            "tokens seen": results["tokens_seen"],
            "global batch size": run_config["global_batch_size"],
            "sequence length": data_args.max_seq_length,
            "final_metrics": last_eval,
            "run arguments": {"model": asdict(model_args), "data": asdict(data_args), "training": asdict(train_args)},
        }
        exports = export_pretrained(final_model, output_dir / "export", tokenizer, training_info)
        plot_pretraining_curves(metrics_file, output_dir / "export" / "loss_curves.png")
        (output_dir / "results.json").write_text(json.dumps(results, indent=2))
        logger.info("exports written: %s", {k: str(v) for k, v in exports.items()})
        if train_args.push_to_hub:
            push_exports_to_hub(exports, train_args.hub_model_id, token=train_args.hub_token,
                                private=train_args.hub_private_repo)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    results["exports"] = {k: str(v) for k, v in exports.items()}
    return results


if __name__ == "__main__":
    main()
