"""Pre-training data for ELECTRA: corpus reading, WordPiece tokenizer training, the official
example builder, and an on-disk cache shared by processes and nodes.

The flow (what a pre-training script calls, in order)::

    args = PretrainingDataArguments(train_files=["corpus/*.txt.gz"])
    raw = load_raw_datasets(args)                    # DatasetDict of *lines* (see below)
    tokenizer = load_or_train_tokenizer(args, raw)   # AutoTokenizer or a freshly trained WordPiece
    examples = build_pretraining_datasets(args, tokenizer, raw)
    # examples["train"][i] == {"input_ids": [CLS] A [SEP] (B [SEP]), "token_type_ids": 0.. 1..}

or ``tokenizer, examples = prepare_pretraining_data(args)`` for all three.

The line format
---------------
Every source is normalised into one column ``text`` where each row is either one non-blank,
whitespace-stripped line of a document, or ``""``, which ends a document. Every document ends
with exactly one ``""`` (so the last row is ``""``) and there are no two ``""`` in a row.

* Text files (plain or ``.gz``; anything that is not ``.json``/``.jsonl``/``.parquet``) are in
  the official input format: one sentence (or line) per line, blank lines between documents.
  The end of each file also ends a document, as the official ``build_pretraining_dataset.py``
  flushes at the end of every input file.
* JSON lines / JSON arrays / Parquet / Hub rows are one document each; newlines inside the text
  separate the lines of that document, and blank lines inside a document are dropped (they do
  *not* split it).

Example building (faithful to google-research/electra ``build_pretraining_dataset.py``)
---------------------------------------------------------------------------------------
Lines are appended to the current example until it reaches its target length or the document
ends; the example is split into segment A and (90% of the time) segment B at a sentence
boundary, laid out as ``[CLS] A [SEP] B [SEP]``; after each example, with probability
``short_seq_prob`` the next target length is drawn uniformly from [5, max_seq_length].
Examples are *not* padded (the collator pads).

Determinism and parallelism: the line rows are cut into fixed chunks of ``LINES_PER_CHUNK``
lines (on a global grid: rows [0, K), [K, 2K), ...). Each chunk gets its own builder with an RNG
seeded from ``(seed, first row of the chunk)`` and is flushed at its end, exactly like the end
of an input file in the official code. So the result depends only on the data, the tokenizer,
the settings and the seed -- not on ``preprocessing_num_workers`` -- and the non-streaming and
streaming paths produce the same examples. The price: an example is cut where a chunk ends
(about one shorter example per 10,000 lines; an example still never crosses a document
boundary).

Caching
-------
Both the line data set (for local files) and the built examples are stored under
``cache_dir`` in directories named by a hash of everything that determines their content
(file paths, sizes and mtimes; tokenizer; settings; seed; code version). A directory is built
under a temporary name and renamed into place only when complete, under a file lock, so an
interrupted preparation never leaves a cache that looks complete, and two processes (or
nodes sharing the file system) preparing the same data build it once: the other waits and
reuses it. A trained tokenizer is cached the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Union

import datasets
import numpy as np
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, Value
from datasets import Sequence as SequenceFeature
from filelock import FileLock, Timeout
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from .arguments import SPECIAL_TOKENS, PretrainingDataArguments
from .demo import write_demo_corpus
from . import cache
from .cache import cache_root, dataset_key
from .corpus import load_raw_datasets
from .readers import read_documents_as_lines
from .tokenizer import (
    check_tokenizer,
    load_or_train_tokenizer,
    plain_backend,
    tokenizer_fingerprint,
    train_wordpiece_tokenizer,
)

logger = logging.getLogger(__name__)

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
    "LINES_PER_CHUNK",
    "SPECIAL_TOKENS",
]

#: [PAD] first so that its id is 0 (the collator and the embeddings' padding_idx rely on it).
#: Lines per builder chunk (see the module docstring). Part of every cache key.
LINES_PER_CHUNK = 10_000

#: Bump when the line format or the builder changes, so old caches are not reused.
_BUILDER_VERSION = "electra-examples-v1"

_COMPLETE_MARKER = "_ELECTRA_HF_COMPLETE.json"

# int32 (not int8/int16): safe as embedding indices if a user sets the torch format.
EXAMPLE_FEATURES = Features(
    {
        "input_ids": SequenceFeature(Value("int32")),
        "token_type_ids": SequenceFeature(Value("int32")),
    }
)


# --------------------------------------------------------------------------------------------
# Small helpers: hashing, cache directories
# --------------------------------------------------------------------------------------------
def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:20]


@contextlib.contextmanager
def _locked(path: Path, what: str):
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("Waiting for another process preparing %s (lock %s)", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _cached_dir(
    final: Path, build: Callable[[Path], dict], *, overwrite: bool = False, what: str = "data"
) -> tuple[Path, dict, bool]:
    """Return ``(final, info, built)``: ``final`` is built by ``build(tmp_dir) -> info`` unless complete.

    Completeness is "the directory exists under its final name and holds the marker": the
    build runs in ``.tmp-<name>-<pid>-<uuid>`` and is renamed into place (atomic on POSIX) only
    after it returned. A file lock serialises builders of the same key (processes or nodes on a
    shared file system); a process that waited finds the directory complete and reuses it.
    Temporary directories left by a crashed build are removed by the next builder (it holds the
    lock, so nobody else is writing them).
    """
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    marker = final / _COMPLETE_MARKER

    def reusable() -> bool:
        # --overwrite_cache rebuilds a cache completed before this process started, not one that
        # another rank of the same launch has just built (every rank calls this).
        return marker.is_file() and not (overwrite and marker.stat().st_mtime < cache._PROCESS_START)

    if reusable():
        return final, json.loads(marker.read_text()), False
    with _locked(parent / f"{final.name}.lock", what):
        if reusable():  # built by another process while we waited
            logger.info("%s was prepared by another process; reusing %s", what, final)
            return final, json.loads(marker.read_text()), False
        for stale in list(parent.glob(f".tmp-{final.name}-*")) + list(parent.glob(f".old-{final.name}-*")):
            logger.warning("Removing %s left by an interrupted preparation", stale)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            info = build(tmp)
            (tmp / _COMPLETE_MARKER).write_text(json.dumps(info, indent=2, sort_keys=True))
            if final.exists():  # --overwrite_cache: move the old one aside (readers may still map it)
                old = parent / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final, info, True


# --------------------------------------------------------------------------------------------
# The official example builder
# --------------------------------------------------------------------------------------------
class ExampleBuilder:
    """Port of ``ExampleBuilder`` from google-research/electra ``build_pretraining_dataset.py``,
    on token ids (lines are tokenised in batches beforehand).

    ``add_line(ids)`` takes a line's WordPiece ids (no special tokens), or ``None`` for a blank
    line (a document boundary); it returns a finished example ``(input_ids, token_type_ids)``
    or ``None``. ``flush()`` ends the current document (the official code does so at the end of
    each file). RNG calls are the official ones in the official order, from ``rng``.
    """

    def __init__(
        self,
        max_length: int,
        cls_token_id: int,
        sep_token_id: int,
        rng: random.Random,
        short_seq_prob: float = 0.05,
        single_segment_prob: float = 0.1,
    ):
        self._max_length = max_length
        self._target_length = max_length
        self._cls = cls_token_id
        self._sep = sep_token_id
        self._rng = rng
        self._short_seq_prob = short_seq_prob
        self._single_segment_prob = single_segment_prob
        self._current_sentences: list[list[int]] = []
        self._current_length = 0

    def add_line(self, token_ids: Optional[list[int]]):
        if token_ids is None:  # empty lines separate docs
            return self._create_example() if self._current_length != 0 else None
        # (The official code also appends lines that tokenise to nothing; they never change
        # an example nor consume randomness, so they are skipped.)
        if token_ids:
            self._current_sentences.append(token_ids)
            self._current_length += len(token_ids)
            if self._current_length >= self._target_length:
                return self._create_example()
        return None

    def flush(self):
        return self.add_line(None)

    def _create_example(self) -> tuple[list[int], list[int]]:
        rng = self._rng
        # small chance to only have one segment as in classification tasks
        if rng.random() < self._single_segment_prob:
            first_segment_target_length = 100000
        else:
            # -3 due to not yet having [CLS]/[SEP] tokens in the input text
            first_segment_target_length = (self._target_length - 3) // 2

        first_segment: list[int] = []
        second_segment: list[int] = []
        for sentence in self._current_sentences:
            # the sentence goes to the first segment if (1) the first segment is empty, (2) the
            # sentence doesn't put the first segment over length or (3) 50% of the time when it does
            if (
                len(first_segment) == 0
                or len(first_segment) + len(sentence) < first_segment_target_length
                or (
                    len(second_segment) == 0
                    and len(first_segment) < first_segment_target_length
                    and rng.random() < 0.5
                )
            ):
                first_segment += sentence
            else:
                second_segment += sentence

        # trim to max_length while accounting for not-yet-added [CLS]/[SEP] tokens
        first_segment = first_segment[: self._max_length - 2]
        second_segment = second_segment[: max(0, self._max_length - len(first_segment) - 3)]

        # prepare to start building the next example
        self._current_sentences = []
        self._current_length = 0
        # small chance for random-length instead of max_length-length example
        if rng.random() < self._short_seq_prob:
            self._target_length = rng.randint(5, self._max_length)
        else:
            self._target_length = self._max_length

        input_ids = [self._cls] + first_segment + [self._sep]
        token_type_ids = [0] * len(input_ids)
        if second_segment:
            input_ids += second_segment + [self._sep]
            token_type_ids += [1] * (len(second_segment) + 1)
        return input_ids, token_type_ids


def build_examples_from_lines(
    lines: Sequence[str],
    tokenizer: Union[PreTrainedTokenizerBase, Tokenizer],
    *,
    max_seq_length: int = 128,
    short_seq_prob: float = 0.05,
    single_segment_prob: float = 0.1,
    rng: Optional[random.Random] = None,
    cls_token_id: Optional[int] = None,
    sep_token_id: Optional[int] = None,
) -> dict[str, list[list[int]]]:
    """Build examples from consecutive lines (blank line = document boundary; the end of
    ``lines`` ends the last document). Lines are tokenised in one batch (no special tokens).

    Returns ``{"input_ids": [...], "token_type_ids": [...]}``, one unpadded list per example.
    ``tokenizer`` is a fast HF tokenizer or a ``tokenizers.Tokenizer``; with the latter pass
    ``cls_token_id``/``sep_token_id`` (else looked up as "[CLS]"/"[SEP]").
    """
    if isinstance(tokenizer, Tokenizer):
        backend = tokenizer
        cls_token_id = cls_token_id if cls_token_id is not None else backend.token_to_id("[CLS]")
        sep_token_id = sep_token_id if sep_token_id is not None else backend.token_to_id("[SEP]")
    else:
        backend = plain_backend(tokenizer)
        cls_token_id = cls_token_id if cls_token_id is not None else tokenizer.cls_token_id
        sep_token_id = sep_token_id if sep_token_id is not None else tokenizer.sep_token_id
    if cls_token_id is None or sep_token_id is None:
        raise ValueError("The tokenizer has no [CLS]/[SEP] token ids.")
    stripped = [line.strip().replace("\n", " ") for line in lines]
    texts = [line for line in stripped if line]
    encodings = backend.encode_batch_fast(texts, add_special_tokens=False) if texts else []
    builder = ExampleBuilder(
        max_seq_length, cls_token_id, sep_token_id, rng if rng is not None else random.Random(),
        short_seq_prob=short_seq_prob, single_segment_prob=single_segment_prob,
    )
    all_ids: list[list[int]] = []
    all_types: list[list[int]] = []
    enc = iter(encodings)
    for line in stripped:
        example = builder.add_line(next(enc).ids if line else None)
        if example is not None:
            all_ids.append(example[0])
            all_types.append(example[1])
    example = builder.flush()
    if example is not None:
        all_ids.append(example[0])
        all_types.append(example[1])
    return {"input_ids": all_ids, "token_type_ids": all_types}


@dataclass(frozen=True)
class _BuildSettings:
    max_seq_length: int
    short_seq_prob: float
    single_segment_prob: float
    seed: int
    cls_token_id: int
    sep_token_id: int
    lines_per_chunk: int


def _chunk_rng(seed: int, chunk_start: int) -> random.Random:
    # A str seed is hashed with SHA-512 by random.Random: stable across runs and platforms.
    return random.Random(f"electra-examples:{seed}:{chunk_start}")


def _build_chunk(lines: Sequence[str], chunk_start: int, backend: Tokenizer, settings: _BuildSettings) -> dict:
    return build_examples_from_lines(
        lines, backend,
        max_seq_length=settings.max_seq_length, short_seq_prob=settings.short_seq_prob,
        single_segment_prob=settings.single_segment_prob, rng=_chunk_rng(settings.seed, chunk_start),
        cls_token_id=settings.cls_token_id, sep_token_id=settings.sep_token_id,
    )


def _build_chunks_batch(batch: dict, lines: Dataset, backend: Tokenizer, settings: _BuildSettings) -> dict:
    """datasets.map function over the chunk index: reads each chunk's lines and builds it."""
    out: dict[str, list] = {"input_ids": [], "token_type_ids": []}
    for start in batch["chunk_start"]:
        chunk = lines[start:start + settings.lines_per_chunk]["text"]
        built = _build_chunk(chunk, start, backend, settings)
        out["input_ids"].extend(built["input_ids"])
        out["token_type_ids"].extend(built["token_type_ids"])
    return out


def _build_streaming_batch(batch: dict, indices: list[int], backend: Tokenizer, settings: _BuildSettings) -> dict:
    return _build_chunk(batch["text"], indices[0], backend, settings)


def _build_examples(
    lines: Dataset, backend: Tokenizer, settings: _BuildSettings, num_proc: Optional[int], work_dir: Path, split: str
) -> Dataset:
    """Map the line rows to examples (columns input_ids, token_type_ids), one chunk per call.

    The map runs over a small index data set of chunk start rows rather than over the lines
    themselves: datasets splits rows between workers at arbitrary points, chunks keep the same
    boundaries (hence the same examples) for any number of workers.
    """
    starts = list(range(0, len(lines), settings.lines_per_chunk))
    if not starts:
        return Dataset.from_dict({"input_ids": [], "token_type_ids": []}, features=EXAMPLE_FEATURES)
    index = Dataset.from_dict({"chunk_start": starts})
    num_proc = min(num_proc or 1, len(starts))
    work_dir.mkdir(parents=True, exist_ok=True)
    return index.map(
        _build_chunks_batch,
        fn_kwargs={"lines": lines, "backend": backend, "settings": settings},
        batched=True,
        batch_size=1,
        remove_columns=["chunk_start"],
        features=EXAMPLE_FEATURES,
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=str(work_dir / f"{split}.arrow"),
        load_from_cache_file=False,
        new_fingerprint=_hash([dataset_key(lines), asdict(settings)])[:16],
        desc=f"Building ELECTRA examples ({split}, chunks of {settings.lines_per_chunk} lines)",
    )


def build_pretraining_datasets(
    args: PretrainingDataArguments,
    tokenizer: PreTrainedTokenizerBase,
    raw_datasets: Union[DatasetDict, IterableDatasetDict],
) -> Union[DatasetDict, IterableDatasetDict]:
    """Turn line data sets (``load_raw_datasets``) into ELECTRA examples, cached in ``cache_dir``.

    Each split gets columns ``input_ids`` (``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]``, length
    <= ``max_seq_length``, not padded) and ``token_type_ids`` (0 for [CLS] A [SEP], 1 for
    B [SEP]), both int32 lists. The cache key covers the line data, the tokenizer, the builder
    settings and ``preprocessing_seed`` (not the worker count, which does not change the
    result). ``max_train_samples``/``max_eval_samples`` are applied after the cache.
    Streaming input gives an ``IterableDatasetDict`` with the same examples, built lazily.
    """
    if args.max_seq_length is None:
        raise ValueError("set max_seq_length (train_pretrain.py takes the model config's when --max_seq_length is not given)")
    check_tokenizer(tokenizer, getattr(tokenizer, "name_or_path", "") or "(given)")
    backend = plain_backend(tokenizer)
    settings = _BuildSettings(
        max_seq_length=args.max_seq_length,
        short_seq_prob=args.short_seq_prob,
        single_segment_prob=args.single_segment_prob,
        seed=args.preprocessing_seed,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        lines_per_chunk=LINES_PER_CHUNK,
    )
    limits = {"train": args.max_train_samples, "validation": args.max_eval_samples}

    if isinstance(raw_datasets, IterableDatasetDict):
        out = IterableDatasetDict()
        for split, lines in raw_datasets.items():
            examples = lines.map(
                _build_streaming_batch, batched=True, batch_size=settings.lines_per_chunk, with_indices=True,
                remove_columns=["text"], features=EXAMPLE_FEATURES,
                fn_kwargs={"backend": backend, "settings": settings},
            )
            out[split] = examples.take(limits[split]) if limits.get(split) is not None else examples
        return out

    splits = {split: ds for split, ds in raw_datasets.items()}
    key = _hash({
        "version": _BUILDER_VERSION,
        "lines": {split: dataset_key(ds) for split, ds in splits.items()},
        "tokenizer": tokenizer_fingerprint(backend),
        "settings": asdict(settings),
    })

    def build(tmp: Path) -> dict:
        start = time.perf_counter()
        built = DatasetDict({
            split: _build_examples(lines, backend, settings, args.preprocessing_num_workers, tmp / "work", split)
            for split, lines in splits.items()
        })
        built.save_to_disk(str(tmp / "data"))
        del built
        shutil.rmtree(tmp / "work", ignore_errors=True)
        info = {"seconds": round(time.perf_counter() - start, 2), "settings": asdict(settings)}
        info["stats"] = {
            split: describe_examples(ds, settings.max_seq_length)
            for split, ds in DatasetDict.load_from_disk(str(tmp / "data")).items()
        }
        return info

    final, info, built_now = _cached_dir(
        cache_root(args.cache_dir) / f"examples-{key}", build, overwrite=args.overwrite_cache, what="ELECTRA examples"
    )
    logger.info("%s ELECTRA examples in %s", "Built" if built_now else "Reusing", final)
    for split, stats in info["stats"].items():
        logger.info("%s: %s", split, ", ".join(f"{k}={v}" for k, v in stats.items()))
    examples = DatasetDict.load_from_disk(str(final / "data"))
    for split, limit in limits.items():
        if limit is not None and split in examples:
            examples[split] = examples[split].select(range(min(limit, len(examples[split]))))
    return examples


def prepare_pretraining_data(
    args: PretrainingDataArguments,
) -> tuple[PreTrainedTokenizerBase, Union[DatasetDict, IterableDatasetDict]]:
    """``load_raw_datasets`` + ``load_or_train_tokenizer`` + ``build_pretraining_datasets``."""
    raw = load_raw_datasets(args)
    tokenizer = load_or_train_tokenizer(args, raw)
    return tokenizer, build_pretraining_datasets(args, tokenizer, raw)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def describe_examples(
    dataset: Union[Dataset, Iterable[dict]], max_seq_length: Optional[int] = None, max_examples: Optional[int] = None
) -> dict:
    """Statistics of built examples: ``num_examples``, ``num_tokens`` (with [CLS]/[SEP]),
    ``mean_length``, ``max_length``, ``frac_single_segment`` (no token type 1) and
    ``frac_shorter_than_max`` (length < ``max_seq_length``; default: the longest example).
    A ``Dataset`` is summarised with Arrow (fast); other iterables are read row by row (at most
    ``max_examples``)."""
    if isinstance(dataset, Dataset):
        table = dataset.select_columns(["input_ids", "token_type_ids"]).with_format("arrow")[:]
        ids = table["input_ids"].combine_chunks()
        types = table["token_type_ids"].combine_chunks()
        lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        parents = pc.list_parent_indices(types).to_numpy()
        flat = pc.list_flatten(types).to_numpy(zero_copy_only=False)
        type_sums = np.bincount(parents, weights=flat, minlength=len(lengths))
    else:
        lens, sums = [], []
        for i, example in enumerate(dataset):
            if max_examples is not None and i >= max_examples:
                break
            lens.append(len(example["input_ids"]))
            sums.append(sum(example["token_type_ids"]))
        lengths, type_sums = np.asarray(lens, dtype=np.int64), np.asarray(sums)
    n = int(len(lengths))
    if n == 0:
        return {"num_examples": 0, "num_tokens": 0, "mean_length": 0.0, "max_length": 0,
                "frac_single_segment": 0.0, "frac_shorter_than_max": 0.0}
    limit = max_seq_length if max_seq_length is not None else int(lengths.max())
    return {
        "num_examples": n,
        "num_tokens": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 3),
        "max_length": int(lengths.max()),
        "frac_single_segment": round(float((type_sums == 0).mean()), 5),
        "frac_shorter_than_max": round(float((lengths < limit).mean()), 5),
    }
