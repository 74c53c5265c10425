"""Plain-Transformers exports of a pre-trained ELECTRA (or an RTD model of another encoder family).

After pre-training, users want ordinary checkpoints that load anywhere with only `transformers`
installed: the discriminator as `ElectraForPreTraining` (the encoder people fine-tune) and the
generator as `ElectraForMaskedLM` (usable with `pipeline("fill-mask")`). `export_pretrained`
writes both (or, for the "mlm" objective, the masked LM alone), each with the tokenizer files and
a model card that records the training configuration.

Other families export their base model class (`DebertaV2Model`, `BertModel`, ...) as the
discriminator, with the RTD head beside it in the same weights file under the family's prefix
(`mask_predictions.*` for DeBERTa, as microsoft's releases hold it), so that a continued run
finds it again; `AutoModelFor*` classes load the encoder and ignore the head. The generator is the
family's masked-LM class.

Layout written by `export_pretrained(model, out_dir, ...)`:
    out_dir/discriminator/   config.json, model.safetensors, tokenizer files, README.md
    out_dir/generator/       idem (ElectraForMaskedLM)
    out_dir/mlm/             for objective "mlm" only (ElectraForMaskedLM, discriminator-sized)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .modeling import ElectraForRTDPretraining

EXPORT_KINDS = ("discriminator", "generator", "mlm")


def _plain_copy(source: torch.nn.Module, build, config, overrides: Mapping[str, torch.Tensor]) -> PreTrainedModel:
    """A fresh `build(config)` holding `source`'s weights (detached copies, CPU, fp32 kept)."""
    config = type(config)(**{k: v for k, v in config.to_dict().items() if k not in ("transformers_version",)})
    state = {name: tensor.detach().clone().cpu() for name, tensor in source.state_dict().items()}
    state.update({name: tensor.detach().clone().cpu() for name, tensor in overrides.items()})
    target = build(config)
    config.architectures = [type(target).__name__]
    missing, unexpected = target.load_state_dict(state, strict=False)
    # A tied output layer is absent from nothing here: source and target have the same structure.
    if missing or unexpected:
        raise RuntimeError(f"export of {type(target).__name__} mismatched: missing {missing}, unexpected {unexpected}")
    target.tie_weights()
    return target.eval()


def discriminator_as_plain_model(model: ElectraForRTDPretraining) -> PreTrainedModel:
    """The discriminator as a standalone model of its family (`ElectraForPreTraining`, `DebertaV2Model`,
    ...; GDES: shared table + delta folded in). The RTD head of a family whose class has none is
    not in it: `rtd_head_state` gives it."""
    if model.discriminator is None:
        raise ValueError("this model was pre-trained with objective='mlm': it has no discriminator; export 'mlm' instead")
    overrides = {}
    if model.uses_gdes:
        word = model.backbone.word_embedding_name(model.discriminator)
        overrides[word] = model.discriminator_word_embedding_matrix()
    return _plain_copy(model.discriminator, lambda config: model.backbone.build_discriminator(config)[0],
                       model.config.discriminator_config, overrides)


def generator_as_plain_model(model: ElectraForRTDPretraining) -> PreTrainedModel:
    """The generator (or the "mlm" objective's masked LM) as a standalone masked LM of its family."""
    return _plain_copy(model.generator, model.backbone.build_generator, model.generator.config, {})


def rtd_head_state(model: ElectraForRTDPretraining) -> dict[str, torch.Tensor]:
    """The RTD head's weights under the family's prefix (`mask_predictions.dense.weight`, ...);
    empty where the discriminator's class holds its head (ELECTRA)."""
    if model.discriminator_head is None:
        return {}
    prefix = model.backbone.rtd_head_prefix
    return {f"{prefix}.{name}": tensor.detach().clone().cpu() for name, tensor in model.discriminator_head.state_dict().items()}


def save_discriminator(plain: PreTrainedModel, head_state: Mapping[str, torch.Tensor], folder: Path) -> None:
    """`save_pretrained`, with the RTD head beside the encoder (whose keys then carry the base model
    prefix, `deberta.*`, as a checkpoint holding heads does)."""
    if not head_state:
        plain.save_pretrained(folder)
        return
    state = {f"{plain.base_model_prefix}.{name}": tensor for name, tensor in plain.state_dict().items()}
    plain.save_pretrained(folder, state_dict={**state, **head_state})


def model_card(kind: str, model: ElectraForRTDPretraining, training_info: Mapping[str, Any] | None) -> str:
    """A Hub model card (README.md) with YAML metadata and the full training configuration."""
    training_info = dict(training_info or {})
    family = model.config.discriminator_config.model_type
    name = "ELECTRA" if family == "electra" else f"{family} RTD"
    role = {
        "discriminator": f"the {name} **discriminator** (replaced-token detector): the encoder to fine-tune",
        "generator": f"the {name} **generator** (a small masked LM), usable with `pipeline(\"fill-mask\")`",
        "mlm": "a BERT-style **masked LM** trained on the same pipeline (the equal-compute baseline)",
    }[kind]
    discriminator_class = "AutoModelForPreTraining" if family == "electra" else "AutoModel"
    auto_class = "AutoModelForMaskedLM" if kind != "discriminator" else discriminator_class
    metrics = training_info.pop("final_metrics", None)
    lines = [
        "---",
        "library_name: transformers",
        "tags:",
        "- electra",
        "- electra_hf",
        *([] if family == "electra" else [f"- {family}"]),
        f"- {kind}",
        "pipeline_tag: " + ("fill-mask" if kind != "discriminator" else "feature-extraction"),
        "---",
        "",
        f"# {name} {kind}",
        "",
        f"This checkpoint is {role}, pre-trained with [electra_hf](https://github.com/) "
        "(replaced token detection, Clark et al., 2020). It is a plain `transformers` checkpoint:",
        "",
        "```python",
        f"from transformers import AutoTokenizer, {auto_class}",
        f"model = {auto_class}.from_pretrained(\"<this folder or repo id>\")",
        "tokenizer = AutoTokenizer.from_pretrained(\"<this folder or repo id>\")",
        "```",
        "",
    ]
    if training_info:
        lines += ["## Training", ""]
        lines += [f"- **{key}**: {value}" for key, value in training_info.items() if not isinstance(value, (dict, list))]
        lines.append("")
    if metrics:
        lines += ["## Final pre-training metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in metrics.items()]
        lines.append("")
    lines += [
        "## Pre-training configuration",
        "",
        "```json",
        json.dumps(model.config.to_dict(), indent=2, sort_keys=True, default=str),
        "```",
    ]
    nested = {key: value for key, value in training_info.items() if isinstance(value, (dict, list))}
    if nested:
        lines += ["", "## Run arguments", "", "```json", json.dumps(nested, indent=2, sort_keys=True, default=str), "```"]
    return "\n".join(lines) + "\n"


def _write_atomically(build, output_dir: Path) -> Path:
    """Write into a sibling temp dir, then rename: a crash never leaves a half-written export."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        build(staging)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def export_pretrained(
    model: ElectraForRTDPretraining,
    output_dir: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
    training_info: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write plain-transformers checkpoints of `model`; returns {kind: folder}.

    Objective "electra": `discriminator/` (ElectraForPreTraining; other families: their base model
    and the RTD head) and `generator/` (ElectraForMaskedLM; other families: their masked LM).
    Objective "mlm": `mlm/` (ElectraForMaskedLM).
    """
    output_dir = Path(output_dir)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}"
        )
    plain_models = (
        {"mlm": generator_as_plain_model(model)}
        if model.config.objective == "mlm"
        else {"discriminator": discriminator_as_plain_model(model), "generator": generator_as_plain_model(model)}
    )
    written = {}
    for kind, plain in plain_models.items():
        def build(folder: Path, plain=plain, kind=kind) -> None:
            save_discriminator(plain, rtd_head_state(model), folder) if kind == "discriminator" else plain.save_pretrained(folder)
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            (folder / "README.md").write_text(model_card(kind, model, training_info))

        written[kind] = _write_atomically(build, output_dir / kind)
    return written


def finetuning_checkpoint(path: str | os.PathLike) -> str:
    """Where the encoder to fine-tune lives, for a path that may be any electra_hf artefact.

    Accepts a plain checkpoint (returned as is, Hub ids included), an `export_pretrained`
    folder (its `discriminator/`, or `mlm/`), or a saved `ElectraForRTDPretraining` (exported
    next to it into `<path>/exported/` on first use).
    """
    path_str = str(path)
    folder = Path(path_str)
    if not folder.is_dir():
        return path_str  # a Hub id or a file the caller will report on
    for kind in ("discriminator", "mlm"):
        if (folder / kind / "config.json").is_file():
            return str(folder / kind)
    config_file = folder / "config.json"
    if config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type == ElectraForRTDPretraining.config_class.model_type:
            exported = folder / "exported"
            if not any((exported / kind / "config.json").is_file() for kind in ("discriminator", "mlm")):
                model = ElectraForRTDPretraining.from_pretrained(folder)
                tokenizer = None
                if (folder / "tokenizer_config.json").is_file():
                    from transformers import AutoTokenizer

                    tokenizer = AutoTokenizer.from_pretrained(folder)
                export_pretrained(model, exported, tokenizer)
            return finetuning_checkpoint(exported)
    return path_str
