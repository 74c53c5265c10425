"""Loss-curve plots written next to the exports (PNG, matplotlib's Agg backend: no display)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_metrics(metrics_jsonl: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl log; a resumed run's re-logged steps keep their latest value."""
    rows: dict[int, dict] = {}
    for line in Path(metrics_jsonl).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.setdefault(row["step"], {}).update(row)
    return [rows[step] for step in sorted(rows)]


def plot_pretraining_curves(metrics_jsonl: str | os.PathLike, output_png: str | os.PathLike) -> Path | None:
    """Generator/discriminator losses and accuracies against steps (train and eval)."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        return None
    rows = read_metrics(path)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("generator loss", ["train/generator_loss", "eval/generator_loss"]),
        ("discriminator loss", ["train/discriminator_loss", "eval/discriminator_loss"]),
        ("accuracy", ["train/generator_accuracy", "train/discriminator_accuracy", "eval/generator_accuracy",
                      "eval/discriminator_accuracy", "eval/discriminator_auc"]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4))
    for axis, (title, keys) in zip(axes, panels):
        for key in keys:
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o" if key.startswith("eval") else None, markersize=3, label=key)
        axis.set_title(title)
        axis.set_xlabel("optimizer step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    output_png = Path(output_png)
    output_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output_png, dpi=100)
    plt.close(figure)
    return output_png
