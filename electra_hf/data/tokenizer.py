"""Tokenizers for ELECTRA: load a given one, or train one on the training split and cache it.

``load_or_train_tokenizer`` loads ``--tokenizer_name_or_path`` with ``AutoTokenizer``, or trains
the vocabulary that ``tokenizer_training(args)`` describes (``--tokenizer_type``): a BERT-style
WordPiece vocabulary (``WordPieceTraining``, official ELECTRA) or a SentencePiece-style Unigram
vocabulary in DeBERTa-v3's tokenizer class (``UnigramTraining``). Each is a description with a
``train`` method and fields that key the cache; the caching, the reading of the training lines and
the checks are shared.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Optional, Union

import datasets
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict
from datasets.fingerprint import Hasher
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    DebertaV2Tokenizer,
    ElectraTokenizerFast,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from .arguments import SPECIAL_TOKENS, PretrainingDataArguments
from .cache import cache_root, dataset_key, locked_cache_entry, write_directory_atomically

logger = logging.getLogger(__name__)

TRAINING_TEXTS_PER_BATCH = 10_000  # lines handed to the tokenizers trainer at a time


def train_wordpiece_tokenizer(
    texts: Iterable[Union[str, list[str]]],
    vocab_size: int = 30522,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
    model_max_length: int = 512,
    show_progress: bool = True,
    length: Optional[int] = None,
) -> ElectraTokenizerFast:
    """Train a BERT-style WordPiece tokenizer with the ``tokenizers`` library.

    ``texts``: strings, or lists of strings (batches; faster); ``length``: the number of
    strings (progress bar only); ``limit_alphabet``: the most initial characters kept (the
    ``tokenizers`` BERT default); ``model_max_length``: the longest input the tokenizer accepts
    (ELECTRA's position embeddings: 512). BERT normaliser (lower-case and accent stripping iff
    ``lowercase``), BertPreTokenizer, ``##`` word pieces, ``[CLS] A [SEP] B [SEP]``
    post-processor (token types 0/1), WordPiece decoder. Special tokens
    ``[PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4``. Returns an ``ElectraTokenizerFast`` that
    round-trips through ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` with no custom
    code. Training is not bit-for-bit reproducible: the ``tokenizers`` trainer breaks frequency
    ties in a run-dependent order (ids, and tokens at the vocabulary cut, can differ between
    runs), which is why ``load_or_train_tokenizer`` caches the result for every process and run.
    """
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        limit_alphabet=limit_alphabet,
        continuing_subword_prefix="##",
        show_progress=show_progress,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return ElectraTokenizerFast(
        tokenizer_object=tokenizer,
        do_lower_case=lowercase,
        strip_accents=lowercase,
        model_max_length=model_max_length,
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    )


@dataclass(frozen=True)
class WordPieceTraining:
    """A BERT-style WordPiece vocabulary to train (``train_wordpiece_tokenizer``).

    ``algorithm`` and the fields key the tokenizer cache: bump ``algorithm`` when the training
    code changes what it produces.
    """

    algorithm: ClassVar[str] = "wordpiece-v1"
    vocab_size: int
    lowercase: bool
    min_frequency: int

    def train(self, texts: Iterable[list[str]], length: Optional[int], show_progress: bool) -> PreTrainedTokenizerFast:
        return train_wordpiece_tokenizer(
            texts, vocab_size=self.vocab_size, lowercase=self.lowercase, min_frequency=self.min_frequency,
            show_progress=show_progress, length=length,
        )


def train_unigram_tokenizer(
    texts: Iterable[Union[str, list[str]]],
    vocab_size: int = 128000,
    lowercase: bool = False,
    model_max_length: int = 512,
    show_progress: bool = True,
    length: Optional[int] = None,
) -> DebertaV2Tokenizer:
    """Train a SentencePiece-style Unigram vocabulary with the ``tokenizers`` library, as DeBERTa-v3's.

    The normaliser and pre-tokenizer are ``DebertaV2Tokenizer``'s own (whitespace clean-up, NFC,
    "▁" word boundaries; lower-case iff ``lowercase``: DeBERTa-v3 is cased), so the trained pieces
    are those the tokenizer class splits text into. Special tokens ``[PAD]=0 [UNK]=1 [CLS]=2
    [SEP]=3 [MASK]=4``; ``[CLS] A [SEP] B [SEP]`` with token types 0/1. Returns a
    ``DebertaV2Tokenizer`` (fast, a ``tokenizers`` Unigram model) that round-trips through
    ``save_pretrained`` / ``AutoTokenizer.from_pretrained`` with no custom code and needs no
    ``sentencepiece`` package. Like WordPiece training, not bit-for-bit reproducible (cached).
    """
    layout = DebertaV2Tokenizer(do_lower_case=lowercase).backend_tokenizer
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer, tokenizer.pre_tokenizer = layout.normalizer, layout.pre_tokenizer
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]",
                                      show_progress=show_progress)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    pieces = [(piece, score) for piece, score in json.loads(tokenizer.to_str())["model"]["vocab"]]
    return DebertaV2Tokenizer(vocab=pieces, do_lower_case=lowercase, model_max_length=model_max_length,
                              unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]",
                              mask_token="[MASK]", bos_token="[CLS]", eos_token="[SEP]")


@dataclass(frozen=True)
class UnigramTraining:
    """A SentencePiece-style Unigram vocabulary to train (``train_unigram_tokenizer``); fields key the cache."""

    algorithm: ClassVar[str] = "unigram-v1"
    vocab_size: int
    lowercase: bool

    def train(self, texts: Iterable[list[str]], length: Optional[int], show_progress: bool) -> PreTrainedTokenizerFast:
        return train_unigram_tokenizer(texts, vocab_size=self.vocab_size, lowercase=self.lowercase,
                                       show_progress=show_progress, length=length)


def tokenizer_training(args: PretrainingDataArguments) -> Union[WordPieceTraining, UnigramTraining]:
    """The vocabulary ``load_or_train_tokenizer`` trains when no tokenizer is given (``--tokenizer_type``)."""
    if args.tokenizer_type == "unigram":
        return UnigramTraining(vocab_size=args.vocab_size, lowercase=args.lowercase)
    return WordPieceTraining(
        vocab_size=args.vocab_size, lowercase=args.lowercase, min_frequency=args.tokenizer_min_frequency
    )


def load_or_train_tokenizer(
    args: PretrainingDataArguments, raw_datasets: Union[DatasetDict, IterableDatasetDict, None] = None
) -> PreTrainedTokenizerBase:
    """``tokenizer_name_or_path`` given: ``AutoTokenizer.from_pretrained`` it. Otherwise train a
    WordPiece or Unigram tokenizer (``tokenizer_type``, ``vocab_size``, ``lowercase``,
    ``tokenizer_min_frequency``) on the train
    split of ``raw_datasets`` (at most ``tokenizer_train_max_lines`` lines), cached under
    ``cache_dir`` (keyed by the train split's fingerprint; a streamed split is not cached).
    Raises ValueError if the tokenizer is not fast or lacks [CLS]/[SEP]/[MASK]/[PAD].
    """
    if args.tokenizer_name_or_path:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_name_or_path)
        check_tokenizer(tokenizer, repr(args.tokenizer_name_or_path))
        return tokenizer
    if raw_datasets is None or "train" not in raw_datasets:
        raise ValueError("No --tokenizer_name_or_path and no training split to train a tokenizer on.")
    train, training = raw_datasets["train"], tokenizer_training(args)
    if isinstance(train, Dataset):
        tokenizer = _load_or_train_cached(training, train, args)
    else:  # a stream has no fingerprint to key a cache by
        tokenizer = _train(training, train, args.tokenizer_train_max_lines)
    check_tokenizer(tokenizer, "(trained)")
    return tokenizer


def _load_or_train_cached(
    training: Union[WordPieceTraining, UnigramTraining], train: Dataset, args: PretrainingDataArguments
) -> PreTrainedTokenizerBase:
    """The tokenizer trained on ``train``, trained once and reused by every process and run.

    Our own cache, because a tokenizer is not a Dataset (``datasets`` caches only those), and a
    needed one: training is not reproducible (see ``train_wordpiece_tokenizer``), so processes
    that each trained their own would disagree on the token ids.
    """
    key = Hasher.hash({
        "algorithm": training.algorithm, **asdict(training),
        "train": dataset_key(train), "max_lines": args.tokenizer_train_max_lines,
    })
    directory = cache_root(args.cache_dir) / f"tokenizer-{key}"
    with locked_cache_entry(directory, overwrite=args.overwrite_cache, what="the tokenizer"):
        if directory.is_dir():
            logger.info("Reusing the tokenizer trained earlier: %s", directory)
        else:
            def train_into(temporary: Path) -> None:
                _train(training, train, args.tokenizer_train_max_lines).save_pretrained(str(temporary))

            write_directory_atomically(directory, train_into)
        return AutoTokenizer.from_pretrained(str(directory))


def _train(
    training: Union[WordPieceTraining, UnigramTraining], train: Union[Dataset, IterableDataset], max_lines: Optional[int]
) -> PreTrainedTokenizerFast:
    n_rows = len(train) if isinstance(train, Dataset) else None
    # for the progress bar: the number of lines it will see (at most; blank rows are skipped)
    n_lines = min(n_rows, max_lines or n_rows) if n_rows else None
    logger.info("Training a tokenizer: %s", training)
    start = time.perf_counter()
    tokenizer = training.train(
        _iter_training_texts(train, max_lines), length=n_lines, show_progress=not datasets.are_progress_bars_disabled()
    )
    logger.info("Trained the tokenizer in %.1f s (%d tokens)", time.perf_counter() - start, len(tokenizer))
    return tokenizer


def _iter_training_texts(train: Union[Dataset, IterableDataset], max_lines: Optional[int]) -> Iterator[list[str]]:
    seen = 0
    for batch in train.select_columns(["text"]).iter(batch_size=TRAINING_TEXTS_PER_BATCH):
        lines = [t for t in batch["text"] if t]
        if max_lines is not None:
            lines = lines[: max_lines - seen]
        seen += len(lines)
        if lines:
            yield lines
        if max_lines is not None and seen >= max_lines:
            return


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Raise ValueError unless ``tokenizer`` is fast and has [CLS], [SEP], [MASK] and [PAD]."""
    if not getattr(tokenizer, "is_fast", False) or not hasattr(tokenizer, "backend_tokenizer"):
        raise ValueError(f"Tokenizer {source}: a fast (tokenizers-backed) tokenizer is required.")
    missing = []
    for name in ("cls_token", "sep_token", "mask_token", "pad_token"):
        token = getattr(tokenizer, name, None)
        if token is None or tokenizer.convert_tokens_to_ids(str(token)) in (None, tokenizer.unk_token_id):
            missing.append(name)
    if missing:
        raise ValueError(
            f"Tokenizer {source} lacks {', '.join(missing)} (ELECTRA needs [CLS], [SEP], [MASK] and [PAD])."
        )


def plain_backend(tokenizer: Union[PreTrainedTokenizerBase, Tokenizer]) -> Tokenizer:
    """A copy of the backend tokenizer with truncation and padding off (a tokenizer.json may
    carry either; both would change the ids of a line)."""
    backend = tokenizer if isinstance(tokenizer, Tokenizer) else tokenizer.backend_tokenizer
    backend = Tokenizer.from_str(backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def tokenizer_fingerprint(backend: Tokenizer) -> str:
    """Hash of what decides a line's ids (normaliser, pre-tokenizer, model, added tokens); the
    decoder and post-processor do not matter here, so e.g. a reloaded copy of a tokenizer whose
    post-processor was rebuilt still finds the cache."""
    spec = json.loads(backend.to_str())
    relevant = {k: spec.get(k) for k in ("added_tokens", "normalizer", "pre_tokenizer", "model")}
    return Hasher.hash(json.dumps(relevant, sort_keys=True))
