#!/usr/bin/env python
"""Fine-tune an ELECTRA discriminator (or another encoder) for token classification (NER, chunking) with the paper's recipe.

    accelerate launch train_tagging.py --model_name_or_path google/electra-small-discriminator \\
        --task conll2003 --data_dir ../shared/data/ner/conll2003 --seeds 1 2 3 4 5 --do_predict \\
        --output_dir outputs/ner-small

Data: a known task (``--task conll2003`` or ``conll2000``, files named as in
``electra_hf.tasks.tagging.TAGGING_TASKS`` under ``--data_dir``), CoNLL-style column files
(``--train_file/--validation_file/--test_file`` with ``--tag_column`` and ``--tag_scheme``), or a
Hub data set with token/tag columns (``--dataset_name``). IOB1 tags are rewritten as IOB2; each
word's label sits on its first sub-token (the others are ignored by the loss), as in the official
ELECTRA code. The head is transformers' ``ElectraForTokenClassification`` (dropout + one linear
layer per token, the official tagging head), so the saved model loads with plain
``AutoModelForTokenClassification`` and works in ``pipeline("token-classification")``.

Every seed fine-tunes the same checkpoint; entity-level precision/recall/F1 (CoNLL's
``conlleval`` rules, through seqeval, computed by the `evaluate` module electra_hf/metrics/entity_f1,
plus any ``--metric_name``) per type and overall, plus token accuracy, per seed and their median
go to ``<output_dir>/results.json`` and ``results.md``; ``--push_to_hub`` sends the best seed, its
tokenizer, a model card and the results to the Hub. ``--do_predict`` also scores
the test file and writes each seed's predictions in CoNLL format (``word gold predicted``, one
token per line, the input of ``conlleval``) to ``<output_dir>/seed_<seed>/test_predictions.txt``.
All arguments can also come from one .json/.yaml file: ``python train_tagging.py config.yaml``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from electra_hf import arguments
from electra_hf.arguments import FinetuningArguments, FinetuningModelArguments
from electra_hf.finetuning import FinetuningTask
from electra_hf.metrics import ENTITY_F1_METRIC, MetricSuite
from electra_hf.scripts_common import (
    EvalRecorder,
    finish_one_task,
    first_n,
    pretrained_model_init,
    seed_summary,
    start_finetuning,
    write_seed_predictions,
)
from electra_hf.seeds import run_with_seeds
from electra_hf.tasks.tagging import (
    TAG_SCHEMES,
    TAGGING_NON_MODEL_COLUMNS,
    TAGGING_TASKS,
    encode_tagging_dataset,
    entity_counts,
    label_maps,
    labels_from_datasets,
    load_hub_tagging,
    predictions_to_tags,
    read_conll,
)

logger = logging.getLogger("train_tagging")

#: Overall metrics reported first in the table (entity-level, micro over types), then per type.
OVERALL_METRICS = ("precision", "recall", "f1", "accuracy")
PER_TYPE_METRICS = ("precision", "recall", "f1")
SPLIT_NAMES = {"validation": "dev", "test": "test"}


@dataclass
class DataArguments:
    """Where the tagged sentences come from and how to read and encode them."""

    task: str | None = field(
        default=None,
        metadata={"help": f"A known data set: {' | '.join(TAGGING_TASKS)}. Gives the file names (under --data_dir), "
                          f"the tag column, the tag scheme and the label list."})
    data_dir: str | None = field(
        default=None,
        metadata={"help": "With --task: the folder holding the task's files (e.g. .../ner/conll2003), or the data "
                          "root holding them under the task's sub-folder (ner/conll2003, chunking/conll2000)."})
    train_file: str | None = field(default=None, metadata={"help": "CoNLL-style training file (plain or .gz)."})
    validation_file: str | None = field(default=None, metadata={"help": "CoNLL-style dev file (evaluated as 'dev')."})
    test_file: str | None = field(default=None, metadata={"help": "CoNLL-style test file (--do_predict)."})
    tag_column: int | None = field(
        default=None,
        metadata={"help": "Column of the tag in the files (0-based; negative counts from the end). None: the "
                          "task's, or -1 (the last column)."})
    token_column: int = field(default=0, metadata={"help": "Column of the word in the files."})
    tag_scheme: str | None = field(
        default=None,
        metadata={"help": f"Tags as stored: {' | '.join(TAG_SCHEMES)}. iob1 is rewritten as IOB2; auto detects IOB1; "
                          f"none keeps non-IOB tags (e.g. POS: token accuracy only). None: the task's, or auto."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub data set with token/tag columns (e.g. conll2003) instead of files."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    tokens_column: str = field(default="tokens", metadata={"help": "Hub data set: the column of word lists."})
    tags_column: str = field(default="ner_tags", metadata={"help": "Hub data set: the column of tag lists."})
    train_split: str = field(default="train", metadata={"help": "Hub data set: the training split."})
    validation_split: str = field(default="validation", metadata={"help": "Hub data set: the dev split."})
    test_split: str = field(default="test", metadata={"help": "Hub data set: the test split (--do_predict)."})
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Label every sub-token of a word (B-X continues as I-X) instead of only the first "
                          "(the official code labels the first)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training sentences."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N dev sentences."})
    max_predict_samples: int | None = field(default=None, metadata={"help": "Use only the first N test sentences."})
    do_predict: bool = field(
        default=False, metadata={"help": "Also score the test set and write CoNLL-format predictions per seed."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        if self.task is not None:
            self.task = self.task.lower()
            if self.task not in TAGGING_TASKS:
                raise ValueError(f"Unknown tagging task {self.task!r}; known: {list(TAGGING_TASKS)} (or give "
                                 f"--train_file/--validation_file, or --dataset_name)")
        if self.tag_scheme is not None and self.tag_scheme not in TAG_SCHEMES:
            raise ValueError(f"--tag_scheme must be one of {TAG_SCHEMES}, got {self.tag_scheme!r}")
        if self.dataset_name is not None and (self.train_file or self.validation_file or self.test_file):
            raise ValueError("Give either --dataset_name or --train_file/--validation_file/--test_file, not both")
        if self.dataset_name is None:
            if self.task is not None and self.data_dir is None and not (self.train_file and self.validation_file):
                raise ValueError(f"--task {self.task} needs --data_dir (the folder holding its files)")
            if self.task is None and not (self.train_file and self.validation_file):
                raise ValueError("Give --task with --data_dir, --train_file and --validation_file, or --dataset_name")


# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    """Flags, or one .json/.yaml file holding them all."""
    return arguments.parse_args((FinetuningModelArguments, DataArguments, FinetuningArguments), argv)


def task_files(data_args: DataArguments) -> dict[str, str]:
    """``{"train", "validation"[, "test"]: path}``: the explicit files, else the task's files under
    ``--data_dir`` (the folder holding them, or the data root holding the task's sub-folder)."""
    files: dict[str, str] = {}
    if data_args.task is not None and data_args.data_dir is not None:
        spec = TAGGING_TASKS[data_args.task]
        in_root = spec.files(data_args.data_dir)
        in_folder = {split: os.path.join(data_args.data_dir, os.path.basename(path)) for split, path in in_root.items()}
        if os.path.isfile(in_folder["train"]):
            files = in_folder
        elif os.path.isfile(in_root["train"]):
            files = in_root
        elif not data_args.train_file:
            raise FileNotFoundError(
                f"--task {spec.name}: {spec.train_file} is neither in --data_dir {data_args.data_dir} nor in "
                f"{os.path.dirname(in_root['train'])}; give the folder holding {spec.train_file}, "
                f"{spec.validation_file}" + (f", {spec.test_file}" if spec.test_file else ""))
    for split, explicit in (("train", data_args.train_file), ("validation", data_args.validation_file),
                            ("test", data_args.test_file)):
        if explicit:
            files[split] = explicit
    return files


def load_raw_splits(data_args: DataArguments, cache_dir: str | None) -> tuple[dict[str, Any], str, tuple | None]:
    """Read the splits as ``id``/``tokens``/``tags`` Datasets (IOB2 after conversion).

    Returns ``({"train", "validation"[, "test"]: Dataset}, tag scheme, fixed label list or None)``.
    Malformed files raise ``ValueError`` naming the file and line (from the reader).
    """
    spec = TAGGING_TASKS[data_args.task] if data_args.task else None
    tag_scheme = data_args.tag_scheme or (spec.tag_scheme if spec else "auto")
    fixed_labels = spec.labels if spec else None
    wanted = ["train", "validation"] + (["test"] if data_args.do_predict else [])
    if data_args.dataset_name is not None:
        split_names = {"train": data_args.train_split, "validation": data_args.validation_split,
                       "test": data_args.test_split}
        raw = {split: load_hub_tagging(data_args.dataset_name, data_args.dataset_config_name, split=split_names[split],
                                       tokens_column=data_args.tokens_column, tags_column=data_args.tags_column,
                                       tag_scheme=tag_scheme, cache_dir=cache_dir)
               for split in wanted}
        return raw, tag_scheme, fixed_labels
    files = task_files(data_args)
    if data_args.do_predict and "test" not in files:
        where = (f"--task {spec.name} has no separate test file ({spec.description})" if spec
                 else "no --test_file was given")
        raise ValueError(f"--do_predict needs a test file: {where}; give --test_file")
    tag_column = data_args.tag_column if data_args.tag_column is not None else (spec.tag_column if spec else -1)
    raw = {split: read_conll(files[split], tag_column=tag_column, token_column=data_args.token_column,
                             tag_scheme=tag_scheme)
           for split in wanted}
    return raw, tag_scheme, fixed_labels


def is_entity_tagging(labels) -> bool:
    """True when every label is O or prefixed B-/I-/E-/S-: chunks can be scored (else token accuracy only)."""
    return all(label == "O" or (len(label) > 2 and label[0] in "BIES" and label[1] == "-") for label in labels)


def write_conll_predictions(path: Path, raw, predicted: list[list[str]]) -> None:
    """One ``word gold predicted`` line per token (``word predicted`` without gold tags), a blank line
    after each sentence: the input format of CoNLL's ``conlleval``. Gold tags are the IOB2 ones."""
    has_gold = "tags" in raw.column_names
    lines = []
    for index, (words, tags) in enumerate(zip(raw["tokens"], predicted)):
        gold = raw["tags"][index] if has_gold else None
        for position, (word, tag) in enumerate(zip(words, tags)):
            lines.append(f"{word} {gold[position]} {tag}" if has_gold else f"{word} {tag}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, fine-tune for every seed; returns the results dict (also written to
    ``<output_dir>/results.json`` and ``results.md``)."""
    model_args, data_args, ft_args = parse_args(argv)
    setup = start_finetuning(model_args, data_args, ft_args,
                             need_fast_tokenizer="aligning word labels to sub-tokens (word_ids)")
    with setup.accelerator.main_process_first():
        raw, tag_scheme, fixed_labels = load_raw_splits(data_args, model_args.cache_dir)
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    raw = {split: first_n(ds, limits[split]) for split, ds in raw.items()}
    labels = label_list(raw, fixed_labels, data_args.task)
    entity_level = is_entity_tagging(labels)
    suite = MetricSuite(ENTITY_F1_METRIC, "entities" if entity_level else "tokens", ft_args.metric_name or ())
    task, recorder, gold = tagging_task(raw, labels, suite, setup.tokenizer, data_args, ft_args)
    task_name = data_args.task or data_args.dataset_name or Path(data_args.train_file).name
    logger.info("%s: %d training sentences, %d labels (%s), tag scheme %s, seeds %s", task_name,
                len(task.train_dataset), len(labels), " ".join(labels), tag_scheme, list(ft_args.seeds))
    outcome = run_with_seeds(token_classifier_init(setup, model_args, labels), task, ft_args,
                             accelerator=setup.accelerator)

    main_metric = "dev/f1" if entity_level else "dev/accuracy"
    metric_keys = []
    for name in task.eval_datasets:
        metric_keys += [f"{name}/{m}" for m in (OVERALL_METRICS if entity_level else ("accuracy",))]
        if entity_level:
            metric_keys += [f"{name}/{typ}/{m}" for typ in sorted(entity_counts(gold[name])) for m in PER_TYPE_METRICS]
        metric_keys += [f"{name}/{key}" for key in suite.extra_keys]
    output_dir = Path(ft_args.output_dir)
    results: dict[str, Any] = {
        "task": task_name, "model": model_args.model_name_or_path, "model_weights": setup.model_path,
        "learning_rate": setup.learning_rate, "layer_decay": setup.layer_decay, "seeds": outcome.seeds,
        "labels": labels, "tag_scheme": tag_scheme, "num_train_examples": len(task.train_dataset),
        "num_eval_examples": {n: len(ds) for n, ds in task.eval_datasets.items()},
        "metric_modules": suite.describe(), **seed_summary(outcome, metric_keys),
        "best_seed": outcome.best_seed(main_metric).seed, "best_seed_selected_by": main_metric,
    }
    if "test" in task.eval_datasets:
        results["test_predictions"] = write_seed_predictions(
            setup.accelerator, output_dir, outcome, recorder, "test", "test_predictions.txt",
            lambda path, predicted: write_conll_predictions(path, raw["test"], predicted))
    if setup.accelerator.is_main_process:
        logger.info("median: %s", {k: round(v, 4) for k, v in outcome.median.items() if k in metric_keys and k.count("/") == 1})
    finish_one_task(setup, model_args, ft_args, outcome, results, logger, name_key="task",
                    dataset_name=data_args.dataset_name, selected_by=main_metric,
                    task=f"token classification ({task_name})", data=f"{task_name}, tags {' '.join(labels)} ({tag_scheme})",
                    pipeline_tag="token-classification", auto_class="AutoModelForTokenClassification")
    return results


def label_list(raw: dict[str, Any], fixed_labels, task_name: str | None) -> list[str]:
    """The task's labels, or those of every labelled split (a tag seen only in dev/test must not
    crash the alignment)."""
    observed = labels_from_datasets(*raw.values())
    if fixed_labels and not set(observed) <= set(fixed_labels):  # e.g. --task conll2003 --tag_column 2 (chunks)
        logger.warning("tags %s are not in the %s label list: using the tags found in the data instead",
                       sorted(set(observed) - set(fixed_labels)), task_name)
        return observed
    return list(fixed_labels) if fixed_labels else observed


def tagging_task(raw, labels, suite: MetricSuite, tokenizer, data_args, ft_args) -> tuple[FinetuningTask, Any, dict]:
    """The encoded splits as a `FinetuningTask` scored by `suite` (the entity-F1 `evaluate` module
    and the --metric_name ones, on word-level tag lists), its `EvalRecorder` (predicted tags per
    evaluation), and the gold tags of the evaluated splits."""
    from transformers import DataCollatorForTokenClassification

    label2id, id2label = label_maps(labels)
    encoded = {split: encode_tagging_dataset(ds, tokenizer, label2id, max_length=ft_args.max_seq_length,
                                             label_all_tokens=data_args.label_all_tokens,
                                             num_proc=data_args.preprocessing_num_workers, desc=f"tokenizing {split}")
               for split, ds in raw.items()}
    train_ds = encoded.pop("train").remove_columns(list(TAGGING_NON_MODEL_COLUMNS))
    eval_splits = {SPLIT_NAMES[split]: split for split in encoded}  # "dev" (and "test"), in that order
    eval_ds = {name: encoded[split].remove_columns(list(TAGGING_NON_MODEL_COLUMNS)) for name, split in eval_splits.items()}
    # Kept aside to map sub-token predictions back to words (the model never sees them).
    word_ids = {name: encoded[split]["word_ids"] for name, split in eval_splits.items()}
    num_words = {name: encoded[split]["num_words"] for name, split in eval_splits.items()}
    gold = {name: raw[split]["tags"] for name, split in eval_splits.items()}

    def score(split: str, prediction) -> tuple[dict[str, float], list[list[str]]]:
        predicted = predictions_to_tags(prediction.predictions, word_ids[split], num_words[split], id2label)
        return suite.compute(predicted, gold[split]), predicted

    recorder = EvalRecorder(score, list(eval_ds))
    collator = DataCollatorForTokenClassification(
        tokenizer, padding="max_length" if ft_args.pad_to_max_length else True,
        max_length=ft_args.max_seq_length if ft_args.pad_to_max_length else None,
        pad_to_multiple_of=ft_args.pad_to_multiple_of)
    task = FinetuningTask(train_ds, collator, eval_datasets=eval_ds, compute_metrics=recorder, tokenizer=tokenizer)
    return task, recorder, gold


def token_classifier_init(setup, model_args, labels: list[str]):
    """A callable returning a fresh token classifier on top of the pre-trained discriminator."""
    from transformers import AutoModelForTokenClassification

    label2id, id2label = label_maps(labels)
    return pretrained_model_init(AutoModelForTokenClassification, setup, model_args, num_labels=len(labels),
                                 id2label=id2label, label2id=label2id)


if __name__ == "__main__":
    main()
