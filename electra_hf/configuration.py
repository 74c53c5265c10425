"""Configuration of the ELECTRA pre-training model (generator + discriminator + RTD settings).

`ElectraPretrainingConfig` holds two ordinary `transformers.ElectraConfig`s — the
discriminator's and the generator's — plus the replaced-token-detection hyper-parameters.
Every default is the official one (google-research/electra, ELECTRA-Small), see
`../shared/electra-reference.md` in the development tree or the paper (Clark et al., 2020).

The two sub-configs are ordinary transformers configs of one encoder family: `ElectraConfig` by
default, `DebertaV2Config` for the DeBERTa-v3 presets, or any family with a masked-LM class
(`BertConfig`, `ModernBertConfig`, ...; see `backbones.py`). The generator is derived from the
discriminator by `generator_size_ratio` (hidden size, FFN size and attention heads scaled, same
embedding width so that embeddings can be shared) and `generator_depth_ratio` (layers) unless
`generator_config` is given explicitly.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from transformers import AutoConfig, ElectraConfig, PreTrainedConfig

from .backbones import backbone_class, embedding_width

OBJECTIVES = ("electra", "mlm")
EMBEDDING_SHARING_MODES = ("all", "word", "none", "gdes")
SAMPLING_METHODS = ("categorical", "gumbel")
# The pre-training fields of `ElectraPretrainingConfig` (besides the two networks' configs).
PRETRAINING_FIELDS = (
    "generator_size_ratio", "generator_depth_ratio", "objective", "embedding_sharing", "mask_prob", "mask_token_prob", "random_token_prob",
    "mask_with_replacement", "max_seq_length", "max_predictions_per_seq", "generator_loss_weight", "discriminator_loss_weight",
    "sampling_temperature", "sampling_method", "compute_metrics",
)

# Discriminator fields a run may override (the generator follows through `generator_size_ratio`).
DISCRIMINATOR_FIELDS = {
    "hidden_size": "Hidden size of the discriminator (Small 256, Base 768, Large 1024).",
    "embedding_size": "Embedding size, shared with the generator (Small 128, Base 768, Large 1024).",
    "num_hidden_layers": "Transformer layers (Small and Base 12, Large 24).",
    "num_attention_heads": "Attention heads (Small 4, Base 12, Large 16).",
    "intermediate_size": "Feed-forward size (4 × hidden).",
    "hidden_dropout_prob": "Dropout on hidden states (0.1).",
    "attention_probs_dropout_prob": "Dropout on attention probabilities (0.1).",
}

# DeBERTa-v3's network settings besides the sizes (microsoft/DeBERTa rtd_*.json; vocabulary 128100 there).
_DEBERTA_V3_NETWORK = dict(
    relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm", share_att_key=True,
    pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7, max_relative_positions=-1, position_biased_input=False,
    type_vocab_size=0, hidden_act="gelu", vocab_size=128100,
)
#: DeBERTa-v3's RTD recipe (microsoft/DeBERTa rtd.sh and rtd_task.py): also the RTD defaults of a
#: DeBERTa-v2 pair given as checkpoints.
DEBERTA_V3_RTD = dict(
    generator_size_ratio=1.0, generator_depth_ratio=0.5, embedding_sharing="gdes", mask_token_prob=1.0,
    mask_with_replacement=False, discriminator_loss_weight=10.0, max_seq_length=512,
)

def _electra_preset(hidden: int, layers: int, heads: int, embedding: int, generator_size_ratio: float,
                    **rtd: Any) -> dict[str, Any]:
    """A preset of the ELECTRA family: the discriminator's width, depth, attention heads and
    embedding width (feed-forward 4 × width), the generator's width ratio and RTD fields."""
    return dict(discriminator=dict(embedding_size=embedding, hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=heads, intermediate_size=4 * hidden),
                generator_size_ratio=generator_size_ratio, **rtd)


# The official sizes (paper Table 6 / official configure_pretraining.py) and small CPU presets.
# Each entry: discriminator ElectraConfig fields, generator ratio, RTD fields.
PRESETS: dict[str, dict[str, Any]] = {
    # For tests and CPU demos: a few seconds per hundred steps on 2 cores.
    "tiny": _electra_preset(hidden=64, layers=2, heads=2, embedding=64, generator_size_ratio=0.5),
    # Big enough to learn something real in an hour of CPU.
    "mini": _electra_preset(hidden=128, layers=4, heads=2, embedding=128, generator_size_ratio=0.25),
    "small": _electra_preset(hidden=256, layers=12, heads=4, embedding=128, generator_size_ratio=0.25),
    # The released ELECTRA-Small++: generator as wide as the discriminator, trained at length 512.
    "small++": _electra_preset(hidden=256, layers=12, heads=4, embedding=128, generator_size_ratio=1.0,
                               max_seq_length=512),
    "base": _electra_preset(hidden=768, layers=12, heads=12, embedding=768, generator_size_ratio=1 / 3,
                            max_seq_length=512),
    "large": _electra_preset(hidden=1024, layers=24, heads=16, embedding=1024, generator_size_ratio=0.25,
                             mask_prob=0.25, max_seq_length=512),
    # DeBERTa-v3 (He, Gao & Chen 2021; microsoft/DeBERTa experiments/language_model/rtd_*.json):
    # relative attention, no absolute positions or segments, a generator as wide as the
    # discriminator and half as deep, gradient-disentangled embedding sharing.
    "deberta-v3-xsmall": dict(model_type="deberta-v2", discriminator=dict(
        hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, **_DEBERTA_V3_NETWORK),
        **DEBERTA_V3_RTD),
    "deberta-v3-small": dict(model_type="deberta-v2", discriminator=dict(
        hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072, **_DEBERTA_V3_NETWORK),
        **DEBERTA_V3_RTD),
    "deberta-v3-base": dict(model_type="deberta-v2", discriminator=dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, **_DEBERTA_V3_NETWORK),
        **DEBERTA_V3_RTD),
}


def official_max_predictions(mask_prob: float, max_seq_length: int) -> int:
    """N in the official masking rule: `int((mask_prob + 0.005) * max_seq_length)` (19 at 128, 79 at 512)."""
    return int((mask_prob + 0.005) * max_seq_length)


def derive_generator_config(discriminator_config: PreTrainedConfig, size_ratio: float,
                            depth_ratio: float = 1.0) -> PreTrainedConfig:
    """Scale the discriminator by `size_ratio` (width) and `depth_ratio` (layers).

    Hidden size, FFN size and attention heads are multiplied by `size_ratio` (heads at least 1), as
    the official ELECTRA code does; the number of layers by `depth_ratio` (DeBERTa-v3: the same
    width, half the depth). Vocabulary, position table and embedding width are kept, so the two
    networks can share embeddings (a narrower ELECTRA or DeBERTa generator projects them to its
    own width). The result is a config of the discriminator's class.
    """
    for name, ratio in (("generator_size_ratio", size_ratio), ("generator_depth_ratio", depth_ratio)):
        if not 0 < ratio <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {ratio}")
    fields = _plain_fields(discriminator_config)
    hidden = max(1, int(round(discriminator_config.hidden_size * size_ratio)))
    heads = max(1, int(round(discriminator_config.num_attention_heads * size_ratio)))
    while hidden % heads:  # keep the head size an integer
        heads -= 1
    depth = max(1, int(round(discriminator_config.num_hidden_layers * depth_ratio)))
    if depth != discriminator_config.num_hidden_layers:
        fields.pop("layer_types", None)  # per-layer lists (ModernBERT) are derived again for the new depth
    fields.update(
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=max(1, int(round(discriminator_config.intermediate_size * size_ratio))),
        num_hidden_layers=depth,
    )
    family = backbone_class(discriminator_config.model_type)
    fields = family.generator_fields(family.follow_changed_fields(fields, discriminator_config), discriminator_config)
    return type(discriminator_config)(**fields)


def network_config(fields: dict[str, Any] | PreTrainedConfig | None) -> PreTrainedConfig:
    """A sub-config from its saved dict: the class its `model_type` names (ELECTRA without one)."""
    if isinstance(fields, PreTrainedConfig):
        return fields
    fields = dict(fields or {})
    return AutoConfig.for_model(fields.pop("model_type", ElectraConfig.model_type), **fields)


class ElectraPretrainingConfig(PreTrainedConfig):
    r"""Configuration of [`ElectraForRTDPretraining`].

    Args:
        discriminator_config (`PreTrainedConfig` or `dict`, *optional*):
            The discriminator (the encoder kept after pre-training): an `ElectraConfig` (default:
            ELECTRA-Small), a `DebertaV2Config` or the config of any family with a masked-LM class;
            a dict is read by its `model_type`.
        generator_config (`PreTrainedConfig` or `dict`, *optional*):
            The generator, of the discriminator's family. Default: derived from the discriminator
            with `generator_size_ratio` and `generator_depth_ratio`.
        generator_size_ratio (`float`, defaults to 0.25):
            Generator width / discriminator width (official: 1/4 Small and Large, 1/3 Base; DeBERTa-v3: 1).
        generator_depth_ratio (`float`, defaults to 1.0):
            Generator layers / discriminator layers (official ELECTRA: 1, the same depth; DeBERTa-v3: 1/2).
        objective (`str`, defaults to `"electra"`):
            `"electra"`: replaced token detection (generator MLM + discriminator BCE).
            `"mlm"`: a BERT-style masked LM of the discriminator's size on the same pipeline (the
            equal-compute baseline of the paper); only `generator_config`-free, discriminator-sized.
        embedding_sharing (`str`, defaults to `"all"`):
            What the two networks share. `"all"` (official): word, position and token-type
            embeddings and the embedding LayerNorm (every table and norm of the embedding block).
            `"word"`: word embeddings only. `"none"`. `"gdes"`: DeBERTa-v3 gradient-disentangled
            sharing: the discriminator reads stop-grad(shared word embeddings) + its own
            zero-initialised delta, so only the generator loss moves the shared table (ELECTRA
            keeps position/type embeddings and LayerNorm shared as in `"all"`; other families share
            only the word table, as DeBERTa-v3 does). The DeBERTa-v3 presets use `"gdes"`.
        mask_prob (`float`, defaults to 0.15): fraction of tokens selected for prediction (0.25 Large).
        mask_token_prob (`float`, defaults to 0.85): of the selected, fraction replaced by [MASK]
            (DeBERTa-v3: 1.0).
        random_token_prob (`float`, defaults to 0.0): of the selected, fraction replaced by a
            random token (official ELECTRA: 0, BERT: 0.1). The rest keep the original token.
        mask_with_replacement (`bool`, defaults to True): draw the selected positions with
            replacement, as the official code does (duplicates collapse: about 17.6 distinct
            positions of 19 draws on a full 128-token sequence). False: exactly that many distinct
            positions (DeBERTa-v3's rule, and BERT's).
        max_seq_length (`int`, defaults to 128): sequence length of the pre-training examples (Base,
            Large and DeBERTa-v3: 512).
        max_predictions_per_seq (`int`, *optional*):
            N, the cap on selected positions per sequence. Default `int((mask_prob+0.005)*max_seq_length)`.
        generator_loss_weight (`float`, defaults to 1.0): weight of the generator's masked-LM loss.
        discriminator_loss_weight (`float`, defaults to 50.0): weight of the discriminator's loss
            (DeBERTa-v3: 10, microsoft/DeBERTa's `--rtd_lambda`).
        sampling_temperature (`float`, defaults to 1.0): sampling temperature.
        sampling_method (`str`, defaults to `"categorical"`): how replacements are drawn from the
            generator's softmax. `"gumbel"`: the official Gumbel-max, `argmax(logits/T + g)` with one
            Gumbel draw per vocabulary entry. `"categorical"`: an exact two-level inverse-CDF sampler
            of the *same* distribution that draws 2 uniforms per position instead of V (much cheaper
            on CPUs, where Gumbel-max over 30k entries is dominated by the random number generator).
        compute_metrics (`bool`, defaults to True): also return accuracies/precision/recall (cheap,
            no host sync).
    """

    model_type = "electra_pretraining"
    # transformers >= 5.25 reads `sub_configs_defaults`, 5.17-5.24 `sub_configs` (attention settings
    # reach the sub-configs through them); `__post_init__` builds the sub-configs itself, before the
    # base class, which both releases accept.
    sub_configs_defaults = {"discriminator_config": ElectraConfig, "generator_config": ElectraConfig}
    sub_configs = {"discriminator_config": ElectraConfig, "generator_config": ElectraConfig}

    discriminator_config: dict | PreTrainedConfig | None = None
    generator_config: dict | PreTrainedConfig | None = None
    generator_size_ratio: float = 0.25
    generator_depth_ratio: float = 1.0
    objective: str = "electra"
    embedding_sharing: str = "all"
    mask_prob: float = 0.15
    mask_token_prob: float = 0.85
    random_token_prob: float = 0.0
    mask_with_replacement: bool = True
    max_seq_length: int = 128
    max_predictions_per_seq: int | None = None
    generator_loss_weight: float = 1.0
    discriminator_loss_weight: float = 50.0
    sampling_temperature: float = 1.0
    sampling_method: str = "categorical"
    compute_metrics: bool = True
    # transformers only applies `_tied_weights_keys` (our embedding sharing) when this is set.
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        derive_generator = self.generator_config is None
        self.discriminator_config = network_config(self.discriminator_config)
        # a placeholder generator until derived
        self.generator_config = network_config(self.generator_config or {"model_type": self.discriminator_config.model_type})
        super().__post_init__(**kwargs)
        self._validate_fields()
        if derive_generator:
            self.generator_config = derive_generator_config(self.discriminator_config, self.generator_size_ratio,
                                                            self.generator_depth_ratio)
        if self.max_predictions_per_seq is None:
            self.max_predictions_per_seq = official_max_predictions(self.mask_prob, self.max_seq_length)
        self._validate_networks()

    def _validate_fields(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.embedding_sharing not in EMBEDDING_SHARING_MODES:
            raise ValueError(f"embedding_sharing must be one of {EMBEDDING_SHARING_MODES}, got {self.embedding_sharing!r}")
        if not 0 < self.mask_prob < 1:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        for name in ("mask_token_prob", "random_token_prob"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.mask_token_prob + self.random_token_prob > 1 + 1e-9:
            raise ValueError(
                f"mask_token_prob + random_token_prob must be <= 1 (the rest keeps the original token), got "
                f"{self.mask_token_prob} + {self.random_token_prob}"
            )
        if self.max_seq_length < 3:
            raise ValueError(f"max_seq_length must be >= 3 ([CLS] x [SEP]), got {self.max_seq_length}")
        if self.max_predictions_per_seq is not None and not 1 <= self.max_predictions_per_seq <= self.max_seq_length:
            raise ValueError(
                f"max_predictions_per_seq must be in [1, max_seq_length={self.max_seq_length}], got "
                f"{self.max_predictions_per_seq}"
            )
        for name in ("generator_loss_weight", "discriminator_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.sampling_method not in SAMPLING_METHODS:
            raise ValueError(f"sampling_method must be one of {SAMPLING_METHODS}, got {self.sampling_method!r}")
        if self.sampling_temperature <= 0:
            raise ValueError(f"sampling_temperature must be > 0, got {self.sampling_temperature}")
        for name in ("generator_size_ratio", "generator_depth_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")

    def _validate_networks(self) -> None:
        disc, gen = self.discriminator_config, self.generator_config
        if disc.max_position_embeddings < self.max_seq_length:
            raise ValueError(
                f"max_seq_length={self.max_seq_length} exceeds discriminator_config.max_position_embeddings="
                f"{disc.max_position_embeddings}"
            )
        if disc.hidden_size % disc.num_attention_heads:
            raise ValueError(
                f"discriminator_config.hidden_size={disc.hidden_size} is not divisible by num_attention_heads="
                f"{disc.num_attention_heads}"
            )
        if self.objective != "electra":
            return
        if gen.model_type != disc.model_type:
            raise ValueError(f"generator_config is a {gen.model_type!r} config but discriminator_config a "
                             f"{disc.model_type!r} one: both networks must be of one family")
        if self.embedding_sharing == "none":
            return
        width_name = "embedding_size" if backbone_class(disc.model_type).projects_embeddings else "hidden_size"
        needed = {"vocab_size": (gen.vocab_size, disc.vocab_size),
                  width_name: (embedding_width(gen), embedding_width(disc))}
        for name in ("max_position_embeddings", "type_vocab_size"):
            needed[name] = (getattr(gen, name, None), getattr(disc, name, None))
        for name, (generator_value, discriminator_value) in needed.items():
            if generator_value != discriminator_value:
                hint = (f" ({disc.model_type} embeddings are as wide as hidden_size: keep generator_size_ratio 1 and make "
                        "the generator smaller with generator_depth_ratio, or use embedding_sharing 'none')"
                        if width_name == name == "hidden_size" else "")
                raise ValueError(
                    f"embedding_sharing={self.embedding_sharing!r} needs generator_config.{name} == "
                    f"discriminator_config.{name} ({generator_value} != {discriminator_value}){hint}"
                )

    @property
    def vocab_size(self) -> int:
        return self.discriminator_config.vocab_size

    @classmethod
    def from_preset(cls, name: str, vocab_size: int | None = None, **overrides: Any) -> "ElectraPretrainingConfig":
        """Build a preset (ELECTRA: "tiny", "mini", "small", "small++", "base", "large"; DeBERTa-v3:
        "deberta-v3-xsmall", "deberta-v3-small", "deberta-v3-base"), then `with_overrides`.

        `overrides` may hold top-level fields (`mask_prob=...`) and discriminator fields
        (`hidden_size=...`, `num_hidden_layers=...`); None values are ignored, unknown names raise
        `ValueError`. The position table holds at least 512 positions (and `max_seq_length`).
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        preset = copy.deepcopy(PRESETS[name])
        discriminator_fields = preset.pop("discriminator")
        if vocab_size is not None:
            discriminator_fields["vocab_size"] = vocab_size
        length = overrides.get("max_seq_length") or preset.get("max_seq_length", 128)
        discriminator_fields["max_position_embeddings"] = max(512, length)
        model_type = preset.pop("model_type", ElectraConfig.model_type)
        config = cls(discriminator_config=network_config({"model_type": model_type, **discriminator_fields}), **preset)
        return config.with_overrides(**overrides)

    def with_overrides(self, **overrides: Any) -> "ElectraPretrainingConfig":
        """A new config with `overrides` applied (None values ignored); this one is unchanged.

        Top-level names set pre-training fields, other names set fields of the discriminator's config.
        What was derived stays derived: a generator made from `generator_size_ratio` is made again
        from the new discriminator and ratio, and a `max_predictions_per_seq` given by the official
        formula is recomputed from the new `mask_prob` and `max_seq_length`.
        """
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if not overrides:
            return self
        top = {name: getattr(self, name) for name in PRETRAINING_FIELDS}
        discriminator = _plain_fields(self.discriminator_config)
        for key, value in overrides.items():
            if key in PRETRAINING_FIELDS:
                top[key] = value
            elif hasattr(self.discriminator_config, key):
                discriminator[key] = value
            else:
                raise ValueError(f"unknown configuration field {key!r} (neither a pre-training nor a "
                                 f"{type(self.discriminator_config).__name__} field)")
        if "num_hidden_layers" in overrides:
            discriminator.pop("layer_types", None)  # per-layer lists (ModernBERT) are derived again for the new depth
        if self.max_predictions_per_seq == official_max_predictions(self.mask_prob, self.max_seq_length):
            top["max_predictions_per_seq"] = overrides.get("max_predictions_per_seq")
        generator = None if self.generator_is_derived() else copy.deepcopy(self.generator_config)
        family = backbone_class(self.discriminator_config.model_type)
        discriminator = type(self.discriminator_config)(**family.follow_changed_fields(discriminator, self.discriminator_config))
        return type(self)(discriminator_config=discriminator, generator_config=generator, **top)

    def generator_is_derived(self) -> bool:
        """True when the generator is the discriminator scaled by `generator_size_ratio` and `generator_depth_ratio`."""
        derived = derive_generator_config(self.discriminator_config, self.generator_size_ratio,
                                          self.generator_depth_ratio)
        return _plain_fields(derived) == _plain_fields(self.generator_config)


def _plain_fields(config: PreTrainedConfig) -> dict[str, Any]:
    """The fields of a network's config, without the bookkeeping `to_dict` adds."""
    fields = copy.deepcopy(config.to_dict())
    for key in ("model_type", "transformers_version", "architectures", "_name_or_path"):
        fields.pop(key, None)
    return fields


def field_help() -> dict[str, str]:
    """One line of help per overridable field: the pre-training fields' from the
    `ElectraPretrainingConfig` docstring (their one documentation), then `DISCRIMINATOR_FIELDS`."""
    entries = re.findall(r"^ {8}(\w+) \(`[^`]*`(?:, ([^)]*))?\)(?::\s*(.*?))?(?=^ {8}\w+ \(|\Z)",
                         ElectraPretrainingConfig.__doc__, flags=re.MULTILINE | re.DOTALL)
    help_text = {}
    for name, default, text in entries:
        if name in PRETRAINING_FIELDS:
            text = " ".join(text.split())
            default = default.replace("defaults to ", "") if default and "defaults to" in default else ""
            help_text[name] = f"{text[:1].upper()}{text[1:]}" + (f" Config default: {default}." if default else "")
    return {**help_text, **DISCRIMINATOR_FIELDS}


AutoConfig.register(ElectraPretrainingConfig.model_type, ElectraPretrainingConfig)
