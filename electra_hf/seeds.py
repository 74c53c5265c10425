"""Several seeds of one fine-tuning, and the median of every metric (the paper's protocol)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .arguments import FinetuningArguments
from .finetuning import FinetuningTask, finetune
from .run_records import RUN_RESULT_FILE, FinetuningResult, read_run_result, run_fingerprint
from .training import build_accelerator

logger = logging.getLogger(__name__)


@dataclass
class SeedsResult:
    """Per-seed results and the median of every metric over seeds (the paper's protocol)."""

    per_seed: list[FinetuningResult]
    median: dict[str, float]

    @property
    def seeds(self) -> list[int | None]:
        return [r.seed for r in self.per_seed]

    def best_seed(self, metric: str, greater_is_better: bool = True) -> FinetuningResult:
        """The run with the best value of ``metric`` (e.g. to write test predictions from)."""
        scored = [r for r in self.per_seed if metric in r.metrics and not math.isnan(r.metrics[metric])]
        if not scored:
            return self.per_seed[0]
        key = (lambda r: r.metrics[metric]) if greater_is_better else (lambda r: -r.metrics[metric])
        return max(scored, key=key)


def median_metrics(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Median over runs of every metric present in all of them (NaNs ignored; all-NaN → NaN)."""
    if not runs:
        return {}
    keys = [k for k in runs[0] if all(k in r for r in runs[1:])]
    out = {}
    for key in keys:
        values = np.asarray([float(r[key]) for r in runs], dtype=np.float64)
        finite = values[~np.isnan(values)]
        out[key] = float(np.median(finite)) if finite.size else float("nan")
    return out


def run_with_seeds(model_init: Callable[[], torch.nn.Module], task: FinetuningTask, args: FinetuningArguments, *,
                   accelerator=None, run_name: str = "", keep_models: bool = False) -> SeedsResult:
    """Fine-tune a fresh `model_init()` (same checkpoint, new head) on `task` once per seed in
    `args.seeds`; models go to `<output_dir>/<run_name>/seed_<seed>`. Returns the per-seed results
    and the median over seeds of every metric. With `--resume_from_checkpoint latest` a seed whose
    run finished is read back from its record instead of being trained again."""
    from accelerate.utils import set_seed

    accelerator = accelerator or build_accelerator(args)
    results: list[FinetuningResult] = []
    step_offset = 0
    for seed in args.seeds:
        run_dir = os.path.join(args.output_dir, run_name, f"seed_{seed}")
        fingerprint = {**run_fingerprint(args, len(task.train_dataset), accelerator.num_processes), "seed": seed}
        finished = read_run_result(run_dir, fingerprint) if args.resume_from_checkpoint else None
        if finished is not None:
            logger.info("%s already finished (%s); not trained again", run_dir, RUN_RESULT_FILE)
        else:
            set_seed(seed)  # before model_init: the new head's initialisation depends on the seed
            prefix = f"{run_name}/seed_{seed}/" if run_name else f"seed_{seed}/"
            finished = finetune(model_init(), task, args, accelerator=accelerator, seed=seed, output_dir=run_dir,
                                log_prefix=prefix, log_step_offset=step_offset)
            if not keep_models:
                finished.model = None
            accelerator.free_memory()
        step_offset += finished.global_step
        results.append(finished)
    return SeedsResult(per_seed=results, median=median_metrics([r.metrics for r in results]))
