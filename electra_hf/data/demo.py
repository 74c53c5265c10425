"""A small demo corpus that every Python installation has: the pydoc help topics."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Union


def write_demo_corpus(out_dir: Union[str, os.PathLike], num_files: int = 1) -> list[str]:
    """Write Python's ``pydoc_data.topics.topics`` (~79 help topics, ~465k characters) as text
    files in the official format and return their paths.

    Each topic is one document: its non-blank lines as they are (right-stripped), inner blank
    lines dropped so they do not split it, topics separated by one blank line, in sorted topic
    order, spread contiguously over ``num_files`` files (``pydoc_topics_NN.txt``). A file whose
    content is already right is not rewritten (its mtime, hence the data cache key, stays).
    """
    from pydoc_data.topics import topics

    if num_files < 1:
        raise ValueError(f"num_files must be >= 1, got {num_files}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = []
    for name in sorted(topics):
        lines = [line.rstrip() for line in topics[name].splitlines() if line.strip()]
        if lines:
            documents.append("\n".join(lines) + "\n")
    per_file = -(-len(documents) // num_files)
    paths = []
    for i in range(num_files):
        content = "\n".join(documents[i * per_file:(i + 1) * per_file]).encode("utf-8")
        path = out_dir / f"pydoc_topics_{i:02d}.txt"
        if not (path.is_file() and path.read_bytes() == content):
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
            tmp.write_bytes(content)
            os.replace(tmp, path)
        paths.append(str(path))
    return paths

