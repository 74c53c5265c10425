"""benchmarks/bench_cpu_settings.py: each variant's environment reaches its process, and the report
pairs every variant with `default` round by round."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_cpu_settings  # noqa: E402


def test_candidate_variants_cover_the_settings_and_name_what_is_missing(monkeypatch):
    monkeypatch.setattr(bench_cpu_settings.ctypes.util, "find_library", lambda name: None)
    variants, skipped = bench_cpu_settings.candidate_variants({})
    assert variants["default"] == {"env": {}, "keep_freed_memory": True}
    assert variants["glibc_returns_memory"]["keep_freed_memory"] is False
    assert variants["omp_spin"]["env"] == {"GOMP_SPINCOUNT": "10000000"}
    assert variants["omp_passive"]["env"] == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert variants["omp_bind"]["env"] == {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}
    assert set(skipped) == {"jemalloc", "tcmalloc"} and "--preload" in skipped["jemalloc"]

    variants, skipped = bench_cpu_settings.candidate_variants({"jemalloc": "/opt/libjemalloc.so.2", "mimalloc": "/x/libmimalloc.so"})
    assert variants["jemalloc"]["env"] == {"LD_PRELOAD": "/opt/libjemalloc.so.2"}
    assert variants["jemalloc_no_decay"]["env"]["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert variants["mimalloc"]["env"] == {"LD_PRELOAD": "/x/libmimalloc.so"}
    assert set(skipped) == {"tcmalloc"}


def test_bad_preload_argument_is_refused():
    with pytest.raises(SystemExit):
        bench_cpu_settings.parse_args(["--preload", "jemalloc"])


def test_run_variant_passes_the_environment_and_reports_failures(monkeypatch):
    calls = []

    def fake_run(command, env, capture_output, text):
        calls.append((command, env))
        if env.get("BREAK") == "1":
            return subprocess.CompletedProcess(command, 1, stdout="", stderr="Traceback: boom")
        return subprocess.CompletedProcess(command, 0, stdout="log line\n" + bench_cpu_settings._RESULT_PREFIX
                                           + json.dumps({"step_s": [0.5, 0.25], "torch_threads": 2}) + "\n", stderr="")

    monkeypatch.setattr(bench_cpu_settings.subprocess, "run", fake_run)
    monkeypatch.setenv("KEEP_ME", "yes")
    args = bench_cpu_settings.parse_args(["--preset", "tiny", "--steps", "2"])
    assert bench_cpu_settings.run_variant(args, {"env": {"GOMP_SPINCOUNT": "7"}, "keep_freed_memory": False}) == [0.5, 0.25]
    command, env = calls[-1]
    assert env["GOMP_SPINCOUNT"] == "7" and env["KEEP_ME"] == "yes"
    assert "--child" in command and "--keep_freed_memory" not in command
    assert command[command.index("--steps") + 1] == "2"
    bench_cpu_settings.run_variant(args, {"env": {}, "keep_freed_memory": True})
    assert "--keep_freed_memory" in calls[-1][0]
    with pytest.raises(RuntimeError, match=r"(?s)BREAK.*exit 1.*boom"):
        bench_cpu_settings.run_variant(args, {"env": {"BREAK": "1"}, "keep_freed_memory": True})


def test_bench_cpu_settings_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_cpu_settings.py"), "--preset", "tiny",
                           "--vocab_size", "300", "--batch_size", "2", "--seq_len", "32", "--steps", "2", "--rounds", "2",
                           "--variants", "default", "omp_passive", "--out_dir", str(tmp_path), "--name", "smoke"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert [row["variant"] for row in report["rows"]] == ["default", "omp_passive"]
    for name in ("default", "omp_passive"):
        assert len(report["step_s"][name]) == 2 and all(len(steps) == 2 and min(steps) > 0 for steps in report["step_s"][name])
    default_row, passive_row = report["rows"]
    assert default_row["ratio_to_default_per_round"] == [1.0, 1.0]
    rounds = [statistics.median(p) / statistics.median(d) for p, d in zip(report["step_s"]["omp_passive"], report["step_s"]["default"])]
    assert passive_row["ratio_to_default_per_round"] == pytest.approx(rounds)
    assert "`OMP_WAIT_POLICY=PASSIVE`" in (tmp_path / "smoke.md").read_text()

