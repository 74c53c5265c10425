"""Statistics of built ELECTRA examples (lengths, single-segment and short fractions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional, Union

import numpy as np
import pyarrow.compute as pc
from datasets import Dataset


def describe_examples(
    dataset: Union[Dataset, Iterable[dict]], max_seq_length: Optional[int] = None, max_examples: Optional[int] = None
) -> dict:
    """Statistics of built examples: ``num_examples``, ``num_tokens`` (with [CLS]/[SEP]),
    ``mean_length``, ``max_length``, ``frac_single_segment`` (no token type 1) and
    ``frac_shorter_than_max`` (length < ``max_seq_length``; default: the longest example).
    A ``Dataset`` is summarised with Arrow (fast); other iterables are read row by row (at most
    ``max_examples``)."""
    if isinstance(dataset, Dataset):
        table = dataset.select_columns(["input_ids", "token_type_ids"]).with_format("arrow")[:]
        ids = table["input_ids"].combine_chunks()
        types = table["token_type_ids"].combine_chunks()
        lengths = pc.list_value_length(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        parents = pc.list_parent_indices(types).to_numpy()
        flat = pc.list_flatten(types).to_numpy(zero_copy_only=False)
        type_sums = np.bincount(parents, weights=flat, minlength=len(lengths))
    else:
        lens, sums = [], []
        for i, example in enumerate(dataset):
            if max_examples is not None and i >= max_examples:
                break
            lens.append(len(example["input_ids"]))
            sums.append(sum(example["token_type_ids"]))
        lengths, type_sums = np.asarray(lens, dtype=np.int64), np.asarray(sums)
    n = int(len(lengths))
    if n == 0:
        return {"num_examples": 0, "num_tokens": 0, "mean_length": 0.0, "max_length": 0,
                "frac_single_segment": 0.0, "frac_shorter_than_max": 0.0}
    limit = max_seq_length if max_seq_length is not None else int(lengths.max())
    return {
        "num_examples": n,
        "num_tokens": int(lengths.sum()),
        "mean_length": round(float(lengths.mean()), 3),
        "max_length": int(lengths.max()),
        "frac_single_segment": round(float((type_sums == 0).mean()), 5),
        "frac_shorter_than_max": round(float((lengths < limit).mean()), 5),
    }
