"""benchmarks.bench_pretrain_step end to end on a tiny model: both variants run in their own
processes, the untimed steps at the start of each round are not counted, and the report holds
what the README quotes (speed-up, fraction of the GEMM rate, peak memory)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_pretrain_step

pytestmark = pytest.mark.benchmark


def test_bench_pretrain_step_smoke(tmp_path):
    report = bench_pretrain_step.main([
        "--device", "cpu", "--presets", "tiny", "--vocab_size", "500", "--seq_len", "32", "--batch_size", "4",
        "--rounds", "2", "--steps", "2", "--warmup", "1", "--round_warmup", "1", "--gemm_size", "256",
        "--threads", "1", "--out_dir", str(tmp_path),
    ])
    saved = json.loads((tmp_path / "pretrain_step.json").read_text())
    assert saved["round_warmup"] == 1 and saved["rounds"] == 2
    rows = {row["variant"]: row for row in report["results"]}
    assert set(rows) == {"naive", "electra_hf"}
    for variant, row in rows.items():
        # 2 rounds × 2 timed steps; the untimed step at the start of each round is not among them.
        assert row["timed_steps"] == 4, variant
        raw = next(case for case in saved["raw"] if case["preset"] == "tiny")["variants"][variant]
        assert len(raw["step_s"]) == 4 and len(raw["rounds"]) == 2
        # ... but it ran: 1 warm-up step, then 2 rounds of (1 untimed + 2 timed) steps.
        assert raw["steps_run"] == 1 + 2 * (1 + 2), variant
        assert 0 < row["fraction_of_gemm_paired"] < 5 and row["peak_rss_gb"] > 0
        assert row["useful_gflop_per_step"] > 0 and row["final_loss"] is not None
    assert rows["naive"]["speedup_vs_naive"] == 1.0 and rows["electra_hf"]["speedup_vs_naive"] > 0
    table = (tmp_path / "pretrain_step.md").read_text()
    assert "| tiny | fp32 | electra_hf |" in table
    assert "each round starts with 1 untimed step(s) per variant" in table
