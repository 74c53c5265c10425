"""ELECTRA's dynamic masking as a data collator (transformers' collator idiom).

Official rule (google-research/electra `pretrain_helpers.mask`):
- candidates: every non-padding token except [CLS], [SEP] and [MASK];
- per sequence, `max(1, min(N, round(num_tokens * mask_prob)))` draws of a position, where
  num_tokens counts all non-padding tokens and N is the max number of predictions per sequence;
  the draws are with replacement, so duplicates collapse (`mask_with_replacement=False` draws
  that many distinct positions);
- of the chosen positions 85% become [MASK], 15% keep the original token, none is replaced by
  a random token (BERT's 80/10/10 is available with `mask_token_prob=0.8, random_token_prob=0.1`).
- a new mask every time a sequence is seen.

Reproducibility: with a `seed`, the mask of a batch depends only on (seed, process_index,
epoch, batch index in the epoch) — not on how many DataLoader workers collate, nor on whether
the run was resumed (call `set_epoch(epoch, start_batch)` before iterating, as with a
`DistributedSampler`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from .configuration import official_max_predictions

IGNORE_INDEX = -100


@dataclass
class DataCollatorForElectra:
    """Pads a list of tokenised examples and applies ELECTRA's dynamic masking.

    Each feature is a mapping with `input_ids` (list/tensor of ints, with [CLS]/[SEP]) and
    optionally `token_type_ids` and `attention_mask`. Returns (B = batch, T = padded length):
        input_ids `(B, T)`: masked ids (the generator's input)
        labels `(B, T)`: original ids at the selected positions, -100 elsewhere
        attention_mask `(B, T)`, token_type_ids `(B, T)`

    Args:
        tokenizer: supplies the [PAD], [CLS], [SEP] and [MASK] ids and the vocabulary size.
        mask_prob: fraction of tokens selected (official 0.15; 0.25 for Large).
        mask_token_prob: fraction of the selected replaced by [MASK] (official 0.85).
        random_token_prob: fraction of the selected replaced by a random token (official 0).
        mask_with_replacement: draw positions with replacement (official) or distinct ones.
        max_predictions_per_seq: N. None → the official formula at `max_seq_length` (or at the
            padded length when `max_seq_length` is None too).
        max_seq_length: the pre-training sequence length N is derived from.
        pad_to_multiple_of: pad T up to a multiple of this (tensor-core friendly shapes).
        seed: makes masking reproducible (see module docstring); None → fresh randomness.
        process_index: the data-parallel rank, so ranks draw different masks.
    """

    tokenizer: PreTrainedTokenizerBase
    mask_prob: float = 0.15
    mask_token_prob: float = 0.85
    random_token_prob: float = 0.0
    mask_with_replacement: bool = True
    max_predictions_per_seq: int | None = None
    max_seq_length: int | None = None
    pad_to_multiple_of: int | None = None
    seed: int | None = None
    process_index: int = 0
    return_tensors: str = "pt"
    # Iteration state (see set_epoch); per process / worker copy.
    epoch: int = field(default=0, repr=False)
    start_batch: int = field(default=0, repr=False)
    _calls: int = field(default=0, init=False, repr=False)

    def __post_init__(self):
        if self.return_tensors != "pt":
            raise ValueError(f"DataCollatorForElectra only returns PyTorch tensors, got return_tensors={self.return_tensors!r}")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not (0 <= self.mask_token_prob and 0 <= self.random_token_prob and self.mask_token_prob + self.random_token_prob <= 1):
            raise ValueError(
                "mask_token_prob and random_token_prob must be >= 0 with a sum <= 1, got "
                f"{self.mask_token_prob} and {self.random_token_prob}"
            )
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq must be >= 1, got {self.max_predictions_per_seq}")
        missing = [
            name for name in ("pad_token", "cls_token", "sep_token", "mask_token")
            if getattr(self.tokenizer, f"{name}_id", None) is None
        ]
        if missing:
            raise ValueError(
                f"the tokenizer {type(self.tokenizer).__name__} lacks {', '.join(missing)}; ELECTRA masking needs "
                "[PAD], [CLS], [SEP] and [MASK] (train the tokenizer with them or add them as special tokens)"
            )
        self.pad_id = self.tokenizer.pad_token_id
        self.mask_id = self.tokenizer.mask_token_id
        self.cls_id = self.tokenizer.cls_token_id
        self.sep_id = self.tokenizer.sep_token_id
        self.vocab_size = len(self.tokenizer)
        if self.seed is None:
            self.seed = random.SystemRandom().randrange(2**62)
        self._generator = torch.Generator()

    @classmethod
    def from_config(cls, tokenizer: PreTrainedTokenizerBase, config, **kwargs: Any) -> "DataCollatorForElectra":
        """The collator of a pre-training config: its masking fields (`mask_prob`,
        `mask_token_prob`, `random_token_prob`, `mask_with_replacement`, `max_predictions_per_seq`,
        `max_seq_length`); `kwargs` set the rest (`seed`, `process_index`, `pad_to_multiple_of`)."""
        fields = ("mask_prob", "mask_token_prob", "random_token_prob", "mask_with_replacement",
                  "max_predictions_per_seq", "max_seq_length")
        return cls(tokenizer, **{name: getattr(config, name) for name in fields}, **kwargs)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Call before iterating an epoch; `start_batch` = batches skipped when resuming mid-epoch."""
        self.epoch, self.start_batch, self._calls = epoch, start_batch, 0

    def _batch_generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        # DataLoader workers take batches round-robin, so this is the batch's index in the epoch.
        batch_index = self.start_batch + worker_id + self._calls * num_workers
        self._calls += 1
        key = (self.seed, self.process_index, self.epoch, batch_index)
        self._generator.manual_seed(hash(key) & ((1 << 63) - 1))
        return self._generator

    def pad(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad `input_ids`, `token_type_ids`, `attention_mask` to the longest (or a multiple)."""
        if not features:
            raise ValueError("DataCollatorForElectra got an empty batch")
        if "input_ids" not in features[0]:
            raise ValueError(f"each feature needs 'input_ids'; got keys {sorted(features[0].keys())}")
        sequences = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        length = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_size = len(sequences)
        input_ids = torch.full((batch_size, length), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((batch_size, length), dtype=torch.long)
        attention_mask = torch.zeros((batch_size, length), dtype=torch.long)
        has_types = "token_type_ids" in features[0]
        has_mask = "attention_mask" in features[0]
        for row, (feature, ids) in enumerate(zip(features, sequences)):
            n = len(ids)
            input_ids[row, :n] = ids
            attention_mask[row, :n] = torch.as_tensor(feature["attention_mask"]) if has_mask else 1
            if has_types:
                token_type_ids[row, :n] = torch.as_tensor(feature["token_type_ids"])
        if not has_mask:
            # Without an explicit mask, trailing pad tokens already in the data are padding too.
            attention_mask &= (input_ids != self.pad_id).long()
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.pad(features)
        batch["input_ids"], batch["labels"] = self.mask_tokens(
            batch["input_ids"], batch["attention_mask"], generator=self._batch_generator()
        )
        return batch

    def mask_tokens(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Select and corrupt positions. `(B, T)`, `(B, T)` → masked ids `(B, T)`, labels `(B, T)`."""
        valid = attention_mask.bool()
        has_cls = ((input_ids == self.cls_id) & valid).any(dim=1)
        has_sep = ((input_ids == self.sep_id) & valid).any(dim=1)
        if not bool((has_cls & has_sep).all()):
            bad_row = int((~(has_cls & has_sep)).nonzero()[0])
            raise ValueError(
                f"row {bad_row} of the batch has no [CLS]/[SEP]: ELECTRA examples are tokenised with special tokens "
                "([CLS] A [SEP] B [SEP]); tokenise with add_special_tokens=True or use the electra_hf data pipeline"
            )
        batch_size, length = input_ids.shape
        max_predictions = self.max_predictions_per_seq or official_max_predictions(
            self.mask_prob, self.max_seq_length or length
        )
        candidates = valid & (input_ids != self.cls_id) & (input_ids != self.sep_id) & (input_ids != self.mask_id)
        num_tokens = valid.sum(dim=1)
        # torch.round rounds half to even, like tf.round in the official code.
        num_to_predict = torch.round(num_tokens.float() * self.mask_prob).long().clamp(min=1, max=max_predictions)
        num_to_predict = torch.minimum(num_to_predict, candidates.sum(dim=1))

        if self.mask_with_replacement:
            selected = self._draw_with_replacement(candidates, num_to_predict, max_predictions, generator)
        else:
            selected = self._draw_distinct(candidates, num_to_predict, generator)

        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        decision = torch.rand(batch_size, length, generator=generator)
        use_mask = selected & (decision < self.mask_token_prob)
        use_random = selected & ~use_mask & (decision < self.mask_token_prob + self.random_token_prob)
        masked_ids = input_ids.masked_fill(use_mask, self.mask_id)
        if self.random_token_prob > 0:
            random_ids = torch.randint(self.vocab_size, (batch_size, length), generator=generator)
            masked_ids = torch.where(use_random, random_ids, masked_ids)
        return masked_ids, labels

    @staticmethod
    def _draw_with_replacement(candidates, num_to_predict, max_predictions, generator) -> torch.Tensor:
        """The official draw: N positions uniform over a row's candidates, the first
        `num_to_predict` kept; a position drawn twice is selected once."""
        weights = candidates.float()
        weights[candidates.sum(dim=1) == 0] = 1.0  # rows with nothing to draw keep none of their draws
        draws = torch.multinomial(weights, max_predictions, replacement=True, generator=generator)
        keep = torch.arange(max_predictions).unsqueeze(0) < num_to_predict.unsqueeze(1)
        rows = torch.arange(len(draws)).unsqueeze(1).expand_as(draws)
        selected = torch.zeros_like(candidates)
        selected[rows[keep], draws[keep]] = True
        return selected

    @staticmethod
    def _draw_distinct(candidates, num_to_predict, generator) -> torch.Tensor:
        """A uniformly random subset of `num_to_predict` candidates per row: the top-k of random scores."""
        batch_size, length = candidates.shape
        scores = torch.rand(batch_size, length, generator=generator)
        scores.masked_fill_(~candidates, -1.0)
        order = scores.argsort(dim=1, descending=True)
        take = torch.arange(length).unsqueeze(0) < num_to_predict.unsqueeze(1)
        return torch.zeros_like(candidates).scatter(1, order, take)
