"""The ELECTRA masking collator: the official count formula, statistics, reproducibility, errors."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from electra_hf.collator import IGNORE_INDEX, DataCollatorForElectra
from electra_hf.configuration import official_max_predictions


def random_examples(tokenizer, count, min_len=5, max_len=128, seed=0):
    """Examples [CLS] w... [SEP] w... [SEP] of random lengths with ordinary-word ids."""
    generator = torch.Generator().manual_seed(seed)
    specials = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in specials])
    examples = []
    for _ in range(count):
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        body = ordinary[torch.randint(len(ordinary), (length - 3,), generator=generator)].tolist()
        cut = len(body) // 2
        ids = [tokenizer.cls_token_id] + body[:cut] + [tokenizer.sep_token_id] + body[cut:] + [tokenizer.sep_token_id]
        examples.append({"input_ids": ids, "token_type_ids": [0] * (cut + 2) + [1] * (len(body) - cut + 1)})
    return examples


def test_official_max_predictions():
    assert official_max_predictions(0.15, 128) == 19
    assert official_max_predictions(0.15, 512) == 79
    assert official_max_predictions(0.25, 512) == 130


@pytest.mark.parametrize("with_replacement", [False, True])
def test_count_formula_and_specials_never_chosen(tiny_tokenizer, with_replacement):
    """Distinct draws select exactly the official count; draws with replacement at most that many."""
    collator = DataCollatorForElectra(tiny_tokenizer, max_seq_length=128, seed=1, mask_with_replacement=with_replacement)
    examples = random_examples(tiny_tokenizer, 400)
    for start in range(0, len(examples), 50):
        features = examples[start : start + 50]
        batch = collator(features)
        original = collator.pad(features)["input_ids"]
        selected = batch["labels"] != IGNORE_INDEX
        for row, feature in enumerate(features):
            num_tokens = len(feature["input_ids"])
            expected = max(1, min(19, round(num_tokens * 0.15)))  # Python round: half to even, as tf.round
            if with_replacement:
                assert 1 <= int(selected[row].sum()) <= expected
            else:
                assert int(selected[row].sum()) == expected
        # labels hold the original ids; specials and padding never selected
        assert torch.equal(batch["labels"][selected], original[selected])
        chosen_ids = original[selected]
        for special in (tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id, tiny_tokenizer.pad_token_id):
            assert not (chosen_ids == special).any()
        assert not (selected & (batch["attention_mask"] == 0)).any()
        # positions not selected are untouched
        assert torch.equal(batch["input_ids"][~selected], original[~selected])


def test_draws_with_replacement_collapse_duplicates_as_the_official_code(tiny_tokenizer):
    """19 uniform draws over C candidates select C·(1 − (1 − 1/C)^19) distinct positions on average
    (about 17.6 on a full 128-token sequence)."""
    collator = DataCollatorForElectra(tiny_tokenizer, max_seq_length=128, seed=4)
    examples = random_examples(tiny_tokenizer, 2000, min_len=128, max_len=128, seed=5)
    distinct, expected = [], []
    for start in range(0, len(examples), 200):
        features = examples[start : start + 200]
        batch = collator(features)
        original = collator.pad(features)["input_ids"]
        specials = torch.tensor([tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id, tiny_tokenizer.mask_token_id])
        candidates = (~torch.isin(original, specials)).sum(dim=1).double()
        distinct += (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist()
        expected += (candidates * (1 - (1 - 1 / candidates) ** 19)).tolist()
    mean, want = sum(distinct) / len(distinct), sum(expected) / len(expected)
    assert 17.0 < want < 18.0
    assert mean == pytest.approx(want, abs=0.1)  # the standard error of the mean is about 0.02


def test_mask_keep_split_statistics(tiny_tokenizer):
    # distinct draws, so that exactly 15% of the tokens are selected
    collator = DataCollatorForElectra(tiny_tokenizer, max_seq_length=128, seed=2, mask_with_replacement=False)
    masked_count = kept_count = other = total_selected = 0
    examples = random_examples(tiny_tokenizer, 1000, min_len=100, max_len=128, seed=3)
    token_count = 0
    for start in range(0, len(examples), 100):
        features = examples[start : start + 100]
        batch = collator(features)
        original = collator.pad(features)["input_ids"]
        selected = batch["labels"] != IGNORE_INDEX
        values = batch["input_ids"][selected]
        masked_count += int((values == tiny_tokenizer.mask_token_id).sum())
        kept_count += int((values == original[selected]).sum())
        other += int(((values != tiny_tokenizer.mask_token_id) & (values != original[selected])).sum())
        total_selected += int(selected.sum())
        token_count += int(batch["attention_mask"].sum())
    assert other == 0  # official: no random replacement
    assert abs(masked_count / total_selected - 0.85) < 0.02
    assert abs(kept_count / total_selected - 0.15) < 0.02
    assert abs(total_selected / token_count - 0.15) < 0.01


def test_random_replacement_option(tiny_tokenizer):
    collator = DataCollatorForElectra(
        tiny_tokenizer, mask_token_prob=0.8, random_token_prob=0.1, max_seq_length=128, seed=4
    )
    examples = random_examples(tiny_tokenizer, 600, min_len=100, max_len=128, seed=5)
    batch = collator(examples)
    original = collator.pad(examples)["input_ids"]
    selected = batch["labels"] != IGNORE_INDEX
    values, originals = batch["input_ids"][selected], original[selected]
    is_mask = values == tiny_tokenizer.mask_token_id
    changed = (~is_mask) & (values != originals)
    # a random draw may equal the original (1/V), so "changed" slightly under-counts random picks
    assert abs(is_mask.float().mean().item() - 0.8) < 0.02
    assert 0.07 < changed.float().mean().item() < 0.12


def test_padding_shapes_and_multiple(tiny_tokenizer):
    collator = DataCollatorForElectra(tiny_tokenizer, pad_to_multiple_of=8, seed=0)
    examples = random_examples(tiny_tokenizer, 3, min_len=5, max_len=20)
    batch = collator(examples)
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape[1] == -(-longest // 8) * 8
    for row, example in enumerate(examples):
        assert int(batch["attention_mask"][row].sum()) == len(example["input_ids"])
        assert torch.equal(batch["token_type_ids"][row, : len(example["input_ids"])], torch.tensor(example["token_type_ids"]))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}


def test_reproducible_per_seed_epoch_and_process(tiny_tokenizer):
    examples = random_examples(tiny_tokenizer, 16)

    def first_batch(**kwargs):
        collator = DataCollatorForElectra(tiny_tokenizer, **kwargs)
        return collator(examples)["labels"]

    assert torch.equal(first_batch(seed=7), first_batch(seed=7))
    assert not torch.equal(first_batch(seed=7), first_batch(seed=8))
    assert not torch.equal(first_batch(seed=7), first_batch(seed=7, process_index=1))
    collator = DataCollatorForElectra(tiny_tokenizer, seed=7)
    epoch0 = collator(examples)["labels"]
    collator.set_epoch(1)
    assert not torch.equal(epoch0, collator(examples)["labels"])  # dynamic masking: new mask each epoch


def _collect(loader):
    return [batch["labels"] for batch in loader]


def test_same_masks_with_any_number_of_workers_and_after_resume(tiny_tokenizer):
    examples = random_examples(tiny_tokenizer, 40)
    collator = DataCollatorForElectra(tiny_tokenizer, seed=11)
    collator.set_epoch(3)
    in_process = _collect(DataLoader(examples, batch_size=4, collate_fn=collator))
    collator.set_epoch(3)
    with_workers = _collect(DataLoader(examples, batch_size=4, collate_fn=collator, num_workers=2))
    assert len(in_process) == len(with_workers) == 10
    for a, b in zip(in_process, with_workers):
        assert torch.equal(a, b)
    # resuming at batch 6 of the epoch reproduces batches 6.. exactly
    collator.set_epoch(3, start_batch=6)
    resumed = _collect(DataLoader(examples[24:], batch_size=4, collate_fn=collator))
    for a, b in zip(in_process[6:], resumed):
        assert torch.equal(a, b)


def test_tokenizer_without_mask_token_is_rejected(tiny_tokenizer):
    from transformers import ElectraTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}
    tokenizer = ElectraTokenizerFast(vocab=vocab, mask_token=None)
    tokenizer.mask_token = None
    with pytest.raises(ValueError, match="MASK|mask_token"):
        DataCollatorForElectra(tokenizer)


def test_batch_without_special_tokens_is_rejected(tiny_tokenizer):
    collator = DataCollatorForElectra(tiny_tokenizer, seed=0)
    no_specials = tiny_tokenizer(["the cat sat on the mat"], add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="CLS"):
        collator([{"input_ids": no_specials[0]}])


def test_invalid_probabilities(tiny_tokenizer):
    with pytest.raises(ValueError, match="mask_prob"):
        DataCollatorForElectra(tiny_tokenizer, mask_prob=0)
    with pytest.raises(ValueError, match="random_token_prob"):
        DataCollatorForElectra(tiny_tokenizer, mask_token_prob=0.95, random_token_prob=0.1)
