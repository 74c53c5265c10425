"""Smoke test of benchmarks/bench_ab_revision.py (the step now vs at a git revision, in one process)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_bench_ab_revision_smoke(tmp_path):
    # In a subprocess: the script imports a second copy of the package, which must not leak into
    # this test session.
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_ab_revision.py"), "--baseline", "HEAD",
                           "--preset", "tiny", "--vocab_size", "300", "--batch_size", "2", "--seq_len", "32",
                           "--pairs", "2", "--out_dir", str(tmp_path), "--name", "smoke"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["baseline_commit"] == head
    assert sorted(saved["step_s"]) == sorted(["working tree", f"baseline {head[:7]}"])
    assert all(len(times) == 2 and min(times) > 0 for times in saved["step_s"].values())
    assert saved["median_ratio_working_tree_to_baseline"] > 0
    assert "Median of the per-pair ratios" in (tmp_path / "smoke.md").read_text()
