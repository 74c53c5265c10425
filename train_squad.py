#!/usr/bin/env python
"""Fine-tune an ELECTRA discriminator (or another encoder) for extractive question answering (SQuAD v1.1 / v2.0).

    accelerate launch train_squad.py --model_name_or_path google/electra-small-discriminator \\
        --train_file train-v1.1.json --validation_file dev-v1.1.json --seeds 1 2 3 \\
        --output_dir outputs/squad-small

Data: SQuAD-format JSON files (plain or .gz; ``--version_2_with_negative`` for v2.0's unanswerable
questions), or a Hub data set in the ``squad``/``squad_v2`` layout (``--dataset_name``).
``--split_by_article N`` trains on the first N articles of the one file given and evaluates on
the others, so no context is in both parts (with only SQuAD v1.1 dev at hand:
``--train_file dev-v1.1.json.gz --split_by_article 40`` gives 8,981 / 1,589 questions).

Long contexts are cut into windows of ``max_seq_length`` tokens overlapping by ``doc_stride``; at
evaluation the ``n_best_size`` best start and end positions of every window are paired into spans
of at most ``max_answer_length`` tokens, the best span over all windows is mapped back to the
context text, and the official SQuAD script's exact match and F1 are computed (v2.0: a question
is answered "no answer" when the null score beats the best span by more than
``null_score_diff_threshold``). Defaults are the official ELECTRA SQuAD settings: length 512,
stride 128, question ≤ 64 tokens, n-best 20, answers ≤ 30 tokens, 2 epochs, the size's learning
rate and layer-wise decay, 10% warm-up.

The head is the family's own ``…ForQuestionAnswering`` of transformers (for ELECTRA one linear layer
giving start and end logits) so that the fine-tuned model loads with plain ``AutoModelForQuestionAnswering``.
transformers 5 has no ``pipeline("question-answering")`` (it is listed in
``transformers.pipelines.REMOVED_TASKS``); the model is the standard kind that pipeline served,
and the span search it did is a dozen lines (see tests/test_scripts_squad.py).
The official ELECTRA code uses a richer head (end logits conditioned on the start, beam search,
and an answerability classifier for v2.0): expect its published SQuAD numbers to be somewhat
higher than this head's.

Per seed and as the median over seeds, the metrics (computed by the `evaluate` module
electra_hf/metrics/squad, plus any ``--metric_name``) go to ``<output_dir>/results.json`` and
``results.md``; ``--push_to_hub`` sends the best seed (by dev F1), its tokenizer, a model card and
the results to the Hub; each seed's answers go to ``<output_dir>/seed_<seed>/predictions.json`` (``{id:
answer}``, the official evaluation script's input; v2.0 also ``null_odds.json``, null score minus
best span score per question, for the script's ``--na-prob-file``). All arguments can also come
from one .json/.yaml file: ``python train_squad.py config.yaml``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from electra_hf import arguments
from electra_hf.arguments import FinetuningArguments, FinetuningModelArguments
from electra_hf.finetuning import FinetuningTask, make_collator
from electra_hf.metrics import SQUAD_METRIC, MetricSuite
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
from electra_hf.tasks.qa import (
    QA_NON_MODEL_COLUMNS,
    load_hub_squad,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
    read_squad,
    split_by_article,
)

logger = logging.getLogger("train_squad")

QA_LABEL_NAMES = ("start_positions", "end_positions")
V1_TABLE_METRICS = ("exact_match", "f1")
V2_TABLE_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1")


@dataclass
class SquadFinetuningArguments(FinetuningArguments):
    """The shared fine-tuning arguments with the official SQuAD defaults for length and epochs."""

    max_seq_length: int = field(
        default=512, metadata={"help": "Tokens per window: question + context + 3 special tokens (official: 512)."})
    num_train_epochs: float | None = field(default=2.0, metadata={"help": "Epochs (official for SQuAD: 2)."})


@dataclass
class DataArguments:
    """Where the questions come from, and how they are windowed and answered."""

    train_file: str | None = field(default=None, metadata={"help": "SQuAD-format JSON for training (plain or .gz)."})
    validation_file: str | None = field(
        default=None, metadata={"help": "SQuAD-format JSON to evaluate on (plain or .gz)."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub data set in the squad/squad_v2 layout instead of files."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_split: str = field(default="train", metadata={"help": "Hub data set: the training split."})
    validation_split: str = field(default="validation", metadata={"help": "Hub data set: the evaluation split."})
    split_by_article: int | None = field(
        default=None,
        metadata={"help": "Train on the first N articles of the one file (or Hub training split) given and "
                          "evaluate on the remaining articles (no context in both)."})
    version_2_with_negative: bool = field(
        default=False, metadata={"help": "SQuAD v2.0: some questions have no answer (predicted as '')."})
    doc_stride: int = field(
        default=128, metadata={"help": "Tokens of context shared by consecutive windows of a long context."})
    max_query_length: int = field(default=64, metadata={"help": "Questions are cut to this many tokens."})
    n_best_size: int = field(
        default=20, metadata={"help": "Start and end candidates per window paired in the span search."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span, in tokens."})
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "v2.0: predict no answer when null score − best span score exceeds this "
                          "(tune it on dev with null_odds.json)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training questions."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N evaluation questions."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})

    def __post_init__(self):
        files = [f for f in (self.train_file, self.validation_file) if f]
        if self.dataset_name is not None and files:
            raise ValueError("Give either --dataset_name or --train_file/--validation_file, not both")
        if self.split_by_article is not None:
            if self.split_by_article < 1:
                raise ValueError(f"--split_by_article must be ≥ 1, got {self.split_by_article}")
            if self.dataset_name is None and len(files) != 1:
                raise ValueError("--split_by_article splits one file: give --train_file (or --validation_file) "
                                 "alone")
        elif self.dataset_name is None and not (self.train_file and self.validation_file):
            raise ValueError("Give --train_file and --validation_file, one file with --split_by_article N, or "
                             "--dataset_name")


# --------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None):
    """Flags, or one .json/.yaml file holding them all."""
    return arguments.parse_args((FinetuningModelArguments, DataArguments, SquadFinetuningArguments), argv)


def load_raw_splits(data_args: DataArguments, cache_dir: str | None) -> tuple[Any, Any]:
    """``(train, eval)`` Datasets of questions in the SQuAD layout. Malformed files raise
    ``ValueError`` naming the file and the line, or the article/question."""
    if data_args.dataset_name is not None:
        train = load_hub_squad(data_args.dataset_name, data_args.dataset_config_name, split=data_args.train_split,
                               cache_dir=cache_dir)
        if data_args.split_by_article is None:
            return train, load_hub_squad(data_args.dataset_name, data_args.dataset_config_name,
                                         split=data_args.validation_split, cache_dir=cache_dir)
        source = f"{data_args.dataset_name}:{data_args.train_split}"
    elif data_args.split_by_article is None:
        return read_squad(data_args.train_file), read_squad(data_args.validation_file)
    else:
        source = data_args.train_file or data_args.validation_file
        train = read_squad(source)
    try:
        return split_by_article(train, data_args.split_by_article)
    except ValueError as e:  # name the flag and the file, not the function's parameter
        raise ValueError(f"--split_by_article {data_args.split_by_article} ({source}): {e}") from e


def check_answerability(train, version_2_with_negative: bool, source: str) -> None:
    """Unanswerable questions (empty answer lists) need ``--version_2_with_negative``: v1.1 training
    would silently teach the model to point at [CLS] without the evaluation ever predicting it."""
    if version_2_with_negative:
        return
    unanswerable = sum(1 for answers in train["answers"] if not answers["text"])
    if unanswerable:
        raise ValueError(f"{source}: {unanswerable} of {len(train)} training questions have no answer (SQuAD v2.0); "
                         f"pass --version_2_with_negative")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse arguments, fine-tune for every seed; returns the results dict (also written to
    ``<output_dir>/results.json`` and ``results.md``)."""
    from transformers import AutoModelForQuestionAnswering

    model_args, data_args, ft_args = parse_args(argv)
    if model_args.classifier_dropout is not None:
        raise ValueError("--classifier_dropout: the question-answering heads have no dropout before their output layer")
    setup = start_finetuning(model_args, data_args, ft_args, need_fast_tokenizer="mapping answers to context offsets")
    with setup.accelerator.main_process_first():
        train_raw, eval_raw = load_raw_splits(data_args, model_args.cache_dir)
    source = data_args.dataset_name or data_args.train_file or data_args.validation_file
    check_answerability(train_raw, data_args.version_2_with_negative, source)
    train_raw = first_n(train_raw, data_args.max_train_samples)
    eval_raw = first_n(eval_raw, data_args.max_eval_samples)
    train_ds, eval_features = windows(train_raw, eval_raw, setup.tokenizer, data_args, ft_args)
    # The model sees only its inputs; example ids and offsets stay here for the span search.
    eval_ds = {"dev": eval_features.remove_columns(list(QA_NON_MODEL_COLUMNS))}
    suite = MetricSuite(SQUAD_METRIC, "v2" if data_args.version_2_with_negative else "v1", ft_args.metric_name or ())
    recorder = EvalRecorder(answer_scorer(eval_raw, eval_features, data_args, suite), list(eval_ds))
    # the family's question-answering head: start and end logits
    model_init = pretrained_model_init(AutoModelForQuestionAnswering, setup, model_args, num_labels=2)
    logger.info("%d training questions → %d windows; %d evaluation questions → %d windows; seeds %s",
                len(train_raw), len(train_ds), len(eval_raw), len(eval_features), list(ft_args.seeds))
    task = FinetuningTask(train_ds, make_collator(setup.tokenizer, ft_args), eval_datasets=eval_ds,
                          compute_metrics=recorder, tokenizer=setup.tokenizer, label_names=QA_LABEL_NAMES)
    outcome = run_with_seeds(model_init, task, ft_args, accelerator=setup.accelerator)

    table_metrics = V2_TABLE_METRICS if data_args.version_2_with_negative else V1_TABLE_METRICS
    metric_keys = [f"dev/{m}" for m in (*table_metrics, *suite.extra_keys) if f"dev/{m}" in outcome.median]
    output_dir = Path(ft_args.output_dir)
    data_name = (data_args.dataset_name or Path(source).name) + (
        f" (articles {data_args.split_by_article}+ held out)" if data_args.split_by_article else "")
    results: dict[str, Any] = {
        "data": data_name, "model": model_args.model_name_or_path, "model_weights": setup.model_path,
        "version_2_with_negative": data_args.version_2_with_negative, "learning_rate": setup.learning_rate,
        "layer_decay": setup.layer_decay, "seeds": outcome.seeds, "num_train_examples": len(train_raw),
        "num_train_features": len(train_ds), "num_eval_examples": len(eval_raw),
        "num_eval_features": len(eval_features), "metric_modules": suite.describe(),
        **seed_summary(outcome, metric_keys),
    }

    def write_answers(path: Path, kept) -> None:
        answers, null_odds = kept
        path.write_text(json.dumps(answers, indent=1, ensure_ascii=False))
        if data_args.version_2_with_negative:  # for the official script's --na-prob-file
            (path.parent / "null_odds.json").write_text(json.dumps(null_odds, indent=1))

    results["predictions"] = write_seed_predictions(setup.accelerator, output_dir, outcome, recorder, "dev",
                                                    "predictions.json", write_answers)
    # Metrics are already percentages: the table shows them as they are.
    version = "SQuAD v2.0" if data_args.version_2_with_negative else "SQuAD v1.1"
    finish_one_task(setup, model_args, ft_args, outcome, results, logger, name_key="data", scale=1.0,
                    dataset_name=data_args.dataset_name, selected_by="dev/f1",
                    task=f"extractive question answering ({version})", data=data_name,
                    pipeline_tag="question-answering", auto_class="AutoModelForQuestionAnswering")
    return results


def windows(train_raw, eval_raw, tokenizer, data_args: DataArguments, ft_args) -> tuple[Any, Any]:
    """Training windows (with answer positions) and evaluation windows (with offsets) of the questions."""
    settings = dict(tokenizer=tokenizer, max_length=ft_args.max_seq_length, doc_stride=data_args.doc_stride,
                    max_query_length=data_args.max_query_length,
                    padding="max_length" if ft_args.pad_to_max_length else False)
    num_proc = data_args.preprocessing_num_workers
    train_ds = train_raw.map(prepare_train_features, batched=True, remove_columns=train_raw.column_names,
                             fn_kwargs=settings, num_proc=num_proc, desc="windows of training questions")
    eval_features = eval_raw.map(prepare_eval_features, batched=True, remove_columns=eval_raw.column_names,
                                 fn_kwargs=settings, num_proc=num_proc, desc="windows of evaluation questions")
    return train_ds, eval_features


def answer_scorer(eval_raw, eval_features, data_args: DataArguments, suite: MetricSuite):
    """`score(split, EvalPrediction)` for an `EvalRecorder`: the span search, then `suite` (the SQuAD
    `evaluate` module and the --metric_name ones) on the inputs of the Hub's squad/squad_v2 metrics."""
    ids = eval_raw["id"]
    references = [{"id": qid, "answers": answers} for qid, answers in zip(ids, eval_raw["answers"])]
    # The module's v2 predictions carry a no-answer probability; 0.0 keeps each answer as predicted
    # (the null-score threshold has already decided which questions get "").
    no_answer = {"no_answer_probability": 0.0} if data_args.version_2_with_negative else {}

    def score(split: str, prediction):
        start_logits, end_logits = prediction.predictions
        answers = postprocess_qa_predictions(
            eval_raw, eval_features, start_logits, end_logits, n_best_size=data_args.n_best_size,
            max_answer_length=data_args.max_answer_length, version_2_with_negative=data_args.version_2_with_negative,
            null_score_diff_threshold=data_args.null_score_diff_threshold)
        # Keep answers and null odds only: n-best lists of every evaluation of every seed add up to GBs.
        kept = (answers.predictions, answers.null_score_diff)
        predicted = [{"id": qid, "prediction_text": answers.predictions[qid], **no_answer} for qid in ids]
        return suite.compute(predicted, references), kept

    return score


if __name__ == "__main__":
    main()
