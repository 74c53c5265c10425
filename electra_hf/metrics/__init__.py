"""The fine-tuning metrics as `evaluate` modules, and any other `evaluate` metric (--metric_name).

Three module folders live beside this file. Each holds a script defining an `evaluate.Metric`
whose ``_compute`` calls electra_hf's own implementation, so the scores are those of the tested
functions, and ``evaluate.load(<folder>)`` needs no Hub (it copies the script into evaluate's
modules cache and imports it from there):

* :data:`GLUE_METRIC` (``electra_hf/metrics/glue``): a GLUE task's metrics (configuration: the
  task, e.g. ``"mrpc"``), or ``"classification"`` / ``"regression"`` for data of your own
  (:mod:`electra_hf.tasks.glue_metrics`);
* :data:`ENTITY_F1_METRIC` (``electra_hf/metrics/entity_f1``): conlleval's entity-level precision,
  recall and F1 plus token accuracy (:func:`electra_hf.tasks.tagging.tagging_metrics`);
* :data:`SQUAD_METRIC` (``electra_hf/metrics/squad``): the official SQuAD v1.1 (``"v1"``) and
  v2.0 (``"v2"``) evaluation (:mod:`electra_hf.tasks.squad_metrics`).

A fine-tuning script scores every evaluation with a :class:`MetricSuite`: its task's module plus
the ``--metric_name`` ones (a Hub name such as ``f1``, or a local metric folder), all given the
same predictions and references.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["GLUE_METRIC", "ENTITY_F1_METRIC", "SQUAD_METRIC", "MetricLoadError", "load_metric", "MetricSuite"]

METRICS_DIR = Path(__file__).resolve().parent
GLUE_METRIC = str(METRICS_DIR / "glue")
ENTITY_F1_METRIC = str(METRICS_DIR / "entity_f1")
SQUAD_METRIC = str(METRICS_DIR / "squad")


class MetricLoadError(RuntimeError):
    """An `evaluate` metric named by its Hub id could not be loaded (message names the flag)."""


def _is_local(path: str) -> bool:
    return os.path.isdir(path) or path.endswith(".py")


def load_metric(path: str, config_name: str | None = None, flag: str = "--metric_name"):
    """``evaluate.load(path, config_name)``, kept in memory (each process scores the gathered
    predictions itself, so no process shares evaluate's cache files).

    A local folder or script raises its own error. A Hub id that does not load raises
    :class:`MetricLoadError` naming ``flag``: where the Hub is unreachable only metrics already in
    evaluate's modules cache load.
    """
    import evaluate

    try:
        return evaluate.load(path, config_name, keep_in_memory=True)
    except Exception as error:
        if _is_local(path):
            raise
        from huggingface_hub import constants

        offline = " (HF_HUB_OFFLINE is set here)" if constants.HF_HUB_OFFLINE else ""
        raise MetricLoadError(
            f"{flag} {path}: evaluate could not load it ({type(error).__name__}: {error}). A metric named by its Hub "
            f"id loads only where the Hub is reachable{offline}, or from evaluate's modules cache once fetched; "
            f"otherwise give the folder of a local metric script.") from error


def _short_name(path: str) -> str:
    return Path(path.rstrip("/")).stem if _is_local(path) else path.split("/")[-1]


def _flatten(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested result dicts as one level, keys joined with "/" (seqeval's ``{"PER": {"f1": …}}`` → ``PER/f1``)."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class MetricSuite:
    """A task's own `evaluate` module and the ``--metric_name`` ones, given the same inputs.

    :meth:`compute` returns the task module's results, then each extra metric's numbers (nested
    dicts flattened with "/"). A key the results already hold gets the extra metric's name in
    front (the Hub's ``accuracy`` beside the task's: ``accuracy/accuracy``). Values that are not
    numbers (per-class lists, strings) are left out with a warning: the loop reports floats.
    """

    def __init__(self, path: str, config_name: str | None = None, extra_metrics: Sequence[str] = ()):
        self.own = (path, config_name, load_metric(path, config_name))
        self.extras = [(name, load_metric(name)) for name in extra_metrics]
        self.extra_keys: list[str] = []  # the keys extra metrics reported, in first-seen order
        self._warned: set[str] = set()

    def compute(self, predictions, references) -> dict[str, float]:
        results = dict(self.own[2].compute(predictions=predictions, references=references))
        for name, module in self.extras:
            for key, value in _flatten(module.compute(predictions=predictions, references=references)).items():
                key = f"{_short_name(name)}/{key}" if key in results else key
                if isinstance(value, numbers.Number) and not isinstance(value, bool):
                    results[key] = float(value)
                    if key not in self.extra_keys:
                        self.extra_keys.append(key)
                elif key not in self._warned:
                    self._warned.add(key)
                    logger.warning("--metric_name %s: %r is not a number (%s); not reported", name, key,
                                   type(value).__name__)
        return results

    def describe(self) -> list[dict[str, str | None]]:
        """The modules, for ``results.json``: ``[{"module": path or Hub id, "config_name": …}]``."""
        return [{"module": self.own[0], "config_name": self.own[1]}] + [
            {"module": name, "config_name": None} for name, _ in self.extras]
