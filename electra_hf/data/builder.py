"""ELECTRA pre-training examples from line data sets, faithful to google-research/electra
``build_pretraining_dataset.py``.

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

Caching: each split's examples are the output of a ``Dataset.map`` that ``datasets`` caches
under a fingerprint of everything that decides them (see ``_cached_examples``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

from datasets import Dataset, DatasetDict, Features, IterableDatasetDict, Value
from datasets import Sequence as SequenceFeature
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase

from .arguments import PretrainingDataArguments
from .cache import cache_root, dataset_key, locked_cache_entry
from .stats import describe_examples
from .tokenizer import check_tokenizer, plain_backend, tokenizer_fingerprint

logger = logging.getLogger(__name__)

#: Lines per builder chunk (see the module docstring). Part of every examples fingerprint.
LINES_PER_CHUNK = 10_000

#: Part of every examples fingerprint: bump it when the builder changes what it produces, so
#: that examples built by an older version are not reused.
EXAMPLES_FORMAT_VERSION = "electra-examples-v1"

# int32 (not int8/int16): safe as embedding indices if a user sets the torch format.
EXAMPLE_FEATURES = Features(
    {
        "input_ids": SequenceFeature(Value("int32")),
        "token_type_ids": SequenceFeature(Value("int32")),
    }
)


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
class BuildSettings:
    """Everything besides the lines and the tokenizer that decides the examples."""

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


def _build_chunk(lines: Sequence[str], chunk_start: int, backend: Tokenizer, settings: BuildSettings) -> dict:
    return build_examples_from_lines(
        lines, backend,
        max_seq_length=settings.max_seq_length, short_seq_prob=settings.short_seq_prob,
        single_segment_prob=settings.single_segment_prob, rng=_chunk_rng(settings.seed, chunk_start),
        cls_token_id=settings.cls_token_id, sep_token_id=settings.sep_token_id,
    )


def _build_chunks_batch(batch: dict, lines: Dataset, backend: Tokenizer, settings: BuildSettings) -> dict:
    """datasets.map function over the chunk index: reads each chunk's lines and builds it."""
    out: dict[str, list] = {"input_ids": [], "token_type_ids": []}
    for start in batch["chunk_start"]:
        chunk = lines[start:start + settings.lines_per_chunk]["text"]
        built = _build_chunk(chunk, start, backend, settings)
        out["input_ids"].extend(built["input_ids"])
        out["token_type_ids"].extend(built["token_type_ids"])
    return out


def _build_streaming_batch(batch: dict, indices: list[int], backend: Tokenizer, settings: BuildSettings) -> dict:
    return _build_chunk(batch["text"], indices[0], backend, settings)


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
        raise ValueError(
            "set max_seq_length (train_pretrain.py takes the model config's when --max_seq_length is not given)"
        )
    check_tokenizer(tokenizer, getattr(tokenizer, "name_or_path", "") or "(given)")
    backend = plain_backend(tokenizer)
    settings = BuildSettings(
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
        return _stream_examples(raw_datasets, backend, settings, limits)
    examples = DatasetDict({
        split: _cached_examples(split, lines, backend, settings, args) for split, lines in raw_datasets.items()
    })
    for split, limit in limits.items():
        if limit is not None and split in examples:
            examples[split] = examples[split].select(range(min(limit, len(examples[split]))))
    return examples


def _stream_examples(
    raw_datasets: IterableDatasetDict, backend: Tokenizer, settings: BuildSettings, limits: dict[str, Optional[int]]
) -> IterableDatasetDict:
    """The same examples, built lazily: the stream's batches of ``lines_per_chunk`` rows are the
    chunks of the non-streaming path (same boundaries, same RNG seeds)."""
    out = IterableDatasetDict()
    for split, lines in raw_datasets.items():
        examples = lines.map(
            _build_streaming_batch, batched=True, batch_size=settings.lines_per_chunk, with_indices=True,
            remove_columns=["text"], features=EXAMPLE_FEATURES,
            fn_kwargs={"backend": backend, "settings": settings},
        )
        out[split] = examples.take(limits[split]) if limits.get(split) is not None else examples
    return out


def _cached_examples(
    split: str, lines: Dataset, backend: Tokenizer, settings: BuildSettings, args: PretrainingDataArguments
) -> Dataset:
    """The examples of one split: built once, then reused from ``datasets``' cache.

    The map's fingerprint covers what decides the examples: the lines (``dataset_key``), what
    decides a line's token ids, the settings and ``EXAMPLES_FORMAT_VERSION``, and not the worker
    count. Its output lies in a directory of its own whose lock makes processes that prepare the
    same examples at the same time build them once, and which ``--overwrite_cache`` removes
    (``cache.locked_cache_entry``).
    """
    fingerprint = Hasher.hash({
        "version": EXAMPLES_FORMAT_VERSION,
        "lines": dataset_key(lines),
        "tokenizer": tokenizer_fingerprint(backend),
        "settings": asdict(settings),
    })
    directory = cache_root(args.cache_dir) / f"examples-{fingerprint}"
    with locked_cache_entry(directory, overwrite=args.overwrite_cache, what=f"ELECTRA examples ({split})"):
        _remove_interrupted_map_output(directory)
        reused = any(directory.glob("*.arrow"))
        examples = _map_chunks_to_examples(
            lines, backend, settings, args.preprocessing_num_workers, directory / "examples.arrow", fingerprint, split
        )
    logger.info("%s %d ELECTRA examples (%s) in %s", "Reusing" if reused else "Built", len(examples), split, directory)
    if not reused:
        stats = describe_examples(examples, settings.max_seq_length)
        logger.info("%s: %s", split, ", ".join(f"{k}={v}" for k, v in stats.items()))
    return examples


def _remove_interrupted_map_output(directory: Path) -> None:
    """``Dataset.map`` writes to a temporary file beside its ``.arrow`` output and renames it when
    done, so any other file here was left by an interrupted map (only the lock holder writes)."""
    for path in directory.glob("*"):
        if path.is_file() and path.suffix != ".arrow":
            logger.warning("Removing %s left by an interrupted preparation", path)
            path.unlink()


def _map_chunks_to_examples(
    lines: Dataset, backend: Tokenizer, settings: BuildSettings, num_proc: Optional[int],
    cache_file: Path, fingerprint: str, split: str,
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
    return index.map(
        _build_chunks_batch,
        fn_kwargs={"lines": lines, "backend": backend, "settings": settings},
        batched=True,
        batch_size=1,
        remove_columns=["chunk_start"],
        features=EXAMPLE_FEATURES,
        num_proc=num_proc if num_proc > 1 else None,
        cache_file_name=str(cache_file),
        load_from_cache_file=True,
        new_fingerprint=fingerprint,
        desc=f"Building ELECTRA examples ({split}, chunks of {settings.lines_per_chunk} lines)",
    )
