"""Predictions of a fine-tuned model over a prepared data loader, every example exactly once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch


def _output_tensors(outputs) -> tuple[torch.Tensor, ...]:
    """Prediction tensors of a model output: everything except loss/hidden states/attentions
    (classification: logits (B, C); tagging: (B, L, C); QA: start and end logits (B, L))."""
    skip = {"loss", "hidden_states", "attentions", "cross_attentions", "past_key_values"}
    if isinstance(outputs, Mapping):
        return tuple(v for k, v in outputs.items() if k not in skip and isinstance(v, torch.Tensor))
    return tuple(v for v in outputs if isinstance(v, torch.Tensor))


def _concat_padded(arrays: list[np.ndarray], pad_value: float = -100) -> np.ndarray:
    """Concatenate along dim 0; arrays whose dim 1 differ (token-level outputs of batches with
    different lengths) are padded with ``pad_value`` first."""
    if arrays[0].ndim < 2 or len({a.shape[1:] for a in arrays}) == 1:
        return np.concatenate(arrays, axis=0)
    max_len = max(a.shape[1] for a in arrays)
    padded = []
    for a in arrays:
        width = [(0, 0)] * a.ndim
        width[1] = (0, max_len - a.shape[1])
        padded.append(np.pad(a, width, constant_values=pad_value))
    return np.concatenate(padded, axis=0)


@torch.no_grad()
def predict(model, dataloader, accelerator, label_names: Sequence[str] = ("labels",), desc: str = "predict",
            disable_tqdm: bool = False):
    """Run ``model`` over a **prepared** dataloader; return a ``transformers.EvalPrediction``
    whose ``predictions`` are the output tensors as numpy (one array, or a tuple for several,
    e.g. QA start/end logits) and ``label_ids`` the gathered labels (None if the batches have
    none), both over the whole dataset in order, each example exactly once (gather_for_metrics
    drops the duplicates that even batches add on several processes)."""
    from tqdm.auto import tqdm
    from transformers import EvalPrediction

    was_training = model.training
    model.eval()
    all_preds: list[list[np.ndarray]] = []
    all_labels: list[list[np.ndarray]] = []
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=disable_tqdm or not accelerator.is_local_main_process):
        labels = tuple(batch.pop(name) for name in label_names if name in batch)
        outputs = model(**batch)
        preds = tuple(t.float() if t.is_floating_point() else t for t in _output_tensors(outputs))
        if accelerator.num_processes > 1:
            # Token-level outputs differ in length between processes: pad before gathering.
            preds = tuple(accelerator.pad_across_processes(t, dim=1, pad_index=-100) if t.ndim >= 2 else t for t in preds)
            labels = tuple(accelerator.pad_across_processes(t, dim=1, pad_index=-100) if t.ndim >= 2 else t for t in labels)
        preds, labels = accelerator.gather_for_metrics((preds, labels))
        if not all_preds:
            all_preds = [[] for _ in preds]
            all_labels = [[] for _ in labels]
        for store, t in zip(all_preds, preds):
            store.append(t.cpu().numpy())
        for store, t in zip(all_labels, labels):
            store.append(t.cpu().numpy())
    if was_training:
        model.train()
    predictions = tuple(_concat_padded(parts) for parts in all_preds)
    label_ids = tuple(_concat_padded(parts) for parts in all_labels)
    return EvalPrediction(
        predictions=predictions[0] if len(predictions) == 1 else predictions,
        label_ids=(label_ids[0] if len(label_ids) == 1 else label_ids) if label_ids else None,
    )
