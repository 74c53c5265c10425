"""Encoder families (electra_hf.backbones): each pre-trains with RTD, keeps its ties through
optimizer steps and save/load, computes generator logits at masked positions only, and exports
a discriminator that transformers alone loads."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from electra_hf.backbones import backbone_for
from electra_hf.collator import DataCollatorForElectra
from electra_hf.configuration import ElectraPretrainingConfig
from electra_hf.export import export_pretrained
from electra_hf.modeling import ElectraForRTDPretraining

from .conftest import FAMILIES, tiny_family_config, tokenize_sentences
from .test_export import run_plain_transformers


@pytest.fixture
def batch(tiny_tokenizer):
    return DataCollatorForElectra(tiny_tokenizer, seed=0, mask_prob=0.3)(tokenize_sentences(tiny_tokenizer))


def build(family, tokenizer, **overrides) -> ElectraForRTDPretraining:
    torch.manual_seed(0)
    return ElectraForRTDPretraining(tiny_family_config(family, vocab_size=len(tokenizer), **overrides))


def full_generator_logits(model, batch):
    segments = model.backbone.segment_arguments(model.generator, batch["token_type_ids"])
    return model.generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **segments).logits


@pytest.mark.parametrize("family", FAMILIES)
def test_generator_logits_at_masked_positions_are_the_full_logits_there(family, tiny_tokenizer, batch):
    model = build(family, tiny_tokenizer).eval()
    assert model.backbone.computes_logits_at_masked_positions_only()
    out = model(**batch)
    full = full_generator_logits(model, batch)
    expected = full.gather(1, out.masked_positions.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(out.generator_logits, expected, rtol=1e-5, atol=1e-5)
    assert out.discriminator_logits.shape == batch["input_ids"].shape
    weight = model.config.discriminator_loss_weight
    torch.testing.assert_close(out.loss, out.generator_loss + weight * out.discriminator_loss)


@pytest.mark.parametrize("family", FAMILIES)
def test_ties_hold_through_training_and_save_load(family, tiny_tokenizer, batch, tmp_path):
    model = build(family, tiny_tokenizer, embedding_sharing="all")
    ties = model.all_tied_weights_keys
    # every table and norm of the embedding block, and the generator's output layer where it has one
    assert any("word_embeddings" in key or "tok_embeddings" in key for key in ties)
    assert len(ties) >= 3
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(2):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for target, source in ties.items():
        assert model.get_parameter(target) is model.get_parameter(source), target
    model.eval().save_pretrained(tmp_path)
    reloaded = ElectraForRTDPretraining.from_pretrained(tmp_path).eval()
    for target, source in ties.items():
        assert reloaded.get_parameter(target) is reloaded.get_parameter(source), target
    torch.manual_seed(1)
    expected = model(**batch)
    torch.manual_seed(1)
    again = reloaded(**batch)
    torch.testing.assert_close(again.loss, expected.loss)


def test_deberta_gdes_shares_the_word_table_as_deberta_v3_does(tiny_tokenizer, batch):
    model = build("deberta-v2", tiny_tokenizer)  # the preset: GDES, a generator as wide and half as deep
    config = model.config
    assert config.embedding_sharing == "gdes" and config.mask_token_prob == 1.0
    assert config.generator_config.num_hidden_layers * 2 == config.discriminator_config.num_hidden_layers
    assert config.generator_config.hidden_size == config.discriminator_config.hidden_size
    assert not config.generator_config.legacy  # DeBERTa-v3's lm_predictions head
    # DeBERTa-v3 shares the word table through the delta alone: no tie crosses the two networks
    assert not any(target.startswith("generator.") and source.startswith("discriminator.")
                   for target, source in model.all_tied_weights_keys.items())
    delta = model.get_input_embeddings().weight
    shared = model.generator.deberta.embeddings.word_embeddings.weight
    assert not delta.any()
    out = model(**batch)
    out.discriminator_loss.backward(retain_graph=True)
    assert shared.grad is None or not shared.grad.any()  # stop-gradient: the discriminator never moves it
    assert delta.grad.any()
    model.zero_grad()
    out.generator_loss.backward()
    assert shared.grad.any()


def test_segment_ids_reach_only_encoders_with_a_segment_table(tiny_tokenizer, batch):
    changed = dict(batch, token_type_ids=1 - batch["token_type_ids"])
    for family, reads_segments in (("bert", True), ("modernbert", False), ("deberta-v2", False)):
        model = build(family, tiny_tokenizer).eval()
        a = model.discriminator_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        b = model.discriminator_logits(changed["input_ids"], changed["attention_mask"], changed["token_type_ids"])
        assert (not torch.equal(a, b)) == reads_segments, family


@pytest.mark.parametrize("family", FAMILIES)
def test_compile_finds_each_networks_layers_and_embeddings(family, tiny_tokenizer):
    model = build(family, tiny_tokenizer)
    for network in (model.generator, model.discriminator):
        layers = model.backbone.transformer_layers(network)
        assert len(layers) == network.config.num_hidden_layers
        block = model.backbone.embedding_block(network)
        assert model.backbone.encoder(network).get_input_embeddings() in block.children()


def test_a_family_whose_head_is_unknown_says_so_and_gathers_full_logits(tiny_tokenizer, batch, caplog):
    from transformers import AlbertConfig

    discriminator = AlbertConfig(vocab_size=len(tiny_tokenizer), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    with caplog.at_level(logging.WARNING, logger="electra_hf.backbones"):
        model = ElectraForRTDPretraining(ElectraPretrainingConfig(
            discriminator_config=discriminator, generator_size_ratio=1.0, generator_depth_ratio=0.5)).eval()
    assert "computes vocabulary logits at every position" in caplog.text
    out = model(**batch)
    full = full_generator_logits(model, batch)
    expected = full.gather(1, out.masked_positions.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(out.generator_logits, expected)


def test_a_narrower_generator_is_refused_where_the_family_has_no_embedding_projection():
    from transformers import BertConfig

    with pytest.raises(ValueError, match="bert embeddings are as wide as hidden_size"):
        ElectraPretrainingConfig(discriminator_config=BertConfig(hidden_size=64, num_attention_heads=2),
                                 generator_size_ratio=0.5)
    narrow = ElectraPretrainingConfig.from_preset("deberta-v3-xsmall", vocab_size=100, generator_size_ratio=0.5)
    assert narrow.generator_config.legacy and narrow.generator_config.embedding_size == 384  # BERT's head layout
    # DeBERTa's embedding LayerNorm works at the hidden width: a narrower generator shares the word table only
    tiny = dict(vocab_size=100, hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=2,
                generator_size_ratio=0.5)
    with pytest.raises(ValueError, match="ties LayerNorm.weight, whose shapes differ"):
        ElectraForRTDPretraining(ElectraPretrainingConfig.from_preset("deberta-v3-xsmall", embedding_sharing="all", **tiny))
    model = ElectraForRTDPretraining(ElectraPretrainingConfig.from_preset("deberta-v3-xsmall", embedding_sharing="word",
                                                                         **tiny))
    assert model.generator.cls.predictions.decoder.weight is model.discriminator.embeddings.word_embeddings.weight


@pytest.mark.parametrize("family", ["deberta-v2", "modernbert"])
def test_family_exports_load_with_plain_transformers(family, tiny_tokenizer, tmp_path):
    model = build(family, tiny_tokenizer).eval()
    exports = export_pretrained(model, tmp_path / "export", tiny_tokenizer)
    encoded = tiny_tokenizer("the old man sat by the river.", return_tensors="pt")
    segments = model.backbone.segment_arguments(model.discriminator, encoded["token_type_ids"])
    with torch.no_grad():  # GDES: the export holds the table the discriminator reads, sg(shared) + delta
        embeddings = torch.nn.functional.embedding(encoded["input_ids"], model.discriminator_word_embedding_matrix())
        expected = model.discriminator(inputs_embeds=embeddings, attention_mask=encoded["attention_mask"],
                                       **segments).last_hidden_state
    (tmp_path / "reference.json").write_text(json.dumps(expected[0].tolist()))
    out = run_plain_transformers(f"""
        import json, torch
        from transformers import (AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
                                  AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer)
        folder = {str(exports['discriminator'])!r}
        tokenizer = AutoTokenizer.from_pretrained(folder)
        encoded = tokenizer("the old man sat by the river.", return_tensors="pt")
        encoded.pop("token_type_ids", None) if {family!r} == "modernbert" else None
        base = AutoModel.from_pretrained(folder).eval()
        with torch.no_grad():
            hidden = base(**encoded).last_hidden_state[0]
        missing = {{}}
        for auto in (AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoModelForQuestionAnswering):
            _, info = auto.from_pretrained(folder, num_labels=2, output_loading_info=True)
            missing[auto.__name__] = sorted(info["missing_keys"])
        _, mlm_info = AutoModelForMaskedLM.from_pretrained({str(exports['generator'])!r}, output_loading_info=True)
        print(json.dumps({{"diff": (hidden - torch.tensor(json.load(open("reference.json")))).abs().max().item(),
                          "class": type(base).__name__, "missing": missing, "mlm_missing": sorted(mlm_info["missing_keys"])}}))
    """, tmp_path)
    assert out["diff"] < 1e-5 and out["class"] == type(model.discriminator).__name__
    assert out["mlm_missing"] == []
    encoder_prefixes = ("deberta.embeddings", "deberta.encoder", "model.embeddings", "model.layers", "model.final_norm")
    for auto, missing in out["missing"].items():  # only the new task head is initialised
        assert not [key for key in missing if key.startswith(encoder_prefixes)], (auto, missing)


def test_backbone_for_names_the_family():
    assert backbone_for(tiny_family_config("electra").discriminator_config).family == "electra"
    assert backbone_for(tiny_family_config("deberta-v2").discriminator_config).family == "deberta-v2"
    assert backbone_for(tiny_family_config("bert").discriminator_config).family == "masked-lm"


def test_classifier_dropout_reaches_a_field_the_family_reads():
    from transformers import BertConfig, DebertaV2Config, ElectraConfig

    from electra_hf.scripts_common import classifier_dropout_override

    assert classifier_dropout_override(ElectraConfig(), None) == {}
    assert classifier_dropout_override(BertConfig(), 0.2) == {"classifier_dropout": 0.2}
    with pytest.raises(ValueError, match="deberta-v2 configs have no classifier_dropout field"):
        classifier_dropout_override(DebertaV2Config(), 0.2)
