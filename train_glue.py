#!/usr/bin/env python
"""Fine-tune an ELECTRA discriminator (or another encoder) on GLUE, or on sentence classification / regression data of
your own, with the paper's recipe.

    accelerate launch train_glue.py --model_name_or_path google/electra-small-discriminator \\
        --task_name all --data_dir glue_data --seeds 1 2 3 4 5 6 7 8 9 10 --do_predict \\
        --output_dir outputs/glue-small
    python train_glue.py --model_name_or_path runs/demo --train_file train.csv --validation_file dev.csv \\
        --output_dir outputs/mine

GLUE: one task (``--task_name rte``), a comma-separated list, or ``all``; data from ``--data_dir``
(the original GLUE TSV layout) or ``--dataset_name nyu-mll/glue``. ``--do_predict`` writes the GLUE
server's submission files (from the seed with the best dev score) to ``<output_dir>/submission/``.

Data of your own (no ``--task_name``): CSV, TSV, JSON, JSON-lines or Parquet files
(``--train_file``, ``--validation_file``, ``--test_file``) or any Hub data set (``--dataset_name``);
the text and label columns are named or detected as transformers' run_glue_no_trainer.py does,
float labels mean regression (electra_hf.tasks.classification). The test file's predictions
(from the seed with the best dev score) go to ``<output_dir>/predict_results.tsv``.

Every task fine-tunes the same checkpoint once per seed; the metrics (computed by the `evaluate`
module electra_hf/metrics/glue, plus any ``--metric_name``), their median over seeds and, for
GLUE, the GLUE average as the paper computes it go to ``<output_dir>/results.json`` and
``results.md``. ``--push_to_hub`` sends each task's best seed, its tokenizer, a model card and the
results to the Hub. All arguments can also come from one .json/.yaml file:
``python train_glue.py config.yaml``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import electra_hf.heads  # noqa: F401  (registers the official head with the Auto classes)
from electra_hf import arguments
from electra_hf.arguments import FinetuningArguments, FinetuningModelArguments
from electra_hf.finetuning import FinetuningTask, make_collator
from electra_hf.metrics import GLUE_METRIC, MetricSuite
from electra_hf.scripts_common import (
    classifier_dropout_override,
    first_n,
    hub_repo_id,
    hub_upload,
    metrics_table,
    model_load_kwargs,
    pretrained_model_init,
    start_finetuning,
    summary_rows,
    write_results_and_end_training,
)
from electra_hf.seeds import run_with_seeds
from electra_hf.tasks.classification import (
    ClassificationTask,
    load_classification_data,
    write_classification_predictions,
)
from electra_hf.tasks.glue import (
    GLUE_TASKS,
    GlueTask,
    add_swapped_pairs,
    glue_average,
    load_glue_split,
    resolve_task_names,
    write_glue_submission,
)
from electra_hf.tasks.glue_metrics import class_ids_or_scores

logger = logging.getLogger("train_glue")

HEADS = ("official", "hf")


@dataclass
class ModelArguments(FinetuningModelArguments):
    """Which checkpoint, tokenizer and classification head to fine-tune."""

    head: str = field(
        default="official",
        metadata={"help": "official: dropout + one linear layer on [CLS] (the paper's head, electra_hf.heads); "
                          "hf: transformers' ElectraForSequenceClassification (two-layer head). Other encoder "
                          "families (DeBERTa, BERT, ModernBERT, ...) use transformers' head of their family."})

    def __post_init__(self):
        if self.head not in HEADS:
            raise ValueError(f"--head must be one of {HEADS}, got {self.head!r}")


@dataclass
class DataArguments:
    """Which GLUE tasks, or which data of your own, where it is, and how to prepare it."""

    task_name: str | None = field(
        default=None,
        metadata={"help": f"GLUE: one of {list(GLUE_TASKS)} (case-insensitive), a comma-separated list, or 'all'. "
                          f"Leave it out for data of your own (--train_file/--validation_file, or --dataset_name)."})
    data_dir: str | None = field(
        default=None, metadata={"help": "GLUE folder in the original layout (<data_dir>/CoLA/train.tsv, ...)."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "With --task_name: the GLUE data set on the Hub (nyu-mll/glue layout) instead of --data_dir. "
                          "Without: any Hub data set with text and label columns."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_file: str | None = field(
        default=None, metadata={"help": "Training data of your own: .csv, .tsv, .json, .jsonl or .parquet."})
    validation_file: str | None = field(default=None, metadata={"help": "Dev data of your own (evaluated as 'dev')."})
    test_file: str | None = field(
        default=None,
        metadata={"help": "Test data of your own (the training data's text columns; labels not needed): predicted "
                          "into <output_dir>/predict_results.tsv."})
    text_column_names: str | None = field(
        default=None,
        metadata={"help": "Data of your own: the text column, or two comma-separated for sentence pairs. None: "
                          "sentence1,sentence2 if both exist, else the first two other text columns, else the one."})
    label_column_name: str = field(default="label", metadata={"help": "Data of your own: the label column."})
    do_regression: bool | None = field(
        default=None, metadata={"help": "Data of your own: regression (True) or classification (False). None: "
                                        "regression when the training labels are floats."})
    train_split: str = field(default="train", metadata={"help": "--dataset_name of your own: the training split."})
    validation_split: str = field(default="validation", metadata={"help": "--dataset_name of your own: the dev split."})
    test_split: str = field(default="test", metadata={"help": "--dataset_name of your own: the test split (--do_predict)."})
    swap_pairs: bool = field(
        default=True, metadata={"help": "Also train MRPC and STS-B on swapped sentence pairs (official code)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N examples of each dev split."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test examples."})
    do_predict: bool = field(
        default=False, metadata={"help": "GLUE: write submission files for the test sets (+ AX). A Hub data set of your "
                                         "own: predict its test split."})
    skip_malformed_rows: bool = field(
        default=False, metadata={"help": "Skip TSV rows with a wrong number of fields (default: error)."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        files = [name for name in ("train_file", "validation_file", "test_file") if getattr(self, name)]
        if self.task_name is not None:
            own_only = files + [name for name in ("text_column_names", "do_regression", "dataset_config_name")
                                if getattr(self, name) is not None]
            if own_only:
                raise ValueError(f"--task_name reads a GLUE task; {', '.join('--' + n for n in own_only)} are for data "
                                 f"of your own (leave --task_name out)")
            if self.data_dir is None and self.dataset_name is None:
                raise ValueError("Give --data_dir (GLUE TSV folder) or --dataset_name (nyu-mll/glue)")
        elif self.data_dir is not None:
            raise ValueError("--data_dir holds the GLUE layout: give --task_name too (or --train_file/--validation_file "
                             "for data of your own)")
        elif self.dataset_name is not None and files:
            raise ValueError("Give either --dataset_name or --train_file/--validation_file/--test_file, not both")
        elif self.dataset_name is None and not (self.train_file and self.validation_file):
            raise ValueError("Give --task_name with --data_dir or --dataset_name (GLUE), or --train_file and "
                             "--validation_file, or --dataset_name (data of your own)")
        elif self.do_predict and self.dataset_name is None and not self.test_file:
            raise ValueError("--do_predict with files of your own needs --test_file")

    @property
    def text_columns(self) -> list[str] | None:
        return [name.strip() for name in self.text_column_names.split(",")] if self.text_column_names else None


# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    """Flags, or one .json/.yaml file holding them all."""
    return arguments.parse_args((ModelArguments, DataArguments, FinetuningArguments), argv)


def _build_model_init(task, model_args: ModelArguments, setup):
    """A callable returning a fresh classifier (for a GLUE task or a ClassificationTask) on top of
    the pre-trained discriminator: ELECTRA's official head, or the family's own."""
    from transformers import AutoModelForSequenceClassification

    from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification

    labels = [str(label) for label in task.label_list] if task.label_list else ["score"]
    overrides: dict[str, Any] = dict(
        num_labels=task.num_labels,
        id2label={i: name for i, name in enumerate(labels)},
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="regression" if task.is_regression else "single_label_classification",
    )
    base_config = setup.base_config
    if model_args.head != "official" or "electra" not in base_config.model_type:
        if model_args.head == "official":
            logger.info("--head official is ELECTRA's head: a %s encoder gets its family's own head from "
                        "AutoModelForSequenceClassification", base_config.model_type)
        return pretrained_model_init(AutoModelForSequenceClassification, setup, model_args, **overrides)
    # ELECTRA and configs derived from it
    overrides.update(classifier_dropout_override(base_config, model_args.classifier_dropout))
    config = ElectraOfficialHeadConfig.from_electra_config(base_config, **overrides)
    load_kwargs = model_load_kwargs(model_args)
    return lambda: ElectraOfficialHeadForSequenceClassification.from_pretrained(setup.model_path, config=config,
                                                                               **load_kwargs)


def _tokenize(dataset, tokenizer, task, args: FinetuningArguments, num_proc: int | None, keep_label: bool):
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
    """One row per task and metric: one column per seed, then the median (all ×100); for GLUE a
    last row: the GLUE average of the medians as the paper computes it."""
    seeds = results["seeds"]
    rows = [row for name, res in results["tasks"].items() for row in summary_rows(name, res)]
    lines = metrics_table("task", rows, seeds)
    if "glue_average" in results:
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
    tasks = resolve_task_names(data_args.task_name) if data_args.task_name else []
    if any(not t.trainable for t in tasks):
        raise ValueError("--task_name AX: the diagnostic set has no training data; it is predicted with the MNLI "
                         "model (--task_name mnli --do_predict).")
    setup = start_finetuning(model_args, data_args, ft_args)
    loaders = ([functools.partial(load_task_splits, task, data_args, model_args.cache_dir) for task in tasks]
               or [functools.partial(load_own_splits, data_args, model_args.cache_dir)])
    results: dict[str, Any] = {"model": model_args.model_name_or_path, "model_weights": setup.model_path,
                               "head": model_args.head, "learning_rate": setup.learning_rate,
                               "layer_decay": setup.layer_decay, "seeds": list(ft_args.seeds), "tasks": {}}
    uploads = []
    for load in loaders:
        with setup.accelerator.main_process_first():
            task, raw_splits = load()
        task_args = dataclasses.replace(ft_args, num_train_epochs=ft_args.num_train_epochs
                                        if ft_args.num_train_epochs is not None else task.num_train_epochs)
        result, outcome = finetune_task(task, raw_splits, setup, model_args, data_args, task_args)
        results["tasks"][task.name] = result
        if ft_args.push_to_hub:
            uploads.append(glue_hub_upload(task, result, outcome, setup, model_args, data_args, task_args,
                                           several_tasks=len(loaders) > 1))
            result["hub"] = uploads[-1].summary()
    if tasks:
        results["glue_average"] = glue_average({name: r["median"] for name, r in results["tasks"].items()})
    write_results_and_end_training(setup.accelerator, Path(ft_args.output_dir), results, results_markdown(results),
                                   logger, hub_uploads=uploads)
    return results


def load_task_splits(task: GlueTask, data_args: DataArguments, cache_dir: str | None) -> tuple[GlueTask, tuple]:
    """``(task, (train, {dev split: data}, {predicted split: data}))`` of a GLUE task, cut to the
    --max_*_samples."""
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
    return task, (train_raw, eval_raw, predict_raw)


def load_own_splits(data_args: DataArguments, cache_dir: str | None) -> tuple[ClassificationTask, tuple]:
    """``(task, (train, {"dev": data}, {"test": data} or {}))`` of data of your own, cut to the
    --max_*_samples."""
    task, splits = load_classification_data(
        train_file=data_args.train_file, validation_file=data_args.validation_file, test_file=data_args.test_file,
        dataset_name=data_args.dataset_name, dataset_config_name=data_args.dataset_config_name,
        splits=(data_args.train_split, data_args.validation_split, data_args.test_split),
        predict=data_args.do_predict, text_column_names=data_args.text_columns,
        label_column_name=data_args.label_column_name, do_regression=data_args.do_regression, cache_dir=cache_dir)
    predict_raw = {"test": first_n(splits["test"], data_args.max_predict_samples)} if "test" in splits else {}
    return task, (first_n(splits["train"], data_args.max_train_samples),
                  {"dev": first_n(splits["dev"], data_args.max_eval_samples)}, predict_raw)


def finetune_task(task, raw_splits: tuple, setup, model_args: ModelArguments, data_args: DataArguments,
                  task_args: FinetuningArguments):
    """Every seed of one task (a GLUE task or a ClassificationTask): its per-seed metrics and median
    (and test predictions); returns ``(result, SeedsResult)``."""
    train_raw, eval_raw, predict_raw = raw_splits
    suite = MetricSuite(GLUE_METRIC, task.metric_config, task_args.metric_name or ())
    num_proc, tokenizer = data_args.preprocessing_num_workers, setup.tokenizer

    def tokenize(dataset, keep_label: bool = True):
        return _tokenize(dataset, tokenizer, task, task_args, num_proc, keep_label)

    train_ds = tokenize(train_raw)
    eval_ds = {split: tokenize(data) for split, data in eval_raw.items()}
    predict_ds = {split: tokenize(data, keep_label=False) for split, data in predict_raw.items()}

    def compute_metrics(split, prediction):
        preds = class_ids_or_scores(prediction.predictions, task.is_regression, task.name)
        refs = np.asarray(prediction.label_ids)
        if task.is_regression:  # back to the task's scale (STS-B: 0–5; correlations do not change)
            preds, refs = preds * task.label_scale, refs * task.label_scale
        return suite.compute(preds.tolist(), refs.tolist())

    swapped = task.train_on_swapped_pairs and data_args.swap_pairs
    logger.info("%s: %d training examples%s, %s epochs, seeds %s", task.name, len(train_ds),
                " (with swapped pairs)" if swapped else "", task_args.num_train_epochs, list(task_args.seeds))
    finetuning_task = FinetuningTask(train_ds, make_collator(tokenizer, task_args), eval_datasets=eval_ds,
                                     compute_metrics=compute_metrics, predict_datasets=predict_ds, tokenizer=tokenizer)
    outcome = run_with_seeds(_build_model_init(task, model_args, setup),
                             finetuning_task, task_args, accelerator=setup.accelerator, run_name=task.name)
    metric_keys = [task.metric_key(s, m) for s in task.eval_splits for m in (*task.metrics, *suite.extra_keys)]
    result: dict[str, Any] = {
        "seeds": outcome.seeds, "per_seed": [r.metrics for r in outcome.per_seed], "median": outcome.median,
        "metric_keys": metric_keys, "metric_modules": suite.describe(), "num_train_epochs": task_args.num_train_epochs,
        "num_train_examples": len(train_ds), "global_steps": [r.global_step for r in outcome.per_seed],
    }
    if isinstance(task, ClassificationTask):
        result.update(data=task.data, text_columns=list(task.text_columns), label_column=task.label_column,
                      labels=None if task.is_regression else list(task.label_list))
    if predict_ds:
        result["submission"] = write_test_predictions(task, outcome, predict_raw, setup.accelerator,
                                                      task_args.output_dir)
    if setup.accelerator.is_main_process:
        logger.info("%s median: %s", task.name, {k: round(v, 4) for k, v in outcome.median.items() if k in metric_keys})
    return result, outcome


def write_test_predictions(task, outcome, predict_raw: dict, accelerator, output_dir: str) -> dict[str, Any]:
    """The test predictions of the seed with the best dev score: the GLUE server's files, or
    ``predict_results.tsv`` for data of your own."""
    chosen = outcome.best_seed(task.average_key)
    files = []
    if accelerator.is_main_process:
        for split, raw in predict_raw.items():
            prediction = chosen.predictions[split].predictions
            if isinstance(task, ClassificationTask):
                path = Path(output_dir) / "predict_results.tsv"
                files.append(str(write_classification_predictions(path, task, prediction, raw["idx"])))
                continue
            target, target_split = (split.split("/")[0], "test") if "/" in split else (task.name, split)
            if GLUE_TASKS[target].is_regression:
                prediction = np.asarray(prediction).reshape(-1) * GLUE_TASKS[target].label_scale
            files.append(str(write_glue_submission(target, prediction, Path(output_dir) / "submission",
                                                   indices=raw["idx"], split=target_split)))
    return {"seed": chosen.seed, "selected_by": task.average_key, "files": files}


def glue_hub_upload(task, result: dict, outcome, setup, model_args, data_args: DataArguments, task_args,
                    several_tasks: bool):
    """What --push_to_hub sends for one task (see electra_hf.scripts_common.hub_upload)."""
    if isinstance(task, ClassificationTask):
        kind = "sentence-pair classification" if task.is_pair else "sentence classification"
        kind = "regression" if task.is_regression else kind
        classes = "" if task.is_regression else f", classes {list(task.label_list)}"
        data = f"{task.data} (text columns {list(task.text_columns)}, label column {task.label_column!r}{classes})"
        description = f"{kind} ({task.name})"
    else:
        description = f"GLUE {task.name}"
        data = (f"{data_args.dataset_name} ({task.hub_config})" if data_args.dataset_name
                else f"the GLUE TSV files under {data_args.data_dir}")
    table = "\n".join(metrics_table("task", summary_rows(task.name, result), result["seeds"]))
    return hub_upload(setup, model_args, task_args, outcome, repo_id=hub_repo_id(task_args, task.name, several_tasks),
                      selected_by=task.average_key, task=description, data=data, pipeline_tag="text-classification",
                      auto_class="AutoModelForSequenceClassification", results_table=table,
                      output_dir=task_args.output_dir, dataset_name=data_args.dataset_name)


if __name__ == "__main__":
    main()
