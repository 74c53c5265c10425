"""Smoke test of benchmarks/bench_dropout_mask.py (the CPU dropout masks of one ELECTRA-Small step)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from electra_hf import modeling

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(modeling.dropout_kernel() is None, reason="numba is not installed")
def test_bench_dropout_mask_smoke(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_dropout_mask", REPO / "benchmarks" / "bench_dropout_mask.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.main(["--repeats", "1", "--out_dir", str(tmp_path), "--name", "smoke"])
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert sum(row["sites_per_step"] for row in saved["rows"]) == 74  # every dropout site of the step
    assert set(saved["ms_per_step"]) == {"compiled", "numpy", "torch"}
    assert all(value > 0 for value in report["ms_per_step"].values())
    from electra_hf import cpu_kernels

    assert modeling.sfc64_dropout_bytes is cpu_kernels.sfc64_dropout_bytes  # the benchmark restores it
    assert "| **per step** | | 74 |" in (tmp_path / "smoke.md").read_text()
