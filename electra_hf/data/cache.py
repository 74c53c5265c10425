"""Keys and locks for the data prepared under ``cache_dir``, where ``datasets`` alone falls short.

``datasets`` caches what it builds: ``Dataset.from_generator`` (the corpus lines) and
``Dataset.map`` (the examples) write under a name derived from a fingerprint, to a temporary
name first, and a later call with the same fingerprint loads the result instead of building it
again. This module adds what that cache does not do:

* One lock per cache entry, so that processes preparing the same data at the same time (the
  ranks of a launch, nodes sharing a file system) build it once: the others wait, then reuse
  it. ``Dataset.map`` takes no lock, so two processes would both build.
* ``--overwrite_cache`` that rebuilds an entry written before this process started but keeps
  one that another rank of the same launch has just rebuilt. ``load_from_cache_file=False``
  would make every rank rebuild, one after the other.
* An atomic directory for what is not a Dataset (a trained tokenizer).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional

import datasets
from datasets import Dataset
from datasets.fingerprint import Hasher
from filelock import FileLock, Timeout

logger = logging.getLogger(__name__)

# --overwrite_cache rebuilds what was written before this moment (see locked_cache_entry).
_PROCESS_START = time.time()


def dataset_key(dataset: Dataset) -> str:
    """A key that changes with a data set's content and history (`datasets`' public hasher)."""
    return Hasher.hash(dataset)


def cache_root(cache_dir: Optional[str]) -> Path:
    """``cache_dir``, or ``$HF_DATASETS_CACHE/electra_hf`` when it is not set."""
    root = cache_dir or os.path.join(datasets.config.HF_DATASETS_CACHE, "electra_hf")
    return Path(root).expanduser().resolve()


@contextlib.contextmanager
def locked_cache_entry(directory: Path, *, overwrite: bool, what: str) -> Iterator[Path]:
    """Hold the lock of the cache entry ``directory`` while the caller reuses or builds it.

    A process that finds the lock taken waits, then finds the entry built. With ``overwrite``,
    an entry last written before this process started is removed first (the caller builds it
    again); one written since, by another rank of the same launch, is kept.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{directory}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("Waiting for another process preparing %s (lock %s.lock)", what, directory)
        lock.acquire()
    try:
        if overwrite and _last_written(directory) < _PROCESS_START:
            logger.info("--overwrite_cache: removing %s (%s)", directory, what)
            shutil.rmtree(directory)
        yield directory
    finally:
        lock.release()


def _last_written(directory: Path) -> float:
    """The newest mtime of ``directory`` and everything in it; infinity when it does not exist."""
    if not directory.exists():
        return math.inf
    return max([directory.stat().st_mtime] + [path.stat().st_mtime for path in directory.rglob("*")])


def write_directory_atomically(directory: Path, write: Callable[[Path], None]) -> None:
    """Create ``directory`` by ``write(temporary_directory)``, renamed into place when ``write``
    returns, so that an interrupted write never leaves a directory that looks complete.

    Call it holding the entry's lock (``locked_cache_entry``): it also removes the temporary
    directories that interrupted writes of the same entry left behind.
    """
    for stale in directory.parent.glob(f".tmp-{directory.name}-*"):
        logger.warning("Removing %s left by an interrupted preparation", stale)
        shutil.rmtree(stale, ignore_errors=True)
    temporary = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    temporary.mkdir()
    try:
        write(temporary)
        os.rename(temporary, directory)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
