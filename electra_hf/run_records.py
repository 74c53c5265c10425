"""The record of a finished fine-tuning run, so that an interrupted multi-seed job skips it.

`write_run_result` stores a run's metrics, histories and test-set predictions beside its model;
`read_run_result` reads them back under `--resume_from_checkpoint latest`, and refuses a record
(or checkpoint) made under other arguments or data (`run_fingerprint`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import FinetuningArguments


@dataclass
class FinetuningResult:
    """What one fine-tuning run returns.

    Attributes:
        seed: the seed of the run.
        metrics: final (or best, with ``metric_for_best_model``) evaluation metrics keyed
            ``"<split>/<name>"``, plus ``train_loss`` (mean over the last logging window),
            ``train_runtime`` (s), ``train_steps_per_second``.
        loss_history: training loss of every optimizer step (mean over its micro-batches, this process).
        eval_history: (step, metrics) of every evaluation.
        predictions: ``EvalPrediction`` per predict split (test sets), from the returned weights.
        global_step: optimizer steps done.
        output_dir: where the model was saved (None if not saved).
        model: the unwrapped model (``run_with_seeds`` drops it unless asked to keep it).
    """

    seed: int | None
    metrics: dict[str, float]
    loss_history: list[float]
    eval_history: list[tuple[int, dict[str, float]]]
    predictions: dict[str, Any]
    global_step: int
    output_dir: str | None
    model: Any = None


RUN_RESULT_FILE = "run_result.json"
_PREDICTIONS_FILE = "run_predictions.npz"
#: The arguments a finished run is reused under ``--resume`` only if they are unchanged.
_FINGERPRINT_FIELDS = ("learning_rate", "layer_decay", "official_layer_decay_off_by_one", "weight_decay", "adam_beta1",
                       "adam_beta2", "adam_epsilon", "adam_bias_correction", "lr_scheduler_type", "warmup_ratio",
                       "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
                       "max_grad_norm", "max_seq_length", "group_by_length", "pad_to_max_length", "metric_for_best_model",
                       "greater_is_better", "eval_steps")


def run_fingerprint(args: FinetuningArguments, num_train_examples: int, num_processes: int) -> dict[str, Any]:
    """What makes two fine-tuning runs of one seed the same run (recorded in run_result.json)."""
    return {**{name: getattr(args, name) for name in _FINGERPRINT_FIELDS},
            "num_train_examples": num_train_examples, "num_processes": num_processes}


def write_run_result(result: FinetuningResult, run_dir: str | os.PathLike,
                     fingerprint: Mapping[str, Any] | None = None) -> Path:
    """Record a finished run (metrics, histories, test-set predictions) in ``run_dir`` so that
    ``--resume`` can skip it; written atomically (temp file + rename) after the predictions."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}

    def store(value) -> Any:
        if value is None:
            return None
        if isinstance(value, (tuple, list)):
            return [store(v) for v in value]
        key = f"a{len(arrays)}"
        arrays[key] = np.asarray(value)
        return key

    predictions = {split: {"predictions": store(p.predictions), "label_ids": store(p.label_ids)}
                   for split, p in result.predictions.items()}
    if arrays:
        with open(run_dir / (_PREDICTIONS_FILE + ".tmp"), "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(run_dir / (_PREDICTIONS_FILE + ".tmp"), run_dir / _PREDICTIONS_FILE)
    record = {"seed": result.seed, "metrics": result.metrics, "loss_history": result.loss_history,
              "eval_history": result.eval_history, "global_step": result.global_step, "output_dir": result.output_dir,
              "predictions": predictions, "fingerprint": dict(fingerprint or {})}
    path = run_dir / RUN_RESULT_FILE
    (run_dir / (RUN_RESULT_FILE + ".tmp")).write_text(json.dumps(record, indent=2, allow_nan=True))
    os.replace(run_dir / (RUN_RESULT_FILE + ".tmp"), path)
    return path


def read_run_result(run_dir: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None) -> FinetuningResult | None:
    """The finished run recorded in ``run_dir`` by :func:`write_run_result` (None if there is none).
    With ``fingerprint``, a record made under other arguments or data is refused (ValueError)."""
    from transformers import EvalPrediction

    run_dir = Path(run_dir)
    if not (run_dir / RUN_RESULT_FILE).is_file():
        return None
    record = json.loads((run_dir / RUN_RESULT_FILE).read_text())
    if fingerprint is not None:
        refuse_another_run(record.get("fingerprint", {}), fingerprint, run_dir / RUN_RESULT_FILE)
    arrays = dict(np.load(run_dir / _PREDICTIONS_FILE)) if (run_dir / _PREDICTIONS_FILE).is_file() else {}

    def load(value):
        if value is None:
            return None
        if isinstance(value, list):
            return tuple(load(v) for v in value)
        return arrays[value]

    predictions = {split: EvalPrediction(predictions=load(p["predictions"]), label_ids=load(p["label_ids"]))
                   for split, p in record["predictions"].items()}
    return FinetuningResult(seed=record["seed"], metrics=record["metrics"], loss_history=record["loss_history"],
                            eval_history=[(step, metrics) for step, metrics in record["eval_history"]],
                            predictions=predictions, global_step=record["global_step"], output_dir=record["output_dir"])


def refuse_another_run(recorded: Mapping[str, Any], expected: Mapping[str, Any], source: Path) -> None:
    """ValueError naming every setting in which ``source`` (checkpoint or run record) differs from
    this run (only the keys of ``expected`` are compared)."""
    different = {k: (recorded.get(k), v) for k, v in expected.items() if recorded.get(k) != v}
    if different:
        raise ValueError(
            f"--resume: {source} was made by another run ("
            + ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in sorted(different.items()))
            + "); resume with the same arguments, data and seed, or use another --output_dir.")


