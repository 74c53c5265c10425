"""benchmarks.bench_data end to end on a slice of the real corpus: one worker count, a small
tokenizer, results into tmp_path."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_data
from benchmarks.common import GUTENBERG_DIR

pytestmark = pytest.mark.benchmark


@pytest.mark.skipif(not any(GUTENBERG_DIR.glob("*.txt.gz")), reason="the Gutenberg corpus (shared/data) is absent")
def test_bench_data_smoke(tmp_path):
    result = bench_data.main(["--max_files", "1", "--max_lines", "3000", "--tokenizer_lines", "3000",
                              "--vocab_size", "2000", "--num_proc", "1",
                              "--out_dir", str(tmp_path), "--work_dir", str(tmp_path / "work")])
    (run,) = result["runs"]
    assert run["lines"] > 0 and run["examples"] > 0 and run["tokens"] > run["examples"]
    assert run["build_tokens_per_s"] > 0 and run["total_seconds"] >= run["build_seconds"]
    assert json.loads((tmp_path / "data_prep.json").read_text())["runs"][0]["tokens"] == run["tokens"]
    table = (tmp_path / "data_prep.md").read_text()
    assert table.startswith("# Data preparation throughput") and table.count("\n| ") == 2
    assert result["command"].startswith("python -m benchmarks.bench_data --max_files 1")
