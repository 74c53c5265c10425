"""The pre-training model: RTD invariants, losses, gradients, sharing, objectives, attention backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from electra_hf.collator import IGNORE_INDEX, DataCollatorForElectra
from electra_hf.configuration import ElectraPretrainingConfig
from electra_hf.modeling import ElectraForRTDPretraining, gumbel_sample, select_masked_positions
from electra_hf.training import enable_activation_checkpointing

from .conftest import tiny_config, tokenize_sentences


@pytest.fixture
def batch(tiny_tokenizer):
    collator = DataCollatorForElectra(tiny_tokenizer, max_seq_length=128, seed=0, mask_prob=0.3)
    return collator(tokenize_sentences(tiny_tokenizer))


def build(tiny_tokenizer, **overrides):
    torch.manual_seed(0)
    return ElectraForRTDPretraining(tiny_config(vocab_size=len(tiny_tokenizer), **overrides))


def test_replaced_labels_and_corrupted_sequence(tiny_tokenizer, batch):
    model = build(tiny_tokenizer)
    out = model(**batch)
    masked = batch["labels"] != IGNORE_INDEX
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    disc_input = out.discriminator_input_ids
    assert torch.equal(disc_input[~masked], original[~masked])  # unmasked positions unchanged
    assert torch.equal(out.replaced_labels.bool(), masked & (disc_input != original))
    assert not (disc_input == tiny_tokenizer.mask_token_id).any()  # every [MASK] got a sample
    # a random generator replaces most masked tokens; some guesses may be right
    assert out.replaced_labels.sum() > 0
    assert out.discriminator_logits.shape == batch["input_ids"].shape
    n = model.config.max_predictions_per_seq
    assert out.masked_positions.shape == (batch["input_ids"].shape[0], n)
    assert out.generator_logits.shape == (batch["input_ids"].shape[0], n, len(tiny_tokenizer))


def test_generator_loss_equals_independent_cross_entropy(tiny_tokenizer, batch):
    model = build(tiny_tokenizer).eval()
    out = model(**batch)
    reference = model.generator(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"], labels=batch["labels"],
    )
    torch.testing.assert_close(out.generator_loss, reference.loss, rtol=1e-5, atol=1e-6)
    # and the masked-position logits equal the full logits at those positions
    full = reference.logits
    gathered = full.gather(1, out.masked_positions.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(out.generator_logits, gathered, rtol=1e-5, atol=1e-5)


def test_discriminator_loss_is_bce_over_non_pad_and_total_is_weighted(tiny_tokenizer, batch):
    model = build(tiny_tokenizer).eval()
    out = model(**batch)
    valid = batch["attention_mask"].bool()
    expected = F.binary_cross_entropy_with_logits(out.discriminator_logits[valid], out.replaced_labels[valid].float())
    torch.testing.assert_close(out.discriminator_loss, expected)
    torch.testing.assert_close(out.loss, 1.0 * out.generator_loss + 50.0 * out.discriminator_loss)


def test_no_discriminator_gradient_reaches_generator_only_parameters(tiny_tokenizer, batch):
    model = build(tiny_tokenizer)
    out = model(**batch)
    out.discriminator_loss.backward()
    shared = {id(p) for p in model.discriminator.parameters()}
    generator_only = [(n, p) for n, p in model.generator.named_parameters() if id(p) not in shared]
    assert generator_only, "the generator must have parameters of its own"
    for name, parameter in generator_only:
        assert parameter.grad is None or torch.count_nonzero(parameter.grad) == 0, name
    # the shared embeddings do receive the discriminator's gradient (official "all" sharing)
    assert torch.count_nonzero(model.discriminator.electra.embeddings.word_embeddings.weight.grad) > 0


def test_generator_loss_trains_the_generator(tiny_tokenizer, batch):
    model = build(tiny_tokenizer)
    model(**batch).generator_loss.backward()
    assert torch.count_nonzero(model.generator.electra.encoder.layer[0].attention.self.query.weight.grad) > 0
    assert all(p.grad is None for p in model.discriminator.discriminator_predictions.parameters())


@pytest.mark.parametrize("sharing", ["all", "word"])
def test_shared_weights_stay_identical_after_step_and_save_load(tiny_tokenizer, batch, tmp_path, sharing):
    model = build(tiny_tokenizer, embedding_sharing=sharing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(**batch).loss.backward()
    optimizer.step()
    gen, disc = model.generator.electra.embeddings, model.discriminator.electra.embeddings
    assert torch.equal(gen.word_embeddings.weight, disc.word_embeddings.weight)
    assert torch.equal(model.generator.generator_lm_head.weight, disc.word_embeddings.weight)
    if sharing == "all":
        for name in ("position_embeddings", "token_type_embeddings", "LayerNorm"):
            assert torch.equal(getattr(gen, name).weight, getattr(disc, name).weight)
    else:
        assert not torch.equal(gen.position_embeddings.weight, disc.position_embeddings.weight)
    model.save_pretrained(tmp_path)
    reloaded = ElectraForRTDPretraining.from_pretrained(tmp_path)
    before, after = model.state_dict(), reloaded.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    # still tied (the same tensor), not merely equal
    assert reloaded.generator.electra.embeddings.word_embeddings.weight is reloaded.discriminator.electra.embeddings.word_embeddings.weight


def test_no_sharing_keeps_separate_tables(tiny_tokenizer):
    model = build(tiny_tokenizer, embedding_sharing="none")
    assert model.generator.electra.embeddings.word_embeddings.weight is not model.discriminator.electra.embeddings.word_embeddings.weight


def test_gdes_discriminator_gradient_does_not_move_shared_table(tiny_tokenizer, batch):
    model = build(tiny_tokenizer, embedding_sharing="gdes")
    delta = model.discriminator.electra.embeddings.word_embeddings.weight
    shared = model.generator.electra.embeddings.word_embeddings.weight
    assert torch.count_nonzero(delta) == 0
    out = model(**batch)
    out.discriminator_loss.backward(retain_graph=True)
    assert shared.grad is None or torch.count_nonzero(shared.grad) == 0
    assert torch.count_nonzero(delta.grad) > 0
    model.zero_grad()
    out.generator_loss.backward()
    assert torch.count_nonzero(shared.grad) > 0


def test_mlm_objective(tiny_tokenizer, batch):
    model = build(tiny_tokenizer, objective="mlm")
    assert model.discriminator is None
    assert model.generator.config.hidden_size == model.config.discriminator_config.hidden_size
    out = model.eval()(**batch)
    assert out.discriminator_loss is None and out.replaced_labels is None
    torch.testing.assert_close(out.loss, out.generator_loss)
    reference = model.generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], labels=batch["labels"]).loss
    torch.testing.assert_close(out.loss, reference, rtol=1e-5, atol=1e-6)


def test_eager_and_sdpa_give_the_same_loss(tiny_tokenizer, batch, tmp_path):
    build(tiny_tokenizer).save_pretrained(tmp_path)
    losses = {}
    for implementation in ("eager", "sdpa"):
        model = ElectraForRTDPretraining.from_pretrained(tmp_path, attn_implementation=implementation).eval()
        assert model.discriminator.config._attn_implementation == implementation
        torch.manual_seed(5)
        losses[implementation] = model(**batch).loss
    torch.testing.assert_close(losses["eager"], losses["sdpa"], rtol=1e-4, atol=1e-4)


def test_gradient_checkpointing_gives_same_gradients(tiny_tokenizer, batch):
    grads = []
    for checkpointing in (False, True):
        model = build(tiny_tokenizer)
        if checkpointing:
            enable_activation_checkpointing(model)
            assert model.discriminator.electra.encoder.layer[0].gradient_checkpointing
            assert model.generator.electra.encoder.layer[0].gradient_checkpointing
        torch.manual_seed(3)
        model(**batch).loss.backward()
        grads.append(model.discriminator.electra.encoder.layer[0].output.dense.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_metrics_are_consistent(tiny_tokenizer, batch):
    out = build(tiny_tokenizer)(**batch)
    valid = batch["attention_mask"].bool()
    predicted = (out.discriminator_logits > 0) & valid
    actual = out.replaced_labels.bool() & valid
    expected_accuracy = (predicted == actual)[valid].float().mean()
    torch.testing.assert_close(out.discriminator_accuracy, expected_accuracy)
    for value in (out.generator_accuracy, out.discriminator_precision, out.discriminator_recall):
        assert 0 <= float(value) <= 1


def test_padding_does_not_change_losses(tiny_tokenizer):
    # N below the unpadded length, so padding does not change the shape of the sampling noise
    model = build(tiny_tokenizer, max_predictions_per_seq=6).eval()
    collator = DataCollatorForElectra(tiny_tokenizer, max_predictions_per_seq=6, seed=0)
    batch = collator(tokenize_sentences(tiny_tokenizer)[:1])
    padded = {key: F.pad(value, (0, 7), value=tiny_tokenizer.pad_token_id if key == "input_ids" else (IGNORE_INDEX if key == "labels" else 0)) for key, value in batch.items()}
    torch.manual_seed(1)
    a = model(**batch)
    torch.manual_seed(1)
    b = model(**padded)
    torch.testing.assert_close(a.generator_loss, b.generator_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.discriminator_loss, b.discriminator_loss, rtol=1e-5, atol=1e-5)


def test_no_attention_mask_means_no_padding(tiny_tokenizer):
    """attention_mask=None (what a packed batch may send, so that no encoder checks a mask on the
    host) gives the losses and metrics of an all-ones mask, and the encoders get no mask at all."""
    model = build(tiny_tokenizer).eval()
    collator = DataCollatorForElectra(tiny_tokenizer, seed=0, mask_prob=0.3)
    batch = collator(tokenize_sentences(tiny_tokenizer)[:1])  # one row: no padding
    assert bool(batch["attention_mask"].all())
    seen = []
    hook = model.discriminator.electra.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True)
    outputs = []
    for mask in (batch["attention_mask"], None):
        torch.manual_seed(2)
        outputs.append(model(**{**batch, "attention_mask": mask}))
    hook.remove()
    assert seen[0] is not None and seen[1] is None
    for name in ("loss", "generator_loss", "discriminator_loss", "discriminator_accuracy",
                 "discriminator_precision", "discriminator_recall"):
        torch.testing.assert_close(getattr(outputs[1], name), getattr(outputs[0], name), rtol=1e-6, atol=1e-6)
    assert torch.equal(outputs[1].discriminator_input_ids, outputs[0].discriminator_input_ids)


def test_gumbel_sampling_follows_the_distribution():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(20000, 3)
    samples = gumbel_sample(logits)
    frequencies = torch.bincount(samples, minlength=3).float() / len(samples)
    torch.testing.assert_close(frequencies, torch.tensor([0.7, 0.2, 0.1]), atol=0.015, rtol=0)
    # temperature → 0 approaches argmax
    assert (gumbel_sample(logits[:100], temperature=1e-4) == 0).all()


def test_select_masked_positions_puts_masked_first():
    masked = torch.tensor([[0, 1, 0, 1, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    positions, weights = select_masked_positions(masked, 3)
    assert weights.tolist() == [[True, True, False], [True, False, False]]
    assert sorted(positions[0, :2].tolist()) == [1, 3] and positions[1, 0] == 4
    assert len(set(positions[1].tolist())) == 3  # fillers are distinct positions
    with pytest.raises(ValueError, match="5 masked positions, more than max_predictions_per_seq=3"):
        select_masked_positions(torch.ones(1, 5, dtype=torch.bool), 3)


@pytest.mark.parametrize(
    "field, value",
    [("objective", "gan"), ("embedding_sharing", "some"), ("mask_prob", 1.5), ("discriminator_loss_weight", -1.0),
     ("sampling_temperature", 0.0), ("generator_size_ratio", 2.0), ("random_token_prob", 0.5)],
)
def test_invalid_config_values_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ElectraPretrainingConfig(**{field: value})


def test_presets_follow_the_paper():
    small = ElectraPretrainingConfig.from_preset("small")
    assert (small.discriminator_config.hidden_size, small.generator_config.hidden_size) == (256, 64)
    assert small.generator_config.num_attention_heads == 1 and small.generator_config.intermediate_size == 256
    assert small.max_predictions_per_seq == 19 and small.discriminator_loss_weight == 50.0
    base = ElectraPretrainingConfig.from_preset("base")
    assert (base.generator_config.hidden_size, base.generator_config.num_attention_heads) == (256, 4)
    large = ElectraPretrainingConfig.from_preset("large")
    assert large.mask_prob == 0.25 and large.max_predictions_per_seq == 130
    assert ElectraPretrainingConfig.from_preset("small++").generator_config.hidden_size == 256
    with pytest.raises(ValueError, match="unknown preset"):
        ElectraPretrainingConfig.from_preset("huge")
    with pytest.raises(ValueError, match="hiden_size"):
        ElectraPretrainingConfig.from_preset("tiny", hiden_size=3)


def test_sharing_requires_matching_embedding_shapes():
    from transformers import ElectraConfig

    disc = ElectraConfig(vocab_size=50, embedding_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64)
    gen = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64)
    with pytest.raises(ValueError, match="embedding_size"):
        ElectraPretrainingConfig(discriminator_config=disc, generator_config=gen)
    ElectraPretrainingConfig(discriminator_config=disc, generator_config=gen, embedding_sharing="none")


@pytest.mark.parametrize("method", ["gumbel", "categorical"])
def test_both_sampling_methods_keep_the_rtd_invariants(tiny_tokenizer, batch, method):
    model = build(tiny_tokenizer, sampling_method=method)
    out = model(**batch)
    masked = batch["labels"] != IGNORE_INDEX
    original = torch.where(masked, batch["labels"], batch["input_ids"])
    assert torch.equal(out.replaced_labels.bool(), masked & (out.discriminator_input_ids != original))
    assert not (out.discriminator_input_ids == tiny_tokenizer.mask_token_id).any()
    with pytest.raises(ValueError, match="sampling_method"):
        tiny_config(sampling_method="beam")


@pytest.mark.slow
def test_compiled_layers_give_the_eager_step(tiny_tokenizer, batch):
    """compile_for_training (train_pretrain.py --compile): same losses and gradients as eager without
    dropout; with dropout, the compiled path (masks from electra_hf::dropout_mask) trains."""
    from electra_hf.performance import compile_for_training

    eager = build(tiny_tokenizer)
    compiled = build(tiny_tokenizer)
    compile_for_training(compiled)
    results = []
    for model in (eager, compiled):
        torch.manual_seed(3)
        out = model(**batch)
        out.loss.backward()
        results.append((out, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}))
    (eager_out, eager_grads), (compiled_out, compiled_grads) = results
    torch.testing.assert_close(compiled_out.loss, eager_out.loss, rtol=1e-5, atol=1e-5)
    assert eager_grads.keys() == compiled_grads.keys()
    for name in eager_grads:
        torch.testing.assert_close(compiled_grads[name], eager_grads[name], rtol=1e-4, atol=1e-5, msg=name)

    # With dropout the compiled layers draw their masks (electra_hf::dropout_mask) from torch's
    # generator: the same seed gives the same generator loss, and the masks change it. (The
    # generator loss comes before the sampling, so only its dropout can change it.)
    dropped = build(tiny_tokenizer, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    compile_for_training(dropped)
    losses = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        losses.append(dropped(**batch).generator_loss)
    assert torch.equal(losses[0], losses[1])
    assert not torch.equal(losses[0], losses[2])
    assert not torch.allclose(losses[0], eager_out.generator_loss)  # same weights, no dropout there
    losses[2].backward()
    assert all(torch.isfinite(p.grad).all() for p in dropped.parameters() if p.grad is not None)
