"""Continued pre-training: from plain checkpoint pairs, electra_hf checkpoints and exports, by the
Python API and from train_pretrain.py (exact export at step 0, shared tables, GDES delta, resume)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_pretrain
from electra_hf.continued import CONTINUED_LEARNING_RATE, CheckpointSource, gdes_delta, load_initial_weights
from electra_hf.export import export_pretrained
from electra_hf.modeling import ElectraForRTDPretraining

from .conftest import save_plain_pair, tiny_family_config
from .test_scripts_pretrain import read_metrics, train_rows

PAIRS = {  # name: (family, top-level overrides)
    "electra-1:1": ("electra", {"generator_size_ratio": 1.0}),
    "electra-1/4": ("electra", {"generator_size_ratio": 0.25}),
    "deberta-v2": ("deberta-v2", {}),
    "bert": ("bert", {}),
    "modernbert": ("modernbert", {}),
}


def continue_from(source: CheckpointSource, shared_embeddings_from=None, **overrides) -> ElectraForRTDPretraining:
    model = ElectraForRTDPretraining(source.config(overrides))
    load_initial_weights(model, source, shared_embeddings_from)
    return model


def assert_same_weights(folder_a: Path, folder_b: Path) -> None:
    a, b = load_file(folder_a / "model.safetensors"), load_file(folder_b / "model.safetensors")
    assert sorted(a) == sorted(b)
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, different


@pytest.mark.parametrize("name", PAIRS)
def test_a_plain_pair_exports_at_step_0_exactly_the_weights_it_was_given(tiny_tokenizer, tmp_path, name):
    family, overrides = PAIRS[name]
    given = tiny_family_config(family, vocab_size=len(tiny_tokenizer), **overrides)
    generator, discriminator = save_plain_pair(given, tiny_tokenizer, tmp_path / "given")
    source = CheckpointSource.resolve(generator_name_or_path=str(generator), discriminator_name_or_path=str(discriminator))
    config = source.config({})
    # the checkpoints' own networks and true ratios, the family's RTD recipe
    assert config.generator_size_ratio == given.generator_size_ratio
    assert config.generator_depth_ratio == given.generator_depth_ratio
    assert config.embedding_sharing == ("gdes" if family == "deberta-v2" else "all")
    assert config.generator_config.num_hidden_layers == given.generator_config.num_hidden_layers
    model = continue_from(source)
    exported = export_pretrained(model, tmp_path / "again", tiny_tokenizer)
    assert_same_weights(generator, exported["generator"])
    assert_same_weights(discriminator, exported["discriminator"])  # the RTD head too (other families)
    for target, source_name in model.all_tied_weights_keys.items():
        assert model.get_parameter(target) is model.get_parameter(source_name)


def test_shared_tables_that_differ_are_refused_unless_a_network_is_named(tiny_tokenizer, tmp_path):
    from transformers import ElectraForMaskedLM

    generator, discriminator = save_plain_pair(tiny_family_config("electra", len(tiny_tokenizer)), tiny_tokenizer,
                                               tmp_path / "pair")
    plain = ElectraForMaskedLM.from_pretrained(generator)
    with torch.no_grad():
        plain.electra.embeddings.word_embeddings.weight.add_(0.5)
    plain.save_pretrained(generator)
    source = CheckpointSource(generator=str(generator), discriminator=str(discriminator))
    with pytest.raises(ValueError, match="word_embeddings.weight .*shared_embeddings_from"):
        continue_from(source)
    for network, expected in (("generator", plain.electra.embeddings.word_embeddings.weight),
                              ("discriminator", load_file(discriminator / "model.safetensors")[
                                  "electra.embeddings.word_embeddings.weight"])):
        model = continue_from(source, shared_embeddings_from=network)
        assert torch.equal(model.generator.electra.embeddings.word_embeddings.weight, expected)
        assert torch.equal(model.generator.generator_lm_head.weight, expected)  # the output layer follows
    # a pair trained without sharing continues with --embedding_sharing none, each table its own
    model = continue_from(source, embedding_sharing="none")
    assert torch.equal(model.generator.electra.embeddings.word_embeddings.weight,
                       plain.electra.embeddings.word_embeddings.weight)


def test_gdes_delta_reproduces_the_table_bit_for_bit_where_float32_can(caplog):
    torch.manual_seed(0)
    shared = torch.randn(200, 16) * 0.02
    close = shared + torch.randn(200, 16) * 0.002
    assert torch.equal(shared + gdes_delta(shared, close), close)
    independent = torch.randn(200, 16) * 0.02
    with caplog.at_level(logging.WARNING, logger="electra_hf.continued"):
        delta = gdes_delta(shared, independent)
    assert "cannot be written as the shared table" in caplog.text
    assert (shared + delta - independent).abs().max() < 1e-8
    naive = independent - shared
    assert ((shared + delta) != independent).sum() <= ((shared + naive) != independent).sum()


def test_a_checkpoint_continues_under_another_sharing_mode(tiny_tokenizer, tmp_path):
    """An electra_hf checkpoint goes through the same path as a pair: continued with GDES, its
    discriminator starts from exactly the shared table it had."""
    torch.manual_seed(0)
    saved = ElectraForRTDPretraining(tiny_family_config("electra", len(tiny_tokenizer)))
    saved.save_pretrained(tmp_path / "checkpoint")
    source = CheckpointSource.resolve(str(tmp_path / "checkpoint"))
    assert source.checkpoint == str(tmp_path / "checkpoint")
    model = continue_from(source, embedding_sharing="gdes", mask_prob=0.2)
    assert model.config.mask_prob == 0.2 and model.uses_gdes
    assert torch.equal(model.discriminator_word_embedding_matrix(),
                       saved.discriminator.electra.embeddings.word_embeddings.weight)
    assert not model.get_input_embeddings().weight.any()  # the delta


def test_sources_are_resolved_with_clear_errors(tiny_tokenizer, tmp_path):
    generator, discriminator = save_plain_pair(tiny_family_config("bert", len(tiny_tokenizer)), tiny_tokenizer,
                                               tmp_path / "export")
    source = CheckpointSource.resolve(str(tmp_path / "export"))  # an export folder is a pair
    assert (source.generator, source.discriminator) == (str(generator), str(discriminator))
    assert source.tokenizer_path == str(discriminator)
    assert CheckpointSource.resolve() is None
    with pytest.raises(ValueError, match="neither an electra_hf checkpoint .* nor an export folder"):
        CheckpointSource.resolve(str(generator))
    with pytest.raises(ValueError, match="go together"):
        CheckpointSource.resolve(generator_name_or_path=str(generator))
    with pytest.raises(ValueError, match="not both"):
        CheckpointSource.resolve(str(tmp_path / "export"), discriminator_name_or_path=str(discriminator))
    with pytest.raises(ValueError, match="--generator_depth_ratio, --hidden_size: a continued run keeps the networks"):
        source.config({"hidden_size": 64, "generator_depth_ratio": 1.0, "mask_prob": 0.2})


# --------------------------------------------------------------------------------------------
# From train_pretrain.py
# --------------------------------------------------------------------------------------------
def wordpiece_pair(corpus_path: Path, directory: Path, family: str = "electra", **overrides):
    """A plain pair with a WordPiece vocabulary trained on the corpus slice."""
    from electra_hf.data import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(corpus_path.read_text().splitlines(), vocab_size=600, show_progress=False)
    return save_plain_pair(tiny_family_config(family, vocab_size=len(tokenizer), **overrides), tokenizer, directory)


def continued_args(corpus_path: Path, output_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    return ["--train_files", str(corpus_path), "--max_seq_length", "64", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8", "--num_warmup_steps", "2", "--logging_steps", "1",
            "--eval_steps", "0", "--max_eval_batches", "2", "--checkpointing_steps", "3", "--dataloader_num_workers", "0",
            "--output_dir", str(output_dir), "--cache_dir", str(cache_dir), "--validation_split_percentage", "5",
            "--checkpoints_total_limit", "5", *extra]


def test_train_pretrain_continues_from_a_pair_and_resumes(corpus, tmp_path):
    generator, discriminator = wordpiece_pair(corpus, tmp_path / "pair", generator_size_ratio=1.0)
    pair = ["--generator_name_or_path", str(generator), "--discriminator_name_or_path", str(discriminator)]
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    train_pretrain.main(continued_args(corpus, full, cache, *pair, "--max_train_steps", "6"))
    run_config = json.loads((full / "run_config.json").read_text())
    assert run_config["model_config"]["generator_size_ratio"] == 1.0  # the pair's, not a preset's 0.25
    rows = train_rows(read_metrics(full))
    # the continued run's peak under a fresh official schedule: lr · (1 − step/6) · min(1, step/2)
    assert rows[1]["train/learning_rate"] == pytest.approx(CONTINUED_LEARNING_RATE * 5 / 6 * 0.5)
    assert rows[2]["train/learning_rate"] == pytest.approx(CONTINUED_LEARNING_RATE * 4 / 6)
    checkpoint = ElectraForRTDPretraining.from_pretrained(full / "checkpoints" / "step_00000006")
    assert checkpoint.generator.electra.embeddings.word_embeddings.weight is \
        checkpoint.discriminator.electra.embeddings.word_embeddings.weight
    assert (full / "checkpoints" / "step_00000006" / "tokenizer.json").is_file()  # the discriminator's tokenizer
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000003", resumed / "checkpoints" / "step_00000003")
    train_pretrain.main(continued_args(corpus, resumed, cache, *pair, "--max_train_steps", "6",
                                       "--resume_from_checkpoint", "latest"))
    resumed_rows = train_rows(read_metrics(resumed))
    for step in (4, 5, 6):
        for key in ("train/loss", "train/generator_loss", "train/discriminator_loss", "train/learning_rate"):
            assert resumed_rows[step][key] == pytest.approx(rows[step][key], rel=1e-5, abs=1e-6), (step, key)
    # and a further continued run from that run's export folder
    results = train_pretrain.main(continued_args(corpus, tmp_path / "again", cache, "--model_name_or_path",
                                                 str(full / "export"), "--max_train_steps", "2"))
    assert results["completed_steps"] == 2


def test_train_pretrain_refuses_flags_that_do_not_fit_a_continued_run(corpus, tmp_path):
    generator, discriminator = wordpiece_pair(corpus, tmp_path / "pair")
    pair = ["--generator_name_or_path", str(generator), "--discriminator_name_or_path", str(discriminator)]
    args = continued_args(corpus, tmp_path / "run", tmp_path / "cache", *pair, "--max_train_steps", "1")
    with pytest.raises(ValueError, match="--preset describes a model to start from random weights"):
        train_pretrain.main([*args, "--preset", "small"])
    with pytest.raises(ValueError, match="--hidden_size: a continued run keeps the networks"):
        train_pretrain.main([*args, "--hidden_size", "128"])
    with pytest.raises(ValueError, match="--config_name_or_path describes a model"):
        train_pretrain.main([*args, "--config_name_or_path", str(tmp_path)])
    with pytest.raises(ValueError, match="go together"):
        train_pretrain.main(continued_args(corpus, tmp_path / "run", tmp_path / "cache", "--generator_name_or_path",
                                           str(generator), "--max_train_steps", "1"))
