"""Exports load with plain transformers (in a fresh process) and give the in-model outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from electra_hf.collator import DataCollatorForElectra
from electra_hf.export import export_pretrained, finetuning_checkpoint
from electra_hf.hub import push_exports_to_hub
from electra_hf.modeling import ElectraForRTDPretraining

from .conftest import tiny_config, tokenize_sentences

SENTENCE = "the old man sat by the river."


def trained_model(tokenizer, **overrides):
    torch.manual_seed(0)
    model = ElectraForRTDPretraining(tiny_config(vocab_size=len(tokenizer), **overrides))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    batch = DataCollatorForElectra(tokenizer, seed=0)(tokenize_sentences(tokenizer))
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def run_plain_transformers(script: str, tmp_path) -> dict:
    """Run `script` in a new interpreter that imports transformers only; it prints one JSON line."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1"}
    guard = "\nimport sys\nassert not any(m == 'electra_hf' or m.startswith('electra_hf.') for m in sys.modules), 'electra_hf was imported'\n"
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script) + guard], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("sharing", ["all", "gdes"])
def test_exports_load_with_plain_transformers_and_match(tiny_tokenizer, tmp_path, sharing):
    model = trained_model(tiny_tokenizer, embedding_sharing=sharing)
    exports = export_pretrained(model, tmp_path / "export", tiny_tokenizer, training_info={"steps": 2})
    assert set(exports) == {"discriminator", "generator"}
    for folder in exports.values():
        assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
        assert (folder / "tokenizer.json").is_file()
    assert "embedding_sharing" in (exports["discriminator"] / "README.md").read_text()

    encoded = tiny_tokenizer(SENTENCE, return_tensors="pt")
    masked = tiny_tokenizer("the old man sat by the [MASK].", return_tensors="pt")
    with torch.no_grad():
        if model.uses_gdes:
            embeds = torch.nn.functional.embedding(encoded["input_ids"], model.discriminator_word_embedding_matrix())
            disc_logits = model.discriminator(inputs_embeds=embeds, attention_mask=encoded["attention_mask"]).logits
        else:
            disc_logits = model.discriminator(**encoded).logits
        gen_logits = model.generator(**masked).logits
    reference = {"disc": disc_logits[0].tolist(), "gen": gen_logits[0, -2].tolist()}
    (tmp_path / "reference.json").write_text(json.dumps(reference))

    out = run_plain_transformers(f"""
        import json, torch
        from transformers import (AutoModel, AutoModelForPreTraining, AutoModelForMaskedLM, AutoTokenizer,
                                  AutoModelForSequenceClassification, AutoModelForTokenClassification, pipeline)
        disc_dir, gen_dir = {str(exports['discriminator'])!r}, {str(exports['generator'])!r}
        ref = json.load(open("reference.json"))
        tok = AutoTokenizer.from_pretrained(disc_dir)
        enc = tok({SENTENCE!r}, return_tensors="pt")
        disc = AutoModelForPreTraining.from_pretrained(disc_dir).eval()
        gen = AutoModelForMaskedLM.from_pretrained(gen_dir).eval()
        enc_m = tok("the old man sat by the [MASK].", return_tensors="pt")
        with torch.no_grad():
            d = disc(**enc).logits[0]
            g = gen(**enc_m).logits[0, -2]
        base, info = AutoModel.from_pretrained(disc_dir, output_loading_info=True)
        seq, seq_info = AutoModelForSequenceClassification.from_pretrained(disc_dir, num_labels=3, output_loading_info=True)
        tagger, tag_info = AutoModelForTokenClassification.from_pretrained(disc_dir, num_labels=5, output_loading_info=True)
        fill = pipeline("fill-mask", model=gen_dir, tokenizer=gen_dir)
        predictions = fill("the old man sat by the [MASK].")
        print(json.dumps({{
            "disc_diff": (d - torch.tensor(ref["disc"])).abs().max().item(),
            "gen_diff": (g - torch.tensor(ref["gen"])).abs().max().item(),
            "base_missing": sorted(info["missing_keys"]), "seq_missing": sorted(seq_info["missing_keys"]),
            "tag_missing": sorted(tag_info["missing_keys"]), "disc_class": type(disc).__name__,
            "fill_count": len(predictions), "fill_token": predictions[0]["token_str"],
            "seq_logits": list(seq(**enc).logits.shape),
        }}))
    """, tmp_path)
    assert out["disc_class"] == "ElectraForPreTraining"
    assert out["disc_diff"] < 1e-5 and out["gen_diff"] < 1e-5
    assert out["base_missing"] == []
    # only the new heads are freshly initialised; the encoder comes entirely from the export
    assert all(not key.startswith("electra.") for key in out["seq_missing"] + out["tag_missing"])
    assert out["seq_logits"] == [1, 3] and out["fill_count"] == 5


def test_mlm_objective_exports_one_masked_lm(tiny_tokenizer, tmp_path):
    model = trained_model(tiny_tokenizer, objective="mlm")
    exports = export_pretrained(model, tmp_path / "export", tiny_tokenizer)
    assert set(exports) == {"mlm"}
    assert finetuning_checkpoint(tmp_path / "export") == str(exports["mlm"])


def test_whole_model_loads_with_trust_remote_code(tiny_tokenizer, tmp_path):
    model = trained_model(tiny_tokenizer)
    model.save_pretrained(tmp_path / "full")
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("ElectraForRTDPretraining")
    assert (tmp_path / "full" / "modeling.py").is_file() and (tmp_path / "full" / "configuration.py").is_file()
    expected = model.generator.generator_lm_head.bias.sum().item()
    out = run_plain_transformers(f"""
        import json
        from transformers import AutoModel
        model = AutoModel.from_pretrained({str(tmp_path / 'full')!r}, trust_remote_code=True)
        tied = model.generator.electra.embeddings.word_embeddings.weight is model.discriminator.electra.embeddings.word_embeddings.weight
        print(json.dumps({{"cls": type(model).__name__, "tied": tied, "bias": model.generator.generator_lm_head.bias.sum().item()}}))
    """, tmp_path)
    assert out == {"cls": "ElectraForRTDPretraining", "tied": True, "bias": pytest.approx(expected, abs=1e-6)}


def test_finetuning_checkpoint_exports_a_pretraining_checkpoint(tiny_tokenizer, tmp_path):
    model = trained_model(tiny_tokenizer)
    model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer.save_pretrained(tmp_path / "ckpt")
    resolved = finetuning_checkpoint(tmp_path / "ckpt")
    assert resolved == str(tmp_path / "ckpt" / "exported" / "discriminator")
    from transformers import AutoTokenizer, ElectraForPreTraining

    reloaded = ElectraForPreTraining.from_pretrained(resolved)
    assert torch.equal(reloaded.electra.encoder.layer[1].output.dense.weight, model.discriminator.electra.encoder.layer[1].output.dense.weight)
    assert len(AutoTokenizer.from_pretrained(resolved)) == len(tiny_tokenizer)
    assert finetuning_checkpoint("google/electra-small-discriminator") == "google/electra-small-discriminator"


def test_export_rejects_a_tokenizer_larger_than_the_vocabulary(tiny_tokenizer, tmp_path):
    model = ElectraForRTDPretraining(tiny_config(vocab_size=len(tiny_tokenizer) - 10))
    with pytest.raises(ValueError, match="vocab_size"):
        export_pretrained(model, tmp_path / "x", tiny_tokenizer)
    assert not (tmp_path / "x" / "discriminator").exists()


class StandInHubApi:
    """Records calls like huggingface_hub.HfApi would receive them."""

    def __init__(self):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}/commit/abc"


def test_push_exports_to_hub_with_stand_in(tiny_tokenizer, tmp_path):
    exports = export_pretrained(trained_model(tiny_tokenizer), tmp_path / "export", tiny_tokenizer)
    api = StandInHubApi()
    results = push_exports_to_hub(exports, "me/electra-tiny", token="hf_x", private=True, api=api)
    assert results["discriminator"].endswith("me/electra-tiny/commit/abc")
    repos = [kwargs["repo_id"] for name, kwargs in api.calls if name == "create_repo"]
    assert repos == ["me/electra-tiny", "me/electra-tiny-generator"]
    uploads = [kwargs["folder_path"] for name, kwargs in api.calls if name == "upload_folder"]
    assert uploads == [str(exports["discriminator"]), str(exports["generator"])]
    with pytest.raises(FileNotFoundError):
        push_exports_to_hub({"discriminator": tmp_path}, "me/x", api=api)
