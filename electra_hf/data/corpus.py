"""The corpus as data sets of rows in the line format (see ``readers``): local files, a data set
of ``datasets.load_dataset`` (Hub or local), or either one streamed; and the validation split
carved from the training rows at a document boundary when none is given."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Union

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value
from datasets.exceptions import DatasetGenerationError
from datasets.fingerprint import Hasher

from .arguments import PretrainingDataArguments
from .cache import cache_root, dataset_key, locked_cache_entry
from .readers import document_rows, read_documents_as_lines, resolve_files

logger = logging.getLogger(__name__)

#: Part of the fingerprint of the line data sets read from local files: bump it when the line
#: format or the readers change, so that lines read by an older version are not reused.
LINES_FORMAT_VERSION = "lines-v2"

LINE_FEATURES = Features({"text": Value("string")})


def load_raw_datasets(args: PretrainingDataArguments) -> Union[DatasetDict, IterableDatasetDict]:
    """Read the corpus into ``{"train", "validation"}`` splits of rows in the line format.

    Returns a ``DatasetDict`` (memory-mapped, cached under ``cache_dir`` for local files) or,
    with ``streaming``, an ``IterableDatasetDict`` (nothing cached). Column: ``text`` (str).
    ``validation`` is absent only when ``validation_split_percentage`` is 0 and no validation
    data was given. Local files are validated while read (see ``read_documents_as_lines``).
    """
    if not args.train_files and not args.dataset_name:
        raise ValueError(
            "No training data: pass --train_files or --dataset_name (write_demo_corpus() gives a small corpus)."
        )
    if args.dataset_name:
        raw = _load_dataset_lines(args)
    else:
        files = {"train": resolve_files(args.train_files, "--train_files")}
        if args.validation_files:
            files["validation"] = resolve_files(args.validation_files, "--validation_files")
        read = _stream_local_lines if args.streaming else _read_local_lines
        raw = (IterableDatasetDict if args.streaming else DatasetDict)(
            {split: read(split_files, split, args) for split, split_files in files.items()}
        )
    if "validation" not in raw and args.validation_split_percentage > 0:
        if args.streaming:
            raise ValueError(
                "--streaming cannot carve a validation split from the training stream: pass --validation_files "
                "(or a --dataset_name with a 'validation' split), or --validation_split_percentage 0."
            )
        raw["train"], raw["validation"] = _carve_validation(raw["train"], args.validation_split_percentage)
    return raw


def _line_rows(files: list[str], text_column: str, blanks_separate_docs: bool) -> Iterator[dict]:
    """The rows of ``files`` in the line format, one ``{"text": ...}`` at a time (the generator
    of ``Dataset.from_generator``)."""
    for path in files:
        for batch in read_documents_as_lines(path, text_column, blanks_separate_docs):
            for line in batch:
                yield {"text": line}


def _read_local_lines(files: list[str], split: str, args: PretrainingDataArguments) -> Dataset:
    """The rows of local ``files``, read once into ``datasets``' cache and reused afterwards.

    The fingerprint covers each file's path, size and modification time, which stand for its
    content: a file that changes gets a new fingerprint, so it is read again.
    """
    reader_settings = _reader_settings(args)
    fingerprint = Hasher.hash({
        "format": LINES_FORMAT_VERSION,
        "split": split,
        "files": [(path, os.path.getsize(path), os.stat(path).st_mtime_ns) for path in files],
        **reader_settings,
    })
    directory = cache_root(args.cache_dir) / f"lines-{fingerprint}"
    with locked_cache_entry(directory, overwrite=args.overwrite_cache, what=f"corpus lines ({split})"):
        try:
            # No features: the one string column is inferred, while encoding every row against
            # declared features would take four times as long as reading the files.
            lines = Dataset.from_generator(
                _line_rows, gen_kwargs={"files": files, **reader_settings}, cache_dir=str(directory),
                fingerprint=fingerprint, split=split,
            )
        except DatasetGenerationError as err:
            # datasets wraps what the generator raises; the readers' own error names the file and line
            if isinstance(err.__cause__, (ValueError, OSError)):
                raise err.__cause__ from None
            raise
    documents = pc.sum(pc.equal(lines.with_format("arrow")[:]["text"], "")).as_py() or 0
    logger.info("%s: %d lines, %d documents (%s)", split, len(lines) - documents, documents, directory)
    return lines


def _stream_local_lines(files: list[str], split: str, args: PretrainingDataArguments) -> IterableDataset:
    return IterableDataset.from_generator(
        _line_rows, gen_kwargs={"files": files, **_reader_settings(args)}, features=LINE_FEATURES
    )


def _reader_settings(args: PretrainingDataArguments) -> dict:
    return {"text_column": args.text_column, "blanks_separate_docs": args.blanks_separate_docs}


def _load_dataset_lines(args: PretrainingDataArguments) -> Union[DatasetDict, IterableDatasetDict]:
    """``--dataset_name`` through ``datasets.load_dataset``, each row a document; the conversion
    to lines is a ``map`` that ``datasets`` caches by its own fingerprint."""
    loaded = datasets.load_dataset(
        args.dataset_name, args.dataset_config_name, streaming=args.streaming, cache_dir=args.cache_dir
    )
    if "train" not in loaded:
        raise ValueError(f"--dataset_name {args.dataset_name}: no 'train' split (splits: {list(loaded)}).")
    out = IterableDatasetDict() if args.streaming else DatasetDict()
    for split in ("train", "validation"):
        if split not in loaded:
            continue
        ds = loaded[split]
        columns = ds.column_names
        if columns is not None and args.text_column not in columns:
            raise ValueError(
                f"--dataset_name {args.dataset_name} ({split}): no column {args.text_column!r} "
                f"(columns: {columns}); set --text_column."
            )
        kwargs = dict(batched=True, remove_columns=[args.text_column], fn_kwargs={"text_column": args.text_column})
        if not args.streaming:
            kwargs.update(num_proc=args.preprocessing_num_workers, desc=f"Documents to lines ({split})")
        # only the text column goes in (a streamed split may not know its columns beforehand)
        out[split] = ds.select_columns([args.text_column]).map(_documents_to_lines_batch, **kwargs)
    return out


def _documents_to_lines_batch(batch: dict, text_column: str) -> dict:
    return {"text": document_rows(batch[text_column])}


def _carve_validation(lines: Dataset, percentage: float) -> tuple[Dataset, Dataset]:
    """Split the line data set into (train, validation): validation is about the last
    ``percentage`` percent of the rows, from the document boundary nearest to that cut (no
    document is in both; at least the last document is held out)."""
    n = len(lines)
    boundaries = pc.indices_nonzero(pc.equal(lines.with_format("arrow")[:]["text"], "")).to_numpy()
    inner = boundaries[:-1]  # the last boundary is the end of the data
    if len(inner) == 0:
        raise ValueError(
            "Cannot carve a validation split: the training data is a single document. Pass "
            "--validation_files or --validation_split_percentage 0."
        )
    # the document boundary nearest to the requested cut (rows up to it are training data)
    cut = n * (1.0 - percentage / 100.0) - 1
    last_train_row = int(inner[np.argmin(np.abs(inner - cut))])
    key = dataset_key(lines)
    train = lines.select(range(0, last_train_row + 1), new_fingerprint=f"{key}-train-{last_train_row}")
    validation = lines.select(range(last_train_row + 1, n), new_fingerprint=f"{key}-val-{last_train_row}")
    return train, validation
