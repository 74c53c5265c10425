#!/usr/bin/env python
"""ELECTRA pre-training from raw text to Hub-ready checkpoints, with Accelerate.

    accelerate launch train_pretrain.py --train_files corpus/*.txt.gz --preset small --output_dir runs/small
    python train_pretrain.py                  # no data arguments: a one-minute CPU demo on pydoc text
    python train_pretrain.py run.yaml         # all arguments from a JSON/YAML file

The same code runs on one CPU, one GPU, several GPUs or nodes, FSDP or DeepSpeed: the hardware
comes from `accelerate launch` (see accelerate_configs/), the hyper-parameters from the argument
classes of `electra_hf.arguments` (official ELECTRA-Small defaults), the loop from
`electra_hf.pretraining`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import asdict
from pathlib import Path

from accelerate import DataLoaderConfiguration
from accelerate.utils import set_seed

from electra_hf import arguments, pretraining
from electra_hf import data as electra_data
from electra_hf.arguments import PretrainingArguments, PretrainingModelArguments, field_names, given_flags
from electra_hf.configuration import PRESETS, ElectraPretrainingConfig
from electra_hf.continued import CheckpointSource
from electra_hf.performance import configure_cpu_training
from electra_hf.training import build_accelerator, is_cpu_launch, setup_logging

logger = logging.getLogger("train_pretrain")

# The demo: a tiny model on the standard library's documentation, about a minute on 2 CPU cores.
DEMO_SETTINGS = {
    "preset": "tiny", "vocab_size": 4000, "max_seq_length": 128, "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32, "max_train_steps": 300, "num_warmup_steps": 30, "logging_steps": 10,
    "eval_steps": 100, "checkpointing_steps": 150, "output_dir": "runs/demo", "dataloader_num_workers": 0,
    "validation_split_percentage": 5.0,
}


def apply_demo_defaults(model_args, data_args, train_args, argv: list[str]) -> bool:
    """No data argument at all → the pydoc demo; settings the user gave explicitly are kept."""
    if (data_args.train_files or data_args.dataset_name) and not train_args.demo:
        return False
    owners, given = field_names(model_args, data_args, train_args), given_flags(argv)
    for name, value in DEMO_SETTINGS.items():
        if name not in given:
            setattr(owners[name], name, value)
    data_args.train_files = electra_data.write_demo_corpus(Path(train_args.output_dir) / "demo_corpus")
    return True


def build_config(model_args, data_args, vocab_size: int) -> ElectraPretrainingConfig:
    """The preset or saved config, with every model flag the user set and the data's sequence length;
    for a continued run, the checkpoints' config with the RTD flags."""
    overrides = {**model_args.config_overrides(), "max_seq_length": data_args.max_seq_length}
    source = CheckpointSource.from_arguments(model_args)
    if source is not None:
        config = source.config(overrides)
        if vocab_size > config.vocab_size:
            raise ValueError(f"the tokenizer has {vocab_size} tokens but the checkpoints' word table "
                             f"{config.vocab_size} rows ({source.tokenizer_path}); give the tokenizer they were trained "
                             "with (--tokenizer_name_or_path)")
        return config
    if not model_args.config_name_or_path:
        return ElectraPretrainingConfig.from_preset(model_args.preset, vocab_size=vocab_size, **overrides)
    source = model_args.config_name_or_path
    config = ElectraPretrainingConfig.from_pretrained(source)
    if config.vocab_size != vocab_size:
        raise ValueError(f"--config_name_or_path {source} has vocab_size {config.vocab_size} but the tokenizer has "
                         f"{vocab_size} tokens; use the tokenizer the config was made for (--tokenizer_name_or_path)")
    positions = config.discriminator_config.max_position_embeddings
    if data_args.max_seq_length > positions:
        raise ValueError(f"--max_seq_length {data_args.max_seq_length} exceeds the {positions} positions of "
                         f"--config_name_or_path {source} (max_position_embeddings)")
    return config.with_overrides(**overrides)


def config_max_seq_length(model_args) -> int:
    """The sequence length of the preset, saved config or checkpoints, for a run without --max_seq_length."""
    source = CheckpointSource.from_arguments(model_args)
    if source is not None:
        return source.config({}).max_seq_length
    if model_args.config_name_or_path:
        return ElectraPretrainingConfig.from_pretrained(model_args.config_name_or_path).max_seq_length
    return PRESETS[model_args.preset].get("max_seq_length", 128)


def check_continued_run_flags(model_args, data_args, argv: list[str]) -> None:
    """A continued run takes its sizes from the checkpoints and its tokenizer from the discriminator
    (or the checkpoint) unless --tokenizer_name_or_path names another."""
    source = CheckpointSource.from_arguments(model_args)
    if source is None:
        return
    if "preset" in given_flags(argv):
        raise ValueError("--preset describes a model to start from random weights; a continued run takes its networks "
                         "from the checkpoints (set RTD fields with their own flags)")
    data_args.tokenizer_name_or_path = data_args.tokenizer_name_or_path or source.tokenizer_path


def parse_args(argv: list[str]) -> tuple:
    """(model, data, training) arguments from flags or one JSON/YAML file."""
    return arguments.parse_args((PretrainingModelArguments, electra_data.PretrainingDataArguments,
                                 PretrainingArguments), argv)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    model_args, data_args, train_args = parse_args(argv)
    is_demo = apply_demo_defaults(model_args, data_args, train_args, argv)
    if is_cpu_launch():
        configure_cpu_training()  # keep freed buffers: no page faults on every step
    # The same shuffled order on every process (each takes its share of each global batch), seeded
    # by --seed rather than by whatever the global RNG holds when the loader is prepared.
    accelerator = build_accelerator(
        train_args, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=train_args.seed))
    setup_logging(accelerator)
    if is_demo:
        logger.warning("DEMO RUN: no data arguments were given, so this pre-trains a tiny ELECTRA on the Python "
                       "standard library's documentation (pydoc_data) for %d steps. Pass --train_files or "
                       "--dataset_name for a real run.", train_args.max_train_steps)
    check_continued_run_flags(model_args, data_args, argv)
    resume_from = pretraining.resume_checkpoint(train_args, accelerator, train_args.overwrite_output_dir or is_demo)
    set_seed(train_args.seed)
    data_args.max_seq_length = data_args.max_seq_length or config_max_seq_length(model_args)

    with accelerator.main_process_first():  # prepared once, cached on disk, read by every process
        raw_datasets = electra_data.load_raw_datasets(data_args)
        tokenizer = electra_data.load_or_train_tokenizer(data_args, raw_datasets)
        examples = electra_data.build_pretraining_datasets(data_args, tokenizer, raw_datasets)
    config = build_config(model_args, data_args, vocab_size=len(tokenizer))
    if resume_from is not None:
        pretraining.check_resume_config(resume_from, config)
    given = {"model_args": asdict(model_args), "data_args": asdict(data_args), "train_args": asdict(train_args)}
    run = pretraining.build_run(config, tokenizer, examples["train"], examples.get("validation"), model_args,
                                train_args, accelerator, run_info={**given, "demo": is_demo}, resume_from=resume_from)
    pretraining.start_run(run)
    result = pretraining.pretrain(run, resume_from)
    data = ", ".join(map(str, data_args.train_files)) or f"{data_args.dataset_name} ({data_args.dataset_config_name})"
    info = {"training data": data, "sequence length": data_args.max_seq_length,
            "run arguments": {"model": given["model_args"], "data": given["data_args"],
                              "training": given["train_args"]}}
    return pretraining.finish(run, result, info)


if __name__ == "__main__":
    main()
