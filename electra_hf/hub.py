"""Pushing exported checkpoints to the Hugging Face Hub (create_repo + upload_folder).

Kept apart from export so the network-facing part is small and testable with a stand-in API
object (anything with `create_repo` and `upload_folder` methods, like `huggingface_hub.HfApi`).
"""

from __future__ import annotations

import os
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
    api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
    result = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        path_in_repo=path_in_repo,
        commit_message=commit_message,
        repo_type="model",
        ignore_patterns=["*.tmp*", ".*"],
    )
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
