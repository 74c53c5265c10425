"""Resumable, crash-safe checkpoints, shared by the pre-training and fine-tuning loops.

`save_checkpoint` writes `step_XXXXXXXX.tmp/`, then the `training_state.json` marker, then renames
the folder to `step_XXXXXXXX/`; `find_latest_checkpoint` only considers finished folders, so a
crash mid-write never yields a broken "latest". `NonFiniteGuard` records the first optimizer step
whose loss was NaN/inf without a host sync per step, so that no checkpoint of a diverged model is
written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
STATE_FILE = "training_state.json"
SCHEDULER_FILE = "scheduler.pt"


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
                    scheduler=None, total_limit: int | None = None, save_extras=None) -> Path:
    """`accelerator.save_state` into a temp folder, then the marker, then an atomic rename.

    Call on every process (DeepSpeed/FSDP shard their state). `state` (JSON) is the loop's
    position; `scheduler` is saved as `scheduler.pt` (not registered with Accelerate: a process
    that trains several runs, one per seed, builds a scheduler per run). `save_extras(folder)` runs
    on the main process to add files (config, tokenizer). Keeps at most `total_limit` checkpoints.
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
        if scheduler is not None:
            torch.save(scheduler.state_dict(), staging / SCHEDULER_FILE)
        if save_extras is not None:
            save_extras(staging)
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


def load_checkpoint(accelerator, checkpoint: str | os.PathLike, scheduler=None) -> dict[str, Any]:
    """Restore what `save_checkpoint` wrote (weights, optimizer, every process's RNG states, the
    scheduler) and return the saved state."""
    accelerator.load_state(str(checkpoint))
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(Path(checkpoint) / SCHEDULER_FILE, weights_only=True))
    return read_training_state(checkpoint)


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
