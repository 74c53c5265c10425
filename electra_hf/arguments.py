"""The command-line arguments of the scripts, in one vocabulary.

Every script takes the flags of transformers' `*_no_trainer` examples where they have a name
(`TrainingArguments`): `--output_dir`, `--seed`, `--max_train_steps`, `--num_warmup_steps` /
`--warmup_ratio`, `--checkpointing_steps`, `--resume_from_checkpoint`, `--with_tracking`,
`--report_to`, and the optimiser's. `PretrainingArguments` and `FinetuningArguments` add what
their loops need, with their own defaults (the paper's).

The model and RTD hyper-parameters belong to `ElectraPretrainingConfig`: `PretrainingModelArguments`
exposes each of them as an override (None keeps the preset's or the saved config's value) with
the help text of the config's own documentation, instead of declaring them a second time.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any, Optional

from .configuration import DISCRIMINATOR_FIELDS, PRESETS, PRETRAINING_FIELDS, ElectraPretrainingConfig, field_help

TRACKERS = ("wandb", "tensorboard")


@dataclass
class TrainingArguments:
    """Flags every script takes. Subclasses change the defaults."""

    output_dir: str = field(default="outputs", metadata={"help": "Where checkpoints, results, logs and models go."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, data order, masking and dropout."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Sequences per device per micro-batch."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Sequences per device for evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float | None = field(default=None, metadata={"help": "Peak learning rate (None: by model size)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Decoupled weight decay (not on LayerNorm or biases)."})
    adam_beta1: float = field(default=0.9, metadata={"help": "Adam beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "Adam beta2."})
    adam_epsilon: float = field(default=1e-6, metadata={"help": "Adam epsilon (ELECTRA: 1e-6)."})
    adam_bias_correction: bool = field(default=True, metadata={"help": "Adam bias correction."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip gradients to this global norm (0: no clipping)."})
    lr_scheduler_type: str = field(
        default="linear",
        metadata={"help": "'electra': the official (1 − step/total)·min(1, step/warmup); or a transformers schedule "
                          "name ('linear': warm-up to the peak, then linear decay; 'cosine', ...)."})
    num_warmup_steps: int | None = field(
        default=None, metadata={"help": "Warm-up optimizer steps (None: --warmup_ratio of the run)."})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "Warm-up as a fraction of the optimizer steps (used without --num_warmup_steps)."})
    max_train_steps: int | None = field(
        default=None, metadata={"help": "Optimizer steps to train (None: --num_train_epochs)."})
    num_train_epochs: float | None = field(default=None, metadata={"help": "Epochs, used without --max_train_steps."})
    logging_steps: int = field(default=50, metadata={"help": "Log the training metrics every N optimizer steps."})
    eval_steps: int = field(default=0, metadata={"help": "Also evaluate every N optimizer steps (0: only at the end)."})
    checkpointing_steps: int = field(
        default=0, metadata={"help": "Save a resumable checkpoint every N optimizer steps (0: none during the run)."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' (the newest finished checkpoint in --output_dir), or a checkpoint folder."})
    with_tracking: bool = field(default=False, metadata={"help": "Log to the trackers of --report_to."})
    report_to: list[str] = field(
        default_factory=lambda: ["all"],
        metadata={"help": f"Trackers with --with_tracking: {', '.join(TRACKERS)}, all (those installed) or none; "
                          "several with spaces or commas. Naming one turns tracking on."})
    project_name: str = field(default="electra_hf", metadata={"help": "The trackers' project name."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no | fp16 | bf16 (None: accelerate's config or launch flag). bf16 on a CPU without bf16 "
                          "units is refused unless --allow_slow_bf16."})
    allow_slow_bf16: bool = field(default=False, metadata={"help": "Permit bf16 on a CPU without native bf16."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per device."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the result to the Hugging Face Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "The Hub repository to push to."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token (default: the logged-in one)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})

    # Old flag → (new flag, how to turn the old value into the new one). Kept for one release.
    DEPRECATED = {}

    def __post_init__(self):
        self._apply_deprecated_aliases()
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [name.strip() for value in self.report_to for name in value.split(",") if name.strip()]
        if self.gradient_accumulation_steps < 1:
            raise ValueError("--gradient_accumulation_steps must be ≥ 1")
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio <= 1.0:
            raise ValueError(f"--warmup_ratio must be in [0, 1], got {self.warmup_ratio}")
        for name in ("logging_steps", "eval_steps", "checkpointing_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be ≥ 0, got {getattr(self, name)}")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id")

    def _apply_deprecated_aliases(self) -> None:
        for old, (new, convert) in self.DEPRECATED.items():
            value = getattr(self, old, None)
            if value is None:
                continue
            warnings.warn(f"--{old} is deprecated and will be removed in the next release: use --{new}",
                          FutureWarning, stacklevel=3)
            setattr(self, new, convert(value))
            setattr(self, old, None)

    @property
    def trackers(self) -> list[str]:
        """The trackers to start: none without --with_tracking unless --report_to names one."""
        names = [name for name in self.report_to if name != "none"]
        if not self.with_tracking and names in ([], ["all"]):
            return []
        return names

    def warmup_steps(self, total_steps: int) -> int:
        """--num_warmup_steps, else --warmup_ratio of `total_steps`."""
        if self.num_warmup_steps is not None:
            return self.num_warmup_steps
        return int(total_steps * (self.warmup_ratio or 0.0))


def _deprecated(help_text: str) -> Any:
    return field(default=None, metadata={"help": f"Deprecated: {help_text} (removed in the next release)."})


@dataclass
class PretrainingArguments(TrainingArguments):
    """Optimisation, logging and checkpointing of pre-training. Defaults: the official ELECTRA-Small."""

    output_dir: str = field(default="runs/electra-pretrain", metadata={"help": "Where checkpoints, logs, the plot and exports go."})
    per_device_train_batch_size: int = field(default=128, metadata={"help": "Sequences per device per micro-batch (official Small: 128 in all)."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Sequences per device for evaluation."})
    learning_rate: float | None = field(default=None, metadata={
        "help": "Peak LR (None by preset: 5e-4 Small, 2e-4 Base/Large, DeBERTa-v3 3e-4 XSmall and 1e-4 Small/Base; "
                "a continued run: 5e-5)."})
    weight_decay: float = field(default=0.01, metadata={"help": "Decoupled weight decay (not on LayerNorm weights or biases)."})
    adam_bias_correction: bool = field(default=False, metadata={"help": "Adam bias correction (official ELECTRA: off)."})
    lr_scheduler_type: str = field(default="electra", metadata={"help": "'electra' (warm-up × linear decay, overlapping) or a transformers scheduler name."})
    num_warmup_steps: int | None = field(default=10_000, metadata={"help": "Warm-up optimizer steps (None: --warmup_ratio)."})
    max_train_steps: int | None = field(default=1_000_000, metadata={"help": "Optimizer steps (official Small: 1M; None: --num_train_epochs)."})
    logging_steps: int = field(default=100, metadata={"help": "Log every N optimizer steps."})
    eval_steps: int = field(default=5_000, metadata={"help": "Evaluate on the validation split every N steps (0: only at the end)."})
    max_eval_batches: int | None = field(default=50, metadata={"help": "Validation batches per process and evaluation (None: all)."})
    checkpointing_steps: int = field(default=10_000, metadata={"help": "Save a resumable checkpoint every N steps (0: only at the end)."})
    checkpoints_total_limit: int | None = field(default=3, metadata={"help": "Keep at most this many checkpoints."})
    export_every_checkpoint: bool = field(default=False, metadata={"help": "Also write plain-transformers exports at each checkpoint."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Allow starting a new run in an output_dir that holds checkpoints."})
    dataloader_num_workers: int = field(default=2, metadata={"help": "DataLoader worker processes per device (masking runs there)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository of the discriminator (the generator goes to '<id>-generator')."})
    demo: bool = field(default=False, metadata={"help": "Force the pydoc demo (automatic when no data argument is given)."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_train_steps is None and self.num_train_epochs is None:
            raise ValueError("give --max_train_steps or --num_train_epochs")


#: ELECTRA fine-tuning learning rate and layer-wise decay per model size (paper, Table 7).
OFFICIAL_LEARNING_RATES: dict[str, float] = {"small": 3e-4, "base": 1e-4, "large": 5e-5}
OFFICIAL_LAYER_DECAY: dict[str, float] = {"small": 0.8, "base": 0.8, "large": 0.9}


@dataclass
class FinetuningArguments(TrainingArguments):
    """Hyper-parameters and run settings of fine-tuning (the paper's recipe).

    The official code differs in four switches: `--adam_bias_correction false --weight_decay 0.01
    --official_layer_decay_off_by_one --lr_scheduler_type electra`.
    """

    output_dir: str = field(default="outputs/finetune", metadata={"help": "Where models, results and logs go."})
    model_size: str | None = field(
        default=None,
        metadata={"help": "small | base | large: picks the official learning rate and layer decay. "
                          "None: detected from hidden_size (256 / 768 / 1024)."})
    learning_rate: float | None = field(
        default=None, metadata={"help": "Peak learning rate (of the head). None: 3e-4 small, 1e-4 base, 5e-5 large."})
    layer_decay: float | None = field(
        default=None,
        metadata={"help": "Layer-wise LR decay: depth d gets lr·decay^(n+1−d). None: 0.8 small/base, 0.9 large. "
                          "1.0 disables it."})
    official_layer_decay_off_by_one: bool = field(
        default=False,
        metadata={"help": "Reproduce the official code's off-by-one: every non-head layer one more power of decay."})
    adam_bias_correction: bool = field(
        default=True,
        metadata={"help": "Standard Adam bias correction (True). The official ELECTRA optimizer has none (False)."})
    warmup_ratio: float | None = field(
        default=0.1, metadata={"help": "Warm-up as a fraction of the optimizer steps (used without --num_warmup_steps)."})
    num_train_epochs: float | None = field(
        default=None, metadata={"help": "Epochs. None: the task's default (3; GLUE: 10 for RTE and STS-B)."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokenized inputs are truncated to this length."})
    seeds: list[int] | None = field(
        default=None,
        metadata={"help": "Fine-tuning seeds; each one fine-tunes the same checkpoint and the median is reported "
                          "(the paper uses ≥ 10). None: --seed alone."})
    project_name: str = field(default="electra_hf_finetune", metadata={"help": "The trackers' project name."})
    group_by_length: bool = field(
        default=False, metadata={"help": "Batch training examples of similar length (less padding, faster)."})
    pad_to_max_length: bool = field(
        default=False, metadata={"help": "Pad every batch to max_seq_length (static shapes) instead of dynamic padding."})
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "With dynamic padding, round lengths up to a multiple of this (8 for tensor cores)."})
    metric_for_best_model: str | None = field(
        default=None,
        metadata={"help": "With eval_steps: keep the weights that scored best on this key (e.g. 'dev/accuracy'). "
                          "None: the final weights (the paper's protocol)."})
    greater_is_better: bool = field(default=True, metadata={"help": "Direction of metric_for_best_model."})
    save_model: bool = field(default=True, metadata={"help": "save_pretrained the fine-tuned model (+ tokenizer) per seed."})
    disable_tqdm: bool = field(default=False, metadata={"help": "No progress bars."})
    metric_name: list[str] | None = field(
        default=None,
        metadata={"help": "Further `evaluate` metrics (a Hub id such as f1, which needs the Hub or evaluate's cache, "
                          "or a local metric folder), given the same predictions and references as the task's own "
                          "module; a key the task already reports gets the metric's name in front."})
    push_all_seeds: bool = field(
        default=False,
        metadata={"help": "With --push_to_hub: also push every seed's model, into seed_<seed>/ of the repository "
                          "(the root holds the seed with the best dev score)."})
    max_steps: int | None = _deprecated("use --max_train_steps")
    resume: bool | None = _deprecated("use --resume_from_checkpoint latest")
    tracker_project_name: str | None = _deprecated("use --project_name")

    DEPRECATED = {
        "max_steps": ("max_train_steps", lambda value: value if value > 0 else None),
        "resume": ("resume_from_checkpoint", lambda value: "latest" if value else None),
        "tracker_project_name": ("project_name", lambda value: value),
    }

    def __post_init__(self):
        super().__post_init__()
        if self.model_size is not None and self.model_size not in OFFICIAL_LEARNING_RATES:
            raise ValueError(f"--model_size must be one of {list(OFFICIAL_LEARNING_RATES)}, got {self.model_size!r}")
        if self.resume_from_checkpoint not in (None, "latest"):
            raise ValueError(
                "--resume_from_checkpoint: fine-tuning resumes every (task, seed) run of --output_dir from its own "
                f"newest checkpoint; pass 'latest' (got {self.resume_from_checkpoint!r})")
        self.seeds = list(self.seeds) if self.seeds else [self.seed]
        if self.push_to_hub and not self.save_model:
            raise ValueError("--push_to_hub pushes the saved models: it needs --save_model true")
        if self.push_all_seeds and not self.push_to_hub:
            raise ValueError("--push_all_seeds needs --push_to_hub")
        if self.metric_for_best_model is not None and self.eval_steps <= 0:
            raise ValueError("--metric_for_best_model needs --eval_steps > 0 (otherwise only the end is evaluated)")


@dataclass
class FinetuningModelArguments:
    """Which checkpoint and tokenizer to fine-tune (the arguments every fine-tuning script takes)."""

    model_name_or_path: str = field(
        metadata={"help": "An ELECTRA discriminator or another encoder: a local export folder, a train_pretrain.py output folder (its "
                          "export/) or checkpoint, or a Hub id (e.g. google/electra-small-discriminator)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer, if not the model's own."})
    classifier_dropout: float | None = field(
        default=None,
        metadata={"help": "Dropout before the output layer (classification and tagging heads; the QA head has "
                          "none). None: the config's own choice (ELECTRA and BERT: hidden_dropout_prob, 0.1). Families whose "
                          "config has no classifier_dropout field (DeBERTa) refuse it."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager | sdpa (default: transformers')."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache for Hub downloads."})
    allow_vocab_size_mismatch: bool = field(
        default=False,
        metadata={"help": "Accept a tokenizer smaller than the model's vocab_size (embeddings padded on purpose)."})
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Re-initialise checkpoint weights whose shape differs from the model's (e.g. a classifier "
                          "fine-tuned for another number of labels) instead of stopping."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Run the model code a checkpoint ships (its config's auto_map) when loading its config, "
                          "tokenizer and weights. Only for checkpoints whose code you trust."})



def _override_fields() -> list[tuple]:
    """(name, type, field) for every config field a run may override: None keeps the base config's."""
    help_text = field_help()
    defaults = ElectraPretrainingConfig.from_preset("small")
    specs = []
    for name in (*PRETRAINING_FIELDS, *DISCRIMINATOR_FIELDS):
        if name in ("compute_metrics", "max_seq_length"):  # the data arguments own the sequence length
            continue
        value = getattr(defaults, name) if name in PRETRAINING_FIELDS else getattr(defaults.discriminator_config, name)
        kind = int if name == "max_predictions_per_seq" else type(value)
        specs.append((name, Optional[kind], field(default=None, metadata={"help": help_text[name]})))
    return specs


@dataclass
class _PretrainingModelBase:
    preset: str = field(default="small", metadata={"help": f"Model size preset: one of {sorted(PRESETS)}."})
    config_name_or_path: str | None = field(
        default=None, metadata={"help": "An ElectraPretrainingConfig (folder or config.json) instead of a preset; "
                                        "the flags below override its fields."})
    model_name_or_path: str | None = field(default=None, metadata={
        "help": "Continue pre-training from an electra_hf checkpoint (a train_pretrain.py checkpoint or a saved "
                "ElectraForRTDPretraining) or an export folder (generator/ and discriminator/): its networks, weights "
                "and tokenizer; the RTD flags below still apply. Fresh optimizer and schedule; --learning_rate "
                "defaults to 5e-5 (electra_hf.continued.CONTINUED_LEARNING_RATE)."})
    generator_name_or_path: str | None = field(default=None, metadata={
        "help": "With --discriminator_name_or_path: continue from a pair of plain checkpoints of one family (e.g. "
                "google/electra-small-generator); the config is read from both, the true generator ratios recorded."})
    discriminator_name_or_path: str | None = field(default=None, metadata={
        "help": "With --generator_name_or_path: the discriminator (e.g. google/electra-small-discriminator); the "
                "tokenizer comes from it unless --tokenizer_name_or_path is given."})
    shared_embeddings_from: str | None = field(default=None, metadata={
        "help": "When the tables --embedding_sharing ties differ between the two checkpoints: 'generator' or "
                "'discriminator', the network to take them from (None: such a pair is refused)."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "transformers' attention: 'sdpa', 'eager', or a registered name. None: 'electra_hf_cpu' on a CPU "
                "(eager attention with cheaper dropout masks, electra_hf.performance) and 'sdpa' elsewhere."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute activations in backward (less memory, about a third slower)."})
    torch_compile: bool | None = field(default=None, metadata={
        "nargs": "?", "const": True,  # a bare --torch_compile means true, as for the bool flags
        "help": "Compile the training step with torch.compile. None: in one plain CUDA process without gradient "
                "accumulation the whole step, replayed as CUDA graphs; elsewhere (a CPU, DDP/FSDP/DeepSpeed, "
                "accumulation) eager (electra_hf.performance.training_compilation). true/false force it."})
    torch_compile_scope: str | None = field(default=None, metadata={
        "help": "'layers' (each transformer layer and embedding block) or 'model' (the whole training forward and "
                "backward). None: 'model' on CUDA, 'layers' elsewhere. Giving it compiles unless --torch_compile false."})
    torch_compile_mode: str | None = field(default=None, metadata={
        "help": "torch.compile's mode ('reduce-overhead': CUDA graphs). None: 'reduce-overhead' for the automatic "
                "choice, torch's default otherwise. Giving it compiles unless --torch_compile false."})

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.torch_compile is False and (self.torch_compile_mode or self.torch_compile_scope):
            raise ValueError("--torch_compile_mode and --torch_compile_scope choose how to compile; drop them or "
                             "--torch_compile false")
        if self.shared_embeddings_from not in (None, "generator", "discriminator"):
            raise ValueError(f"--shared_embeddings_from must be 'generator' or 'discriminator', got "
                             f"{self.shared_embeddings_from!r}")
        if self.config_name_or_path and (self.model_name_or_path or self.generator_name_or_path):
            raise ValueError("--config_name_or_path describes a model to start from random weights; a continued run "
                             "takes its config from the checkpoints it starts from")
        if self.torch_compile_scope not in (None, "layers", "model"):
            raise ValueError(f"--torch_compile_scope must be 'layers' or 'model', got {self.torch_compile_scope!r}")

    def config_overrides(self) -> dict[str, Any]:
        """The config fields this run sets (None: the preset's or saved config's value)."""
        return {name: getattr(self, name) for name in CONFIG_OVERRIDES}


_OVERRIDE_FIELDS = _override_fields()
CONFIG_OVERRIDES = tuple(name for name, _, _ in _OVERRIDE_FIELDS)
PretrainingModelArguments = make_dataclass(
    "PretrainingModelArguments", _OVERRIDE_FIELDS, bases=(_PretrainingModelBase,),
    namespace={"__doc__": "The model: a preset or a saved config, with any of its fields overridden."},
)


def parse_args(dataclass_types: Sequence[type], argv: Sequence[str] | None = None) -> tuple:
    """Parse `argv` (default `sys.argv[1:]`) into the given dataclasses; a single `.json`, `.yaml`
    or `.yml` argument is read as a file holding all the arguments."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(tuple(dataclass_types))
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def given_flags(argv: Sequence[str]) -> set[str]:
    """The flag names on a command line (`--x 1` and `--x=1` give 'x')."""
    return {arg.split("=")[0].lstrip("-") for arg in argv if arg.startswith("--")}


def field_names(*dataclass_objects: Any) -> dict[str, Any]:
    """name → the object holding that field, over several argument objects."""
    return {f.name: obj for obj in dataclass_objects for f in fields(obj)}
