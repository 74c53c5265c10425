"""What every electra_hf training loop shares: the Accelerator, trackers, logs and the step.

- `build_accelerator` checks the hardware, precision, launch and tracker requests before any
  training starts, so an impossible setup fails at once with the reason.
- `train_micro_batch`: forward, backward and, at the end of a gradient accumulation, clipping and
  the optimizer step, as both loops do them.
- `log_metrics`, `setup_logging`, `init_trackers`: one way to report a run.
Checkpoints and resume live in `electra_hf.checkpoints`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch


def train_micro_batch(accelerator, model, optimizer, batch: Mapping[str, torch.Tensor], max_grad_norm: float,
                      step_model=None):
    """One micro-batch: forward and backward; at the end of an accumulation also clip the
    gradients to `max_grad_norm` (0: no clipping) and step the optimizer. Returns the model's
    output and its loss. `step_model` (default `model`) is what runs the forward pass, e.g. a
    compiled wrapper of `model`."""
    with accelerator.accumulate(model):
        output = (model if step_model is None else step_model)(**batch)
        loss = output["loss"] if isinstance(output, Mapping) else output.loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return output, loss


def log_metrics(accelerator, values: Mapping[str, float], step: int, jsonl_path: Path | None = None) -> None:
    """Send `values` to the trackers and, on the main process, append them to `jsonl_path`."""
    accelerator.log(dict(values), step=step)
    if jsonl_path is not None and accelerator.is_main_process:
        with open(jsonl_path, "a") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")


def setup_logging(accelerator) -> None:
    """INFO logs on the local main process; only warnings from the others (one copy of each line)."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        level=logging.INFO if accelerator.is_local_main_process else logging.WARNING)
    if not accelerator.is_local_main_process:
        datasets.logging.set_verbosity_error()
        transformers.logging.set_verbosity_error()


def init_trackers(accelerator, args, *other_args: Any) -> None:
    """Start the trackers of `args` with every argument of the run as its hyper-parameters."""
    if args.trackers:
        accelerator.init_trackers(args.project_name, config=flatten_for_trackers(args, *other_args))


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward pass: `activation_checkpointing_enable` where
    transformers has it (>= 5.25), `gradient_checkpointing_enable` (a deprecated alias there)
    before (tests/test_upstream.py tells when the old name goes)."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def cpu_supports_bf16() -> bool:
    """Native bf16 matmul on this CPU (AVX512-BF16, AMX, or Arm's BF16 extension), read from
    /proc/cpuinfo; without it bf16 is emulated and very slow. False where that file is absent."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def check_mixed_precision(mixed_precision: str, use_cpu: bool, allow_slow_bf16: bool = False) -> None:
    """Refuse precision settings the hardware cannot run well, before any training starts."""
    if mixed_precision in (None, "no"):
        return
    if mixed_precision not in ("fp16", "bf16", "fp8"):
        raise ValueError(f"--mixed_precision must be one of no, fp16, bf16, fp8; got {mixed_precision!r}")
    if use_cpu or not torch.cuda.is_available():
        if mixed_precision in ("fp16", "fp8"):
            raise ValueError(f"--mixed_precision {mixed_precision} needs a GPU; this run is on the CPU (use 'no')")
        if not cpu_supports_bf16() and not allow_slow_bf16:
            raise ValueError(
                "--mixed_precision bf16 was requested on a CPU without native bf16 (no AVX512-BF16/AMX): bf16 "
                "matmuls are emulated here and 10-100x slower than fp32. Use --mixed_precision no, or pass "
                "--allow_slow_bf16 to run anyway."
            )
    elif mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("--mixed_precision bf16 was requested but this GPU has no bf16 support; use fp16")


def resolve_report_to(names: list[str]) -> list[str]:
    """Tracker names (`TrainingArguments.trackers`: 'all', 'wandb', 'tensorboard') → the trackers to
    start, each checked to be usable ('all': the installed ones)."""
    names = [name for name in names if name != "none"]
    if not names:
        return []
    if names == ["all"]:
        names = [name for name in ("wandb", "tensorboard") if _tracker_available(name)]
        return names
    for name in names:
        if name not in ("wandb", "tensorboard"):
            raise ValueError(f"--report_to: unknown tracker {name!r} (use wandb, tensorboard, all or none)")
        if not _tracker_available(name):
            extra = "pip install 'electra_hf[tensorboard]'" if name == "tensorboard" else "pip install wandb"
            raise ValueError(f"--report_to {name}: the {name} package is not installed ({extra})")
    if "wandb" in names and not os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") not in ("offline", "disabled"):
        netrc = Path.home() / ".netrc"
        if not (netrc.is_file() and "api.wandb.ai" in netrc.read_text()):
            raise ValueError("--report_to wandb: no WANDB_API_KEY and no wandb login; set WANDB_MODE=offline to log locally")
    return names


def _tracker_available(name: str) -> bool:
    module = {"wandb": "wandb", "tensorboard": "tensorboard"}[name]
    if importlib.util.find_spec(module) is not None:
        return True
    return name == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None


def flatten_for_trackers(*objects: Any) -> dict[str, Any]:
    """Dataclasses/dicts → one flat dict of scalars with "a/b" keys (trackers reject nested values)."""
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, dict):
            for key, item in value.items():
                visit(f"{prefix}/{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float, str, bool)):
            flat[prefix] = value
        else:
            flat[prefix] = str(value)  # None, lists, dtypes: trackers want scalars

    for obj in objects:
        visit("", obj)
    return flat


def is_cpu_launch() -> bool:
    """This process trains on the CPU: no CUDA device, or ACCELERATE_USE_CPU set by the launcher/config."""
    return not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")


def build_accelerator(train_args, **accelerator_kwargs):
    """The `Accelerator` of every electra_hf script, checked before any training starts.

    `train_args` is a `TrainingArguments`: precision, gradient accumulation, batch size, clipping
    and trackers come from it (trackers log under `output_dir`). Handled here once for all scripts:

    - `accelerate launch --multi_gpu` on a machine without GPUs (and a config's `use_cpu: true`,
      which that launcher ignores) starts N processes with no distribution at all; `cpu=True`
      makes them DDP over gloo. DeepSpeed is the exception: Accelerate turns it off when `cpu=True`.
    - multi-process CPU runs need the gloo backend (DeepSpeed otherwise counts one process and
      rejects its own batch arithmetic).
    - precision the hardware cannot run well is refused (`check_mixed_precision`), and so are
      trackers that are not installed (Accelerate would drop a missing tensorboard silently);
    - a launch whose processes would not train together (FSDP on the CPU, N unconnected copies)
      is refused by `check_distributed_setup`; DeepSpeed "auto" values are filled from the flags
      and contradicting ones refused by `configure_deepspeed`.
    """
    from accelerate import Accelerator, InitProcessGroupKwargs
    from accelerate.utils import DistributedType

    use_cpu = is_cpu_launch()
    mixed_precision = train_args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    check_mixed_precision(mixed_precision, use_cpu, getattr(train_args, "allow_slow_bf16", False))
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = list(accelerator_kwargs.pop("kwargs_handlers", None) or [])
    if use_cpu and distributed and not any(isinstance(h, InitProcessGroupKwargs) for h in handlers):
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    use_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    trackers = resolve_report_to(train_args.trackers)
    accelerator = Accelerator(
        cpu=use_cpu and not use_deepspeed,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        kwargs_handlers=handlers,
        log_with=trackers or None,
        project_dir=train_args.output_dir,
        **accelerator_kwargs,
    )
    check_distributed_setup(accelerator)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator, train_args, use_cpu)
    return accelerator


def check_distributed_setup(accelerator) -> None:
    """Refuse a launch whose processes would not train together: FSDP requested where Accelerate
    sets up something else, or several processes with no distribution at all."""
    from accelerate.utils import DistributedType

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" and accelerator.distributed_type != DistributedType.FSDP:
        raise RuntimeError(
            f"FSDP was requested (accelerate config/--use_fsdp) but Accelerate set up {accelerator.distributed_type.value}: "
            "Accelerate enables FSDP only on GPUs/accelerators, never on the CPU (on a CPU it would run "
            + ("plain DDP" if accelerator.distributed_type != DistributedType.NO else "unsynchronised copies")
            + "). Use FSDP on GPUs; on a CPU use DDP (accelerate_configs/cpu_ddp_2proc.yaml) or DeepSpeed ZeRO."
        )
    if world_size > 1 and accelerator.distributed_type == DistributedType.NO:
        raise RuntimeError(
            f"launched as {world_size} processes but Accelerate set up no distributed training: each process would "
            "train its own copy of the model on part of the data. On a machine without GPUs launch with "
            "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N (DDP over gloo)."
        )


def configure_deepspeed(accelerator, train_args, use_cpu: bool = False) -> None:
    """Fill the DeepSpeed config's "auto" values from the flags, and refuse values that contradict them.

    Accelerate would otherwise fill "auto" batch sizes from the smaller of the train/eval batch
    sizes, set gradient_clipping to 1.0 whatever --max_grad_norm says (DeepSpeed clips, not the
    script), silently prefer the JSON's gradient_accumulation_steps, and leave ZeRO-3 unable to
    gather the weights for the exports, which would only fail after training.
    """
    plugin = accelerator.state.deepspeed_plugin
    config = plugin.deepspeed_config
    allow_slow_bf16 = getattr(train_args, "allow_slow_bf16", False)
    micro = train_args.per_device_train_batch_size
    expected = {
        "train_micro_batch_size_per_gpu": (micro, "--per_device_train_batch_size"),
        "gradient_accumulation_steps": (train_args.gradient_accumulation_steps, "--gradient_accumulation_steps"),
        "train_batch_size": (micro * train_args.gradient_accumulation_steps * accelerator.num_processes,
                             "--per_device_train_batch_size × --gradient_accumulation_steps × processes"),
        "gradient_clipping": (train_args.max_grad_norm, "--max_grad_norm"),
    }
    problems = []
    for key, (value, flag) in expected.items():
        current = config.get(key, "auto")
        if current == "auto":
            config[key] = value
        elif float(current) != float(value):
            problems.append(f"{key}={current} but {flag} gives {value}")
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") == 3:
        gather = zero.get("stage3_gather_16bit_weights_on_model_save", "auto")
        if gather == "auto":
            zero["stage3_gather_16bit_weights_on_model_save"] = True
        elif not gather:
            problems.append("ZeRO-3 with stage3_gather_16bit_weights_on_model_save=false: the exports need the "
                            "full weights gathered (set it to true)")
    for precision in ("bf16", "fp16"):
        if config.get(precision, {}).get("enabled") is True:  # set in the JSON itself, not "auto"
            check_mixed_precision(precision, use_cpu, allow_slow_bf16)
    if "optimizer" in config or "scheduler" in config:
        problems.append("the DeepSpeed config defines an optimizer/scheduler; this script builds its own "
                        "(ElectraAdamW + the ELECTRA schedule): remove them from the JSON")
    if problems:
        raise ValueError("the DeepSpeed config contradicts the command line: " + "; ".join(problems) +
                         ". Set these to \"auto\" in the DeepSpeed JSON (the flags are then used) or change the flags.")
