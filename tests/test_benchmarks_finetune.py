"""Smoke test of benchmarks.bench_finetune_padding (fine-tuning throughput, dynamic padding vs
padding to max_seq_length): a tiny model, a few steps, results into tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import bench_finetune_padding as bench

pytestmark = pytest.mark.benchmark

GLUE_DIR = Path(os.environ.get("ELECTRA_HF_GLUE_DIR", bench.DEFAULT_GLUE_DIR))


@pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "train.tsv").exists(), reason="SST-2 data (shared/data/glue) is absent")
def test_bench_finetune_padding_smoke(tmp_path):
    report = bench.main([
        "--preset", "tiny", "--vocab_size", "1000", "--tokenizer_source", "sst2", "--max_train_samples", "300",
        "--glue_dir", str(GLUE_DIR), "--steps", "1", "--repeats", "2", "--warmup", "1", "--threads", "1",
        "--work_dir", str(tmp_path / "work"), "--out_dir", str(tmp_path), "--name", "smoke",
    ])
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().startswith("# Fine-tuning throughput on SST-2")
    assert saved["wall_time_s"] > 0 and saved["machine"]["torch"]
    rows = {r["variant"]: r for r in saved["results"]}
    assert set(rows) == set(bench.DEFAULT_VARIANTS) == {r["variant"] for r in report["results"]}
    for row in rows.values():
        assert row["examples_per_s_median"] > 0 and row["timed_steps"] == 2
    dynamic, padded = rows["dynamic"], rows["pad_to_max"]
    assert padded["mean_padded_length"] == 128
    assert padded["mean_padding_tokens_per_batch"] > dynamic["mean_padding_tokens_per_batch"]
    assert padded["epoch"]["padding_tokens_per_batch"] > dynamic["epoch"]["padding_tokens_per_batch"]
    # dynamic and pad_to_max draw the same examples: the same real tokens per batch
    assert (dynamic["mean_computed_tokens_per_batch"] - dynamic["mean_padding_tokens_per_batch"]
            == pytest.approx(padded["mean_computed_tokens_per_batch"] - padded["mean_padding_tokens_per_batch"]))
    assert rows["group_by_length"]["epoch"]["padding_fraction"] < dynamic["epoch"]["padding_fraction"]
    assert all(length % 8 == 0 for length in saved["padded_lengths"]["pad_to_multiple_of_8"])
    # the epoch statistics are computed on the very batches the variants train on (after 1 warm-up step)
    for name, row in rows.items():
        assert saved["padded_lengths"][name] == row["epoch"]["padded_length_first_batches"][1:3], name
    assert saved["sst2_lengths"]["examples"] == 300 and 2 < saved["sst2_lengths"]["mean"] < 128
