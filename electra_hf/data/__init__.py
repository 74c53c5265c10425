"""Pre-training data for ELECTRA: corpus reading, tokenizer training, the official example
builder, and an on-disk cache shared by processes and nodes.

The flow (what a pre-training script calls, in order)::

    args = PretrainingDataArguments(train_files=["corpus/*.txt.gz"])
    raw = load_raw_datasets(args)                    # DatasetDict of *lines* (see readers)
    tokenizer = load_or_train_tokenizer(args, raw)   # AutoTokenizer or a freshly trained WordPiece
    examples = build_pretraining_datasets(args, tokenizer, raw)
    # examples["train"][i] == {"input_ids": [CLS] A [SEP] (B [SEP]), "token_type_ids": 0.. 1..}

or ``tokenizer, examples = prepare_pretraining_data(args)`` for all three.

The modules, each importing only those listed before it:

* ``arguments``: ``PretrainingDataArguments`` and ``SPECIAL_TOKENS``.
* ``readers``: local files (text, JSON lines / JSON arrays, Parquet) to the line format, with
  errors that name the file and line.
* ``demo``: a small corpus every Python installation has.
* ``cache``: keys and locks for what is prepared under ``cache_dir``.
* ``corpus``: ``load_raw_datasets`` (local files, ``datasets.load_dataset``, streaming, the
  validation split carved at a document boundary).
* ``tokenizer``: WordPiece training and ``load_or_train_tokenizer``.
* ``stats``: ``describe_examples``.
* ``builder``: the official example builder and ``build_pretraining_datasets``.

Caching: the corpus lines and the examples are ``datasets`` caches (``Dataset.from_generator``,
``Dataset.map``) under fingerprints of everything that decides them (file paths, sizes and
mtimes; tokenizer; settings; seed; format versions); a trained tokenizer is a directory of our
own. ``cache`` adds a lock per entry, so two processes (or nodes sharing the file system)
preparing the same data build it once, and ``--overwrite_cache``. Everything is written under a
temporary name and renamed when complete, so an interrupted preparation never leaves something
that a later run takes as complete.
"""

from __future__ import annotations

from typing import Union

from datasets import DatasetDict, IterableDatasetDict
from transformers import PreTrainedTokenizerBase

from .arguments import SPECIAL_TOKENS, PretrainingDataArguments
from .builder import (
    EXAMPLE_FEATURES,
    LINES_PER_CHUNK,
    ExampleBuilder,
    build_examples_from_lines,
    build_pretraining_datasets,
)
from .cache import dataset_key
from .corpus import load_raw_datasets
from .demo import write_demo_corpus
from .readers import read_documents_as_lines
from .stats import describe_examples
from .tokenizer import load_or_train_tokenizer, train_wordpiece_tokenizer

__all__ = [
    "PretrainingDataArguments",
    "load_raw_datasets",
    "read_documents_as_lines",
    "write_demo_corpus",
    "train_wordpiece_tokenizer",
    "load_or_train_tokenizer",
    "ExampleBuilder",
    "build_examples_from_lines",
    "build_pretraining_datasets",
    "prepare_pretraining_data",
    "describe_examples",
    "dataset_key",
    "EXAMPLE_FEATURES",
    "LINES_PER_CHUNK",
    "SPECIAL_TOKENS",
]


def prepare_pretraining_data(
    args: PretrainingDataArguments,
) -> tuple[PreTrainedTokenizerBase, Union[DatasetDict, IterableDatasetDict]]:
    """``load_raw_datasets`` + ``load_or_train_tokenizer`` + ``build_pretraining_datasets``."""
    raw = load_raw_datasets(args)
    tokenizer = load_or_train_tokenizer(args, raw)
    return tokenizer, build_pretraining_datasets(args, tokenizer, raw)
