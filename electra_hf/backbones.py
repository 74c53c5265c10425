"""What differs between encoder families in replaced-token detection, in one place.

The pre-training model (`modeling.ElectraForRTDPretraining`) asks a `Backbone` how to build its two
networks and where their parts are; everything else (masking, sampling, losses) is the same for all.

- `ElectraBackbone` ("electra"): transformers' `ElectraForMaskedLM` generator and
  `ElectraForPreTraining` discriminator (encoder and ELECTRA's RTD head in one class): the
  official layout.
- `DebertaV2Backbone` ("deberta-v2"): `DebertaV2ForMaskedLM` generator and `DebertaV2Model`
  discriminator with DeBERTa-v3's RTD head (`DebertaRTDHead`), as in microsoft/DeBERTa.
- `Backbone`, any other model type whose masked-LM class transformers has (BERT, RoBERTa,
  ModernBERT, ...): that masked-LM class as generator, transformers' base model class
  (`AutoModel`'s) plus ELECTRA's RTD head (`ElectraStyleRTDHead`) as discriminator.

A family answers: which parameters each embedding-sharing mode ties (declared to transformers as
tied weights by the model), where the word table is (GDES), how to compute the generator's
vocabulary logits at chosen positions only, how to read RTD logits, and which modules are the
transformer layers. `save_pretrained` copies this file next to a saved model, so it imports only
torch and transformers.
"""

from __future__ import annotations

import functools
import inspect
import logging

import torch
import torch.nn.functional as F
from torch import nn
from transformers import MODEL_FOR_MASKED_LM_MAPPING, MODEL_MAPPING, ElectraForMaskedLM, ElectraForPreTraining

logger = logging.getLogger(__name__)


def gather_positions(hidden_states: torch.Tensor, positions: torch.LongTensor) -> torch.Tensor:
    """`(B, T, H)` × `(B, N)` → `(B, N, H)`."""
    return hidden_states.gather(1, positions.unsqueeze(-1).expand(-1, -1, hidden_states.shape[-1]))


@functools.lru_cache(maxsize=None)
def forward_takes(module_class: type, argument: str) -> bool:
    """Whether `module_class.forward` has a parameter `argument` (asked on every step: cached)."""
    return argument in inspect.signature(module_class.forward).parameters


def embedding_width(config) -> int:
    """The width of a network's embedding tables: `embedding_size` where the family projects its
    embeddings to the hidden size (ELECTRA, DeBERTa), else `hidden_size`."""
    if backbone_class(config.model_type).projects_embeddings:
        return getattr(config, "embedding_size", None) or config.hidden_size
    return config.hidden_size


class ElectraStyleRTDHead(nn.Module):
    """ELECTRA's RTD head (transformers' `ElectraDiscriminatorPredictions`): per token, dense(H→H),
    GELU, dense(H→1). `(B, T, H)` → `(B, T)` logits of "replaced"."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dense_prediction = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(F.gelu(self.dense(hidden_states))).squeeze(-1)


class DebertaRTDHead(nn.Module):
    """DeBERTa-v3's RTD head (microsoft/DeBERTa `LMMaskPredictionHead`): each token's state plus the
    [CLS] state, LayerNorm, dense(H→H), GELU, linear(H→1). `(B, T, H)` → `(B, T)`.

    The parameter names are those of the released checkpoints (`mask_predictions.*`; "classifer"
    is their spelling), so a microsoft/deberta-v3-* discriminator's head loads into it.
    """

    def __init__(self, hidden_size: int, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.classifer = nn.Linear(hidden_size, 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        states = self.LayerNorm(hidden_states + hidden_states[:, :1])
        return self.classifer(F.gelu(self.dense(states))).squeeze(-1)


class Backbone:
    """Any encoder whose masked-LM class transformers has: the generic family.

    Generator: that masked-LM class. Discriminator: transformers' base model class (built without a
    pooler: nothing in RTD trains one, and DDP refuses parameters without gradients) plus
    `ElectraStyleRTDHead`, held by the pre-training model as `discriminator_head`.
    """

    family = "masked-lm"
    #: Whether the embedding tables may be narrower or wider than the hidden size (a projection follows them).
    projects_embeddings = False
    #: Saved next to an exported discriminator under this prefix (None: the head is part of the model class).
    rtd_head_prefix: str | None = "discriminator_predictions"
    #: The modules, in call order, that turn a masked LM's hidden states into vocabulary logits.
    MASKED_LM_HEADS = {"bert": ("cls",), "roberta": ("lm_head",), "xlm-roberta": ("lm_head",),
                       "camembert": ("lm_head",), "modernbert": ("head", "decoder")}

    #: Config fields the config class derives from another one ({field: the field it follows}).
    derived_fields: dict[str, str] = {}

    def __init__(self, model_type: str):
        self.model_type = model_type

    @classmethod
    def follow_changed_fields(cls, fields: dict, before) -> dict:
        """`fields` (a config's, some changed from `before`) without the derived fields that still
        hold what `before` derived, so that the config class derives them again from the new values."""
        for name, follows in cls.derived_fields.items():
            if fields.get(follows) != getattr(before, follows) and fields.get(name) == getattr(before, follows):
                fields.pop(name)
        return fields

    @classmethod
    def generator_fields(cls, fields: dict, discriminator_config) -> dict:
        """The config fields of a generator scaled from the discriminator (`fields`: already scaled):
        where the family projects its embeddings, the tables keep the discriminator's width."""
        if cls.projects_embeddings and fields["hidden_size"] != discriminator_config.hidden_size:
            fields["embedding_size"] = embedding_width(discriminator_config)
        return fields

    # --- building ------------------------------------------------------------------------
    def build_generator(self, config) -> nn.Module:
        if type(config) not in MODEL_FOR_MASKED_LM_MAPPING:
            raise ValueError(f"model_type {config.model_type!r} has no masked-LM class in transformers, so it cannot "
                             "be an RTD generator (AutoModelForMaskedLM does not know it)")
        return MODEL_FOR_MASKED_LM_MAPPING[type(config)](config)

    def build_discriminator(self, config) -> tuple[nn.Module, nn.Module | None]:
        """(the network, its RTD head or None when the network holds it)."""
        network_class, kwargs = self.discriminator_class(config)
        return network_class(config, **kwargs), self.build_rtd_head(config)

    @staticmethod
    def discriminator_class(config) -> tuple[type, dict]:
        """The discriminator's class and its constructor (or `from_pretrained`) arguments."""
        encoder_class = MODEL_MAPPING[type(config)]
        no_pooler = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(encoder_class).parameters else {}
        return encoder_class, no_pooler

    @staticmethod
    def generator_load_kwargs(config) -> dict:
        """`from_pretrained` arguments for a generator checkpoint of this family."""
        return {}

    def build_rtd_head(self, config) -> nn.Module:
        return ElectraStyleRTDHead(config.hidden_size)

    # --- where things are ------------------------------------------------------------------
    @staticmethod
    def encoder(network: nn.Module) -> nn.Module:
        """The base model inside a network (`electra`, `deberta`, `bert`, ...; a base model is its own)."""
        return network.base_model

    def embedding_parameters(self, network: nn.Module) -> dict[str, str]:
        """{name inside the embedding block: name inside `network`} of the tables (`nn.Embedding`) and
        norms directly in the block that holds the word table, the word table first."""
        word = self.encoder(network).get_input_embeddings()
        block_name = self.embedding_block_name(network)
        block = network.get_submodule(block_name)
        found = {}
        for child_name, child in sorted(block.named_children(), key=lambda item: item[1] is not word):
            if isinstance(child, (nn.Embedding, nn.LayerNorm)):
                for parameter_name, _ in child.named_parameters():
                    found[f"{child_name}.{parameter_name}"] = f"{block_name}.{child_name}.{parameter_name}"
        return found

    def word_embedding_name(self, network: nn.Module) -> str:
        return next(iter(self.embedding_parameters(network).values()))

    def transformer_layers(self, network: nn.Module) -> nn.ModuleList:
        """The encoder's list of transformer layers (as many as `num_hidden_layers`)."""
        depth = network.config.num_hidden_layers
        for module in self.encoder(network).modules():
            if isinstance(module, nn.ModuleList) and len(module) == depth:
                return module
        raise ValueError(f"{type(network).__name__}: no list of {depth} transformer layers found")

    def embedding_block_name(self, network: nn.Module) -> str:
        """The name inside `network` of the module that holds the word table."""
        names = {module: name for name, module in network.named_modules()}
        return names[self.encoder(network).get_input_embeddings()].rpartition(".")[0]

    def embedding_block(self, network: nn.Module) -> nn.Module:
        return network.get_submodule(self.embedding_block_name(network))

    # --- sharing ---------------------------------------------------------------------------
    def tied_parameters(self, generator: nn.Module, discriminator: nn.Module, mode: str) -> dict[str, str]:
        """{generator parameter: discriminator parameter} that embedding-sharing `mode` ties, names
        relative to the two networks. "all": every table and norm of the embedding block; "word":
        the word table; "none" and "gdes" (the word table goes through the discriminator's delta):
        nothing, as DeBERTa-v3 shares only the word table. The generator's output layer follows its
        word table through the generator's own tie."""
        generator_tables, discriminator_tables = (self.embedding_parameters(generator),
                                                  self.embedding_parameters(discriminator))
        if mode == "all":
            wanted = list(discriminator_tables)
        elif mode == "word":
            wanted = list(discriminator_tables)[:1]
        else:
            wanted = self.gdes_tied_tables(discriminator_tables) if mode == "gdes" else []
        missing = [name for name in wanted if name not in generator_tables]
        if missing:
            raise ValueError(f"embedding_sharing={mode!r}: the generator has no {missing} to share")
        for name in wanted:
            shapes = (generator.get_parameter(generator_tables[name]).shape,
                      discriminator.get_parameter(discriminator_tables[name]).shape)
            if shapes[0] != shapes[1]:
                raise ValueError(f"embedding_sharing={mode!r} ties {name}, whose shapes differ between the generator "
                                 f"and the discriminator ({tuple(shapes[0])} vs {tuple(shapes[1])}); share less "
                                 "('word', 'gdes' or 'none') or give both networks its width")
        ties = {generator_tables[name]: discriminator_tables[name] for name in wanted}
        if mode in ("all", "word"):  # the generator's output layer is tied to its (now shared) word table
            generator_word = next(iter(generator_tables.values()))
            for target, source in generator.all_tied_weights_keys.items():
                if source == generator_word:
                    ties[target] = next(iter(discriminator_tables.values()))
        return ties

    def gdes_tied_tables(self, discriminator_tables: dict[str, str]) -> list[str]:
        return []

    # --- the forward pass ------------------------------------------------------------------
    @staticmethod
    def segment_arguments(network: nn.Module, token_type_ids) -> dict:
        """`token_type_ids` for an encoder with a segment table of 2 or more entries; none for
        RoBERTa (1 entry), DeBERTa-v3 (0) or ModernBERT (no such input), which read both
        segments without segment ids, as they were pre-trained."""
        encoder = Backbone.encoder(network)
        takes_segments = forward_takes(type(encoder), "token_type_ids")
        if token_type_ids is None or not takes_segments or getattr(encoder.config, "type_vocab_size", 0) < 2:
            return {}
        return {"token_type_ids": token_type_ids}

    def generator_logits(self, generator: nn.Module, input_ids, positions, attention_mask=None,
                         token_type_ids=None) -> torch.Tensor:
        """`(B, N, V)` vocabulary logits at `positions (B, N)`: the head runs on those positions only
        where this family's head is known; otherwise on every position, then gathered (see
        `computes_logits_at_masked_positions_only`)."""
        segments = self.segment_arguments(generator, token_type_ids)
        head = self.MASKED_LM_HEADS.get(self.model_type)
        if head is None:
            logits = generator(input_ids, attention_mask=attention_mask, **segments).logits
            return gather_positions(logits, positions)
        hidden = self.encoder(generator)(input_ids, attention_mask=attention_mask, **segments).last_hidden_state
        hidden = gather_positions(hidden, positions)
        for name in head:
            hidden = getattr(generator, name)(hidden)
        return hidden

    def computes_logits_at_masked_positions_only(self) -> bool:
        return self.model_type in self.MASKED_LM_HEADS

    def discriminator_logits(self, discriminator: nn.Module, head: nn.Module | None, input_ids=None,
                             inputs_embeds=None, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """`(B, T)` RTD logits from ids, or from `inputs_embeds` (GDES: the word table is computed)."""
        segments = self.segment_arguments(discriminator, token_type_ids)
        hidden = discriminator(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               **segments).last_hidden_state
        return head(hidden)


class ElectraBackbone(Backbone):
    """ELECTRA: `ElectraForMaskedLM` and `ElectraForPreTraining` (which holds ELECTRA's RTD head)."""

    family = "electra"
    projects_embeddings = True
    rtd_head_prefix = None
    MASKED_LM_HEADS = {"electra": ("generator_predictions", "generator_lm_head")}

    def build_generator(self, config) -> nn.Module:
        return ElectraForMaskedLM(config)

    @staticmethod
    def discriminator_class(config) -> tuple[type, dict]:
        return ElectraForPreTraining, {}

    def build_rtd_head(self, config) -> None:
        return None

    def gdes_tied_tables(self, discriminator_tables: dict[str, str]) -> list[str]:
        # ELECTRA's GDES keeps its position and token-type tables and the LayerNorm shared, as in "all".
        return list(discriminator_tables)[1:]

    @staticmethod
    def segment_arguments(network: nn.Module, token_type_ids) -> dict:
        return {"token_type_ids": token_type_ids}

    def discriminator_logits(self, discriminator: nn.Module, head: nn.Module | None, input_ids=None,
                             inputs_embeds=None, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        if inputs_embeds is not None:
            return discriminator(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).logits
        return discriminator(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


class DebertaV2Backbone(Backbone):
    """DeBERTa-v2/v3: `DebertaV2ForMaskedLM` and `DebertaV2Model` with DeBERTa-v3's RTD head.

    transformers' masked LM has no enhanced mask decoder (microsoft/DeBERTa's generator re-runs its
    last layer with absolute positions before the head): the generator is transformers' class as it is.
    """

    family = "deberta-v2"
    projects_embeddings = True
    rtd_head_prefix = "mask_predictions"
    derived_fields = {"pooler_hidden_size": "hidden_size"}

    @classmethod
    def generator_fields(cls, fields: dict, discriminator_config) -> dict:
        fields = super().generator_fields(fields, discriminator_config)
        # DeBERTa-v3's head layout (`lm_predictions`, what microsoft/DeBERTa generators hold) multiplies
        # by the word table at the hidden width; a narrower generator needs BERT's layout (`cls`), which
        # projects to the embedding width first.
        fields["legacy"] = fields["hidden_size"] != embedding_width(discriminator_config)
        fields["tie_word_embeddings"] = fields["legacy"]  # DeBERTa-v3's head has no output layer to tie
        return fields

    def build_generator(self, config) -> nn.Module:
        generator = super().build_generator(config)
        if not config.legacy and generator.all_tied_weights_keys:
            # transformers 5.17's DebertaV2ForMaskedLM(legacy=False) declares a tie of `lm_predictions.lm_head.weight`,
            # which DeBERTa-v3's head never reads (it multiplies by the word table itself): tying hangs the word table
            # on the head as a `weight` that from_pretrained cannot find again. Later releases declare no tie there
            # (tests/test_upstream.py); the generator is made like theirs.
            head = generator.lm_predictions.lm_head
            if "weight" in dict(head.named_parameters(recurse=False)):
                del head.weight
            generator._tied_weights_keys = {}
            generator.all_tied_weights_keys = {}
            config.tie_word_embeddings = False  # and an export says so, for transformers 5.17 alone to load it
        return generator

    @staticmethod
    def generator_load_kwargs(config) -> dict:
        # See build_generator: without a tie to make, from_pretrained never looks for the missing parameter.
        return {} if config.legacy else {"tie_word_embeddings": False}

    def build_rtd_head(self, config) -> nn.Module:
        if config.hidden_act != "gelu":
            raise ValueError(f"DeBERTa's RTD head uses GELU; discriminator_config.hidden_act is {config.hidden_act!r}")
        return DebertaRTDHead(config.hidden_size, config.layer_norm_eps)

    def generator_logits(self, generator: nn.Module, input_ids, positions, attention_mask=None,
                         token_type_ids=None) -> torch.Tensor:
        segments = self.segment_arguments(generator, token_type_ids)
        hidden = generator.deberta(input_ids, attention_mask=attention_mask, **segments).last_hidden_state
        hidden = gather_positions(hidden, positions)
        if generator.config.legacy:  # BERT's layout: transform, then the decoder tied to the word table
            return generator.cls(hidden)
        return generator.lm_predictions(hidden, generator.deberta.embeddings.word_embeddings)

    def computes_logits_at_masked_positions_only(self) -> bool:
        return True


BACKBONES = {"electra": ElectraBackbone, "deberta-v2": DebertaV2Backbone}


def backbone_class(model_type: str) -> type[Backbone]:
    return BACKBONES.get(model_type, Backbone)


def backbone_for(config) -> Backbone:
    """The family of a network's config (by `model_type`; any other masked-LM family: `Backbone`)."""
    backbone = backbone_class(config.model_type)(config.model_type)
    if not backbone.computes_logits_at_masked_positions_only():
        logger.warning("model_type %r: electra_hf does not know where its masked-LM head is, so the generator "
                       "computes vocabulary logits at every position and keeps the masked ones (same values, "
                       "more time and memory)", config.model_type)
    return backbone


def is_supported_encoder(config) -> bool:
    """A model type RTD can pre-train (transformers has its masked-LM class) and the fine-tuning
    scripts can fine-tune."""
    return type(config) in MODEL_FOR_MASKED_LM_MAPPING and type(config) in MODEL_MAPPING
