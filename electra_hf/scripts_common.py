"""What the fine-tuning scripts (train_glue.py, train_tagging.py, train_squad.py) share.

The training loop itself lives in :mod:`electra_hf.finetuning` (several seeds: :mod:`electra_hf.seeds`),
the arguments in :mod:`electra_hf.arguments`; this module holds the glue around them that every
script would otherwise repeat: loading the discriminator to fine-tune (pre-training checkpoints
and exports included) with its tokenizer and the checks that catch mismatches early, the
results files (JSON + a Markdown table with one column per seed and the median) and the end of
a run (:func:`write_results_and_end_training`), and :class:`EvalRecorder`, which keeps the
by-products of each evaluation (predicted tags, answer texts) so that scripts write per-seed
predictions (:func:`write_seed_predictions`) without a second pass over the data.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arguments import FinetuningArguments, FinetuningModelArguments
from .hub import FinetunedCard, FinetunedUpload, looks_like_hub_id, needs_remote_code

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuningSetup",
    "start_finetuning",
    "classifier_dropout_override",
    "resolve_discriminator_path",
    "check_vocab",
    "load_discriminator_and_tokenizer",
    "plain_encoder_config",
    "model_load_kwargs",
    "pretrained_model_init",
    "first_n",
    "json_safe",
    "format_metric",
    "metrics_table",
    "seed_summary",
    "summary_rows",
    "write_results",
    "write_results_and_end_training",
    "finish_one_task",
    "hub_repo_id",
    "hub_upload",
    "EvalRecorder",
    "write_seed_predictions",
]


@dataclass
class FinetuningSetup:
    """What every fine-tuning script starts from (`start_finetuning`)."""

    accelerator: Any
    model_path: str  # where the discriminator's weights are (an export, a checkpoint's, a Hub id)
    base_config: Any
    tokenizer: Any
    learning_rate: float
    layer_decay: float


def start_finetuning(model_args: FinetuningModelArguments, data_args: Any, ft_args: Any,
                     need_fast_tokenizer: str = "") -> FinetuningSetup:
    """The Accelerator, logging, the discriminator's config and tokenizer (checked to fit), the
    learning rate and layer decay, and the trackers (with every argument as hyper-parameters)."""
    from .finetuning import resolve_learning_rate_and_layer_decay
    from .training import build_accelerator, init_trackers, setup_logging

    accelerator = build_accelerator(ft_args)
    setup_logging(accelerator)
    model_path, base_config, tokenizer = load_discriminator_and_tokenizer(model_args, ft_args.max_seq_length,
                                                                          need_fast_tokenizer)
    learning_rate, layer_decay = resolve_learning_rate_and_layer_decay(ft_args, base_config)
    init_trackers(accelerator, ft_args, model_args, data_args)
    return FinetuningSetup(accelerator, model_path, base_config, tokenizer, learning_rate, layer_decay)


def resolve_discriminator_path(path: str) -> str:
    """Map ``--model_name_or_path`` to something ``from_pretrained`` loads, and log which weights
    that is when it is not ``path`` itself.

    Plain checkpoints and Hub ids pass through; an ``export_pretrained`` folder gives its
    ``discriminator/`` (or ``mlm/``); a ``train_pretrain.py`` output folder gives its export
    (``export/discriminator``), and one without an export (an unfinished run) is refused, naming
    its newest checkpoint; an electra_hf pre-training checkpoint (a ``train_pretrain.py``
    checkpoint folder or a saved ``ElectraForRTDPretraining``) is exported once next to it and its
    discriminator is used.
    """
    from electra_hf.checkpoints import find_latest_checkpoint
    from electra_hf.export import EXPORT_KINDS, finetuning_checkpoint

    folder, source = Path(path), path
    if folder.is_dir() and not (folder / "config.json").is_file():
        if any((folder / "export" / kind / "config.json").is_file() for kind in EXPORT_KINDS):
            source = str(folder / "export")  # a pre-training run's output folder
        elif (latest := find_latest_checkpoint(folder / "checkpoints")) is not None:
            raise ValueError(f"--model_name_or_path {path}: a pre-training run without export/ (it did not finish); "
                             f"give one of its checkpoints, e.g. {latest}")
    resolved = finetuning_checkpoint(source)
    if resolved != path:
        logger.info("--model_name_or_path %s: fine-tuning the weights of %s", path, resolved)
    return resolved


def check_vocab(tokenizer, config, model_path: str, tokenizer_path: str, allow_smaller: bool) -> None:
    """The tokenizer must produce ids the embedding table has."""
    n_tok, n_model = len(tokenizer), config.vocab_size
    if n_tok == n_model or (allow_smaller and n_tok < n_model):
        return
    raise ValueError(
        f"Tokenizer vocabulary ({n_tok} tokens, {tokenizer_path}) does not match the model's vocab_size "
        f"({n_model}, {model_path}). Use the tokenizer the model was pre-trained with (--tokenizer_name)"
        + ("" if n_tok > n_model else "; if the embeddings were padded on purpose pass --allow_vocab_size_mismatch")
        + "."
    )


def load_discriminator_and_tokenizer(model_args: FinetuningModelArguments, max_seq_length: int, need_fast_tokenizer: str = ""):
    """Resolve the checkpoint, load its config and tokenizer, and check that they fit together.

    Returns ``(model_path, base_config, tokenizer)``. Raises ``ValueError`` for a model that is not
    an ELECTRA discriminator (its own code or a fine-tuned one included) or an encoder of a family
    with a masked-LM class, a tokenizer whose vocabulary does not match, a ``max_seq_length``
    beyond the position embeddings, or (with ``need_fast_tokenizer`` = the reason) a slow tokenizer.
    """
    from transformers import AutoConfig, AutoTokenizer

    model_path = resolve_discriminator_path(model_args.model_name_or_path)
    tokenizer_path = model_args.tokenizer_name or model_path
    remote = dict(cache_dir=model_args.cache_dir, trust_remote_code=model_args.trust_remote_code)
    base_config = AutoConfig.from_pretrained(model_path, **remote)
    from .backbones import is_supported_encoder

    electra_derived = hasattr(base_config, "embedding_size") and "electra" in base_config.model_type
    if not (is_supported_encoder(base_config) or electra_derived):
        raise ValueError(f"--model_name_or_path {model_path}: model_type {base_config.model_type!r} is not an encoder "
                         f"electra_hf fine-tunes (an ELECTRA discriminator, or DeBERTa-v2, BERT, RoBERTa, ModernBERT, "
                         f"...: a family with a masked-LM class)")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, **remote)
    check_vocab(tokenizer, base_config, model_path, tokenizer_path, model_args.allow_vocab_size_mismatch)
    if need_fast_tokenizer and not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{tokenizer_path}: {type(tokenizer).__name__} is a slow tokenizer; {need_fast_tokenizer} "
                         f"needs a fast one (a tokenizer.json, or --tokenizer_name of a fast tokenizer).")
    if max_seq_length > base_config.max_position_embeddings:
        raise ValueError(f"--max_seq_length {max_seq_length} exceeds the model's max_position_embeddings "
                         f"({base_config.max_position_embeddings}, {model_path})")
    return model_path, base_config, tokenizer


def plain_encoder_config(base_config, **overrides):
    """A plain config of ``base_config``'s family (``ElectraConfig``, ``DebertaV2Config``, ...) with
    every field of ``base_config`` and ``overrides`` (num_labels, id2label, ...) on top. Architecture
    entries are dropped so the fine-tuned model's config names only its own class (no ``auto_map``:
    it must load with transformers alone)."""
    values = base_config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version", "id2label", "label2id"):
        values.pop(key, None)
    return type(base_config)(**{**values, **overrides})


def classifier_dropout_override(base_config, dropout: float | None) -> dict[str, float]:
    """``--classifier_dropout`` as a config override; a family whose config has no such field (its
    heads read others, e.g. DeBERTa's ``pooler_dropout``) is refused rather than silently ignored."""
    if dropout is None:
        return {}
    if not hasattr(base_config, "classifier_dropout"):
        raise ValueError(f"--classifier_dropout: {base_config.model_type} configs have no classifier_dropout field "
                         "(their heads read other fields); drop the flag")
    return {"classifier_dropout": dropout}


def model_load_kwargs(model_args: FinetuningModelArguments) -> dict[str, Any]:
    """Keyword arguments for ``from_pretrained`` that come from the model arguments."""
    kwargs: dict[str, Any] = dict(cache_dir=model_args.cache_dir, trust_remote_code=model_args.trust_remote_code,
                                  ignore_mismatched_sizes=model_args.ignore_mismatched_sizes)
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def pretrained_model_init(auto_class, setup: FinetuningSetup, model_args: FinetuningModelArguments,
                          **config_overrides) -> Callable[[], Any]:
    """A callable returning a fresh ``auto_class`` model (e.g. ``AutoModelForTokenClassification``)
    on top of the pre-trained discriminator: its :func:`plain_encoder_config` with
    ``config_overrides`` and ``--classifier_dropout`` on top, loaded with :func:`model_load_kwargs`."""
    config_overrides = {**config_overrides, **classifier_dropout_override(setup.base_config, model_args.classifier_dropout)}
    config = plain_encoder_config(setup.base_config, **config_overrides)
    load_kwargs = model_load_kwargs(model_args)
    return lambda: auto_class.from_pretrained(setup.model_path, config=config, **load_kwargs)


def first_n(dataset, n: int | None):
    """The first ``n`` rows of ``dataset`` (all of them when ``n`` is None or larger)."""
    return dataset if n is None or n >= len(dataset) else dataset.select(range(n))


def json_safe(obj):
    """``obj`` with NaN/inf as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def format_metric(value: float | None, scale: float = 100.0) -> str:
    """``value × scale`` with two decimals; ``–`` for a missing or NaN value."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{scale * value:.2f}"


def metrics_table(first_column: str, rows: Iterable[tuple[str, str, Sequence[float | None], float | None]],
                  seeds: Sequence[Any], scale: float = 100.0) -> list[str]:
    """Markdown table lines: one row per ``(name, metric, per-seed values, median)``, one column
    per seed, then the median (values × ``scale``)."""
    lines = [f"| {first_column} | metric | " + " | ".join(f"seed {s}" for s in seeds) + " | median |",
             "|---|---|" + "---:|" * (len(seeds) + 1)]
    for name, key, per_seed, median in rows:
        values = " | ".join(format_metric(v, scale) for v in per_seed)
        lines.append(f"| {name} | {key} | {values} | {format_metric(median, scale)} |")
    return lines


def seed_summary(outcome, metric_keys: Sequence[str]) -> dict[str, Any]:
    """The per-seed entries of a ``results.json`` for a :class:`~electra_hf.finetuning.SeedsResult`:
    ``per_seed`` (each seed's metrics), ``median`` (over seeds), ``metric_keys`` (the rows of
    ``results.md``, see :func:`summary_rows`), ``global_steps`` and ``loss_history`` (one entry
    per seed), in this order."""
    # Callers splice this into their results dict with ``**``; its keys keep their place in
    # results.json, so the order here is part of the file format.
    return {"per_seed": [r.metrics for r in outcome.per_seed], "median": outcome.median,
            "metric_keys": list(metric_keys), "global_steps": [r.global_step for r in outcome.per_seed],
            "loss_history": [r.loss_history for r in outcome.per_seed]}


def summary_rows(name: str, summary: Mapping[str, Any]) -> list[tuple[str, str, list[float | None], float | None]]:
    """:func:`metrics_table` rows named ``name``, one per ``summary["metric_keys"]``, from a dict
    with the ``per_seed``/``median``/``metric_keys`` entries of :func:`seed_summary`."""
    return [(name, key, [m.get(key) for m in summary["per_seed"]], summary["median"].get(key))
            for key in summary["metric_keys"]]


def write_results(output_dir: str | os.PathLike, results: Mapping[str, Any], markdown: str) -> Path:
    """Write ``results.json`` (strict JSON) and ``results.md`` into ``output_dir``; returns the JSON path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(json_safe(dict(results)), indent=2))
    (output_dir / "results.md").write_text(markdown)
    return output_dir / "results.json"


def write_results_and_end_training(accelerator, output_dir: str | os.PathLike, results: Mapping[str, Any],
                                   markdown: str, log: logging.Logger,
                                   hub_uploads: Sequence[FinetunedUpload] = ()) -> None:
    """The end of a fine-tuning script: the main process writes ``<output_dir>/results.json`` and
    ``results.md`` (:func:`write_results`), logs the table to ``log`` and pushes ``hub_uploads``
    (:func:`hub_upload`); then every process waits for the others and the trackers are closed
    (``accelerator.end_training``)."""
    if accelerator.is_main_process:
        path = write_results(output_dir, results, markdown)
        log.info("results: %s\n%s", path, markdown)
        for upload in hub_uploads:
            log.info("pushed to the Hub: %s", upload.push())
    # Every process returns only once the files exist: a caller (or the next script) may read them.
    accelerator.wait_for_everyone()
    accelerator.end_training()


def finish_one_task(setup: FinetuningSetup, model_args: FinetuningModelArguments, ft_args: FinetuningArguments,
                    outcome, results: dict[str, Any], log: logging.Logger, *, name_key: str, scale: float = 100.0,
                    dataset_name: str | None = None, **card: str) -> None:
    """The end of a one-task script (train_tagging.py, train_squad.py): ``results.md`` holds one row
    per metric of ``results`` (named ``results[name_key]``, values × ``scale``); with
    ``--push_to_hub`` the best seed goes to ``--hub_model_id`` (:func:`hub_upload`, ``card``: its
    ``selected_by``, ``task``, ``data``, ``pipeline_tag`` and ``auto_class``) and ``results["hub"]``
    records the upload; then :func:`write_results_and_end_training`."""
    markdown = "\n".join(metrics_table(name_key, summary_rows(results[name_key], results), results["seeds"], scale)) + "\n"
    uploads = []
    if ft_args.push_to_hub:
        uploads.append(hub_upload(setup, model_args, ft_args, outcome, repo_id=ft_args.hub_model_id, results_table=markdown,
                                  output_dir=ft_args.output_dir, dataset_name=dataset_name, **card))
        results["hub"] = uploads[-1].summary()
    write_results_and_end_training(setup.accelerator, ft_args.output_dir, results, markdown, log, hub_uploads=uploads)


def hub_repo_id(ft_args: FinetuningArguments, task_name: str, several_tasks: bool) -> str:
    """``--hub_model_id``, or ``<hub_model_id>-<task>`` when one run fine-tunes several tasks (GLUE)."""
    return f"{ft_args.hub_model_id}-{task_name.lower()}" if several_tasks else ft_args.hub_model_id


def hub_upload(setup: FinetuningSetup, model_args: FinetuningModelArguments, ft_args: FinetuningArguments, outcome,
               *, repo_id: str, selected_by: str, task: str, data: str, pipeline_tag: str, auto_class: str,
               results_table: str, output_dir: str | os.PathLike, dataset_name: str | None = None) -> FinetunedUpload:
    """What ``--push_to_hub`` sends to ``repo_id`` for one task: the saved model of the seed with the
    best ``selected_by`` (with ``--push_all_seeds`` every seed's too), the tokenizer, a model card
    and ``<output_dir>/results.json`` / ``results.md``. ``outcome`` is the task's
    :class:`~electra_hf.seeds.SeedsResult`; the other arguments go into the card (``dataset_name``:
    ``--dataset_name``, listed in the card's metadata when it is a Hub id)."""
    chosen = outcome.best_seed(selected_by)
    seed_dirs = {run.seed: Path(run.output_dir) for run in outcome.per_seed} if ft_args.push_all_seeds else {}
    settings = {"learning rate": setup.learning_rate, "layer-wise decay": setup.layer_decay,
                "epochs": ft_args.num_train_epochs, "optimizer steps": chosen.global_step,
                "batch size per device": ft_args.per_device_train_batch_size,
                "max sequence length": ft_args.max_seq_length, "weights": setup.model_path}
    card = FinetunedCard(repo_id=repo_id, base_model=model_args.model_name_or_path, task=task, data=data,
                         pipeline_tag=pipeline_tag, auto_class=auto_class, results_table=results_table,
                         seeds=outcome.seeds, seed=chosen.seed, selected_by=selected_by, settings=settings,
                         remote_code=needs_remote_code(Path(chosen.output_dir)), seed_folders=list(seed_dirs),
                         datasets=[dataset_name] if dataset_name and looks_like_hub_id(dataset_name) else [])
    output_dir = Path(output_dir)
    return FinetunedUpload(repo_id=repo_id, model_dir=Path(chosen.output_dir), card=card,
                           results_files=[output_dir / "results.json", output_dir / "results.md"],
                           tokenizer=setup.tokenizer, seed_dirs=seed_dirs, token=ft_args.hub_token,
                           private=ft_args.hub_private_repo)


@dataclass
class _Evaluation:
    split: str
    metrics: dict[str, float]  # keyed "<split>/<name>", as the loop reports them
    artifact: Any


class EvalRecorder:
    """A ``compute_metrics`` callback that also keeps what each evaluation produced.

    ``score(split, EvalPrediction) -> (metrics, artifact)`` computes the metrics and a by-product
    (predicted tags, answer texts). The loop only passes metrics on; after
    :func:`~electra_hf.finetuning.run_with_seeds`, :meth:`artifacts_per_run` gives each run the
    artifacts of the evaluation its reported metrics come from: the last one, or the best one
    with ``metric_for_best_model``. This works because the loop evaluates the splits of
    ``eval_datasets`` in order, every evaluation is recorded in ``eval_history``, and seeds run
    one after the other. Every process computes the same (gathered) predictions, so every
    process records the same artifacts.
    """

    def __init__(self, score: Callable[[str, Any], tuple[Mapping[str, float], Any]], splits: Sequence[str]):
        self.score = score
        self.splits = list(splits)
        self._evaluations: list[_Evaluation] = []

    def __call__(self, split: str, prediction) -> Mapping[str, float]:
        metrics, artifact = self.score(split, prediction)
        self._evaluations.append(_Evaluation(split, {f"{split}/{k}": float(v) for k, v in metrics.items()}, artifact))
        return metrics

    @staticmethod
    def _same(a: float | None, b: float | None) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))

    def artifacts_per_run(self, runs: Sequence[Any]) -> list[dict[str, Any]]:
        """``[{split: artifact}]``, one dict per :class:`~electra_hf.finetuning.FinetuningResult` in ``runs``
        (which must be all the runs this recorder scored, in order)."""
        per_eval = len(self.splits)
        expected = sum(len(run.eval_history) for run in runs) * per_eval
        if expected != len(self._evaluations):
            raise RuntimeError(f"EvalRecorder saw {len(self._evaluations)} evaluations, the runs report {expected}: "
                               f"was it shared with other runs?")
        out, cursor = [], 0
        for run in runs:
            evaluations = [self._evaluations[cursor + i * per_eval: cursor + (i + 1) * per_eval]
                           for i in range(len(run.eval_history))]
            cursor += len(evaluations) * per_eval
            chosen = len(evaluations) - 1  # the final evaluation unless an earlier one was kept as best
            for index in range(len(evaluations) - 1, -1, -1):
                reported = run.eval_history[index][1]
                if all(self._same(run.metrics.get(k), v) for k, v in reported.items()):
                    chosen = index
                    break
            out.append({e.split: e.artifact for e in evaluations[chosen]} if evaluations else {})
        return out


def write_seed_predictions(accelerator, output_dir: str | os.PathLike, outcome, recorder: EvalRecorder, split: str,
                           file_name: str, write: Callable[[Path, Any], None]) -> dict[str, str]:
    """Write each seed's predictions to ``<output_dir>/seed_<seed>/<file_name>``, the folder of that
    seed's run (and saved model) for a run without ``run_name``.

    For every run of ``outcome`` (a :class:`~electra_hf.finetuning.SeedsResult` scored by
    ``recorder``), the main process creates the folder and calls ``write(path, artifact)`` with
    the ``split`` artifact of the evaluation the run reports (:meth:`EvalRecorder.artifacts_per_run`);
    ``write`` may put other files next to ``path``. Returns ``{"<seed>": "<path>"}`` (on every
    process) for ``results.json``.
    """
    output_dir = Path(output_dir)
    paths: dict[str, str] = {}
    for run, artifacts in zip(outcome.per_seed, recorder.artifacts_per_run(outcome.per_seed)):
        path = output_dir / f"seed_{run.seed}" / file_name
        if accelerator.is_main_process:
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, artifacts[split])
        paths[str(run.seed)] = str(path)
    return paths
