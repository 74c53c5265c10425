#!/usr/bin/env python
"""Fine-tune an ELECTRA discriminator on GLUE with the paper's recipe.

    accelerate launch train_glue.py --model_name_or_path google/electra-small-discriminator \\
        --task_name all --data_dir glue_data --seeds 1 2 3 4 5 6 7 8 9 10 --do_predict \\
        --output_dir outputs/glue-small

One task (``--task_name rte``), a comma-separated list, or ``all``. Data from ``--data_dir`` (the
original GLUE TSV layout) or ``--dataset_name nyu-mll/glue``. Every task fine-tunes the same
checkpoint once per seed; the per-seed metrics, their median and the GLUE average (as the
paper computes it) go to ``<output_dir>/results.json`` and ``results.md``. ``--do_predict``
writes the GLUE server's submission files (from the seed with the best dev score) to
``<output_dir>/submission/``. All arguments can also come from one .json/.yaml file:
``python train_glue.py config.yaml``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import electra_hf.heads  # noqa: F401  (registers the official head with the Auto classes)
from electra_hf.finetuning import (
    FinetuningArguments,
    args_to_dict,
    make_accelerator,
    make_collator,
    resolve_learning_rate_and_layer_decay,
    run_with_seeds,
)
from electra_hf.tasks.glue import (
    GLUE_TASKS,
    GlueTask,
    add_swapped_pairs,
    compute_glue_metrics,
    glue_average,
    load_glue_split,
    resolve_task_names,
    write_glue_submission,
)

logger = logging.getLogger("train_glue")

HEADS = ("official", "hf")


@dataclass
class ModelArguments:
    """Which checkpoint, tokenizer and classification head to fine-tune."""

    model_name_or_path: str = field(
        metadata={"help": "An ELECTRA discriminator: a local export folder or a Hub id "
                          "(e.g. google/electra-small-discriminator)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's own."})
    head: str = field(
        default="official",
        metadata={"help": "official: dropout + one linear layer on [CLS] (the paper's head, electra_hf.heads); "
                          "hf: transformers' ElectraForSequenceClassification (two-layer head)."})
    classifier_dropout: float | None = field(
        default=None, metadata={"help": "Dropout before the classifier. None: the model's hidden_dropout_prob (0.1)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa (default: transformers')."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache for Hub downloads."})
    allow_vocab_size_mismatch: bool = field(
        default=False,
        metadata={"help": "Accept a tokenizer smaller than the model's vocab_size (embeddings padded on purpose)."})

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"--head must be one of {HEADS}, got {self.head!r}")


@dataclass
class DataArguments:
    """Which GLUE tasks, where their data is, and how to prepare it."""

    task_name: str = field(
        metadata={"help": f"One of {list(GLUE_TASKS)} (case-insensitive), a comma-separated list, or 'all'."})
    data_dir: str | None = field(
        default=None, metadata={"help": "GLUE folder in the original layout (<data_dir>/CoLA/train.tsv, ...)."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub data set instead of --data_dir (nyu-mll/glue layout)."})
    swap_pairs: bool = field(
        default=True, metadata={"help": "Also train MRPC and STS-B on swapped sentence pairs (official code)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N examples of each dev split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test examples."})
    do_predict: bool = field(default=False, metadata={"help": "Write GLUE submission files for the test sets (+ AX)."})
    skip_malformed_rows: bool = field(
        default=False, metadata={"help": "Skip TSV rows with a wrong number of fields (default: error)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        if self.data_dir is None and self.dataset_name is None:
            raise ValueError("Give --data_dir (GLUE TSV folder) or --dataset_name (nyu-mll/glue)")


# --------------------------------------------------------------------------------------------
def resolve_discriminator_path(path: str) -> str:
    """Map ``--model_name_or_path`` to something ``from_pretrained`` loads.

    Plain checkpoints and Hub ids pass through; an ``export_pretrained`` folder gives its
    ``discriminator/`` (or ``mlm/``); an electra_hf pre-training checkpoint (a
    ``train_pretrain.py`` checkpoint folder or a saved ``ElectraForRTDPretraining``) is exported
    once next to it and its discriminator is used.
    """
    from electra_hf.export import finetuning_checkpoint

    return finetuning_checkpoint(path)


def parse_args(argv: list[str] | None = None):
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataArguments, FinetuningArguments))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def check_vocab(tokenizer, config, model_path: str, tokenizer_path: str, allow_smaller: bool) -> None:
    """The tokenizer must produce ids the embedding table has."""
    n_tok, n_model = len(tokenizer), config.vocab_size
    if n_tok == n_model or (allow_smaller and n_tok < n_model):
        return
    raise ValueError(
        f"Tokenizer vocabulary ({n_tok} tokens, {tokenizer_path}) does not match the model's vocab_size "
        f"({n_model}, {model_path}). Use the tokenizer the model was pre-trained with (--tokenizer_name)"
        + ("" if n_tok > n_model else "; if the embeddings were padded on purpose pass --allow_vocab_size_mismatch")
        + "."
    )


def _build_model_init(task: GlueTask, model_args: ModelArguments, model_path: str, base_config):
    """A callable returning a fresh classifier on top of the pre-trained discriminator."""
    from transformers import ElectraForSequenceClassification

    from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification

    labels = task.label_list or ("score",)
    overrides: dict[str, Any] = dict(
        num_labels=task.num_labels,
        id2label={i: name for i, name in enumerate(labels)},
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="regression" if task.is_regression else "single_label_classification",
    )
    if model_args.classifier_dropout is not None:
        overrides["classifier_dropout"] = model_args.classifier_dropout
    load_kwargs: dict[str, Any] = dict(cache_dir=model_args.cache_dir)
    if model_args.attn_implementation:
        load_kwargs["attn_implementation"] = model_args.attn_implementation

    if model_args.head == "official":
        config = ElectraOfficialHeadConfig.from_electra_config(base_config, **overrides)
        model_class = ElectraOfficialHeadForSequenceClassification
    else:
        from transformers import ElectraConfig

        values = base_config.to_dict()
        for key in ("model_type", "architectures", "auto_map", "transformers_version", "id2label", "label2id"):
            values.pop(key, None)
        config = ElectraConfig(**{**values, **overrides})
        model_class = ElectraForSequenceClassification

    def model_init():
        return model_class.from_pretrained(model_path, config=config, **load_kwargs)

    return model_init


def _tokenize(dataset, tokenizer, task: GlueTask, args: FinetuningArguments, num_proc: int | None, keep_label: bool):
    def encode(batch):
        texts = (batch["sentence1"], batch["sentence2"]) if task.is_pair else (batch["sentence1"],)
        enc = tokenizer(*texts, truncation=True, max_length=args.max_seq_length,
                        padding="max_length" if args.pad_to_max_length else False)
        if keep_label and task.is_regression:
            enc["label"] = [float(v) / task.label_scale for v in batch["label"]]  # STS-B: [0, 5] → [0, 1]
        return enc

    remove = [c for c in dataset.column_names if c != "label" or not keep_label]
    return dataset.map(encode, batched=True, remove_columns=remove, num_proc=num_proc,
                       desc=f"tokenizing {task.name}")


def _first(dataset, n: int | None):
    return dataset if n is None or n >= len(dataset) else dataset.select(range(n))


def _format(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def results_markdown(results: dict[str, Any]) -> str:
    """One row per task and metric: one column per seed, then the median (all ×100); last row:
    the GLUE average of the medians as the paper computes it."""
    seeds = results["seeds"]
    lines = ["| task | metric | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
             "|---|---|" + "---:|" * (len(seeds) + 1)]
    for name, res in results["tasks"].items():
        for key in res["metric_keys"]:
            per_seed = " | ".join(_format(m.get(key)) for m in res["per_seed"])
            lines.append(f"| {name} | {key} | {per_seed} | {_format(res['median'].get(key))} |")
    avg = results["glue_average"]
    note = "" if avg["complete"] else f" (partial: without {', '.join(avg['missing'])})"
    value = "–" if avg["average"] is None else f"{avg['average']:.2f}"
    lines.append(f"| **GLUE average**{note} | per task: the paper's metric; WNLI excluded |"
                 + " |" * len(seeds) + f" **{value}** |")
    return "\n".join(lines) + "\n"


def _json_safe(obj):
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, fine-tune every requested task for every seed; returns the results dict
    (also written to ``<output_dir>/results.json`` and ``results.md``)."""
    model_args, data_args, ft_args = parse_args(argv)

    import datasets
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    accelerator = make_accelerator(ft_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if accelerator.is_local_main_process else logging.WARNING)
    if not accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()

    tasks = resolve_task_names(data_args.task_name)
    if any(not t.trainable for t in tasks):
        raise ValueError("--task_name AX: the diagnostic set has no training data; it is predicted with the MNLI "
                         "model (--task_name mnli --do_predict).")

    model_path = resolve_discriminator_path(model_args.model_name_or_path)
    tokenizer_path = model_args.tokenizer_name or model_path
    base_config = AutoConfig.from_pretrained(model_path, cache_dir=model_args.cache_dir)
    if not hasattr(base_config, "embedding_size") or "electra" not in base_config.model_type:
        raise ValueError(f"--model_name_or_path {model_path}: model_type {base_config.model_type!r} is not an "
                         f"ELECTRA discriminator")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, cache_dir=model_args.cache_dir)
    check_vocab(tokenizer, base_config, model_path, tokenizer_path, model_args.allow_vocab_size_mismatch)
    if ft_args.max_seq_length > base_config.max_position_embeddings:
        raise ValueError(f"--max_seq_length {ft_args.max_seq_length} exceeds the model's max_position_embeddings "
                         f"({base_config.max_position_embeddings}, {model_path})")
    collator = make_collator(tokenizer, ft_args)
    learning_rate, layer_decay = resolve_learning_rate_and_layer_decay(ft_args, base_config)

    if ft_args.report_to:
        accelerator.init_trackers(ft_args.tracker_project_name, config={
            **args_to_dict(ft_args), **args_to_dict(model_args), **args_to_dict(data_args)})

    output_dir = Path(ft_args.output_dir)
    data_dir = data_args.data_dir
    load = dict(dataset_name=data_args.dataset_name, cache_dir=model_args.cache_dir,
                skip_malformed_rows=data_args.skip_malformed_rows)
    results: dict[str, Any] = {"model": model_args.model_name_or_path, "head": model_args.head,
                               "learning_rate": learning_rate, "layer_decay": layer_decay,
                               "seeds": list(ft_args.seeds), "tasks": {}}
    for task in tasks:
        with accelerator.main_process_first():
            train_raw = _first(load_glue_split(task, data_dir, "train", **load), data_args.max_train_samples)
            eval_raw = {s: _first(load_glue_split(task, data_dir, s, **load), data_args.max_eval_samples)
                        for s in task.eval_splits}
            predict_raw = {}
            if data_args.do_predict:
                predict_raw = {s: _first(load_glue_split(task, data_dir, s, **load), data_args.max_predict_samples)
                               for s, _ in task.submissions}
                for other in GLUE_TASKS.values():  # AX is predicted by the MNLI model
                    if other.predicted_by == task.name:
                        predict_raw[f"{other.name}/test"] = _first(load_glue_split(other, data_dir, "test", **load),
                                                                   data_args.max_predict_samples)
        if task.train_on_swapped_pairs and data_args.swap_pairs:
            train_raw = add_swapped_pairs(train_raw)
        num_proc = data_args.preprocessing_num_workers
        train_ds = _tokenize(train_raw, tokenizer, task, ft_args, num_proc, keep_label=True)
        eval_ds = {s: _tokenize(d, tokenizer, task, ft_args, num_proc, keep_label=True) for s, d in eval_raw.items()}
        predict_ds = {s: _tokenize(d, tokenizer, task, ft_args, num_proc, keep_label=False) for s, d in predict_raw.items()}

        def compute_metrics(split, prediction, task=task):
            preds, refs = prediction.predictions, prediction.label_ids
            if task.is_regression:  # back to the 0–5 scale (correlations do not change)
                preds, refs = np.asarray(preds) * task.label_scale, np.asarray(refs) * task.label_scale
            return compute_glue_metrics(task, preds, refs)

        task_args = dataclasses.replace(
            ft_args, num_train_epochs=ft_args.num_train_epochs if ft_args.num_train_epochs is not None
            else task.num_train_epochs)
        logger.info("%s: %d training examples%s, %s epochs, seeds %s", task.name, len(train_ds),
                    " (with swapped pairs)" if task.train_on_swapped_pairs and data_args.swap_pairs else "",
                    task_args.num_train_epochs, list(ft_args.seeds))
        outcome = run_with_seeds(
            _build_model_init(task, model_args, model_path, base_config), train_ds, collator, task_args,
            eval_datasets=eval_ds, compute_metrics=compute_metrics, predict_datasets=predict_ds,
            tokenizer=tokenizer, accelerator=accelerator, run_name=task.name,
        )
        selection_key = task.average_key
        task_result: dict[str, Any] = {
            "seeds": outcome.seeds,
            "per_seed": [r.metrics for r in outcome.per_seed],
            "median": outcome.median,
            "metric_keys": [task.metric_key(s, m) for s in task.eval_splits for m in task.metrics],
            "num_train_epochs": task_args.num_train_epochs,
            "num_train_examples": len(train_ds),
            "global_steps": [r.global_step for r in outcome.per_seed],
        }
        if predict_ds:
            chosen = outcome.best_seed(selection_key)
            submission_dir = output_dir / "submission"
            files = []
            if accelerator.is_main_process:
                for split, raw in predict_raw.items():
                    target, target_split = (split.split("/")[0], "test") if "/" in split else (task.name, split)
                    prediction = chosen.predictions[split].predictions
                    if GLUE_TASKS[target].is_regression:
                        prediction = np.asarray(prediction).reshape(-1) * GLUE_TASKS[target].label_scale
                    files.append(str(write_glue_submission(target, prediction, submission_dir,
                                                           indices=raw["idx"], split=target_split)))
            task_result["submission"] = {"seed": chosen.seed, "selected_by": selection_key, "files": files}
        results["tasks"][task.name] = task_result
        if accelerator.is_main_process:
            logger.info("%s median: %s", task.name,
                        {k: round(v, 4) for k, v in outcome.median.items() if k in task_result["metric_keys"]})

    results["glue_average"] = glue_average({name: r["median"] for name, r in results["tasks"].items()})
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(_json_safe(results), indent=2))
        (output_dir / "results.md").write_text(results_markdown(results))
        logger.info("results: %s\n%s", output_dir / "results.json", results_markdown(results))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main()
