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


def test_build_step_compiles_only_when_asked(monkeypatch):
    # `--compile` must route the working tree's model through compile_for_training (and nothing
    # else must): a recorder stands in for torch.compile, so no compilation runs here.
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_ab_revision
    from bench_pretrain_step import build_config, make_batches

    import torch

    import electra_hf.modeling as modeling
    import electra_hf.performance as performance

    compiled = []

    def record(model):
        compiled.append(model)
        return model

    monkeypatch.setattr(performance, "compile_for_training", record)
    config = build_config("tiny", 300, 32)
    config_dict = {key: value for key, value in config.to_dict().items()
                   if key not in ("transformers_version", "model_type", "architectures", "auto_map")}
    eager_step = bench_ab_revision.build_step("electra_hf", config_dict, "sdpa")
    assert compiled == []
    compiled_step = bench_ab_revision.build_step("electra_hf", config_dict, "sdpa", compile_model=True)
    assert len(compiled) == 1 and isinstance(compiled[0], modeling.ElectraForRTDPretraining)
    batch = make_batches(config, 2, 32, 1, seed=0)[0]
    losses = []
    for step in (eager_step, compiled_step):  # same initial weights; same dropout masks and samples
        torch.manual_seed(1)
        losses.append(float(step(batch).detach()))
    assert losses[0] == losses[1]
