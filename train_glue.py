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
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import electra_hf.heads  # noqa: F401  (registers the official head with the Auto classes)
from electra_hf import arguments
from electra_hf.arguments import FinetuningArguments, FinetuningModelArguments
from electra_hf.finetuning import FinetuningTask, make_collator
from electra_hf.scripts_common import (
    first_n,
    metrics_table,
    model_load_kwargs,
    plain_electra_config,
    start_finetuning,
    summary_rows,
    write_results_and_end_training,
)
from electra_hf.seeds import run_with_seeds
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
class ModelArguments(FinetuningModelArguments):
    """Which checkpoint, tokenizer and classification head to fine-tune."""

    head: str = field(
        default="official",
        metadata={"help": "official: dropout + one linear layer on [CLS] (the paper's head, electra_hf.heads); "
                          "hf: transformers' ElectraForSequenceClassification (two-layer head)."})

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
def parse_args(argv: list[str] | None = None):
    """Flags, or one .json/.yaml file holding them all."""
    return arguments.parse_args((ModelArguments, DataArguments, FinetuningArguments), argv)


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
    load_kwargs = model_load_kwargs(model_args)

    if model_args.head == "official":
        config = ElectraOfficialHeadConfig.from_electra_config(base_config, **overrides)
        model_class = ElectraOfficialHeadForSequenceClassification
    else:
        config = plain_electra_config(base_config, **overrides)
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


def results_markdown(results: dict[str, Any]) -> str:
    """One row per task and metric: one column per seed, then the median (all ×100); last row:
    the GLUE average of the medians as the paper computes it."""
    seeds = results["seeds"]
    rows = [row for name, res in results["tasks"].items() for row in summary_rows(name, res)]
    lines = metrics_table("task", rows, seeds)
    avg = results["glue_average"]
    note = "" if avg["complete"] else f" (partial: without {', '.join(avg['missing'])})"
    value = "–" if avg["average"] is None else f"{avg['average']:.2f}"
    lines.append(f"| **GLUE average**{note} | per task: the paper's metric; WNLI excluded |"
                 + " |" * len(seeds) + f" **{value}** |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, fine-tune every requested task for every seed; returns the results dict
    (also written to ``<output_dir>/results.json`` and ``results.md``)."""
    model_args, data_args, ft_args = parse_args(argv)
    tasks = resolve_task_names(data_args.task_name)
    if any(not t.trainable for t in tasks):
        raise ValueError("--task_name AX: the diagnostic set has no training data; it is predicted with the MNLI "
                         "model (--task_name mnli --do_predict).")
    setup = start_finetuning(model_args, data_args, ft_args)
    results: dict[str, Any] = {"model": model_args.model_name_or_path, "head": model_args.head,
                               "learning_rate": setup.learning_rate, "layer_decay": setup.layer_decay,
                               "seeds": list(ft_args.seeds), "tasks": {}}
    for task in tasks:
        results["tasks"][task.name] = finetune_task(task, setup, model_args, data_args, ft_args)
    results["glue_average"] = glue_average({name: r["median"] for name, r in results["tasks"].items()})
    write_results_and_end_training(setup.accelerator, Path(ft_args.output_dir), results, results_markdown(results),
                                   logger)
    return results


def load_task_splits(task: GlueTask, data_args: DataArguments, cache_dir: str | None) -> tuple[Any, dict, dict]:
    """(train, {dev split: data}, {predicted split: data}) of a task, cut to the --max_*_samples."""
    load = dict(dataset_name=data_args.dataset_name, cache_dir=cache_dir, skip_malformed_rows=data_args.skip_malformed_rows)
    data_dir = data_args.data_dir
    train_raw = first_n(load_glue_split(task, data_dir, "train", **load), data_args.max_train_samples)
    eval_raw = {s: first_n(load_glue_split(task, data_dir, s, **load), data_args.max_eval_samples)
                for s in task.eval_splits}
    predict_raw = {}
    if data_args.do_predict:
        predict_raw = {s: first_n(load_glue_split(task, data_dir, s, **load), data_args.max_predict_samples)
                       for s, _ in task.submissions}
        for other in GLUE_TASKS.values():  # AX is predicted by the MNLI model
            if other.predicted_by == task.name:
                predict_raw[f"{other.name}/test"] = first_n(load_glue_split(other, data_dir, "test", **load),
                                                           data_args.max_predict_samples)
    if task.train_on_swapped_pairs and data_args.swap_pairs:
        train_raw = add_swapped_pairs(train_raw)
    return train_raw, eval_raw, predict_raw


def finetune_task(task: GlueTask, setup, model_args, data_args: DataArguments, ft_args) -> dict[str, Any]:
    """Every seed of one task; its per-seed metrics and median (and submission files)."""
    with setup.accelerator.main_process_first():
        train_raw, eval_raw, predict_raw = load_task_splits(task, data_args, model_args.cache_dir)
    num_proc, tokenizer = data_args.preprocessing_num_workers, setup.tokenizer
    train_ds = _tokenize(train_raw, tokenizer, task, ft_args, num_proc, keep_label=True)
    eval_ds = {s: _tokenize(d, tokenizer, task, ft_args, num_proc, keep_label=True) for s, d in eval_raw.items()}
    predict_ds = {s: _tokenize(d, tokenizer, task, ft_args, num_proc, keep_label=False) for s, d in predict_raw.items()}

    def compute_metrics(split, prediction):
        preds, refs = prediction.predictions, prediction.label_ids
        if task.is_regression:  # back to the 0–5 scale (correlations do not change)
            preds, refs = np.asarray(preds) * task.label_scale, np.asarray(refs) * task.label_scale
        return compute_glue_metrics(task, preds, refs)

    task_args = dataclasses.replace(ft_args, num_train_epochs=ft_args.num_train_epochs if ft_args.num_train_epochs
                                    is not None else task.num_train_epochs)
    logger.info("%s: %d training examples%s, %s epochs, seeds %s", task.name, len(train_ds),
                " (with swapped pairs)" if task.train_on_swapped_pairs and data_args.swap_pairs else "",
                task_args.num_train_epochs, list(ft_args.seeds))
    finetuning_task = FinetuningTask(train_ds, make_collator(tokenizer, ft_args), eval_datasets=eval_ds,
                                     compute_metrics=compute_metrics, predict_datasets=predict_ds, tokenizer=tokenizer)
    outcome = run_with_seeds(_build_model_init(task, model_args, setup.model_path, setup.base_config), finetuning_task,
                             task_args, accelerator=setup.accelerator, run_name=task.name)
    result: dict[str, Any] = {
        "seeds": outcome.seeds, "per_seed": [r.metrics for r in outcome.per_seed], "median": outcome.median,
        "metric_keys": [task.metric_key(s, m) for s in task.eval_splits for m in task.metrics],
        "num_train_epochs": task_args.num_train_epochs, "num_train_examples": len(train_ds),
        "global_steps": [r.global_step for r in outcome.per_seed],
    }
    if predict_ds:
        result["submission"] = write_submission(task, outcome, predict_raw, setup.accelerator, ft_args.output_dir)
    if setup.accelerator.is_main_process:
        logger.info("%s median: %s", task.name,
                    {k: round(v, 4) for k, v in outcome.median.items() if k in result["metric_keys"]})
    return result


def write_submission(task: GlueTask, outcome, predict_raw: dict, accelerator, output_dir: str) -> dict[str, Any]:
    """The GLUE server's files for the test sets, from the seed with the best dev score."""
    chosen = outcome.best_seed(task.average_key)
    files = []
    if accelerator.is_main_process:
        for split, raw in predict_raw.items():
            target, target_split = (split.split("/")[0], "test") if "/" in split else (task.name, split)
            prediction = chosen.predictions[split].predictions
            if GLUE_TASKS[target].is_regression:
                prediction = np.asarray(prediction).reshape(-1) * GLUE_TASKS[target].label_scale
            files.append(str(write_glue_submission(target, prediction, Path(output_dir) / "submission",
                                                   indices=raw["idx"], split=target_split)))
    return {"seed": chosen.seed, "selected_by": task.average_key, "files": files}


if __name__ == "__main__":
    main()
