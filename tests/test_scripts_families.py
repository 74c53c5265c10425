"""Other encoder families end to end: train_pretrain.py pre-trains a DeBERTa-v3 preset (with a
trained Unigram tokenizer), a BERT pair and a ModernBERT pair a few steps with RTD, resumes
exactly, keeps the ties in its checkpoints, and the exported discriminators are fine-tuned by
train_glue.py, train_tagging.py and train_squad.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import train_pretrain
from electra_hf.modeling import ElectraForRTDPretraining

from .test_continued import continued_args, wordpiece_pair
from .test_scripts_glue import GLUE_DIR, train_glue
from .test_scripts_pretrain import read_metrics, train_rows
from .test_scripts_squad import SQUAD_DEV, train_squad
from .test_scripts_tagging import CONLL2003, train_tagging

DEBERTA_FROM_PRESET = ("--preset", "deberta-v3-xsmall", "--hidden_size", "32", "--num_hidden_layers", "4",
                       "--num_attention_heads", "2", "--intermediate_size", "64", "--tokenizer_type", "unigram",
                       "--lowercase", "false", "--vocab_size", "600")


def pretrain_resume_and_check(corpus_path: Path, tmp_path: Path, model_flags) -> Path:
    """4 steps with a checkpoint at 2; a run resumed from it logs the same losses at steps 3-4.
    Returns the uninterrupted run's folder."""
    cache, full, resumed = tmp_path / "cache", tmp_path / "full", tmp_path / "resumed"
    flags = [*model_flags, "--max_train_steps", "4", "--checkpointing_steps", "2", "--learning_rate", "2e-3"]
    train_pretrain.main(continued_args(corpus_path, full, cache, *flags))
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000002", resumed / "checkpoints" / "step_00000002")
    train_pretrain.main(continued_args(corpus_path, resumed, cache, *flags, "--resume_from_checkpoint", "latest"))
    expected, again = train_rows(read_metrics(full)), train_rows(read_metrics(resumed))
    for step in (3, 4):
        for key in ("train/loss", "train/generator_loss", "train/discriminator_loss"):
            assert again[step][key] == pytest.approx(expected[step][key], rel=1e-5, abs=1e-6), (step, key)
    model = ElectraForRTDPretraining.from_pretrained(full / "checkpoints" / "step_00000004")
    for target, source in model.all_tied_weights_keys.items():
        assert model.get_parameter(target) is model.get_parameter(source), target
    return full


def test_deberta_v3_preset_with_a_unigram_tokenizer(corpus, tmp_path):
    run = pretrain_resume_and_check(corpus, tmp_path, DEBERTA_FROM_PRESET)
    config = json.loads((run / "run_config.json").read_text())["model_config"]
    assert config["discriminator_config"]["model_type"] == "deberta-v2" and config["embedding_sharing"] == "gdes"
    assert config["generator_config"]["num_hidden_layers"] == 2 and config["discriminator_loss_weight"] == 10.0
    tokenizer_config = json.loads((run / "export" / "discriminator" / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] in ("DebertaV2Tokenizer", "DebertaV2TokenizerFast")
    finetune_everywhere(run / "export", tmp_path)


@pytest.mark.parametrize("family", ["bert", "modernbert"])
def test_a_plain_pair_of_another_family(corpus, tmp_path, family):
    generator, discriminator = wordpiece_pair(corpus, tmp_path / "pair", family)
    run = pretrain_resume_and_check(corpus, tmp_path, ("--generator_name_or_path", str(generator),
                                                       "--discriminator_name_or_path", str(discriminator)))
    assert json.loads((run / "run_config.json").read_text())["model_config"]["generator_depth_ratio"] == 0.5
    finetune_everywhere(run / "export", tmp_path, glue_only=family == "bert")


def finetune_everywhere(export: Path, tmp_path: Path, glue_only: bool = False) -> None:
    """The exported discriminator fine-tuned for a few steps by each fine-tuning script."""
    common = ["--model_name_or_path", str(export), "--learning_rate", "3e-3", "--layer_decay", "0.8",
              "--per_device_train_batch_size", "8", "--disable_tqdm", "true", "--max_train_steps", "3",
              "--max_seq_length", "64"]
    if (GLUE_DIR / "RTE" / "train.tsv").is_file():
        results = train_glue.main([*common, "--output_dir", str(tmp_path / "glue"), "--task_name", "rte", "--data_dir",
                                   str(GLUE_DIR), "--max_train_samples", "24", "--max_eval_samples", "16"])
        assert results["tasks"]["RTE"]["global_steps"] == [3] and "dev/accuracy" in results["tasks"]["RTE"]["median"]
    if glue_only:
        return
    if (CONLL2003 / "eng.train").is_file():
        results = train_tagging.main([*common, "--output_dir", str(tmp_path / "ner"), "--task", "conll2003",
                                      "--data_dir", str(CONLL2003), "--max_train_samples", "24",
                                      "--max_eval_samples", "16"])
        assert results["global_steps"] == [3]
    if SQUAD_DEV.is_file():
        results = train_squad.main([*common, "--output_dir", str(tmp_path / "squad"), "--train_file", str(SQUAD_DEV),
                                    "--split_by_article", "40", "--max_train_samples", "16", "--max_eval_samples", "8",
                                    "--doc_stride", "16", "--max_query_length", "16"])
        assert results["global_steps"] == [3] and "dev/f1" in results["median"]
