"""What pre-training reports: running means of the step's metrics, and held-out evaluation.

`MetricWindow` sums the detached metrics of every micro-batch on the device (no host sync per
step) and gives their means by name when the loop logs. `evaluate` scores the validation split:
losses and accuracies over every example exactly once (any number of processes), and the
discriminator's ROC AUC.
"""

from __future__ import annotations

import torch

from .modeling import IGNORE_INDEX, generator_correct

GENERATOR_METRICS = ("loss", "generator_loss", "generator_accuracy")
DISCRIMINATOR_METRICS = ("discriminator_loss", "discriminator_accuracy", "discriminator_precision",
                         "discriminator_recall")


class MetricWindow:
    """Running sums of named step metrics since the last `means()`, kept on the device."""

    def __init__(self, names: tuple[str, ...], device: torch.device):
        self.names = names
        self.sums = torch.zeros(len(names) + 1, device=device)  # the last slot counts micro-batches

    def add(self, output) -> None:
        values = [getattr(output, name).detach().float() for name in self.names]
        self.sums[:-1] += torch.stack(values)
        self.sums[-1] += 1

    def means(self, accelerator) -> dict[str, float]:
        """Means over every process's micro-batches since the last call (one host sync); resets."""
        totals = accelerator.reduce(self.sums.clone(), reduction="sum").tolist()
        self.sums.zero_()
        count = max(totals[-1], 1.0)
        return {name: total / count for name, total in zip(self.names, totals)}


def step_metric_names(objective: str) -> tuple[str, ...]:
    return GENERATOR_METRICS + (DISCRIMINATOR_METRICS if objective == "electra" else ())


EVAL_SUMS = ("generator_loss", "generator_correct", "masked", "discriminator_loss", "discriminator_correct",
             "tokens", "true_positives", "replaced")


def per_example_sums(out, batch) -> torch.Tensor:
    """`(B, 8)` float64 per-example sums (see EVAL_SUMS) from one pre-training forward pass.

    Summed over examples (not averaged per batch), so that metrics over a data set do not depend on
    how it was cut into batches or shared among processes.
    """
    labels, input_ids = batch["labels"], batch["input_ids"]
    positions, weights = out.masked_positions, out.masked_weights.float()
    targets = torch.where(labels != IGNORE_INDEX, labels, input_ids).gather(1, positions)
    logits = out.generator_logits.float()
    token_loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    columns = [
        (token_loss.view_as(targets) * weights).sum(1),
        (generator_correct(logits, targets).float() * weights).sum(1),
        weights.sum(1),
    ]
    if out.discriminator_logits is not None:
        valid = batch["attention_mask"].bool()
        disc_logits, replaced = out.discriminator_logits.float(), out.replaced_labels.bool()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(disc_logits, replaced.float(), reduction="none")
        predicted, actual = (disc_logits > 0) & valid, replaced & valid
        columns += [(bce * valid).sum(1), ((predicted == actual) & valid).sum(1), valid.sum(1),
                    (predicted & actual).sum(1), actual.sum(1)]
    else:
        columns += [torch.zeros_like(columns[0])] * 5
    return torch.stack([c.double() for c in columns], dim=1)


def evaluate(model, dataloader, collator, accelerator, seed: int) -> dict[str, float]:
    """Losses/accuracies over the validation split (each example counted once, token-weighted)
    and the discriminator's ROC AUC.

    The validation masks are the same at every evaluation (the collator restarts its epoch 0),
    and so are the generator's samples (a private RNG stream seeded from `seed` and the process
    index, restored afterwards): successive evaluations are comparable, and evaluating does not
    change the training run's random stream. Per-example sums are gathered with
    `gather_for_metrics`, which drops the duplicates Accelerate adds to even out the last batch,
    so the result is the same for any number of processes.
    """
    collator.set_epoch(0)
    model.eval()
    totals = torch.zeros(len(EVAL_SUMS), dtype=torch.float64)
    examples, scores, labels = 0, [], []
    devices = [accelerator.device.index or 0] if accelerator.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed + accelerator.process_index)
        for batch in dataloader:
            out = model(**batch)
            sums = accelerator.gather_for_metrics(per_example_sums(out, batch))
            totals += sums.sum(0).cpu()
            examples += sums.shape[0]
            if out.discriminator_logits is not None:
                token_scores, token_labels = _gather_token_scores(accelerator, out, batch)
                scores.append(token_scores)
                labels.append(token_labels)
    model.train()
    metrics = _metrics_from_sums(dict(zip(EVAL_SUMS, totals.tolist())), accelerator.unwrap_model(model).config)
    if scores:
        metrics.update(_auc(torch.cat(labels), torch.cat(scores)))
    metrics["examples"] = float(examples)
    return metrics


def _gather_token_scores(accelerator, out, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's logits and labels of every real token of the batch, from all processes."""
    # Same-shape tensors on every rank (T differs per batch), filtered to real tokens after the gather.
    logits, replaced, mask = (
        accelerator.pad_across_processes(tensor, dim=1)
        for tensor in (out.discriminator_logits.float(), out.replaced_labels, batch["attention_mask"])
    )
    logits, replaced, mask = accelerator.gather_for_metrics((logits, replaced, mask))
    valid = mask.bool()
    return logits[valid].cpu(), replaced[valid].cpu()


def _metrics_from_sums(sums: dict[str, float], config) -> dict[str, float]:
    masked, tokens = max(sums["masked"], 1.0), max(sums["tokens"], 1.0)
    metrics = {"generator_loss": sums["generator_loss"] / masked, "generator_accuracy": sums["generator_correct"] / masked}
    metrics["loss"] = config.generator_loss_weight * metrics["generator_loss"]
    if config.objective == "electra":
        metrics["discriminator_loss"] = sums["discriminator_loss"] / tokens
        metrics["discriminator_accuracy"] = sums["discriminator_correct"] / tokens
        metrics["discriminator_recall"] = sums["true_positives"] / max(sums["replaced"], 1.0)
        metrics["loss"] += config.discriminator_loss_weight * metrics["discriminator_loss"]
    return metrics


def _auc(labels: torch.Tensor, scores: torch.Tensor) -> dict[str, float]:
    """ROC AUC of the replaced class; absent when the labels hold one class only."""
    from sklearn.metrics import roc_auc_score

    labels = labels.numpy()
    if not 0 < labels.sum() < len(labels):
        return {}
    return {"discriminator_auc": float(roc_auc_score(labels, scores.numpy()))}
