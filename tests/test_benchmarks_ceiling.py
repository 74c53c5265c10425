"""Smoke test of benchmarks/bench_step_ceiling.py (where the pre-training step's time goes and the
fraction of the GEMM rate its own matrix products allow): a tiny model, a few steps, into tmp_path."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    sys.path.insert(0, str(REPO / "benchmarks"))  # the script imports its sibling bench_pretrain_step
    spec = importlib.util.spec_from_file_location("bench_step_ceiling", REPO / "benchmarks" / "bench_step_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_step_ceiling_smoke(tmp_path):
    bench = _load_script()
    report = bench.main(["--preset", "tiny", "--vocab_size", "300", "--batch_size", "4", "--seq_len", "64",
                         "--steps", "2", "--warmup", "1", "--replay_repeats", "2", "--gemm_size", "256",
                         "--threads", "1", "--out_dir", str(tmp_path), "--name", "smoke"])
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert (tmp_path / "smoke.md").read_text().startswith("# Ceiling of the ELECTRA pre-training step (tiny")
    assert saved["useful_flops_per_step"] == report["useful_flops_per_step"]
    # The FLOP count bench_pretrain_step reports is the one the timed GEMMs actually executed:
    # both encoders' dense layers and attention, forward and backward, the head only at masked positions.
    assert saved["executed_gemm_flops_per_step"] == pytest.approx(saved["useful_flops_per_step"], rel=0.02)
    assert len(saved["step_s"]["samples"]) == 2 and saved["step_s"]["median"] > 0
    assert 0 < saved["gemm_s_in_op_timed_step"] < saved["op_timed_step_s"]
    # Each op is timed once (no nesting), so GEMMs and the other ops fit inside the step's wall time.
    assert saved["gemm_s_in_op_timed_step"] + saved["other_ops_s_in_op_timed_step"] <= saved["op_timed_step_s"]
    assert saved["outside_ops_s_in_op_timed_step"] >= 0
    # The other ops are the step's own: LayerNorm, GELU and softmax forward and backward among them.
    names = {name for name, _ in saved["top_non_gemm_ops_s"]}
    assert names & {"aten::native_layer_norm", "aten::native_layer_norm_backward", "aten::gelu",
                    "aten::gelu_backward", "aten::_softmax", "aten::_softmax_backward_data"}
    assert saved["gemm_s_alone"] > 0 and saved["ceiling_fraction"] > 0 and saved["reached_fraction"] > 0
    ops = {row["op"] for row in saved["gemm_shapes"]}
    assert {"aten::mm", "aten::addmm", "aten::bmm"} <= ops
    assert sum(row["calls"] for row in saved["gemm_shapes"]) > 20
    assert saved["top_non_gemm_ops_s"] and all(name not in bench.GEMM_OPS for name, _ in saved["top_non_gemm_ops_s"])
