"""Pushing models to the Hugging Face Hub (create_repo + upload_folder).

Pre-training pushes its exports (`push_exports_to_hub`); fine-tuning pushes a `FinetunedUpload`:
the saved model of the chosen seed (and, asked for, every seed's in `seed_<seed>/`), the tokenizer,
a model card (`FinetunedCard`) and the run's results files, staged in one folder and uploaded in
one commit. Kept apart from the training code so the network-facing part is small and testable
with a stand-in API object (anything with `create_repo` and `upload_folder` methods, like
`huggingface_hub.HfApi`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload ELECTRA checkpoint (electra_hf)",
    path_in_repo: str | None = None,
    api: Any | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` into it; returns the commit URL/info as text.

    `api` defaults to `huggingface_hub.HfApi(token=token)`; tests pass a stand-in.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json); export the model first")
    if not repo_id or not repo_id.strip():
        raise ValueError("--hub_model_id is required to push to the Hub")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        result = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            path_in_repo=path_in_repo,
            commit_message=commit_message,
            repo_type="model",
            ignore_patterns=["*.tmp*", ".*"],
        )
    except Exception as error:  # offline, no network, no write access: say which push failed and why
        raise RuntimeError(f"--push_to_hub {repo_id}: the push failed ({type(error).__name__}: {error}); "
                           f"the files stay on disk. Check the network and --hub_token.") from error
    return str(result)


def push_exports_to_hub(
    exports: dict[str, Path],
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    api: Any | None = None,
) -> dict[str, str]:
    """Push each export: the discriminator (or mlm) to `repo_id`, the generator to `repo_id-generator`."""
    results = {}
    for kind, folder in exports.items():
        target = repo_id if kind in ("discriminator", "mlm") else f"{repo_id}-{kind}"
        results[kind] = push_folder_to_hub(folder, target, token=token, private=private, api=api)
    return results


# --------------------------------------------------------------------------------------------
# Fine-tuned models
# --------------------------------------------------------------------------------------------
#: The files of a saved model that go to the Hub: what save_pretrained writes (the config, the
#: weights, the code of a custom head such as electra_hf.heads); the tokenizer is saved beside
#: them from memory, and the run's own records (run_result.json, predictions) stay home.
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", "*.py")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path: a model or data set on the Hub."""
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


@dataclass
class FinetunedCard:
    """What the model card (README.md) of a fine-tuned model says."""

    repo_id: str
    base_model: str  # --model_name_or_path
    task: str  # e.g. "GLUE RTE", "sentence classification", "SQuAD v1.1"
    data: str  # where the examples came from
    pipeline_tag: str  # text-classification | token-classification | question-answering
    auto_class: str  # the transformers Auto class that loads the model
    results_table: str  # Markdown: the metrics per seed and their median
    seeds: Sequence[Any]
    seed: Any  # the seed whose model is at the repository's root
    selected_by: str  # the dev metric that chose it
    settings: Mapping[str, Any] = field(default_factory=dict)  # learning rate, epochs, ...
    remote_code: bool = False  # the config has an auto_map (the official head): trust_remote_code=True
    seed_folders: Sequence[Any] = ()  # seeds whose models are in seed_<seed>/
    datasets: Sequence[str] = ()  # Hub data set ids, for the metadata

    def render(self) -> str:
        return "\n".join([*self._metadata(), "", *self._overview(), "", *self._results(), ""])

    def _metadata(self) -> list[str]:
        lines = ["---", "library_name: transformers", f"pipeline_tag: {self.pipeline_tag}", "tags:", "- electra",
                 "- electra_hf", f"- {self.pipeline_tag}"]
        if looks_like_hub_id(self.base_model):
            lines.append(f"base_model: {self.base_model}")
        if self.datasets:
            lines += ["datasets:", *(f"- {name}" for name in self.datasets)]
        return lines + ["---"]

    def _overview(self) -> list[str]:
        chosen = f"this repository holds the model of seed {self.seed}, the best by `{self.selected_by}`"
        if self.seed_folders:
            chosen += f"; `seed_<seed>/` holds each seed's ({', '.join(map(str, self.seed_folders))})"
        load_kwargs = ", trust_remote_code=True" if self.remote_code else ""
        return [f"# {self.repo_id.split('/')[-1]}", "",
                f"`{self.base_model}` fine-tuned for **{self.task}** with electra_hf (the ELECTRA paper's "
                "fine-tuning recipe: layer-wise learning-rate decay, linear warm-up and decay).", "",
                f"- **Data**: {self.data}",
                f"- **Seeds**: {', '.join(map(str, self.seeds))}; {chosen}.", "",
                "```python",
                f"from transformers import AutoTokenizer, {self.auto_class}",
                f'model = {self.auto_class}.from_pretrained("{self.repo_id}"{load_kwargs})',
                f'tokenizer = AutoTokenizer.from_pretrained("{self.repo_id}")',
                "```"]

    def _results(self) -> list[str]:
        lines = ["## Results", "", "Metrics on the evaluation data, per seed and their median (`results.json` holds "
                 "every number).", "", self.results_table.strip()]
        if self.settings:
            lines += ["", "## Training", "", *(f"- **{key}**: {value}" for key, value in self.settings.items())]
        return lines


@dataclass
class FinetunedUpload:
    """One Hub repository of a fine-tuning run: what goes there and with which credentials."""

    repo_id: str
    model_dir: Path  # the chosen seed's saved model
    card: FinetunedCard
    results_files: Sequence[Path]  # results.json, results.md
    tokenizer: Any
    seed_dirs: Mapping[Any, Path] = field(default_factory=dict)  # --push_all_seeds: seed -> saved model
    token: str | None = field(default=None, repr=False)
    private: bool | None = None

    def summary(self) -> dict[str, Any]:
        """For results.json (no token)."""
        return {"repo_id": self.repo_id, "seed": self.card.seed, "selected_by": self.card.selected_by,
                "seed_folders": [f"seed_{seed}" for seed in self.seed_dirs]}

    def push(self, api: Any | None = None) -> str:
        """Stage the files in a temporary folder beside the model and upload them in one commit."""
        with tempfile.TemporaryDirectory(prefix=".hub-", dir=self.model_dir.parent) as staging:
            stage = Path(staging)
            stage_model_files(self.model_dir, self.tokenizer, stage)
            for seed, folder in self.seed_dirs.items():
                stage_model_files(Path(folder), self.tokenizer, stage / f"seed_{seed}")
            (stage / "README.md").write_text(self.card.render(), encoding="utf-8")
            for path in self.results_files:
                shutil.copy2(path, stage / Path(path).name)
            message = f"Fine-tuned model (seed {self.card.seed}), model card and results (electra_hf)"
            return push_folder_to_hub(stage, self.repo_id, token=self.token, private=self.private,
                                      commit_message=message, api=api)


def stage_model_files(model_dir: Path, tokenizer, target: Path) -> None:
    """Copy the files of :data:`MODEL_FILE_PATTERNS` from ``model_dir`` and save ``tokenizer`` into ``target``."""
    names = [p.name for p in model_dir.iterdir() if p.is_file()
             and any(fnmatch.fnmatch(p.name, pattern) for pattern in MODEL_FILE_PATTERNS)]
    if "config.json" not in names:
        raise FileNotFoundError(f"{model_dir}: no saved model (config.json) to push; was --save_model false?")
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(model_dir / name, target / name)
    if tokenizer is not None:
        tokenizer.save_pretrained(target)


def needs_remote_code(model_dir: Path) -> bool:
    """The saved config names its own classes (``auto_map``): loading it needs ``trust_remote_code=True``."""
    return "auto_map" in json.loads((Path(model_dir) / "config.json").read_text())
