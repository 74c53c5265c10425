"""GLUE: one table describing every task, loaders, metrics, GLUE average, submission files.

Everything task-specific lives in :data:`GLUE_TASKS` (one frozen :class:`GlueTask` per task);
the code below is shared by all tasks. Columns after loading, whatever the source:

``sentence1`` (str), ``sentence2`` (str, pair tasks only), ``label`` (int class id, or float
score for STS-B; −1 / −1.0 on unlabeled test splits), ``idx`` (int: the file's index column,
or the 0-based row number where the file has none).

Split names: ``train``, ``dev``, ``test``; MNLI has ``dev_matched``, ``dev_mismatched``,
``test_matched``, ``test_mismatched``; AX (the diagnostic set) has only ``test`` and is
predicted with the MNLI model.

Local files follow the original GLUE layout (``download_glue_data.py``): ``<data_dir>/CoLA/train.tsv``,
``<data_dir>/diagnostic/diagnostic.tsv`` … with their quirks (CoLA train/dev without a header,
a UTF-8 BOM in MRPC, no trailing newline, STS-B with 10 columns, string labels in QNLI/RTE/MNLI).
They are read like the official loaders: tab-separated, quoting disabled (MNLI/QQP contain
unbalanced quote characters).

Metrics are computed locally (scikit-learn / scipy, :mod:`.glue_metrics`) and reach the scripts
through the package's own ``evaluate`` module (``electra_hf/metrics/glue``), which loads offline;
``evaluate``'s GLUE metric is a Hub script.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .glue_metrics import (  # noqa: F401
    METRIC_FUNCTIONS,
    accuracy,
    class_ids_or_scores,
    f1_binary,
    matthews_correlation,
    pearson,
    score_predictions,
    spearman,
)
from .labels import SentenceTaskLabels

__all__ = [
    "TsvLayout",
    "GlueTask",
    "GLUE_TASKS",
    "GLUE_AVERAGE_TASKS",
    "get_glue_task",
    "resolve_task_names",
    "load_glue_split",
    "load_glue_split_from_tsv",
    "load_glue_split_from_hub",
    "add_swapped_pairs",
    "accuracy",
    "f1_binary",
    "matthews_correlation",
    "pearson",
    "spearman",
    "predictions_to_label_ids",
    "compute_glue_metrics",
    "glue_average",
    "write_glue_submission",
    "GlueDataError",
]


class GlueDataError(ValueError):
    """A GLUE file or data set does not have the expected layout (message names file/row)."""


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TsvLayout:
    """Where one split of one task lives in the GLUE TSV layout and which columns it uses.

    Attributes:
        files: candidate paths relative to ``data_dir`` (first existing one wins).
        text_columns: header names of the text columns (1 or 2), in order sentence1, sentence2.
        label_column: header name of the label column (None for unlabeled test files).
        index_column: header name of the example index (None → 0-based row number).
        columns: for files **without** a header line (CoLA train/dev): the column names by
            position; None means the first line is the header.
    """

    files: tuple[str, ...]
    text_columns: tuple[str, ...]
    label_column: str | None = None
    index_column: str | None = None
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True)
class GlueTask(SentenceTaskLabels):
    """Everything that differs between GLUE tasks.

    Attributes:
        name: official name (``"CoLA"``, ``"SST-2"``, …).
        hub_config: configuration name in the Hub data set ``nyu-mll/glue``.
        label_list: class names as they appear in the files, index = class id; None → regression.
        layouts: (split, :class:`TsvLayout`) for every split of the local files.
        eval_splits: labeled splits to evaluate on (MNLI: matched and mismatched).
        submissions: (test split, file name) pairs for the GLUE server's zip.
        metrics: metric names reported for this task (see :func:`compute_glue_metrics`).
        average_metric: (split, metric) that enters the GLUE average as the paper computes it.
        in_glue_average: False for WNLI (the paper's average leaves it out) and AX.
        num_train_epochs: the paper's epochs (3; 10 for RTE and STS-B).
        train_on_swapped_pairs: also train on (sentence2, sentence1) copies (MRPC, STS-B), as
            the official code does (``double_unordered``).
        label_scale: regression targets are divided by this for training (STS-B: 5 → [0, 1])
            and predictions multiplied by it for metrics and submissions.
        hub_text_columns: the Hub data set's names for sentence1 (and sentence2).
        hub_splits: (our split, Hub split) pairs.
        predicted_by: for AX: the task whose fine-tuned model predicts it (MNLI).
    """

    name: str
    hub_config: str
    label_list: tuple[str, ...] | None
    layouts: tuple[tuple[str, TsvLayout], ...]
    eval_splits: tuple[str, ...]
    submissions: tuple[tuple[str, str], ...]
    metrics: tuple[str, ...]
    average_metric: tuple[str, str] | None
    hub_text_columns: tuple[str, ...]
    hub_splits: tuple[tuple[str, str], ...]
    in_glue_average: bool = True
    num_train_epochs: float = 3.0
    train_on_swapped_pairs: bool = False
    label_scale: float = 1.0
    predicted_by: str | None = None

    @property
    def is_pair(self) -> bool:
        return len(self.hub_text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.layouts)

    @property
    def trainable(self) -> bool:
        return "train" in self.splits

    def layout(self, split: str) -> TsvLayout:
        for name, layout in self.layouts:
            if name == split:
                return layout
        raise GlueDataError(f"{self.name} has no split {split!r}; its splits are {list(self.splits)}")

    def hub_split(self, split: str) -> str:
        return dict(self.hub_splits)[split]

    @property
    def average_key(self) -> str | None:
        return None if self.average_metric is None else self.metric_key(*self.average_metric)

    @property
    def metric_config(self) -> str:
        """The configuration of the `evaluate` module electra_hf/metrics/glue that scores this task."""
        return self.hub_config


_BINARY = ("0", "1")
_NLI3 = ("contradiction", "entailment", "neutral")  # order of the official/transformers processors
_NLI2 = ("entailment", "not_entailment")
_STD_SPLITS = (("train", "train"), ("dev", "validation"), ("test", "test"))


def _pair(task_dir: str, s1: str, s2: str, label: str, *, index: str | None = "index",
          test_index: str | None = "index", test_s1: str | None = None, test_s2: str | None = None,
          dev: Sequence[str] = ("dev",), test: Sequence[str] = ("test",)) -> tuple[tuple[str, TsvLayout], ...]:
    """Layouts of a pair task whose train/dev files share a header and test lacks the label."""
    labeled = TsvLayout(files=(), text_columns=(s1, s2), label_column=label, index_column=index)
    unlabeled = TsvLayout(files=(), text_columns=(test_s1 or s1, test_s2 or s2), index_column=test_index)
    out = [("train", _with_files(labeled, f"{task_dir}/train.tsv"))]
    out += [(split, _with_files(labeled, f"{task_dir}/{split}.tsv")) for split in dev]
    out += [(split, _with_files(unlabeled, f"{task_dir}/{split}.tsv")) for split in test]
    return tuple(out)


def _with_files(layout: TsvLayout, *files: str) -> TsvLayout:
    return TsvLayout(files=files, text_columns=layout.text_columns, label_column=layout.label_column,
                     index_column=layout.index_column, columns=layout.columns)


def _dev_test_task(name: str, hub_config: str, label_list: tuple[str, ...] | None,
                   layouts: tuple[tuple[str, TsvLayout], ...], metrics: tuple[str, ...],
                   hub_text_columns: tuple[str, ...], average_metric: str | None = None, **rest) -> GlueTask:
    """A task with the usual splits: train, one dev split (evaluated; its ``average_metric``, by
    default the first metric, enters the GLUE average) and one test split submitted as ``<name>.tsv``."""
    return GlueTask(name=name, hub_config=hub_config, label_list=label_list, layouts=layouts, eval_splits=("dev",),
                    submissions=(("test", f"{name}.tsv"),), metrics=metrics,
                    average_metric=("dev", average_metric or metrics[0]), hub_text_columns=hub_text_columns,
                    hub_splits=_STD_SPLITS, **rest)


_COLA_COLUMNS = ("source", "label", "label_mark", "sentence")  # CoLA train/dev: no header line

GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        _dev_test_task(
            name="CoLA", hub_config="cola", label_list=_BINARY,
            layouts=(
                ("train", TsvLayout(("CoLA/train.tsv",), ("sentence",), "label", None, _COLA_COLUMNS)),
                ("dev", TsvLayout(("CoLA/dev.tsv",), ("sentence",), "label", None, _COLA_COLUMNS)),
                ("test", TsvLayout(("CoLA/test.tsv",), ("sentence",), None, "index")),
            ),
            metrics=("matthews_correlation", "accuracy"), hub_text_columns=("sentence",),
        ),
        _dev_test_task(
            name="SST-2", hub_config="sst2", label_list=_BINARY,
            layouts=(
                ("train", TsvLayout(("SST-2/train.tsv",), ("sentence",), "label", None)),
                ("dev", TsvLayout(("SST-2/dev.tsv",), ("sentence",), "label", None)),
                ("test", TsvLayout(("SST-2/test.tsv",), ("sentence",), None, "index")),
            ),
            metrics=("accuracy",), hub_text_columns=("sentence",),
        ),
        _dev_test_task(
            name="MRPC", hub_config="mrpc", label_list=_BINARY,
            layouts=_pair("MRPC", "#1 String", "#2 String", "Quality", index=None),
            metrics=("accuracy", "f1"), hub_text_columns=("sentence1", "sentence2"), train_on_swapped_pairs=True,
        ),
        _dev_test_task(
            name="STS-B", hub_config="stsb", label_list=None, layouts=_pair("STS-B", "sentence1", "sentence2", "score"),
            metrics=("pearson", "spearmanr"), average_metric="spearmanr", hub_text_columns=("sentence1", "sentence2"),
            num_train_epochs=10.0, train_on_swapped_pairs=True, label_scale=5.0,
        ),
        _dev_test_task(
            name="QQP", hub_config="qqp", label_list=_BINARY,
            layouts=_pair("QQP", "question1", "question2", "is_duplicate", index="id", test_index="id"),
            metrics=("accuracy", "f1"), hub_text_columns=("question1", "question2"),
        ),
        GlueTask(
            name="MNLI", hub_config="mnli", label_list=_NLI3,
            layouts=_pair("MNLI", "sentence1", "sentence2", "gold_label",
                          dev=("dev_matched", "dev_mismatched"), test=("test_matched", "test_mismatched")),
            eval_splits=("dev_matched", "dev_mismatched"),
            submissions=(("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")),
            metrics=("accuracy",), average_metric=("dev_matched", "accuracy"),
            hub_text_columns=("premise", "hypothesis"),
            hub_splits=(("train", "train"), ("dev_matched", "validation_matched"),
                        ("dev_mismatched", "validation_mismatched"), ("test_matched", "test_matched"),
                        ("test_mismatched", "test_mismatched")),
        ),
        _dev_test_task(
            name="QNLI", hub_config="qnli", label_list=_NLI2, layouts=_pair("QNLI", "question", "sentence", "label"),
            metrics=("accuracy",), hub_text_columns=("question", "sentence"),
        ),
        _dev_test_task(
            name="RTE", hub_config="rte", label_list=_NLI2, layouts=_pair("RTE", "sentence1", "sentence2", "label"),
            metrics=("accuracy",), hub_text_columns=("sentence1", "sentence2"), num_train_epochs=10.0,
        ),
        _dev_test_task(
            name="WNLI", hub_config="wnli", label_list=_BINARY, layouts=_pair("WNLI", "sentence1", "sentence2", "label"),
            metrics=("accuracy",), hub_text_columns=("sentence1", "sentence2"), in_glue_average=False,
        ),
        GlueTask(
            name="AX", hub_config="ax", label_list=_NLI3,
            layouts=(("test", TsvLayout(("diagnostic/diagnostic.tsv", "AX/test.tsv", "AX/diagnostic.tsv"),
                                        ("sentence1", "sentence2"), None, "index")),),
            eval_splits=(), submissions=(("test", "AX.tsv"),),
            metrics=(), average_metric=None, in_glue_average=False,
            hub_text_columns=("premise", "hypothesis"), hub_splits=(("test", "test"),),
            predicted_by="MNLI",
        ),
    ]
}

#: The tasks the paper averages (WNLI and AX excluded), in the paper's column order.
GLUE_AVERAGE_TASKS: tuple[str, ...] = tuple(n for n, t in GLUE_TASKS.items() if t.in_glue_average)

_ALIASES = {
    **{name.lower(): name for name in GLUE_TASKS},
    **{name.lower().replace("-", ""): name for name in GLUE_TASKS},
    "sts": "STS-B", "diagnostic": "AX", "mnli-m": "MNLI", "mnli_matched": "MNLI",
}


def get_glue_task(name: str | GlueTask) -> GlueTask:
    """Task by name, case-insensitive, with or without the dash (``"sst2"``, ``"STS-B"``, ``"ax"``)."""
    if isinstance(name, GlueTask):
        return name
    key = name.strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"Unknown GLUE task {name!r} (--task_name); choose from {list(GLUE_TASKS)} or 'all'")
    return GLUE_TASKS[_ALIASES[key]]


def resolve_task_names(spec: str) -> list[GlueTask]:
    """``"all"`` → every trainable task in table order; otherwise a comma-separated list."""
    if spec.strip().lower() == "all":
        return [t for t in GLUE_TASKS.values() if t.trainable]
    tasks = [get_glue_task(part) for part in spec.split(",") if part.strip()]
    if not tasks:
        raise ValueError("--task_name is empty")
    return tasks


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _find_file(task: GlueTask, split: str, layout: TsvLayout, data_dir: str | os.PathLike) -> Path:
    data_dir = Path(data_dir)
    tried = []
    for rel in layout.files:
        # Accept both the GLUE root (data_dir/CoLA/train.tsv) and a task folder (data_dir/train.tsv).
        for candidate in (data_dir / rel, data_dir / Path(rel).name):
            tried.append(str(candidate))
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"GLUE {task.name} split {split!r}: file not found; tried {tried}. "
        f"--data_dir must point at the GLUE folder (layout of download_glue_data.py: "
        f"<data_dir>/{layout.files[0]}), or use --dataset_name nyu-mll/glue."
    )


def _parse_label(task: GlueTask, value: str, where: str) -> int | float:
    if task.label_list is None:
        try:
            score = float(value)
        except ValueError:
            raise GlueDataError(f"{where}: label {value!r} is not a number (regression task {task.name})") from None
        if not math.isfinite(score):
            raise GlueDataError(f"{where}: label {value!r} is not finite")
        return score
    try:
        return task.label_list.index(value.strip())
    except ValueError:
        raise GlueDataError(f"{where}: unknown label value {value!r} for {task.name}; "
                            f"expected one of {list(task.label_list)}") from None


def load_glue_split_from_tsv(task: str | GlueTask, data_dir: str | os.PathLike, split: str,
                             skip_malformed_rows: bool = False):
    """Read one split from the original GLUE TSV files into a ``datasets.Dataset``.

    Rows with a number of fields different from the header are an error naming the file and
    line (``skip_malformed_rows=True`` skips them with a warning instead). Blank lines are skipped.
    """
    import datasets

    task = get_glue_task(task)
    layout = task.layout(split)
    path = _find_file(task, split, layout, data_dir)
    records: dict[str, list[Any]] = {"sentence1": [], "label": [], "idx": []}
    if task.is_pair:
        records["sentence2"] = []
    skipped = 0
    # utf-8-sig: MRPC starts with a BOM; newline="": let csv see raw line ends; QUOTE_NONE: as the
    # official loaders (MNLI/QQP contain unbalanced quotes that would swallow lines).
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if layout.columns is None:
            header = next(reader, None)
            if header is None:
                raise GlueDataError(f"{path}: empty file (expected a header line)")
            first_data_line = 2
        else:
            header = list(layout.columns)
            first_data_line = 1
        header = [h.strip() for h in header]
        needed = [*layout.text_columns, *([layout.label_column] if layout.label_column else []),
                  *([layout.index_column] if layout.index_column else [])]
        missing = [c for c in needed if c not in header]
        if missing:
            raise GlueDataError(f"{path}: missing column(s) {missing} for {task.name} {split}; "
                                f"header is {header}")
        # MNLI dev has label1..label5 before gold_label: look columns up by name, last occurrence.
        pos = {name: len(header) - 1 - header[::-1].index(name) for name in needed}
        row_number = 0
        for line_number, row in enumerate(reader, start=first_data_line):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            where = f"{path}, line {line_number}"
            if len(row) != len(header):
                if skip_malformed_rows:
                    skipped += 1
                    continue
                raise GlueDataError(f"{where}: {len(row)} fields, expected {len(header)} "
                                    f"(columns {header}); pass skip_malformed_rows / "
                                    f"--skip_malformed_rows to skip such rows")
            records["sentence1"].append(row[pos[layout.text_columns[0]]])
            if task.is_pair:
                records["sentence2"].append(row[pos[layout.text_columns[1]]])
            if layout.label_column:
                records["label"].append(_parse_label(task, row[pos[layout.label_column]], where))
            else:
                records["label"].append(-1.0 if task.is_regression else -1)
            if layout.index_column:
                try:
                    records["idx"].append(int(row[pos[layout.index_column]]))
                except ValueError:
                    raise GlueDataError(f"{where}: index {row[pos[layout.index_column]]!r} is not an integer") from None
            else:
                records["idx"].append(row_number)
            row_number += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed row(s)")
    label_feature = datasets.Value("float32") if task.is_regression else datasets.Value("int64")
    features = datasets.Features({
        "sentence1": datasets.Value("string"),
        **({"sentence2": datasets.Value("string")} if task.is_pair else {}),
        "label": label_feature,
        "idx": datasets.Value("int64"),
    })
    return datasets.Dataset.from_dict({k: records[k] for k in features}, features=features)


def load_glue_split_from_hub(task: str | GlueTask, split: str, dataset_name: str = "nyu-mll/glue",
                             cache_dir: str | None = None):
    """Load one split from the Hub data set (``nyu-mll/glue`` layout) and map it to the same
    columns and label ids as :func:`load_glue_split_from_tsv` (the Hub's MNLI order is
    entailment/neutral/contradiction; ours is the official processors' order)."""
    import datasets

    task = get_glue_task(task)
    hub_split = task.hub_split(split) if split in dict(task.hub_splits) else None
    if hub_split is None:
        raise GlueDataError(f"{task.name} has no split {split!r} on the Hub; splits: {[s for s, _ in task.hub_splits]}")
    ds = datasets.load_dataset(dataset_name, task.hub_config, split=hub_split, cache_dir=cache_dir)
    missing = [c for c in (*task.hub_text_columns, "label", "idx") if c not in ds.column_names]
    if missing:
        raise GlueDataError(f"{dataset_name}/{task.hub_config} split {hub_split}: missing column(s) {missing}; "
                            f"columns are {ds.column_names}")
    renames = {src: dst for src, dst in zip(task.hub_text_columns, ("sentence1", "sentence2")) if src != dst}
    ds = ds.rename_columns(renames)
    keep = ["sentence1", *(["sentence2"] if task.is_pair else []), "label", "idx"]
    ds = ds.remove_columns([c for c in ds.column_names if c not in keep])
    if not task.is_regression:
        hub_names = getattr(ds.features["label"], "names", None)
        # Map by name where the Hub's names are ours in another order (MNLI); binary tasks whose
        # Hub names are words (negative/positive, …) keep the Hub's ids (same order as the files).
        if hub_names and set(task.label_list) <= set(hub_names) and list(hub_names) != list(task.label_list):
            mapping = {i: task.label_list.index(n) for i, n in enumerate(hub_names) if n in task.label_list}
            ds = ds.map(lambda ex: {"label": mapping.get(ex["label"], -1)})  # -1 stays -1 (test)
        ds = ds.cast_column("label", datasets.Value("int64"))
    else:
        ds = ds.cast_column("label", datasets.Value("float32"))
    return ds.select_columns(keep)


def load_glue_split(task: str | GlueTask, data_dir: str | os.PathLike | None, split: str, *,
                    dataset_name: str | None = None, cache_dir: str | None = None,
                    skip_malformed_rows: bool = False):
    """One split as a ``datasets.Dataset`` (columns ``sentence1``, [``sentence2``], ``label``,
    ``idx``) from ``data_dir`` (GLUE TSV layout) or, with ``data_dir=None``, from the Hub data
    set ``dataset_name`` (e.g. ``nyu-mll/glue``)."""
    if data_dir is not None:
        return load_glue_split_from_tsv(task, data_dir, split, skip_malformed_rows=skip_malformed_rows)
    if dataset_name is not None:
        return load_glue_split_from_hub(task, split, dataset_name, cache_dir=cache_dir)
    raise ValueError("Give --data_dir (GLUE TSV folder) or --dataset_name (e.g. nyu-mll/glue)")


def add_swapped_pairs(dataset):
    """Append a copy of every pair with sentence1 and sentence2 swapped (official
    ``double_unordered`` for MRPC and STS-B training sets). Length doubles; ``idx`` repeats."""
    import datasets

    if "sentence2" not in dataset.column_names:
        raise ValueError("add_swapped_pairs needs a pair task (sentence2 column)")
    swapped = dataset.map(lambda ex: {"sentence1": ex["sentence2"], "sentence2": ex["sentence1"]})
    return datasets.concatenate_datasets([dataset, swapped])


def predictions_to_label_ids(task: str | GlueTask, predictions) -> np.ndarray:
    """Model outputs → class ids (argmax over logits (N, C), or ids (N,) as given) for
    classification; → float scores (N,) for regression (an (N, 1) array is squeezed)."""
    task = get_glue_task(task)
    return class_ids_or_scores(predictions, task.is_regression, task.name)


def compute_glue_metrics(task: str | GlueTask, predictions, references) -> dict[str, float]:
    """The task's metrics (``task.metrics``) of ``predictions`` (logits (N, C), class ids (N,)
    or regression scores (N,)/(N, 1)) against ``references`` (N,). Regression scores and
    references must be on the same scale (correlations do not care which)."""
    task = get_glue_task(task)
    return score_predictions(task.metrics, task.is_regression, predictions, references, task.name)


def glue_average(results: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The GLUE score as the ELECTRA paper computes it: the mean over CoLA (Matthews corr.),
    SST-2, MRPC (accuracy), STS-B (Spearman), QQP (accuracy), MNLI (matched accuracy), QNLI and
    RTE (accuracy) — WNLI is left out — ×100.

    ``results`` maps a task name to its metrics keyed ``"<split>/<metric>"``. Returns
    ``{"average": float | None, "per_task": {task: score×100}, "missing": [tasks],
    "complete": bool}``; with tasks missing the average is over the present ones.
    """
    per_task: dict[str, float] = {}
    for name, metrics in results.items():
        task = get_glue_task(name)
        if not task.in_glue_average or task.average_key not in metrics:
            continue
        value = metrics[task.average_key]
        if value is not None:
            per_task[task.name] = 100.0 * float(value)
    missing = [n for n in GLUE_AVERAGE_TASKS if n not in per_task]
    average = float(np.mean(list(per_task.values()))) if per_task else None
    return {"average": average, "per_task": per_task, "missing": missing, "complete": not missing}


# --------------------------------------------------------------------------------------------
# Submission files
# --------------------------------------------------------------------------------------------
def write_glue_submission(task: str | GlueTask, predictions, output_dir: str | os.PathLike,
                          indices: Sequence[int] | None = None, split: str | None = None) -> Path:
    """Write one GLUE-server file (``CoLA.tsv``, ``MNLI-m.tsv``, ``AX.tsv``, …) with header
    ``index\\tprediction``.

    Args:
        task: the task whose test split was predicted (AX: predicted with the MNLI model; its
            labels are MNLI's).
        predictions: logits (N, C) or class ids (N,) for classification — written as label
            names (``entailment``, ``not_entailment``, ``0``/``1``, …); scores (N,) for STS-B
            **on the 0–5 scale**, clipped to [0, 5] and written with 3 decimals.
        indices: the test file's index column (``idx``); default 0..N-1.
        split: the test split (MNLI: ``test_matched`` or ``test_mismatched``); default: the
            task's only test split.
    Returns the path written.
    """
    task = get_glue_task(task)
    submissions = dict(task.submissions)
    if split is None:
        if len(submissions) != 1:
            raise ValueError(f"{task.name} has several test splits {list(submissions)}: pass split=")
        split = next(iter(submissions))
    if split not in submissions:
        raise ValueError(f"{task.name}: no submission file for split {split!r}; splits: {list(submissions)}")
    values = predictions_to_label_ids(task, predictions)
    if indices is None:
        indices = range(len(values))
    indices = list(indices)
    if len(indices) != len(values):
        raise ValueError(f"{task.name}: {len(values)} predictions but {len(indices)} indices")
    path = Path(output_dir) / submissions[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("index\tprediction\n")
        for index, value in zip(indices, values):
            if task.is_regression:
                text = f"{min(5.0, max(0.0, float(value))):.3f}"
            else:
                text = task.label_list[int(value)]
            handle.write(f"{int(index)}\t{text}\n")
    return path

