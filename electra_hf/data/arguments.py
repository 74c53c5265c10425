"""The data arguments of ELECTRA pre-training (one dataclass, parsed by HfArgumentParser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

#: The special tokens ELECTRA needs, in the order a trained vocabulary gives them ids 0-4.
#: [PAD] comes first so that its id is 0 (the collator and the embeddings' padding_idx rely on it).
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOKENIZER_TYPES = ("wordpiece", "unigram")


@dataclass
class PretrainingDataArguments:
    """Data arguments of ELECTRA pre-training (HfArgumentParser-compatible)."""

    train_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Local training files or globs: .txt/.txt.gz (any other suffix is read as text: one "
            "sentence per line, blank line between documents), .jsonl/.json (one document per row), "
            ".parquet (one document per row)."
        },
    )
    validation_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Local validation files or globs (same formats as --train_files)."},
    )
    dataset_name: Optional[str] = field(
        default=None,
        metadata={"help": "A data set for datasets.load_dataset (Hub id or local script/dir); rows are documents."},
    )
    dataset_config_name: Optional[str] = field(
        default=None, metadata={"help": "The configuration name of --dataset_name."}
    )
    text_column: str = field(
        default="text", metadata={"help": "Column holding the text in JSON/Parquet files and Hub data sets."}
    )
    blanks_separate_docs: bool = field(
        default=True,
        metadata={
            "help": "Text files: blank lines separate documents (official default). If false, a whole text "
            "file is one document."
        },
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read and build lazily (IterableDataset); nothing is cached. Needs validation data "
        "given explicitly (or --validation_split_percentage 0)."},
    )
    validation_split_percentage: float = field(
        default=1.0,
        metadata={
            "help": "When no validation files/split are given: percentage of the training lines held out as "
            "the validation split, taken from the end and cut at a document boundary (0: no validation split)."
        },
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Tokenizer to load with AutoTokenizer (local dir or Hub id). None: train a WordPiece "
        "tokenizer on the training split (cached in --cache_dir)."},
    )
    tokenizer_type: str = field(
        default="wordpiece",
        metadata={"help": "Trained tokenizer: 'wordpiece' (BERT's, official ELECTRA) or 'unigram' (a SentencePiece-style "
        "Unigram vocabulary in DeBERTa-v3's tokenizer class, DebertaV2Tokenizer; DeBERTa-v3: 128000 pieces, cased)."},
    )
    vocab_size: int = field(
        default=30522, metadata={"help": "Vocabulary size of a trained tokenizer (BERT/ELECTRA: 30522)."}
    )
    lowercase: bool = field(
        default=True,
        metadata={"help": "Trained tokenizer: lower-case and strip accents (uncased, as the official vocabulary)."},
    )
    tokenizer_min_frequency: int = field(
        default=2, metadata={"help": "Trained tokenizer: minimum frequency of a merged word piece."}
    )
    tokenizer_train_max_lines: Optional[int] = field(
        default=None,
        metadata={"help": "Train the tokenizer on at most this many (non-blank) training lines. None: all."},
    )
    max_seq_length: Optional[int] = field(
        default=None,
        metadata={"help": "Maximum example length including [CLS]/[SEP]. None: the model config's (preset Small: "
        "128, Base/Large: 512)."},
    )
    short_seq_prob: float = field(
        default=0.05,
        metadata={"help": "Probability that the next example's target length is drawn from [5, max_seq_length]."},
    )
    single_segment_prob: float = field(
        default=0.1, metadata={"help": "Probability that an example has only segment A ([CLS] A [SEP])."}
    )
    preprocessing_seed: int = field(
        default=42, metadata={"help": "Seed of the example builder (results do not depend on the worker count)."}
    )
    preprocessing_num_workers: Optional[int] = field(
        default=None, metadata={"help": "Processes for reading Hub data and building examples (None: 1)."}
    )
    cache_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Where prepared data (lines, tokenizer, examples) is stored and reused; share it "
        "between runs and nodes. None: $HF_DATASETS_CACHE/electra_hf."},
    )
    overwrite_cache: bool = field(
        default=False,
        metadata={"help": "Rebuild prepared data completed before this process started (other ranks of the "
        "same launch then reuse the fresh one)."},
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Debugging: keep only the first N training examples."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Debugging: keep only the first N validation examples."}
    )

    def __post_init__(self):
        # HfArgumentParser passes lists; a user in Python may pass one string.
        if isinstance(self.train_files, str):
            self.train_files = [self.train_files]
        if isinstance(self.validation_files, str):
            self.validation_files = [self.validation_files]
        if self.dataset_name and self.train_files:
            raise ValueError("Give either --dataset_name or --train_files, not both.")
        for name in ("short_seq_prob", "single_segment_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0.0 <= self.validation_split_percentage < 100.0:
            raise ValueError(
                f"--validation_split_percentage must be in [0, 100), got {self.validation_split_percentage}."
            )
        # the official short-target draw is randint(5, max_seq_length)
        if self.max_seq_length is not None and self.max_seq_length < 5:
            raise ValueError(f"--max_seq_length must be at least 5, got {self.max_seq_length}.")
        if self.tokenizer_type not in TOKENIZER_TYPES:
            raise ValueError(f"--tokenizer_type must be one of {TOKENIZER_TYPES}, got {self.tokenizer_type!r}.")
        if self.vocab_size <= len(SPECIAL_TOKENS):
            raise ValueError(f"--vocab_size must exceed {len(SPECIAL_TOKENS)}, got {self.vocab_size}.")
        if self.preprocessing_num_workers is not None and self.preprocessing_num_workers < 1:
            raise ValueError(f"--preprocessing_num_workers must be >= 1, got {self.preprocessing_num_workers}.")

