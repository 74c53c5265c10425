"""Canaries: what electra_hf takes from transformers, accelerate and torch, checked by name.

Each failure message names the upstream change and the electra_hf code that relies on it, so that
a new release that moves something fails here first, with the reason, rather than deep in a run.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
import transformers

REPO = Path(__file__).resolve().parents[1]
VERSION = f"transformers {transformers.__version__}"

# Top-level names the package, the scripts and the tests import from transformers.
TRANSFORMERS_EXPORTS = (
    "AutoConfig", "AutoModel", "AutoModelForMaskedLM", "AutoModelForPreTraining", "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification", "AutoModelForTokenClassification", "AutoTokenizer", "DebertaV2Tokenizer",
    "ElectraConfig", "ElectraForMaskedLM", "ElectraForPreTraining", "ElectraModel", "ElectraPreTrainedModel",
    "ElectraTokenizerFast", "HfArgumentParser", "MODEL_FOR_MASKED_LM_MAPPING", "MODEL_MAPPING", "PreTrainedConfig",
    "PreTrainedModel", "PreTrainedTokenizerBase", "get_scheduler",
)


@pytest.mark.parametrize("name", TRANSFORMERS_EXPORTS)
def test_transformers_exports_what_electra_hf_imports(name):
    assert hasattr(transformers, name), f"{VERSION} no longer exports {name} at its top level (electra_hf imports it)"


def test_electra_forward_signatures():
    """`ElectraForRTDPretraining.forward` calls the generator's encoder and the discriminator by keyword."""
    for cls, needed in (
        (transformers.ElectraModel, ("input_ids", "attention_mask", "token_type_ids", "inputs_embeds")),
        (transformers.ElectraForPreTraining, ("input_ids", "attention_mask", "token_type_ids", "inputs_embeds")),
    ):
        parameters = inspect.signature(cls.forward).parameters
        missing = [name for name in needed if name not in parameters]
        assert not missing, f"{VERSION}: {cls.__name__}.forward lost {missing} (electra_hf.modeling passes them by name)"


def test_electra_module_tree():
    """The attribute paths electra_hf reads (sharing, the generator head at masked positions, compiling
    layers, exports) and the state-dict keys its checkpoints hold."""
    config = transformers.ElectraConfig(vocab_size=32, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    generator, discriminator = transformers.ElectraForMaskedLM(config), transformers.ElectraForPreTraining(config)
    paths = {
        generator: ("electra.embeddings.word_embeddings", "electra.embeddings.position_embeddings",
                    "electra.embeddings.token_type_embeddings", "electra.embeddings.LayerNorm",
                    "electra.embeddings_project", "electra.encoder.layer", "generator_predictions",
                    "generator_lm_head"),
        discriminator: ("electra.embeddings.word_embeddings", "electra.encoder.layer", "discriminator_predictions"),
    }
    for model, names in paths.items():
        for name in names:
            assert model.get_submodule(name) is not None, f"{VERSION}: {type(model).__name__}.{name} moved"
    assert len(generator.electra.encoder.layer) == 2
    hidden = generator.electra(torch.zeros(1, 4, dtype=torch.long)).last_hidden_state
    assert hidden.shape == (1, 4, 16), f"{VERSION}: ElectraModel's output changed (last_hidden_state)"


def test_masked_lm_heads_of_other_families():
    """electra_hf.backbones computes generator logits at masked positions by calling each family's
    masked-LM head by name on the gathered hidden states (MASKED_LM_HEADS, DeBERTa's lm_predictions),
    and reads RTD hidden states from base models given inputs_embeds (GDES)."""
    small = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32)
    heads = {
        transformers.BertForMaskedLM(transformers.BertConfig(**small)): ("bert", "cls"),
        transformers.RobertaForMaskedLM(transformers.RobertaConfig(**small)): ("roberta", "lm_head"),
        transformers.ModernBertForMaskedLM(transformers.ModernBertConfig(**small, pad_token_id=0, bos_token_id=1,
                                                                         eos_token_id=2, cls_token_id=1,
                                                                         sep_token_id=2)): ("model", "head", "decoder"),
        transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**small, legacy=False)): ("deberta", "lm_predictions"),
        transformers.DebertaV2ForMaskedLM(transformers.DebertaV2Config(**small)): ("deberta", "cls"),
    }
    for model, (base, *head) in heads.items():
        assert model.base_model_prefix == base, f"{VERSION}: {type(model).__name__}.base_model_prefix is not {base!r}"
        for name in head:
            assert hasattr(model, name), f"{VERSION}: {type(model).__name__}.{name} moved (electra_hf.backbones calls it)"
    for cls in (transformers.DebertaV2Model, transformers.BertModel, transformers.ModernBertModel):
        assert "inputs_embeds" in inspect.signature(cls.forward).parameters, f"{VERSION}: {cls.__name__}.forward"
    assert "add_pooling_layer" in inspect.signature(transformers.BertModel).parameters, (
        f"{VERSION}: BertModel(add_pooling_layer=...) is gone (RTD discriminators are built without a pooler)")


def test_deberta_v3_generator_head_ties_nothing(tmp_path):
    """DeBERTa-v3's masked-LM head multiplies by the word table itself. transformers 5.17 declares a tie of
    `lm_predictions.lm_head.weight` anyway (and cannot reload such a model); electra_hf.backbones builds the
    generator without it, as later releases do. A release that ties a real parameter there fails here."""
    from electra_hf.backbones import DebertaV2Backbone

    config = transformers.DebertaV2Config(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, legacy=False)
    generator = DebertaV2Backbone("deberta-v2").build_generator(config)
    assert generator.all_tied_weights_keys == {}, f"{VERSION}: DebertaV2ForMaskedLM(legacy=False) ties {generator.all_tied_weights_keys}"
    head_parameters = {name for name, _ in generator.lm_predictions.lm_head.named_parameters()}
    assert head_parameters == {"dense.weight", "dense.bias", "LayerNorm.weight", "LayerNorm.bias", "bias"}, (
        f"{VERSION}: DeBERTa's lm_predictions head has parameters {sorted(head_parameters)}")
    generator.save_pretrained(tmp_path)
    reloaded = transformers.DebertaV2ForMaskedLM.from_pretrained(tmp_path, tie_word_embeddings=False)
    torch.testing.assert_close(reloaded.lm_predictions.lm_head.bias, generator.lm_predictions.lm_head.bias)


def test_tied_weights_keys_declared_per_instance_tie_and_survive_save_load(tmp_path):
    """electra_hf declares embedding sharing through `_tied_weights_keys` ({target: source}), the
    extension point transformers documents; `all_tied_weights_keys` lists the expanded ties."""
    from electra_hf.modeling import ElectraForRTDPretraining

    from .conftest import tiny_config

    model = ElectraForRTDPretraining(tiny_config())
    target, source = "generator.electra.embeddings.word_embeddings.weight", "discriminator.electra.embeddings.word_embeddings.weight"
    assert model.all_tied_weights_keys.get(target) == source, (
        f"{VERSION}: all_tied_weights_keys no longer lists the ties declared in _tied_weights_keys")
    assert model.get_parameter(target) is model.get_parameter(source), f"{VERSION} no longer ties _tied_weights_keys"
    model.save_pretrained(tmp_path)
    reloaded = ElectraForRTDPretraining.from_pretrained(tmp_path)
    assert reloaded.get_parameter(target) is reloaded.get_parameter(source), f"{VERSION} loses ties through save/load"
    torch.testing.assert_close(reloaded.get_parameter(target), model.get_parameter(source))


def test_fast_tokenizer_returns_every_overflowing_window():
    """QA fine-tuning splits long contexts into overlapping windows (`return_overflowing_tokens` with a
    stride). tokenizers 0.23.2 returned only the first overflow of a question/context pair; 0.23.3
    returns them all (pyproject.toml's lower bound)."""
    import tokenizers

    tokenizer = transformers.ElectraTokenizerFast(vocab={t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "the", "cat", "sat", "on", "mat", "."])})
    context = " ".join(["the cat sat on the mat ."] * 8)  # 56 words
    windows = tokenizer("who sat", context, truncation="only_second", max_length=20, stride=5,
                        return_overflowing_tokens=True)["input_ids"]
    assert len(windows) >= 4, (
        f"tokenizers {tokenizers.__version__} returned {len(windows)} overflowing windows for a 56-token context "
        "in windows of 15 with stride 5 (0.23.2 returned only the first overflow; electra_hf needs >= 0.23.3)")


def test_activation_checkpointing_switch():
    """`training.enable_activation_checkpointing` calls `activation_checkpointing_enable` (5.25+), or
    `gradient_checkpointing_enable` (its name before 5.25, removed in v6)."""
    names = [name for name in ("activation_checkpointing_enable", "gradient_checkpointing_enable")
             if hasattr(transformers.PreTrainedModel, name)]
    assert names, f"{VERSION} has neither activation_checkpointing_enable nor gradient_checkpointing_enable"


def test_from_config_builds_the_registered_model():
    from electra_hf.modeling import ElectraForRTDPretraining

    from .conftest import tiny_config

    model = transformers.AutoModel.from_config(tiny_config(), attn_implementation="eager")
    assert isinstance(model, ElectraForRTDPretraining), f"{VERSION}: AutoModel.from_config ignores AutoModel.register"


# --------------------------------------------------------------------------------------------
# No internals: the package and the scripts use public names of the libraries they build on.
# --------------------------------------------------------------------------------------------
LIBRARIES = ("transformers", "accelerate", "datasets", "torch", "tokenizers", "huggingface_hub")
# Public submodules whose names are documented imports.
PUBLIC_SUBMODULES = ("torch.", "accelerate.utils", "datasets.fingerprint", "tokenizers.")


def _sources() -> list[Path]:
    return sorted((REPO / "electra_hf").rglob("*.py")) + sorted(REPO.glob("*.py"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            root = node.module.split(".")[0]
            if root == "transformers" and node.module != "transformers":
                found.append(f"line {node.lineno}: from {node.module} import … (not transformers' top level)")
            if root in LIBRARIES and any(alias.name.startswith("_") for alias in node.names):
                found.append(f"line {node.lineno}: imports a private name from {node.module}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            while isinstance(owner, ast.Attribute):
                owner = owner.value
            if isinstance(owner, ast.Name) and owner.id in LIBRARIES:
                found.append(f"line {node.lineno}: {owner.id}….{node.attr} (a private name)")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            name = node.args[1].value if len(node.args) > 1 and isinstance(node.args[1], ast.Constant) else ""
            if str(name).startswith("_") and not str(name).startswith("__"):
                found.append(f"line {node.lineno}: {node.func.id}(…, {node.args[1].value!r}) reads a private name")
    return found


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_library_internals(path):
    violations = _violations(path)
    assert not violations, f"{path.relative_to(REPO)} reaches into library internals:\n" + "\n".join(violations)
