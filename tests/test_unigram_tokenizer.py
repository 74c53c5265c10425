"""The Unigram (SentencePiece-style) tokenizer path: DeBERTa-v3's tokenizer class, trained on a corpus."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, DebertaV2Tokenizer

from electra_hf.data.arguments import PretrainingDataArguments
from electra_hf.data.tokenizer import UnigramTraining, WordPieceTraining, tokenizer_training, train_unigram_tokenizer

from .conftest import SAMPLE_SENTENCES

TEXTS = [sentence.capitalize() for sentence in SAMPLE_SENTENCES] * 20


def test_trained_unigram_tokenizer_round_trips_and_has_the_rtd_tokens(tmp_path):
    tokenizer = train_unigram_tokenizer(TEXTS, vocab_size=120, lowercase=False, show_progress=False)
    assert isinstance(tokenizer, DebertaV2Tokenizer) and tokenizer.is_fast
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 1, 2, 3, 4]
    encoded = tokenizer("The old man sat by the river.", "It was night.")
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"])
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokenizer.unk_token not in tokens
    assert tokens[1].startswith("▁T")  # SentencePiece word boundaries, cased
    second = encoded["input_ids"].index(tokenizer.sep_token_id) + 1
    assert set(encoded["token_type_ids"][:second]) == {0} and set(encoded["token_type_ids"][second:]) == {1}
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # transformers alone, no sentencepiece package
    assert type(reloaded).__name__ == "DebertaV2Tokenizer"
    assert reloaded("The cat sat on the mat.")["input_ids"] == tokenizer("The cat sat on the mat.")["input_ids"]
    assert reloaded.decode(encoded["input_ids"], skip_special_tokens=True) == "The old man sat by the river. It was night."


def test_tokenizer_type_chooses_the_training_and_keys_the_cache_apart():
    unigram = tokenizer_training(PretrainingDataArguments(tokenizer_type="unigram", vocab_size=500, lowercase=False))
    wordpiece = tokenizer_training(PretrainingDataArguments(vocab_size=500))
    assert isinstance(unigram, UnigramTraining) and isinstance(wordpiece, WordPieceTraining)
    assert unigram.algorithm != wordpiece.algorithm
    lowercased = train_unigram_tokenizer(TEXTS, vocab_size=100, lowercase=True, show_progress=False)
    assert "▁THE" not in lowercased.convert_ids_to_tokens(lowercased("THE CAT")["input_ids"])
    with pytest.raises(ValueError, match="--tokenizer_type must be one of"):
        PretrainingDataArguments(tokenizer_type="bpe")
