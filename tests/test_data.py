"""Tests of electra_hf.data: reading, tokenizer training, the official example builder, caching."""

from __future__ import annotations

import gzip
import itertools
import json
import multiprocessing
import os
import random
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, DatasetDict, IterableDatasetDict
from datasets.utils import disable_progress_bars
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, ElectraTokenizerFast, HfArgumentParser, PreTrainedTokenizerFast

from electra_hf import data
from electra_hf.data import builder as data_builder
from electra_hf.data import cache as data_cache
from electra_hf.data import tokenizer as data_tokenizer
from electra_hf.data import (
    ExampleBuilder,
    PretrainingDataArguments,
    build_examples_from_lines,
    build_pretraining_datasets,
    describe_examples,
    load_or_train_tokenizer,
    load_raw_datasets,
    train_wordpiece_tokenizer,
    write_demo_corpus,
)

disable_progress_bars()

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
GUTENBERG_05 = SHARED / "gutenberg" / "gutenberg_05.txt.gz"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_lines() -> list[str]:
    """A few thousand lines of real English prose (the pydoc corpus if shared/data is absent)."""
    if GUTENBERG_05.is_file():
        with gzip.open(GUTENBERG_05, "rt", encoding="utf-8") as f:
            return [line.rstrip("\n") for line in itertools.islice(f, 4000)]
    from pydoc_data.topics import topics

    return [line for text in topics.values() for line in text.splitlines()][:4000]


@pytest.fixture(scope="module")
def real_tokenizer(real_lines) -> ElectraTokenizerFast:
    return train_wordpiece_tokenizer([l for l in real_lines if l.strip()], vocab_size=600, show_progress=False)


def make_docs(n_docs: int, seed: int, words_per_doc: int = 30, min_lines: int = 1, max_lines: int = 60,
              max_words: int = 12) -> list[list[str]]:
    """Documents whose words are unique to them ('d{k}w{j}'), so a token tells its document."""
    rng = random.Random(seed)
    docs = []
    for k in range(n_docs):
        lines = []
        for _ in range(rng.randint(min_lines, max_lines)):
            lines.append(" ".join(f"d{k}w{rng.randrange(words_per_doc)}" for _ in range(rng.randint(1, max_words))))
        docs.append(lines)
    return docs


def word_tokenizer(n_docs: int, words_per_doc: int = 30) -> ElectraTokenizerFast:
    """A WordPiece tokenizer whose vocabulary holds every 'd{k}w{j}' word as one token."""
    vocab = {t: i for i, t in enumerate(data.SPECIAL_TOKENS)}
    for k in range(n_docs):
        for j in range(words_per_doc):
            vocab[f"d{k}w{j}"] = len(vocab)
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return ElectraTokenizerFast(tokenizer_object=backend)


def doc_of(tokenizer) -> dict[int, int]:
    return {i: int(t[1:].split("w")[0]) for t, i in tokenizer.get_vocab().items() if t.startswith("d")}


def write_docs(path: Path, docs: list[list[str]]) -> str:
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return str(path)


def examples_as_lists(ds) -> list[tuple]:
    return [(tuple(e["input_ids"]), tuple(e["token_type_ids"])) for e in ds]


def check_layout(ids: list[int], types: list[int], max_len: int, cls_id: int, sep_id: int) -> bool:
    """[CLS] A [SEP] (B [SEP]); types 0 up to the first [SEP], 1 after; returns 'has B'."""
    assert len(ids) == len(types) <= max_len
    assert ids[0] == cls_id and ids[-1] == sep_id
    seps = [i for i, t in enumerate(ids) if t == sep_id]
    assert ids.count(cls_id) == 1 and len(seps) in (1, 2)
    first_sep = seps[0]
    assert first_sep >= 2, "segment A is never empty"
    assert types == [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1)
    if len(seps) == 2:
        assert seps[1] == len(ids) - 1 and seps[1] - first_sep >= 2, "segment B is non-empty"
    return len(seps) == 2


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------
def test_arguments_defaults_and_parser():
    args = PretrainingDataArguments()
    assert (args.max_seq_length, args.short_seq_prob, args.single_segment_prob) == (None, 0.05, 0.1)
    assert (args.vocab_size, args.lowercase, args.text_column) == (30522, True, "text")
    assert args.validation_split_percentage == 1.0
    assert args.train_files == [] and args.train_files is not PretrainingDataArguments().train_files
    (parsed,) = HfArgumentParser(PretrainingDataArguments).parse_args_into_dataclasses(
        ["--train_files", "a.txt", "b/*.txt.gz", "--no_lowercase", "--max_seq_length", "512", "--streaming"]
    )
    assert parsed.train_files == ["a.txt", "b/*.txt.gz"] and not parsed.lowercase
    assert parsed.max_seq_length == 512 and parsed.streaming


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"short_seq_prob": 1.5}, "short_seq_prob"),
        ({"single_segment_prob": -0.1}, "single_segment_prob"),
        ({"max_seq_length": 4}, "max_seq_length"),
        ({"validation_split_percentage": 100}, "validation_split_percentage"),
        ({"dataset_name": "x", "train_files": ["a.txt"]}, "not both"),
    ],
)
def test_arguments_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PretrainingDataArguments(**kwargs)


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def test_tokenizer_training_special_tokens_and_reload(real_tokenizer, tmp_path):
    tok = real_tokenizer
    assert len(tok) == 600
    special_ids = [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
    assert special_ids == [0, 1, 2, 3, 4]
    enc = tok("The first sentence.", "And the second one!")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    sep = ids.index(tok.sep_token_id)
    assert ids[0] == 2 and ids[-1] == 3 and types == [0] * (sep + 1) + [1] * (len(ids) - sep - 1)
    assert tok.decode(tok("hello world")["input_ids"], skip_special_tokens=True) == "hello world"

    tok.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    texts = ["It was the best of times, it was the worst of times.", "Ünïcödé àccents — and UPPER case", "x" * 50]
    for text in texts:
        assert reloaded(text, "a pair")["input_ids"] == tok(text, "a pair")["input_ids"]
    assert reloaded.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()


def test_tokenizer_lowercase_and_accents(real_lines):
    texts = [l for l in real_lines if l.strip()][:1500] + ["Café naïve résumé"] * 5
    uncased = train_wordpiece_tokenizer(texts, vocab_size=400, lowercase=True, show_progress=False)
    cased = train_wordpiece_tokenizer(texts, vocab_size=400, lowercase=False, show_progress=False)
    assert uncased.backend_tokenizer.normalizer.normalize_str("CAFÉ Naïve") == "cafe naive"
    assert uncased("CAFÉ Naïve")["input_ids"] == uncased("cafe naive")["input_ids"]
    assert cased.backend_tokenizer.normalizer.normalize_str("CAFÉ Naïve") == "CAFÉ Naïve"
    assert cased("CAFÉ")["input_ids"] != cased("cafe")["input_ids"]
    assert "é" in cased.get_vocab() and "é" not in uncased.get_vocab()


def test_load_or_train_tokenizer_is_cached(tmp_path, monkeypatch, real_lines):
    raw = DatasetDict({"train": Dataset.from_dict({"text": [l.strip() for l in real_lines[:800]] + [""]})})
    args = PretrainingDataArguments(cache_dir=str(tmp_path / "cache"), vocab_size=300)
    calls = []
    original = data_tokenizer.train_wordpiece_tokenizer
    monkeypatch.setattr(data_tokenizer, "train_wordpiece_tokenizer", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = load_or_train_tokenizer(args, raw)
    second = load_or_train_tokenizer(args, raw)
    assert len(calls) == 1 and len(first) == 300
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    args.vocab_size = 350  # another setting, another tokenizer
    assert len(load_or_train_tokenizer(args, raw)) == 350 and len(calls) == 2


def test_interrupted_tokenizer_training_is_not_reused(tmp_path, monkeypatch, real_lines):
    raw = DatasetDict({"train": Dataset.from_dict({"text": [l.strip() for l in real_lines[:800]] + [""]})})
    args = PretrainingDataArguments(cache_dir=str(tmp_path / "cache"), vocab_size=300)
    cache = tmp_path / "cache"
    original = data_tokenizer.train_wordpiece_tokenizer

    def interrupted(*a, **k):
        raise KeyboardInterrupt("simulated interruption")

    monkeypatch.setattr(data_tokenizer, "train_wordpiece_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_or_train_tokenizer(args, raw)
    assert not list(cache.glob("tokenizer-*/")) and not list(cache.glob(".tmp-*"))

    def die_after_training(*a, **k):  # a hard crash while the tokenizer is being written
        os._exit(3)

    monkeypatch.setattr(data_tokenizer, "train_wordpiece_tokenizer", die_after_training)
    proc = in_child_process(load_or_train_tokenizer, args, raw)
    proc.join(120)
    assert proc.exitcode == 3 and list(cache.glob(".tmp-tokenizer-*")) and not list(cache.glob("tokenizer-*/"))
    calls = []
    monkeypatch.setattr(data_tokenizer, "train_wordpiece_tokenizer", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = load_or_train_tokenizer(args, raw)
    assert len(calls) == 1 and len(first) == 300 and not list(cache.glob(".tmp-*"))
    args.overwrite_cache = True  # trained by this process: kept
    assert load_or_train_tokenizer(args, raw).backend_tokenizer.to_str() == first.backend_tokenizer.to_str()
    monkeypatch.setattr(data_cache, "_PROCESS_START", time.time() + 1)  # trained before it: retrained
    load_or_train_tokenizer(args, raw)
    assert len(calls) == 2


def test_load_tokenizer_by_path_checks_special_tokens(tmp_path, real_tokenizer):
    real_tokenizer.save_pretrained(tmp_path / "good")
    loaded = load_or_train_tokenizer(PretrainingDataArguments(tokenizer_name_or_path=str(tmp_path / "good")))
    assert loaded.mask_token_id == 4

    backend = Tokenizer(models.WordPiece({"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "a": 4}, unk_token="[UNK]"))
    no_mask = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]")
    no_mask.save_pretrained(tmp_path / "bad")
    with pytest.raises(ValueError, match="mask_token"):
        load_or_train_tokenizer(PretrainingDataArguments(tokenizer_name_or_path=str(tmp_path / "bad")))


# --------------------------------------------------------------------------------------------
# The example builder
# --------------------------------------------------------------------------------------------
def official_examples(lines, tokenizer, rng, max_length, short_seq_prob=0.05, single_segment_prob=0.1):
    """google-research/electra build_pretraining_dataset.ExampleBuilder, transcribed (text in,
    per-line tokenize/convert_tokens_to_ids, random.* -> rng), plus the end-of-file flush."""

    class OfficialBuilder:
        def __init__(self):
            self._current_sentences, self._current_length = [], 0
            self._max_length = self._target_length = max_length

        def add_line(self, line):
            line = line.strip().replace("\n", " ")
            if (not line) and self._current_length != 0:
                return self._create_example()
            bert_tokids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(line))
            self._current_sentences.append(bert_tokids)
            self._current_length += len(bert_tokids)
            if self._current_length >= self._target_length:
                return self._create_example()
            return None

        def _create_example(self):
            if rng.random() < single_segment_prob:
                first_segment_target_length = 100000
            else:
                first_segment_target_length = (self._target_length - 3) // 2
            first_segment, second_segment = [], []
            for sentence in self._current_sentences:
                if (len(first_segment) == 0 or
                        len(first_segment) + len(sentence) < first_segment_target_length or
                        (len(second_segment) == 0 and
                         len(first_segment) < first_segment_target_length and
                         rng.random() < 0.5)):
                    first_segment += sentence
                else:
                    second_segment += sentence
            first_segment = first_segment[:self._max_length - 2]
            second_segment = second_segment[:max(0, self._max_length - len(first_segment) - 3)]
            self._current_sentences, self._current_length = [], 0
            if rng.random() < short_seq_prob:
                self._target_length = rng.randint(5, self._max_length)
            else:
                self._target_length = self._max_length
            input_ids = [tokenizer.cls_token_id] + first_segment + [tokenizer.sep_token_id]
            segment_ids = [0] * len(input_ids)
            if second_segment:
                input_ids += second_segment + [tokenizer.sep_token_id]
                segment_ids += [1] * (len(second_segment) + 1)
            return input_ids, segment_ids

    builder, out = OfficialBuilder(), []
    for line in list(lines) + [""]:  # the official writer adds "" at the end of each file
        example = builder.add_line(line)
        if example:
            out.append(example)
    return out


@pytest.mark.parametrize("max_length, probs", [(128, (0.05, 0.1)), (24, (0.3, 0.4))])
def test_builder_matches_official_code(real_lines, real_tokenizer, max_length, probs):
    lines = real_lines[:2500] + ["   ", "", "", "\t", "a final line"]
    mine = build_examples_from_lines(lines, real_tokenizer, max_seq_length=max_length, short_seq_prob=probs[0],
                                     single_segment_prob=probs[1], rng=random.Random(7))
    theirs = official_examples(lines, real_tokenizer, random.Random(7), max_length, *probs)
    assert len(theirs) > 100
    assert list(zip(mine["input_ids"], mine["token_type_ids"])) == theirs


def test_builder_layout_and_document_boundaries():
    n_docs, max_len = 40, 64
    docs = make_docs(n_docs, seed=1, max_lines=40, max_words=30)
    docs[3] = ["d3w1 " * 200]  # one line longer than max_len: trimmed, not spilled
    docs[5] = ["d5w2"]  # a one-token document
    tok = word_tokenizer(n_docs)
    owner = doc_of(tok)
    lines = [line for doc in docs for line in doc + [""]]
    out = build_examples_from_lines(lines, tok, max_seq_length=max_len, rng=random.Random(0))
    counts = {k: Counter(tok(" ".join(doc), add_special_tokens=False)["input_ids"]) for k, doc in enumerate(docs)}
    n_pairs, seen_docs = 0, set()
    for ids, types in zip(out["input_ids"], out["token_type_ids"]):
        n_pairs += check_layout(ids, types, max_len, tok.cls_token_id, tok.sep_token_id)
        content = [i for i in ids if i not in (tok.cls_token_id, tok.sep_token_id)]
        owners = {owner[i] for i in content}
        assert len(owners) == 1, f"an example crosses a document boundary: documents {owners}"
        k = owners.pop()
        seen_docs.add(k)
        # every token of the example is in its document, as often as there
        assert all(n <= counts[k][i] for i, n in Counter(content).items())
    assert seen_docs == set(range(n_docs)) and n_pairs > len(out["input_ids"]) / 2
    assert max(len(ids) for ids in out["input_ids"]) == max_len


def test_builder_probabilities():
    """3-token lines in long documents: only the 10% draw makes a single-segment example, and
    ~5% x (119/124: targets 5..123 stay below 128) of the examples are short."""
    tok = word_tokenizer(4, words_per_doc=50)
    rng = random.Random(3)
    lines = []
    for k in range(4):
        lines += [" ".join(f"d{k}w{rng.randrange(50)}" for _ in range(3)) for _ in range(25_000)] + [""]
    out = build_examples_from_lines(lines, tok, rng=random.Random(11))
    ds = Dataset.from_dict(out)
    stats = describe_examples(ds, max_seq_length=128)
    assert stats["num_examples"] > 2000
    assert abs(stats["frac_single_segment"] - 0.1) < 0.02, stats
    assert abs(stats["frac_shorter_than_max"] - 0.05 * 119 / 124) < 0.015, stats
    assert max(len(i) for i in out["input_ids"]) == 128

    none = build_examples_from_lines(lines[:30_000], tok, rng=random.Random(11), short_seq_prob=0.0,
                                     single_segment_prob=0.0)
    nstats = describe_examples(Dataset.from_dict(none), max_seq_length=128)
    assert nstats["frac_single_segment"] < 0.01 and nstats["frac_shorter_than_max"] < 0.01, nstats  # doc ends only


def test_example_builder_flush_and_blank_lines():
    rng = random.Random(0)
    builder = ExampleBuilder(10, cls_token_id=2, sep_token_id=3, rng=rng, short_seq_prob=0.0, single_segment_prob=0.0)
    assert builder.add_line(None) is None  # a blank line before any text is nothing
    assert builder.add_line([7, 7]) is None
    assert builder.add_line(None) == ([2, 7, 7, 3], [0, 0, 0, 0])  # document boundary flushes
    assert builder.flush() is None
    builder.add_line([5, 5, 5])
    ids, types = builder.add_line([6, 6, 6, 6, 6, 6, 6])  # reaches the target of 10: A + B, trimmed to 10
    assert len(ids) == 10 and ids[:5] == [2, 5, 5, 5, 3] and ids[-1] == 3 and types[5:] == [1] * 5


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
TEXT = "  First line of doc one.\r\nSecond line.\n\n\n \t \nDoc two, only line.\nlast line, no newline"
TEXT_ROWS = ["First line of doc one.", "Second line.", "", "Doc two, only line.", "last line, no newline", ""]


def read_rows(tmp_path, files, **kwargs) -> DatasetDict:
    args = PretrainingDataArguments(train_files=[str(f) for f in files], validation_split_percentage=0,
                                    cache_dir=str(tmp_path / "cache"), **kwargs)
    return load_raw_datasets(args)


def test_read_text_and_gzip(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    with gzip.open(tmp_path / "a.txt.gz", "wb") as f:
        f.write(TEXT.encode())
    assert read_rows(tmp_path, [tmp_path / "a.txt"])["train"]["text"] == TEXT_ROWS
    assert read_rows(tmp_path, [tmp_path / "a.txt.gz"])["train"]["text"] == TEXT_ROWS
    # two files: the end of a file ends a document even without a blank line
    (tmp_path / "b.txt").write_text("b one\nb two")
    rows = read_rows(tmp_path, [tmp_path / "b.txt", tmp_path / "*.gz"])["train"]["text"]
    assert rows == ["b one", "b two", ""] + TEXT_ROWS
    rows = read_rows(tmp_path, [tmp_path / "a.txt"], blanks_separate_docs=False)["train"]["text"]
    assert rows == [r for r in TEXT_ROWS if r] + [""]


def test_read_jsonl_json_parquet(tmp_path):
    docs = [{"text": "Line one.\n\n  Line two after a blank line.\n", "id": 1}, {"text": "Second document."},
            {"text": "   \n"}, {"text": "Third\r\ndocument"}]
    expected = ["Line one.", "Line two after a blank line.", "", "Second document.", "", "Third", "document", ""]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n\n")
    (tmp_path / "d.json").write_text(json.dumps(docs))
    pq.write_table(pa.table({"content": [d["text"] for d in docs]}), tmp_path / "d.parquet")
    assert read_rows(tmp_path, [tmp_path / "d.jsonl"])["train"]["text"] == expected
    assert read_rows(tmp_path, [tmp_path / "d.json"])["train"]["text"] == expected
    assert read_rows(tmp_path, [tmp_path / "d.parquet"], text_column="content")["train"]["text"] == expected


def test_dataset_name_path(tmp_path):
    """--dataset_name goes through datasets.load_dataset (a local data set directory here: no Hub)."""
    repo = tmp_path / "my_dataset"
    repo.mkdir()
    rows = [{"text": "a b\n\nc", "meta": 1}, {"text": "d", "meta": 2}]
    (repo / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (repo / "validation.jsonl").write_text(json.dumps({"text": "v", "meta": 3}))
    args = PretrainingDataArguments(dataset_name=str(repo), cache_dir=str(tmp_path / "c"))
    raw = load_raw_datasets(args)
    assert raw["train"]["text"] == ["a b", "c", "", "d", ""] and raw["validation"]["text"] == ["v", ""]
    args.streaming = True
    streamed = load_raw_datasets(args)
    assert [r["text"] for r in streamed["train"]] == ["a b", "c", "", "d", ""]
    assert load_or_train_tokenizer(args, streamed).mask_token_id == 4  # trained from a stream (not cached)
    with pytest.raises(ValueError, match=r"no column 'body'"):
        load_raw_datasets(PretrainingDataArguments(dataset_name=str(repo), text_column="body",
                                                   cache_dir=str(tmp_path / "c")))


def test_validation_split_is_carved_at_a_document_boundary(tmp_path):
    docs = make_docs(50, seed=2)
    path = write_docs(tmp_path / "c.txt", docs)
    args = PretrainingDataArguments(train_files=[path], validation_split_percentage=10, cache_dir=str(tmp_path / "c"))
    raw = load_raw_datasets(args)
    train, val = raw["train"]["text"], raw["validation"]["text"]
    total = sum(len(d) + 1 for d in docs)
    assert len(train) + len(val) == total and train[-1] == "" and val[-1] == ""
    assert abs(len(val) - 0.1 * total) <= max(len(d) for d in docs) + 1
    train_docs = {w.split("w")[0] for line in train for w in line.split()}
    val_docs = {w.split("w")[0] for line in val for w in line.split()}
    assert train_docs and val_docs and not train_docs & val_docs
    # explicit validation files are used as they are
    vpath = write_docs(tmp_path / "v.txt", [["held out"]])
    raw = load_raw_datasets(PretrainingDataArguments(train_files=[path], validation_files=[vpath],
                                                     cache_dir=str(tmp_path / "c")))
    assert raw["validation"]["text"] == ["held out", ""] and len(raw["train"]) == total


# One malformed file per row: (file name, bytes, what the error says).
MALFORMED_FILES = [
    ("empty.txt", b"", r"empty\.txt: the file is empty"),
    ("blank.txt", b"\n  \n\n", r"blank\.txt: the file contains no text"),
    ("bad.txt", b"fine\nalso fine\nbad \xff byte\n", r"bad\.txt: invalid UTF-8 at line 3 \(byte offset 19"),
    ("bad.txt.gz", gzip.compress(b"ok\n" * 100_000 + b"\xc3(\n"), r"bad\.txt\.gz: invalid UTF-8 at line 100001"),
    ("notgz.txt.gz", b"plain text, not gzip\n", r"notgz\.txt\.gz: cannot read"),
    ("col.jsonl", b'{"text": "ok"}\n{"body": "no text field"}\n', r"col\.jsonl: line 2: no 'text' field"),
    ("badjson.jsonl", b'{"text": "ok"}\n{"text": oops}\n', r"badjson\.jsonl: line 2: invalid JSON"),
    ("badutf.jsonl", b'{"text": "ok"}\n{"text": "\xe9"}\n', r"badutf\.jsonl: invalid UTF-8 at line 2"),
]


@pytest.mark.parametrize("name, content, message", MALFORMED_FILES, ids=[name for name, _, _ in MALFORMED_FILES])
def test_a_malformed_file_is_named_in_its_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_rows(tmp_path, [tmp_path / name])


def test_bad_inputs_raise_clear_errors(tmp_path):
    def load(files, **kwargs):
        return read_rows(tmp_path, files, **kwargs)

    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load([tmp_path / "nope.txt"])
    with pytest.raises(FileNotFoundError, match=r"matches no file"):
        load([tmp_path / "*.nothing"])
    with pytest.raises(IsADirectoryError, match="directory"):
        load([tmp_path])
    pq.write_table(pa.table({"body": ["a"]}), tmp_path / "col.parquet")
    with pytest.raises(ValueError, match=r"col\.parquet: no column 'text'"):
        load([tmp_path / "col.parquet"])
    with pytest.raises(ValueError, match="No training data"):
        load_raw_datasets(PretrainingDataArguments())
    (tmp_path / "ok.txt").write_text("one document only\n")
    with pytest.raises(ValueError, match="single document"):
        load_raw_datasets(PretrainingDataArguments(train_files=[str(tmp_path / "ok.txt")],
                                                   cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ValueError, match="--streaming cannot carve"):
        load_raw_datasets(PretrainingDataArguments(train_files=[str(tmp_path / "ok.txt")], streaming=True))


def test_demo_corpus(tmp_path):
    from pydoc_data.topics import topics

    (path,) = write_demo_corpus(tmp_path)
    text = Path(path).read_text(encoding="utf-8")
    documents = text.split("\n\n")
    assert len(documents) == sum(1 for t in topics.values() if t.strip()) >= 70
    assert len(text) > 300_000 and "\n\n\n" not in text
    mtime = os.stat(path).st_mtime_ns
    assert write_demo_corpus(tmp_path) == [path] and os.stat(path).st_mtime_ns == mtime  # not rewritten
    parts = write_demo_corpus(tmp_path / "split", num_files=3)
    assert len(parts) == 3 and "\n".join(Path(p).read_text() for p in parts) == text
    raw = read_rows(tmp_path, [path])
    assert raw["train"]["text"].count("") == len(documents)


# --------------------------------------------------------------------------------------------
# Building, caching, parallelism
# --------------------------------------------------------------------------------------------
@pytest.fixture
def small_corpus(tmp_path, monkeypatch):
    """~6,000 lines in 120 documents, chunks of 500 lines (so several chunks and workers)."""
    monkeypatch.setattr(data_builder, "LINES_PER_CHUNK", 500)
    docs = make_docs(120, seed=5)
    path = write_docs(tmp_path / "corpus.txt", docs)
    return path, word_tokenizer(120)


def data_args(path, cache, **kwargs):
    kwargs.setdefault("validation_split_percentage", 5)
    return PretrainingDataArguments(train_files=[path], cache_dir=str(cache), max_seq_length=64, **kwargs)


def build(args, tokenizer):
    return build_pretraining_datasets(args, tokenizer, load_raw_datasets(args))


def test_build_pretraining_datasets(small_corpus, tmp_path):
    path, tok = small_corpus
    ds = build(data_args(path, tmp_path / "c", preprocessing_seed=1), tok)
    assert set(ds) == {"train", "validation"} and ds["train"].column_names == ["input_ids", "token_type_ids"]
    owner = doc_of(tok)
    for split in ds.values():
        for e in split:
            check_layout(e["input_ids"], e["token_type_ids"], 64, tok.cls_token_id, tok.sep_token_id)
            assert len({owner[i] for i in e["input_ids"] if i > 4}) == 1
    stats = describe_examples(ds["train"], 64)
    assert stats["num_examples"] == len(ds["train"]) > 300 and stats["max_length"] == 64
    # deterministic per seed, different for another seed, limits applied after the cache
    again = build(data_args(path, tmp_path / "c2", preprocessing_seed=1), tok)
    assert examples_as_lists(again["train"]) == examples_as_lists(ds["train"])
    other = build(data_args(path, tmp_path / "c", preprocessing_seed=2), tok)
    assert examples_as_lists(other["train"]) != examples_as_lists(ds["train"])
    few = build(data_args(path, tmp_path / "c", preprocessing_seed=1, max_train_samples=7, max_eval_samples=2), tok)
    assert examples_as_lists(few["train"]) == examples_as_lists(ds["train"])[:7] and len(few["validation"]) == 2


def test_num_proc_and_streaming_give_the_same_examples(small_corpus, tmp_path):
    path, tok = small_corpus
    one = build(data_args(path, tmp_path / "a", validation_split_percentage=0), tok)
    two = build(data_args(path, tmp_path / "b", validation_split_percentage=0, preprocessing_num_workers=2), tok)
    assert examples_as_lists(one["train"]) == examples_as_lists(two["train"])
    streamed = build(data_args(path, tmp_path / "s", validation_split_percentage=0, streaming=True), tok)
    assert isinstance(streamed, IterableDatasetDict)
    assert examples_as_lists(streamed["train"]) == examples_as_lists(one["train"])


def count_chunk_builds(monkeypatch) -> list[int]:
    """Record each chunk the example builder builds (none when the examples come from the cache)
    as the number of rows of its split, which tells the splits apart."""
    calls = []
    original = data_builder._build_chunks_batch

    def counted(batch, **kwargs):
        calls.append(len(kwargs["lines"]))
        return original(batch, **kwargs)

    monkeypatch.setattr(data_builder, "_build_chunks_batch", counted)
    return calls


def finished_example_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("examples-*/*.arrow"))


def leftovers(cache: Path) -> list[Path]:
    """Files an interrupted preparation left: map's temporary files, our temporary directories."""
    return [p for p in cache.glob("examples-*/*") if p.suffix != ".arrow"] + list(cache.glob(".tmp-*"))


def test_cache_is_reused_and_keyed(small_corpus, tmp_path, monkeypatch):
    path, tok = small_corpus
    calls = count_chunk_builds(monkeypatch)
    first = build(data_args(path, tmp_path / "c"), tok)
    n = len(calls)
    assert len(set(calls)) == 2  # train and validation built
    second = build(data_args(path, tmp_path / "c"), tok)
    assert len(calls) == n  # reused: no chunk built again
    assert second["train"].cache_files == first["train"].cache_files
    assert examples_as_lists(second["train"]) == examples_as_lists(first["train"])
    build(data_args(path, tmp_path / "c", short_seq_prob=0.2), tok)  # another setting: rebuilt
    assert len(calls) == 2 * n
    # --overwrite_cache: a cache completed after this process started (another rank's) is kept,
    build(data_args(path, tmp_path / "c", overwrite_cache=True), tok)
    assert len(calls) == 2 * n
    monkeypatch.setattr(data_cache, "_PROCESS_START", time.time() + 1)  # ... an older one is rebuilt
    build(data_args(path, tmp_path / "c", overwrite_cache=True), tok)
    assert len(calls) == 3 * n
    os.utime(path, ns=(1, 1))  # the input file changed (mtime): lines and examples rebuilt
    build(data_args(path, tmp_path / "c"), tok)
    assert len(calls) == 4 * n
    write_docs(Path(path), make_docs(120, seed=6))  # new content: read again, examples follow it
    changed = build(data_args(path, tmp_path / "c"), tok)
    assert examples_as_lists(changed["train"]) != examples_as_lists(first["train"])
    fresh = build(data_args(path, tmp_path / "new"), tok)
    assert examples_as_lists(changed["train"]) == examples_as_lists(fresh["train"])


def in_child_process(target, *args) -> int:
    """Run ``target(*args)`` in a forked process (a real second process that shares the already
    imported modules, so no multi-second import) and return its exit code."""
    def run():
        code = 1
        try:
            target(*args)
            code = 0
        finally:
            os._exit(code)

    proc = multiprocessing.get_context("fork").Process(target=run)
    proc.start()
    return proc


def test_interrupted_preparation_leaves_no_complete_cache(small_corpus, tmp_path, monkeypatch):
    path, tok = small_corpus
    cache = tmp_path / "c"
    original = data_builder._build_chunks_batch

    def interrupt_third_chunk(batch, **kwargs):
        if batch["chunk_start"][0] == 1000:
            raise KeyboardInterrupt("simulated interruption")
        return original(batch, **kwargs)

    monkeypatch.setattr(data_builder, "_build_chunks_batch", interrupt_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        build(data_args(path, cache), tok)
    assert not finished_example_files(cache) and not leftovers(cache)

    # a hard crash: the process dies after writing part of the output ...
    def die_mid_build(batch, **kwargs):
        if batch["chunk_start"][0] == 1000:
            os._exit(3)
        return original(batch, **kwargs)

    monkeypatch.setattr(data_builder, "_build_chunks_batch", die_mid_build)
    proc = in_child_process(build, data_args(path, cache), tok)
    proc.join(120)
    assert proc.exitcode == 3
    assert leftovers(cache) and not finished_example_files(cache)
    # ... which is never taken as complete: the next run builds, removes it, and gives the right data
    monkeypatch.setattr(data_builder, "_build_chunks_batch", original)
    rebuilt = build(data_args(path, cache), tok)
    assert not leftovers(cache)
    reference = build(data_args(path, tmp_path / "ref"), tok)
    assert examples_as_lists(rebuilt["train"]) == examples_as_lists(reference["train"])


def test_two_processes_prepare_one_cache(small_corpus, tmp_path, monkeypatch):
    path, tok = small_corpus
    cache, go = tmp_path / "shared_cache", tmp_path / "go"
    original = data_builder._build_chunks_batch
    builds = []

    def slow(batch, **kwargs):
        builds.append(len(kwargs["lines"]))
        time.sleep(0.1)  # hold the lock long enough for the other process to wait on it
        return original(batch, **kwargs)

    monkeypatch.setattr(data_builder, "_build_chunks_batch", slow)

    def worker(out_file):
        while not go.exists():
            time.sleep(0.01)
        ds = build(data_args(path, cache), tok)
        Path(out_file).write_text(json.dumps({
            "builds": builds, "files": [f["filename"] for f in ds["train"].cache_files],
            "examples": examples_as_lists(ds["train"]),
        }))

    procs = [in_child_process(worker, tmp_path / f"out{i}.json") for i in range(2)]
    go.touch()
    for proc in procs:
        proc.join(180)
        assert proc.exitcode == 0
    results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    # one built train+validation, one reused
    assert sorted(len(set(r["builds"])) for r in results) == [0, 2], results
    assert results[0]["files"] == results[1]["files"] and results[0]["examples"] == results[1]["examples"]
    assert len(finished_example_files(cache)) == 2 and not leftovers(cache)
    monkeypatch.setattr(data_builder, "_build_chunks_batch", original)
    reference = build(data_args(path, tmp_path / "ref"), tok)
    assert [tuple(map(tuple, e)) for e in results[0]["examples"]] == examples_as_lists(reference["train"])


def test_describe_examples():
    ds = Dataset.from_dict({
        "input_ids": [[2, 5, 3], [2, 5, 3, 6, 3], [2, 5, 6, 7, 3]],
        "token_type_ids": [[0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 0]],
    })
    expected = {"num_examples": 3, "num_tokens": 13, "mean_length": 4.333, "max_length": 5,
                "frac_single_segment": 0.66667, "frac_shorter_than_max": 0.33333}
    assert describe_examples(ds) == expected
    assert describe_examples(ds.select([1, 2]), max_seq_length=8)["frac_shorter_than_max"] == 1.0
    assert describe_examples(iter(ds)) == expected  # any iterable of rows


@pytest.mark.slow
def test_real_corpus_and_benchmark_script(tmp_path):
    """The benchmark end to end on a slice of the real corpus (both worker counts agree)."""
    if not GUTENBERG_05.is_file():
        pytest.skip("shared/data is absent")
    from benchmarks import bench_data

    result = bench_data.main(["--max_files", "1", "--max_lines", "30000", "--tokenizer_lines", "30000",
                              "--out_dir", str(tmp_path), "--work_dir", str(tmp_path / "work")])
    one, two = result["runs"]
    assert one["examples"] == two["examples"] > 1000 and one["tokens"] == two["tokens"]
    assert (tmp_path / "data_prep.md").read_text().count("\n| ") == 3
    assert one["stats"]["frac_single_segment"] >= 0.1  # Gutenberg paragraphs are short documents
