"""Parts of experiments.rtd_vs_mlm that can be checked without its hour-long runs."""

from __future__ import annotations

import gzip

import pytest
import torch

from tests.conftest import TINY_WORDS, build_tiny_tokenizer, tiny_config

pytestmark = pytest.mark.benchmark


@pytest.fixture(scope="module")
def experiment():
    from experiments import rtd_vs_mlm

    return rtd_vs_mlm


def test_replacement_probe_separates_the_three_kinds_of_replacement(experiment, tmp_path):
    from electra_hf.modeling import ElectraForRTDPretraining

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    model = ElectraForRTDPretraining(tiny_config(vocab_size=len(tokenizer)))
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    # A held-out shard where "the" and "cat" make up most of the text: unigram draws are mostly
    # among the most frequent tokens, uniform draws spread over the whole vocabulary.
    corpus = tmp_path / "corpus" / "gutenberg"
    corpus.mkdir(parents=True)
    words = TINY_WORDS * 3 + ["the", "cat"] * 200
    generator = torch.Generator().manual_seed(0)
    lines = [" ".join(words[i] for i in torch.randint(len(words), (30,), generator=generator).tolist()) for _ in range(60)]
    with gzip.open(corpus / "gutenberg_05.txt.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    args = experiment.parse_args(["--shared_dir", str(tmp_path), "--max_seq_length", "32"])
    probe = experiment.replacement_probe(args, checkpoint, num_sequences=24, batch_size=8, top_k=2)
    assert set(probe) == {"generator", "unigram", "uniform"}
    for kind, result in probe.items():
        assert 0.0 <= result["auc"] <= 1.0, kind
        # 15% of the tokens are selected; a replacement equal to the original does not count
        assert 0.04 < result["replaced_share"] <= 0.16, kind
    # "the" and "cat" (the top 2) are most of the unigram draws and ~2% of the uniform ones
    assert probe["unigram"]["top100_share"] > 0.5
    assert probe["uniform"]["top100_share"] < 0.1
    assert probe["generator"]["auc"] != probe["unigram"]["auc"] != probe["uniform"]["auc"]


def test_objectives_are_checked_and_a_subset_needs_the_calibration(experiment, tmp_path):
    with pytest.raises(SystemExit, match="choose from electra, mlm"):
        experiment.main(["--work_dir", str(tmp_path), "--objectives", "bert"])
    # Two one-objective processes must not each time the steps while the other one trains.
    with pytest.raises(SystemExit, match="--calibrate_only"):
        experiment.main(["--work_dir", str(tmp_path), "--tag", "t", "--objectives", "electra"])
    assert not (tmp_path / "t" / "calibration.json").exists()
