"""Continued pre-training: an RTD model that starts from released or earlier checkpoints.

    source = CheckpointSource.resolve(model_name_or_path, generator_name_or_path, discriminator_name_or_path)
    config = source.config(overrides)                  # the checkpoints' networks, RTD fields from the flags
    load_initial_weights(model, source, shared_embeddings_from=None)   # into a model built from `config`

A source is an electra_hf checkpoint (a `train_pretrain.py` checkpoint or a saved
`ElectraForRTDPretraining`), an export folder (`generator/` and `discriminator/`), or any pair of
plain checkpoints of one family (`google/electra-small-generator` + `-discriminator`, a DeBERTa
pair, ...). Whatever the source, the weights go through one path (`load_pair`), which takes care
of what doing it by hand gets wrong:
- the config is the checkpoints' own, with the true generator width and depth ratios recorded;
- the tables the sharing mode ties are compared, and a mismatch is refused unless
  `shared_embeddings_from` names the network to take them from (otherwise the shared tables
  would silently be whichever network was loaded last);
- GDES: the discriminator's delta is its word table minus the generator's, so that
  stop-gradient(shared) + delta reproduces the discriminator it was given;
- the RTD head of a family whose discriminator class has none (DeBERTa's `mask_predictions.*`) is
  read from the discriminator's weights when they hold it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, PreTrainedModel

from .configuration import DEBERTA_V3_RTD, PRETRAINING_FIELDS, ElectraPretrainingConfig
from .export import discriminator_as_plain_model, generator_as_plain_model, rtd_head_state
from .modeling import ElectraForRTDPretraining

logger = logging.getLogger(__name__)

#: Peak learning rate of a continued run when --learning_rate is not given: microsoft/DeBERTa's
#: continued-RTD recipe (rtd.sh "*-continue": 5e-5, 10k warm-up steps), about a tenth of the
#: from-scratch peaks (ELECTRA 5e-4 Small, 2e-4 Base/Large; DeBERTa-v3 3e-4 XSmall, 1e-4 Base).
#: A released checkpoint ended its schedule at a learning rate near 0; a from-scratch peak would
#: undo much of what it learnt before the run could use it.
CONTINUED_LEARNING_RATE = 5e-5
#: The RTD fields of a pair by family (the networks come from the checkpoints): DeBERTa-v3's recipe.
FAMILY_RTD_FIELDS = {"deberta-v2": {key: value for key, value in DEBERTA_V3_RTD.items() if "ratio" not in key}}
SHARED_FROM = ("generator", "discriminator")


@dataclass
class CheckpointSource:
    """Where a continued run starts: an electra_hf checkpoint, or a generator and a discriminator."""

    checkpoint: str | None = None
    generator: str | None = None
    discriminator: str | None = None

    @classmethod
    def resolve(cls, model_name_or_path=None, generator_name_or_path=None, discriminator_name_or_path=None):
        """The source the flags name (None: a run from random weights)."""
        if model_name_or_path and (generator_name_or_path or discriminator_name_or_path):
            raise ValueError("give --model_name_or_path, or --generator_name_or_path with --discriminator_name_or_path, "
                             "not both")
        if bool(generator_name_or_path) != bool(discriminator_name_or_path):
            raise ValueError("--generator_name_or_path and --discriminator_name_or_path go together (a pair of plain "
                             "checkpoints of one family)")
        if generator_name_or_path:
            return cls(generator=generator_name_or_path, discriminator=discriminator_name_or_path)
        if not model_name_or_path:
            return None
        folder = Path(model_name_or_path)
        if (folder / "generator" / "config.json").is_file() and (folder / "discriminator" / "config.json").is_file():
            return cls(generator=str(folder / "generator"), discriminator=str(folder / "discriminator"))
        config_file = folder / "config.json"
        if config_file.is_file() and json.loads(config_file.read_text()).get("model_type") == \
                ElectraPretrainingConfig.model_type:
            return cls(checkpoint=str(folder))
        hint = (" (a train_pretrain.py run folder: give its export/ or a checkpoints/step_N)"
                if (folder / "checkpoints").is_dir() else "")
        raise ValueError(f"--model_name_or_path {model_name_or_path}: neither an electra_hf checkpoint (a config.json of "
                         f"model_type {ElectraPretrainingConfig.model_type!r}) nor an export folder (generator/ and "
                         f"discriminator/){hint}; give a pair of plain checkpoints with --generator_name_or_path and "
                         "--discriminator_name_or_path")

    @classmethod
    def from_arguments(cls, model_args):
        """The source of `PretrainingModelArguments` (None: a run from random weights)."""
        return cls.resolve(model_args.model_name_or_path, model_args.generator_name_or_path,
                           model_args.discriminator_name_or_path)

    @property
    def tokenizer_path(self) -> str:
        """Where the run's tokenizer is, unless --tokenizer_name_or_path says otherwise."""
        return self.checkpoint or self.discriminator

    def config(self, overrides: dict) -> ElectraPretrainingConfig:
        """The run's config: the checkpoints' networks, the RTD fields of `overrides` (None: kept)."""
        overrides = {key: value for key, value in overrides.items() if value is not None}
        fixed = sorted(key for key in overrides if key not in PRETRAINING_FIELDS or "ratio" in key)
        if fixed:
            raise ValueError(f"--{', --'.join(fixed)}: a continued run keeps the networks of the checkpoints it starts "
                             f"from ({self.checkpoint or self.discriminator})")
        if self.checkpoint:
            return ElectraPretrainingConfig.from_pretrained(self.checkpoint).with_overrides(**overrides)
        discriminator, generator = (network_fields(AutoConfig.from_pretrained(path))
                                    for path in (self.discriminator, self.generator))
        ratios = dict(generator_size_ratio=generator["hidden_size"] / discriminator["hidden_size"],
                      generator_depth_ratio=generator["num_hidden_layers"] / discriminator["num_hidden_layers"])
        fields = {**FAMILY_RTD_FIELDS.get(discriminator["model_type"], {}), **overrides}
        return ElectraPretrainingConfig(discriminator_config=discriminator, generator_config=generator, **ratios,
                                        **fields)


def network_fields(config) -> dict:
    """A checkpoint's config as a sub-config dict, without what names the checkpoint's own class."""
    fields = config.to_dict()
    for key in ("architectures", "_name_or_path", "transformers_version", "auto_map", "id2label", "label2id"):
        fields.pop(key, None)
    return fields


# --------------------------------------------------------------------------------------------
# Loading the weights
# --------------------------------------------------------------------------------------------
def load_initial_weights(model: ElectraForRTDPretraining, source: CheckpointSource,
                         shared_embeddings_from: str | None = None) -> None:
    """Load `source` into `model` (built from `source.config(...)`), in place."""
    if source.checkpoint:
        saved = ElectraForRTDPretraining.from_pretrained(source.checkpoint)
        if saved.discriminator is None:
            raise ValueError(f"{source.checkpoint} was pre-trained with objective 'mlm': it has no discriminator to "
                             "continue RTD from")
        generator, discriminator = generator_as_plain_model(saved), discriminator_as_plain_model(saved)
        head = {name.partition(".")[2]: tensor for name, tensor in rtd_head_state(saved).items()}
    else:
        generator_kwargs = model.backbone.generator_load_kwargs(model.config.generator_config)
        generator = type(model.generator).from_pretrained(source.generator, **generator_kwargs)
        discriminator_class, kwargs = model.backbone.discriminator_class(model.config.discriminator_config)
        discriminator = discriminator_class.from_pretrained(source.discriminator, **kwargs)
        head = read_rtd_head(source.discriminator, model.backbone.rtd_head_prefix) if model.discriminator_head else {}
    load_pair(model, generator, discriminator, head, shared_embeddings_from)
    logger.info("continued pre-training from %s: generator %.3g × the discriminator's width, %.3g × its depth; "
                "embedding sharing %r", source.checkpoint or f"{source.generator} + {source.discriminator}",
                model.config.generator_size_ratio, model.config.generator_depth_ratio, model.config.embedding_sharing)


def load_pair(model: ElectraForRTDPretraining, generator: PreTrainedModel, discriminator: PreTrainedModel,
              head: dict[str, torch.Tensor], shared_embeddings_from: str | None = None) -> None:
    """Copy a plain generator and discriminator (and RTD head, if any) into `model`: shared tables
    checked (see the module docstring), GDES delta computed."""
    if shared_embeddings_from not in (None, *SHARED_FROM):
        raise ValueError(f"--shared_embeddings_from must be one of {SHARED_FROM}, got {shared_embeddings_from!r}")
    generator_state, discriminator_state = generator.state_dict(), discriminator.state_dict()
    reconcile_shared_tables(model, generator_state, discriminator_state, shared_embeddings_from)
    if model.uses_gdes:
        word = model.backbone.word_embedding_name(model.discriminator)
        shared = generator_state[model.backbone.word_embedding_name(model.generator)]
        discriminator_state[word] = gdes_delta(shared, discriminator_state[word])
    # The discriminator last: the tables both networks hold now have the reconciled values either way.
    for network, state in ((model.generator, generator_state), (model.discriminator, discriminator_state)):
        missing, unexpected = network.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"the checkpoint does not fit the {type(network).__name__} its config describes: missing "
                             f"{sorted(missing)}, unexpected {sorted(unexpected)}")
    if model.discriminator_head is not None:
        if head:
            model.discriminator_head.load_state_dict(head)
        else:
            logger.warning("the discriminator checkpoint holds no RTD head (%s.*): the head starts from random weights",
                           model.backbone.rtd_head_prefix)


def reconcile_shared_tables(model: ElectraForRTDPretraining, generator_state: dict, discriminator_state: dict,
                            shared_from: str | None) -> None:
    """Make the tables the model ties equal in both states: refuse different ones unless
    `shared_from` says which network's to keep."""
    differing = []
    for target, source in model.all_tied_weights_keys.items():
        if not (target.startswith("generator.") and source.startswith("discriminator.")):
            continue  # a tie inside one network (its output layer): it follows its table
        target, source = target.partition(".")[2], source.partition(".")[2]
        generator_value, discriminator_value = generator_state[target], discriminator_state[source]
        if not torch.equal(generator_value, discriminator_value):
            gap = (generator_value.float() - discriminator_value.float()).abs().max().item()
            differing.append(f"{source} (max difference {gap:.3g})")
            if shared_from == "generator":
                discriminator_state[source] = generator_value
            else:
                generator_state[target] = discriminator_value
    if differing and shared_from is None:
        raise ValueError(f"embedding_sharing={model.config.embedding_sharing!r} ties tables that differ between the "
                         f"generator and the discriminator: {', '.join(differing)}. Pass --shared_embeddings_from "
                         "generator|discriminator to take them from one network, or --embedding_sharing gdes|none "
                         "(the sharing these checkpoints were trained with)")
    if differing:
        logger.warning("the shared tables %s differ between the checkpoints: the %s's are used", differing, shared_from)


def gdes_delta(shared: torch.Tensor, target: torch.Tensor, rounds: int = 4) -> torch.Tensor:
    """A delta with `shared + delta == target` bit for bit wherever the tables' dtype can write one.

    The difference is rounded once; a few steps of one ulp towards the target undo that rounding.
    Where no delta exists (a target far smaller than the shared entry), the nearest one is kept and
    the log says how many entries and by how much they differ.
    """
    delta = (target.double() - shared.double()).to(target.dtype)
    infinity = torch.full_like(delta, float("inf"))
    for _ in range(rounds):
        error = (shared + delta) - target
        if not error.any():
            break
        delta = torch.where(error > 0, torch.nextafter(delta, -infinity),
                            torch.where(error < 0, torch.nextafter(delta, infinity), delta))
    inexact = (shared + delta) != target
    if inexact.any():
        gap = ((shared + delta) - target).abs().max().item()
        logger.warning("GDES: %d of %d entries of the discriminator's word table cannot be written as the shared "
                       "table + a %s delta; they differ by at most %.3g", int(inexact.sum()), target.numel(),
                       target.dtype, gap)
    return delta


def read_rtd_head(path: str, prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix.` in a checkpoint's weights (a local folder or a Hub id), without the prefix."""
    folder = Path(path)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(path, allow_patterns=["*.json", "*.safetensors", "pytorch_model*.bin"]))
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    head = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(file, "pt") as weights:
                head.update({key: weights.get_tensor(key) for key in weights.keys() if key.startswith(prefix + ".")})
        elif "generator" not in file.name:  # microsoft's repositories keep their generator beside the discriminator
            state = torch.load(file, map_location="cpu", weights_only=True)
            head.update({key: value for key, value in state.items() if key.startswith(prefix + ".")})
    return {key[len(prefix) + 1:]: value for key, value in head.items()}
