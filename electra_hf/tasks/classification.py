"""Sentence and sentence-pair classification or regression on data of your own.

``train_glue.py`` without ``--task_name`` reads its data here: CSV, TSV, JSON, JSON-lines or
Parquet files (``--train_file``, ``--validation_file``, ``--test_file``), or any Hub data set
(``--dataset_name``, ``--dataset_config_name``). The GLUE task table (:mod:`electra_hf.tasks.glue`)
stays the path of the GLUE tasks. A :class:`ClassificationTask` describes the data set with the
attributes of a :class:`~electra_hf.tasks.glue.GlueTask` that the script reads, and every split
gets the GLUE columns (``sentence1``, [``sentence2``], ``label``, ``idx``), so that both kinds are
tokenized, trained and scored alike.

Columns are found as transformers' ``run_glue_no_trainer.py`` finds them: the label column is
``label`` unless named (``--label_column_name``); the text columns are named
(``--text_column_names a,b``) or detected: ``sentence1`` and ``sentence2`` when both exist, else
the first two other text columns, else the only one. (``run_glue_no_trainer`` takes the first
two non-label columns whatever their type; only text columns count here, so an id column does
not become a sentence.) Float labels mean regression (``--do_regression`` decides otherwise);
the classes are the names of a ``ClassLabel`` column, or the sorted distinct labels of the
training data.

Errors name the file (or the Hub split), the row (records counted from 1; a CSV's header is no
row) and the column: a missing column, an empty file, a missing label or text, a label outside
the training data's classes, a test file without the training file's text columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .glue_metrics import GENERIC_METRICS, class_ids_or_scores
from .labels import SentenceTaskLabels

__all__ = ["DATA_FORMATS", "ClassificationDataError", "ClassificationTask", "read_data_file", "load_hub_split",
           "load_classification_data", "write_classification_predictions"]

#: File suffix → (datasets' packaged builder, its options).
DATA_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    ".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"}), ".json": ("json", {}), ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
_TEXT_TYPES = ("string", "large_string")


class ClassificationDataError(ValueError):
    """Data of your own that cannot be used as given (the message names the file, row and column)."""


@dataclass(frozen=True)
class ClassificationTask(SentenceTaskLabels):
    """A classification or regression data set of your own, as train_glue.py uses a GLUE task.

    Attributes:
        name: how results and run folders name it (the Hub data set, or the training file's name).
        text_columns: the source's text columns (one sentence, or a pair).
        label_column: the source's label column.
        label_list: the classes as they appear in the data (index = class id); None for regression.
        data: where the splits came from, for results and the model card.
    """

    name: str
    text_columns: tuple[str, ...]
    label_column: str
    label_list: tuple[Any, ...] | None
    data: str = ""
    eval_splits: tuple[str, ...] = ("dev",)
    num_train_epochs: float = 3.0
    train_on_swapped_pairs: bool = False
    label_scale: float = 1.0

    @property
    def is_pair(self) -> bool:
        return len(self.text_columns) == 2

    @property
    def metric_config(self) -> str:
        """The configuration of the `evaluate` module electra_hf/metrics/glue that scores it."""
        return "regression" if self.is_regression else "classification"

    @property
    def metrics(self) -> tuple[str, ...]:
        return GENERIC_METRICS[self.metric_config]

    @property
    def average_key(self) -> str:
        """The dev metric that picks the seed whose model is pushed and predicts the test file."""
        return self.metric_key("dev", "spearmanr" if self.is_regression else "accuracy")


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _check_not_empty(path: Path, suffix: str) -> None:
    with open(path, "rb") as handle:
        if not handle.read(4096).strip():
            raise ClassificationDataError(f"{path}: empty file")
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = (line for line in handle if line.strip())
            next(lines)
            if next(lines, None) is None:
                raise ClassificationDataError(f"{path}: a header line and no rows")


def read_data_file(path: str, flag: str, cache_dir: str | None = None):
    """One file as a ``datasets.Dataset``, read by datasets' packaged builder for its suffix
    (:data:`DATA_FORMATS`). ``flag`` names the argument in errors."""
    import datasets

    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{flag} {path}: no such file")
    suffix = file.suffix.lower()
    if suffix not in DATA_FORMATS:
        raise ClassificationDataError(f"{flag} {path}: unknown format {suffix!r}; use one of {sorted(DATA_FORMATS)}")
    _check_not_empty(file, suffix)
    builder, options = DATA_FORMATS[suffix]
    try:
        dataset = datasets.load_dataset(builder, data_files={"rows": str(file)}, split="rows", cache_dir=cache_dir,
                                        **options)
    except Exception as error:
        raise ClassificationDataError(f"{path}: cannot be read as {suffix[1:].upper()} "
                                      f"({type(error).__name__}: {error})") from error
    if len(dataset) == 0:
        raise ClassificationDataError(f"{path}: no rows")
    return dataset


def load_hub_split(dataset_name: str, config_name: str | None, split: str, cache_dir: str | None = None):
    """One split of a Hub data set; where it does not load (no network, an unknown name or split)
    the error names ``--dataset_name`` and says what to do instead."""
    import datasets
    from huggingface_hub import constants

    try:
        return datasets.load_dataset(dataset_name, config_name, split=split, cache_dir=cache_dir)
    except Exception as error:
        offline = " (HF_HUB_OFFLINE is set here)" if constants.HF_HUB_OFFLINE else ""
        config = f" --dataset_config_name {config_name}" if config_name else ""
        raise RuntimeError(
            f"--dataset_name {dataset_name}{config}: split {split!r} did not load "
            f"({type(error).__name__}: {error}). Where the Hub is unreachable{offline} only data sets in the datasets "
            f"cache load; give --train_file and --validation_file instead.") from error


# --------------------------------------------------------------------------------------------
# Columns and labels
# --------------------------------------------------------------------------------------------
def _is_text(feature) -> bool:
    return getattr(feature, "dtype", None) in _TEXT_TYPES and not hasattr(feature, "names")


def _text_columns(train, where: str, named: Sequence[str] | None, label_column: str) -> tuple[str, ...]:
    columns = train.column_names
    if label_column not in columns:
        raise ClassificationDataError(f"{where}: no label column {label_column!r} (columns: {columns}); name it with "
                                      f"--label_column_name")
    if named:
        missing = [name for name in named if name not in columns]
        if missing or len(named) > 2:
            raise ClassificationDataError(f"{where}: --text_column_names {','.join(named)}: "
                                          + (f"no column(s) {missing} (columns: {columns})" if missing
                                             else "one or two columns (a sentence or a pair)"))
        return tuple(named)
    texts = [name for name in columns if name != label_column and _is_text(train.features[name])]
    if not texts:
        raise ClassificationDataError(f"{where}: no text column besides {label_column!r} (columns: {train.features}); "
                                      f"name them with --text_column_names")
    if "sentence1" in texts and "sentence2" in texts:
        return ("sentence1", "sentence2")
    return tuple(texts[:2])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _first_bad_row(values: Sequence[Any], is_bad, where: str, column: str, what: str) -> None:
    """Raise naming the first row whose value ``is_bad`` (and how many more there are)."""
    bad = [row for row, value in enumerate(values, start=1) if is_bad(value)]
    if bad:
        more = f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else ""
        raise ClassificationDataError(f"{where}, row {bad[0]}, column {column!r}: {what(values[bad[0] - 1])}{more}")


def _class_names(feature, values: list) -> list:
    """ClassLabel ids as their names (-1, an unlabeled row, as None); other values as they are."""
    if not hasattr(feature, "names"):
        return values
    return [None if value is None or value < 0 else feature.names[value] for value in values]


def _label_list(train, where: str, label_column: str, do_regression: bool | None) -> tuple[Any, ...] | None:
    """The classes (None: regression), from the training split's label column."""
    feature = train.features[label_column]
    values = _class_names(feature, train[label_column])
    _first_bad_row(values, _missing, where, label_column, lambda value: "no label")
    if hasattr(feature, "names"):
        if do_regression:
            raise ClassificationDataError(f"{where}: --do_regression, but column {label_column!r} holds classes "
                                          f"{feature.names}")
        return tuple(feature.names)
    regression = do_regression if do_regression is not None else str(feature.dtype).startswith("float")
    if regression:
        return None
    classes = tuple(sorted(set(values)))
    if len(classes) < 2:
        raise ClassificationDataError(f"{where}, column {label_column!r}: one class ({classes[0]!r}) in the whole "
                                      f"training data; classification needs two or more (or --do_regression)")
    return classes


def _score(value) -> float | None:
    """A regression label as a finite float (numbers, or text such as "0.5" in a column that mixes
    in other text); None where it is none."""
    if isinstance(value, bool):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if math.isfinite(score) else None


def _label_ids(values: list, where: str, task: ClassificationTask) -> list:
    column = task.label_column
    _first_bad_row(values, _missing, where, column, lambda value: "no label")
    if task.is_regression:
        _first_bad_row(values, lambda value: _score(value) is None, where, column,
                       lambda value: f"label {value!r} is not a number (a regression data set)")
        return [_score(value) for value in values]
    ids = {label: index for index, label in enumerate(task.label_list)}
    _first_bad_row(values, lambda value: value not in ids, where, column,
                   lambda value: f"label {value!r} is not among the training data's classes {list(task.label_list)}")
    return [ids[value] for value in values]


def _to_glue_layout(dataset, where: str, task: ClassificationTask, labeled: bool):
    """``sentence1``, [``sentence2``], ``label`` (class id or score; -1 unlabeled), ``idx`` (row - 1)."""
    import datasets

    needed = [*task.text_columns, *([task.label_column] if labeled else [])]
    missing = [c for c in needed if c not in dataset.column_names]
    not_text = [c for c in task.text_columns if c in dataset.column_names and not _is_text(dataset.features[c])]
    if missing or not_text:
        problems = ([f"no column(s) {missing}"] if missing else []) + [
            f"column {c!r} holds {dataset.features[c]}, not text" for c in not_text]
        raise ClassificationDataError(f"{where}: its schema differs from the training data's: {'; '.join(problems)} "
                                      f"(the training data's text columns: {list(task.text_columns)}, label column: "
                                      f"{task.label_column!r}; columns here: {dataset.column_names})")
    records: dict[str, list] = {}
    for name, column in zip(("sentence1", "sentence2"), task.text_columns):
        records[name] = dataset[column]
        _first_bad_row(records[name], lambda value: value is None, where, column, lambda value: "no text")
    if labeled:
        labels = _class_names(dataset.features[task.label_column], dataset[task.label_column])
        records["label"] = _label_ids(labels, where, task)
    else:
        records["label"] = [-1.0 if task.is_regression else -1] * len(dataset)
    records["idx"] = list(range(len(dataset)))
    features = datasets.Features({
        **{name: datasets.Value("string") for name in ("sentence1", "sentence2")[:len(task.text_columns)]},
        "label": datasets.Value("float32" if task.is_regression else "int64"), "idx": datasets.Value("int64")})
    return datasets.Dataset.from_dict(records, features=features)


# --------------------------------------------------------------------------------------------
# The whole data set
# --------------------------------------------------------------------------------------------
def _hub_splits(dataset_name: str, config_name: str | None, splits: Sequence[str], predict: bool,
                cache_dir: str | None) -> tuple[dict[str, Any], dict[str, str], str]:
    """``({"train", "dev"[, "test"]: Dataset}, {split: where}, description)`` of a Hub data set."""
    names = dict(zip(("train", "dev", "test"), splits))
    wanted = ["train", "dev"] + (["test"] if predict else [])
    config = f"/{config_name}" if config_name else ""
    raw = {split: load_hub_split(dataset_name, config_name, names[split], cache_dir) for split in wanted}
    where = {split: f"{dataset_name}{config} split {names[split]!r}" for split in wanted}
    return raw, where, f"the Hub data set {dataset_name}{config} (splits {', '.join(names[s] for s in wanted)})"


def _file_splits(files: dict[str, tuple[str, str | None]],
                 cache_dir: str | None) -> tuple[dict[str, Any], dict[str, str], str]:
    """The same for files: ``files`` maps a split to (its flag, its path or None)."""
    raw = {split: read_data_file(path, flag, cache_dir) for split, (flag, path) in files.items() if path}
    where = {split: path for split, (_, path) in files.items() if path}
    return raw, where, ", ".join(f"{split}: {path}" for split, path in where.items())


def load_classification_data(*, train_file: str | None = None, validation_file: str | None = None,
                             test_file: str | None = None, dataset_name: str | None = None,
                             dataset_config_name: str | None = None,
                             splits: Sequence[str] = ("train", "validation", "test"), predict: bool = False,
                             text_column_names: Sequence[str] | None = None, label_column_name: str = "label",
                             do_regression: bool | None = None,
                             cache_dir: str | None = None) -> tuple[ClassificationTask, dict[str, Any]]:
    """The task and its splits in the GLUE layout: ``{"train", "dev"[, "test"]: Dataset}``.

    From files (``test_file`` optional, predicted when given) or from the Hub data set's ``splits``
    (train, validation, test; the test split only with ``predict``). The training data decides
    the columns and the classes; the validation data must have the same, the test data the same
    text columns (its labels, if any, are not read).
    """
    if dataset_name is not None:
        raw, where, data = _hub_splits(dataset_name, dataset_config_name, splits, predict, cache_dir)
        name = dataset_name
    else:
        raw, where, data = _file_splits({"train": ("--train_file", train_file),
                                         "dev": ("--validation_file", validation_file),
                                         "test": ("--test_file", test_file)}, cache_dir)
        name = Path(train_file).name
    text_columns = _text_columns(raw["train"], where["train"], text_column_names, label_column_name)
    label_list = _label_list(raw["train"], where["train"], label_column_name, do_regression)
    task = ClassificationTask(name=name, text_columns=text_columns, label_column=label_column_name,
                              label_list=label_list, data=data)
    return task, {split: _to_glue_layout(dataset, where[split], task, labeled=split != "test")
                  for split, dataset in raw.items()}


def write_classification_predictions(path: str | Path, task: ClassificationTask, predictions,
                                     indices: Sequence[int]) -> Path:
    """``index<TAB>prediction`` lines (the class as it appears in the data, or the score), the
    format of transformers' run_glue.py; ``indices`` are the test rows (0-based)."""
    values = class_ids_or_scores(predictions, task.is_regression, task.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"]
    for index, value in zip(indices, values):
        lines.append(f"{int(index)}\t{float(value):.6g}" if task.is_regression
                     else f"{int(index)}\t{task.label_list[int(value)]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path

