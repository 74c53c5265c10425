"""Pieces of an Accelerate training run that every script needs, written once.

- Resumable, crash-safe checkpoints: `save_checkpoint` writes `step_XXXXXXXX.tmp/`, then a
  `training_state.json` marker, then renames to `step_XXXXXXXX/`; `find_latest_checkpoint` only
  considers finished folders, so a crash mid-write never yields a broken "latest".
- Up-front checks of the hardware/precision and tracker requests (`check_mixed_precision`,
  `resolve_report_to`), so an impossible setup fails before any training.
- `NonFiniteGuard`: records the first optimizer step whose loss was NaN/inf without a host sync
  per step; checked at logging and before every checkpoint so no poisoned checkpoint is written.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
STATE_FILE = "training_state.json"


def checkpoint_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(checkpoints_root: str | os.PathLike) -> list[tuple[int, Path]]:
    """Finished checkpoints (folder `step_N` holding the marker), sorted by step."""
    root = Path(checkpoints_root)
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = CHECKPOINT_PATTERN.match(child.name)
            if match and child.is_dir() and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def find_latest_checkpoint(checkpoints_root: str | os.PathLike) -> Path | None:
    checkpoints = list_checkpoints(checkpoints_root)
    return checkpoints[-1][1] if checkpoints else None


def resolve_resume_path(resume_from_checkpoint: str | None, checkpoints_root: str | os.PathLike) -> Path | None:
    """`None` → no resume; `"latest"` → newest finished checkpoint (None if there is none yet);
    a path → that checkpoint, which must be finished (clear error otherwise)."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        return find_latest_checkpoint(checkpoints_root)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {path}: no such checkpoint folder")
    if not (path / STATE_FILE).is_file():
        raise ValueError(f"--resume_from_checkpoint {path}: incomplete checkpoint (no {STATE_FILE}); it was not finished")
    return path


def read_training_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / STATE_FILE).read_text())


def save_checkpoint(accelerator, checkpoints_root: str | os.PathLike, step: int, state: dict[str, Any],
                    extra_files: dict[str, str] | None = None, total_limit: int | None = None,
                    save_extras=None) -> Path:
    """`accelerator.save_state` into a temp folder, then the marker, then an atomic rename.

    Call on every process (DeepSpeed/FSDP shard their state). `save_extras(folder)` runs on the
    main process to add files (config, tokenizer). Keeps at most `total_limit` checkpoints.
    """
    root = Path(checkpoints_root)
    final = root / checkpoint_dir_name(step)
    staging = root / (checkpoint_dir_name(step) + ".tmp")
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)  # a leftover of a crash
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if save_extras is not None:
            save_extras(staging)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
        # The marker is written last: its presence means the checkpoint is complete.
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        if total_limit is not None and total_limit > 0:
            for _, old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


class NonFiniteGuard:
    """Remembers the first step whose loss was not finite, on the device (no sync per step)."""

    def __init__(self, device: torch.device):
        self.first_bad_step = torch.tensor(-1, device=device)

    def update(self, loss: torch.Tensor, step: int) -> None:
        bad_now = ~torch.isfinite(loss.detach())
        self.first_bad_step = torch.where(
            (self.first_bad_step < 0) & bad_now, torch.full_like(self.first_bad_step, step), self.first_bad_step
        )

    def check(self, accelerator=None) -> None:
        """Raise `FloatingPointError` naming the step (any process's) if a loss was NaN/inf."""
        value = self.first_bad_step
        if accelerator is not None and accelerator.num_processes > 1:
            values = accelerator.gather(value.reshape(1))
            bad = values[values >= 0]
            value = bad.min() if bad.numel() else torch.tensor(-1)
        step = int(value)
        if step >= 0:
            raise FloatingPointError(
                f"the training loss became NaN/inf at optimizer step {step}; stopping. The last checkpoint "
                "written before that step is intact (lower the learning rate, check the data, or use fp32)."
            )


def enable_activation_checkpointing(model) -> None:
    """Recompute activations in the backward pass. transformers 5.25 renamed
    `gradient_checkpointing_enable` to `activation_checkpointing_enable` (the old name is a
    deprecated alias until v6); the releases before 5.25 have only the old name."""
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


def resolve_report_to(report_to: str) -> list[str]:
    """'none' | 'all' | comma list of 'wandb', 'tensorboard' → tracker names, each checked to be usable."""
    names = [name.strip() for name in (report_to or "none").split(",") if name.strip()]
    if names in (["none"], []):
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

    `train_args` needs `mixed_precision`, `gradient_accumulation_steps`, `per_device_train_batch_size`,
    `max_grad_norm` and `allow_slow_bf16` (the pre-training and fine-tuning argument classes have
    them). Observed with accelerate 1.15 on CPU machines, and handled here once for all scripts:

    - `accelerate launch --multi_gpu` (and a config's `use_cpu: true`, which that launcher ignores)
      starts N processes with no distribution at all; `cpu=True` makes them DDP over gloo.
      DeepSpeed is the exception: Accelerate turns it off when `cpu=True`.
    - multi-process CPU runs need the gloo backend (DeepSpeed otherwise counts one process and
      rejects its own batch arithmetic).
    - precision the hardware cannot run well is refused (`check_mixed_precision`);
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
    accelerator = Accelerator(
        cpu=use_cpu and not use_deepspeed,
        gradient_accumulation_steps=train_args.gradient_accumulation_steps,
        mixed_precision=train_args.mixed_precision,
        kwargs_handlers=handlers,
        **accelerator_kwargs,
    )
    check_distributed_setup(accelerator)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator, train_args, use_cpu)
    return accelerator


def check_distributed_setup(accelerator) -> None:
    """Refuse a launch whose processes would not train together (observed with accelerate 1.15)."""
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
