"""Pushing fine-tuned models (electra_hf.hub): what is staged, the model card, and the message
where the Hub cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import ElectraConfig, ElectraForSequenceClassification

from electra_hf.hub import FinetunedCard, FinetunedUpload

from .conftest import build_tiny_tokenizer


def _card(**overrides) -> FinetunedCard:
    values = dict(repo_id="me/tiny", base_model="google/electra-small-discriminator", task="GLUE RTE",
                  data="nyu-mll/glue (rte)", pipeline_tag="text-classification",
                  auto_class="AutoModelForSequenceClassification", results_table="| RTE | dev/accuracy | 50.00 |",
                  seeds=[1, 2], seed=2, selected_by="dev/accuracy", settings={"learning rate": 1e-4},
                  datasets=["nyu-mll/glue"])
    return FinetunedCard(**{**values, **overrides})


def _saved_model(folder: Path) -> Path:
    config = ElectraConfig(vocab_size=40, embedding_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16)
    ElectraForSequenceClassification(config).save_pretrained(folder)
    (folder / "run_result.json").write_text("{}")
    (folder / "test_predictions.txt").write_text("x")
    return folder


def test_card_metadata_usage_and_results(tmp_path):
    card = _card().render()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-classification\n")
    assert "base_model: google/electra-small-discriminator" in card and "datasets:\n- nyu-mll/glue" in card
    assert 'AutoModelForSequenceClassification.from_pretrained("me/tiny")' in card
    assert "the model of seed 2, the best by `dev/accuracy`" in card and "| RTE | dev/accuracy | 50.00 |" in card
    local = _card(base_model=str(tmp_path), datasets=[], remote_code=True, seed_folders=[1, 2]).render()
    assert "base_model" not in local and "datasets:" not in local
    assert 'from_pretrained("me/tiny", trust_remote_code=True)' in local and "`seed_<seed>/` holds each seed's (1, 2)" in local


def test_upload_stages_model_tokenizer_card_and_results(tmp_path):
    model = _saved_model(tmp_path / "run" / "seed_2")
    other = _saved_model(tmp_path / "run" / "seed_1")
    results = tmp_path / "run" / "results.json"
    results.write_text('{"seeds": [1, 2]}')
    seen = {}

    class Api:
        def create_repo(self, **kwargs):
            seen["create"] = kwargs

        def upload_folder(self, **kwargs):
            folder = Path(kwargs["folder_path"])
            seen["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
            return "commit"

    upload = FinetunedUpload(repo_id="me/tiny", model_dir=model, card=_card(), results_files=[results],
                             tokenizer=build_tiny_tokenizer(), seed_dirs={1: other}, token="hf_secret", private=True)
    assert upload.push(api=Api()) == "commit"
    assert seen["create"]["repo_id"] == "me/tiny" and seen["create"]["private"] is True
    root = {name for name in seen["files"] if "/" not in name}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "results.json"} <= root
    assert not root & {"run_result.json", "test_predictions.txt"}
    assert {"seed_1/config.json", "seed_1/model.safetensors", "seed_1/tokenizer.json"} <= set(seen["files"])
    assert "hf_secret" not in repr(upload) and "hf_secret" not in str(upload.summary())
    assert not list((tmp_path / "run").glob(".hub-*"))  # the staging folder is gone


def test_unreachable_hub_names_the_repository_and_keeps_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = _saved_model(tmp_path / "seed_1")
    upload = FinetunedUpload(repo_id="me/tiny", model_dir=model, card=_card(), results_files=[], tokenizer=None)
    with pytest.raises(RuntimeError, match=r"--push_to_hub me/tiny: the push failed \(OfflineModeIsEnabled"):
        upload.push()
    assert (model / "model.safetensors").is_file()
