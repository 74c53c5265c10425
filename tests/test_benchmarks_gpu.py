"""The GPU benchmarks' reporting, checked on the CPU with the committed H100 results."""

from __future__ import annotations

import copy
import json

import pytest

from benchmarks import bench_pretrain_step as bench
from benchmarks.common import RESULTS_DIR, datasheet_peak

pytestmark = pytest.mark.benchmark


def test_datasheet_peaks_match_gpu_names():
    assert datasheet_peak("NVIDIA H100 80GB HBM3") == ({"fp32": 66.9, "bf16": 989.4}, "H100 SXM")
    assert datasheet_peak("NVIDIA H100 PCIe")[1] == "H100 PCIe"
    assert datasheet_peak("NVIDIA H200")[1] == "H200 SXM"
    assert datasheet_peak("NVIDIA A100-SXM4-40GB")[0]["bf16"] == 312.0
    assert datasheet_peak("Tesla V100-SXM2-16GB") == (None, None)
    assert datasheet_peak(None) == (None, None)


def test_gpu_defaults_differ_from_the_cpu():
    assert bench.default_steps("cuda", "small") == 20 and bench.default_steps("cpu", "small") == 2
    assert bench.gemm_size("cpu", "bfloat16", 4096) == 2048 and bench.gemm_size("cuda", "bfloat16", 8192) == 8192
    assert bench.gemm_dtype("bf16") == "bfloat16" and bench.gemm_dtype("fp32") == "float32"


def test_gpu_report_renders_mfu_and_leaves_unverified_variants_out_of_the_nvidia_comparison():
    report = json.loads((RESULTS_DIR / "gpu_base_bf16_b128.json").read_text())
    table = bench.markdown(report)
    assert "MFU (datasheet)" in table and "step ms (median)" in table and "(round means)" in table
    electra = next(r for r in report["results"] if r["variant"] == "electra_hf")
    assert f"{electra['sequences_per_s_median']:,.0f} sequences/s" in table  # eager electra_hf, not the CUDA-graph row
    assert electra["mfu_datasheet"] == pytest.approx(electra["useful_gflops_median"] / 989.4e3)
    assert "Note: compile_model_cudagraphs" in table
    # were the CUDA-graph variant verified, the comparison still names only the listed variants
    without_eager = copy.deepcopy(report)
    without_eager["results"] = [r for r in report["results"] if r["variant"] != "electra_hf"]
    assert bench.nvidia_comparison(without_eager) == []

