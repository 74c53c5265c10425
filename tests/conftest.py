"""Shared tiny factories: a WordPiece tokenizer built in memory and tiny ELECTRA configs.

Everything here is small enough for a 2-core CPU (vocab ~100, hidden 32-64, 2 layers).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from transformers import ElectraTokenizerFast  # noqa: E402

from electra_hf.configuration import ElectraPretrainingConfig  # noqa: E402

TINY_WORDS = (
    "the a of and to in is was he she it that for on with as his her at by had from be this not but "
    "cat dog sat mat house river tree old new little great man woman day night said time"
).split()

SAMPLE_SENTENCES = [
    "the cat sat on the mat.",
    "the old man said that the river was great.",
    "she had a little house by the tree!",
    "it was night, and the dog sat at the house.",
    "he was not at the river that day.",
    "this is a new time for the great old tree?",
]


def build_tiny_tokenizer() -> ElectraTokenizerFast:
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(letters + ".,!?'") + ["##" + c for c in letters]
    vocab += [word for word in TINY_WORDS if word not in vocab]
    return ElectraTokenizerFast(vocab={token: index for index, token in enumerate(vocab)})


@pytest.fixture(scope="session")
def tiny_tokenizer() -> ElectraTokenizerFast:
    return build_tiny_tokenizer()


def tiny_config(vocab_size: int = 96, **overrides) -> ElectraPretrainingConfig:
    """A 2-layer, hidden-64 ELECTRA (generator hidden 32) for tests; overrides go to `from_preset`."""
    overrides.setdefault("hidden_dropout_prob", 0.0)
    overrides.setdefault("attention_probs_dropout_prob", 0.0)
    return ElectraPretrainingConfig.from_preset("tiny", vocab_size=vocab_size, **overrides)


@pytest.fixture
def tiny_config_factory():
    return tiny_config


def tokenize_sentences(tokenizer, sentences=SAMPLE_SENTENCES, pairs=True) -> list[dict]:
    """Examples in the pre-training layout: [CLS] A [SEP] B [SEP] (pairs of consecutive sentences)."""
    if pairs:
        firsts, seconds = sentences[0::2], sentences[1::2]
        encoded = tokenizer(firsts, seconds)
    else:
        encoded = tokenizer(list(sentences))
    return [
        {"input_ids": ids, "token_type_ids": types}
        for ids, types in zip(encoded["input_ids"], encoded["token_type_ids"])
    ]


def save_tiny_discriminator(directory, tokenizer, vocab_size: int | None = None, max_positions: int = 128):
    """A random tiny ElectraForPreTraining (hidden 32, 2 layers) saved with `tokenizer` to
    `directory`, like an export; `vocab_size` sets the model's vocabulary apart from the
    tokenizer's (to test the mismatch check)."""
    from transformers import ElectraConfig, ElectraForPreTraining

    directory = Path(directory)
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=vocab_size or len(tokenizer), embedding_size=32, hidden_size=32,
                           num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=max_positions)
    directory.mkdir(parents=True, exist_ok=True)
    ElectraForPreTraining(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def build_tiny_discriminator(directory, texts, vocab_size: int = 400, lowercase: bool = True,
                             max_positions: int = 128):
    """A WordPiece tokenizer trained on `texts` (electra_hf.data's trainer) and a random tiny
    ElectraForPreTraining (hidden 32, 2 layers), saved to `directory` like an export."""
    from electra_hf.data import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=vocab_size, lowercase=lowercase, min_frequency=0,
                                          show_progress=False)
    return save_tiny_discriminator(directory, tokenizer, max_positions=max_positions)


GLUE_DIR = Path(os.environ.get("ELECTRA_HF_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))


def build_glue_discriminator(directory, sst2_sentences: int, vocab_size: int, min_frequency: int = 2,
                             model_vocab_size: int | None = None):
    """A lowercased WordPiece vocabulary (tokenizers' BertWordPieceTokenizer, read back as a
    BertTokenizer) trained on the first `sst2_sentences` SST-2 and 199 MRPC training sentences,
    saved with a random tiny ElectraForPreTraining (:func:`save_tiny_discriminator`)."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    directory = Path(directory)
    sst2 = (GLUE_DIR / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:1 + sst2_sentences]
    mrpc = (GLUE_DIR / "MRPC" / "train.tsv").read_text(encoding="utf-8-sig").splitlines()[1:200]
    texts = [line.split("\t")[0] for line in sst2] + [line.split("\t")[-1] for line in mrpc]
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    directory.mkdir(parents=True, exist_ok=True)
    wordpiece.save_model(str(directory))
    tokenizer = BertTokenizer(vocab=str(directory / "vocab.txt"), do_lower_case=True)
    return save_tiny_discriminator(directory, tokenizer, vocab_size=model_vocab_size)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny discriminator with a WordPiece vocabulary of SST-2 sentences, saved to a folder."""
    return build_glue_discriminator(tmp_path_factory.mktemp("tiny_electra"), sst2_sentences=599, vocab_size=400,
                                    min_frequency=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


GUTENBERG = Path(os.environ.get("ELECTRA_HF_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data" / \
    "corpus" / "gutenberg" / "gutenberg_05.txt.gz"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """~4,000 lines of real English prose (one book chunk), documents split at blank lines."""
    import gzip

    if not GUTENBERG.is_file():
        pytest.skip(f"shared corpus not found at {GUTENBERG}")
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    with gzip.open(GUTENBERG, "rt", encoding="utf-8") as source:
        lines = [next(source) for _ in range(4000)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


LOCAL_METRIC_SCRIPT = '''
import datasets
import evaluate


class {class_name}(evaluate.Metric):
    def _info(self):
        value = datasets.Value("{value_type}")
        return evaluate.MetricInfo(description="test metric", citation="", inputs_description="",
                                   features=datasets.Features({{"predictions": value, "references": value}}))

    def _compute(self, predictions, references):
        return {{"mean_prediction": sum(predictions) / len(predictions), "accuracy": -1.0,
                 "per_example": list(predictions)}}
'''


def write_local_metric(directory, value_type: str = "int64") -> str:
    """An `evaluate` metric folder (``<directory>/mean_prediction/mean_prediction.py``) that reports
    ``mean_prediction``, an ``accuracy`` of -1 (a key clash) and a list (not a number); returns its path."""
    folder = Path(directory) / "mean_prediction"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mean_prediction.py").write_text(LOCAL_METRIC_SCRIPT.format(class_name="MeanPrediction",
                                                                           value_type=value_type))
    return str(folder)


class StandInHfApi:
    """Stands in for ``huggingface_hub.HfApi``: records every call and copies each uploaded folder
    (the caller may delete it afterwards) to ``uploads_dir/<n>``."""

    calls: list = []
    uploads_dir = None

    def __init__(self, token=None):
        self.calls.append(("init", {"token": token}))

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        import shutil

        copy = Path(self.uploads_dir) / str(len(self.calls))
        shutil.copytree(kwargs["folder_path"], copy)
        self.calls.append(("upload_folder", {**kwargs, "copy": copy}))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/{len(self.calls)}"

    @classmethod
    def uploaded(cls, repo_id: str):
        """The copy of the one folder uploaded to ``repo_id`` (fails when there is not exactly one)."""
        copies = [kwargs["copy"] for name, kwargs in cls.calls if name == "upload_folder" and kwargs["repo_id"] == repo_id]
        assert len(copies) == 1, f"{len(copies)} uploads to {repo_id}: {cls.calls}"
        return copies[0]


@pytest.fixture
def hub_stand_in(monkeypatch, tmp_path):
    """``huggingface_hub.HfApi`` replaced by :class:`StandInHfApi`; returns the class (its ``calls``)."""
    import huggingface_hub

    stand_in = type("RecordingHfApi", (StandInHfApi,), {"calls": [], "uploads_dir": tmp_path / "hub_uploads"})
    monkeypatch.setattr(huggingface_hub, "HfApi", stand_in)
    return stand_in


def labelled_sentences(n: int, seed: int = 0) -> list[tuple[str, str, float]]:
    """``n`` (sentence, class, score) rows from :data:`TINY_WORDS`: the class is ``animal`` when the
    sentence names a cat or a dog (else ``place``), the score the share of such words (a float)."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(TINY_WORDS, 6)
        animals = sum(word in ("cat", "dog") for word in words)
        rows.append((" ".join(words) + ".", "animal" if animals else "place", round(animals / 6 + rng.random() / 10, 3)))
    return rows


def write_text_file(path, text: str):
    """Write ``text`` as UTF-8 to ``path``, gzip-compressed when its name ends in ``.gz``; returns the path."""
    import gzip

    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def write_table(path, header: list[str], rows: list, delimiter: str = ",") -> str:
    """A CSV (or, with ``delimiter="\\t"``, TSV) file with a header line; returns its path."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def load_script(name: str):
    """The repository's script ``<name>.py`` as a module (registered in ``sys.modules``: dataclasses
    and HfArgumentParser resolve the annotations through it)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        return loaded  # one module per script, whichever test file loaded it first
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# Tiny networks of other encoder families, and plain checkpoint pairs (continued pre-training)
# --------------------------------------------------------------------------------------------
TINY_NETWORK = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
FAMILIES = ("electra", "deberta-v2", "bert", "modernbert")


def tiny_family_config(family: str, vocab_size: int = 96, **overrides) -> ElectraPretrainingConfig:
    """A tiny RTD config of an encoder family, dropout off. "electra": the `tiny` preset (generator
    1/2 wide); "deberta-v2": the DeBERTa-v3 preset at hidden 32, 4 layers (generator 2, GDES);
    "bert", "modernbert": hidden 32, 4 layers, generator as wide and half as deep. `overrides`:
    top-level fields."""
    if family == "electra":
        return tiny_config(vocab_size, **overrides)
    if family == "deberta-v2":
        overrides.setdefault("max_seq_length", 128)
        return ElectraPretrainingConfig.from_preset(
            "deberta-v3-xsmall", vocab_size=vocab_size, **{**TINY_NETWORK, "num_hidden_layers": 4},
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)
    from transformers import BertConfig, ModernBertConfig

    network = dict(TINY_NETWORK, num_hidden_layers=4, vocab_size=vocab_size, max_position_embeddings=512)
    if family == "bert":
        discriminator = BertConfig(**network, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    else:
        discriminator = ModernBertConfig(**network, pad_token_id=0, bos_token_id=2, eos_token_id=3, cls_token_id=2,
                                         sep_token_id=3, local_attention=16)
    overrides = {"generator_size_ratio": 1.0, "generator_depth_ratio": 0.5, **overrides}
    return ElectraPretrainingConfig(discriminator_config=discriminator, **overrides)


def save_plain_pair(config: ElectraPretrainingConfig, tokenizer, directory, train_steps: int = 2):
    """A random RTD model of `config`, trained `train_steps` steps on the sample sentences (so GDES
    deltas and RTD heads are not at their initial values), exported as plain checkpoints with the
    tokenizer: returns (generator folder, discriminator folder)."""
    from electra_hf.collator import DataCollatorForElectra
    from electra_hf.export import export_pretrained
    from electra_hf.modeling import ElectraForRTDPretraining

    torch.manual_seed(0)
    model = ElectraForRTDPretraining(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = DataCollatorForElectra(tokenizer, seed=0)(tokenize_sentences(tokenizer))
    for _ in range(train_steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    exports = export_pretrained(model.eval(), directory, tokenizer)
    return exports["generator"], exports["discriminator"]
