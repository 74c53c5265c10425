"""What several benchmarks share: where things are, the machine's description, the dense GEMM
rate, GPU datasheet peaks, text input and report writing."""

from __future__ import annotations

import gzip
import importlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
# The project's shared data folder sits next to the checkout.
SHARED_DATA = REPO.parent / "shared" / "data"
GUTENBERG_DIR = SHARED_DATA / "corpus" / "gutenberg"

# x86 SIMD extensions that decide how fast fp32 and bf16 matmuls can run on a CPU.
CPU_SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_fp16")

# NVIDIA datasheet peaks in TFLOP/s, dense (no 2:4 sparsity): "fp32" on the CUDA cores (the
# benchmarks turn TF32 off: fp32 means fp32), "bf16" on the tensor cores. The denominator of the
# usual MFU. Entries: (substrings all in torch's device name, {precision: TFLOP/s}, datasheet name),
# the more specific names first.
DATASHEET_PEAK_TFLOPS = (
    (("H200",), {"fp32": 66.9, "bf16": 989.4}, "H200 SXM"),
    (("H100", "PCIe"), {"fp32": 51.2, "bf16": 756.0}, "H100 PCIe"),
    (("H100", "NVL"), {"fp32": 60.0, "bf16": 835.0}, "H100 NVL"),
    (("H100",), {"fp32": 66.9, "bf16": 989.4}, "H100 SXM"),
    (("A100",), {"fp32": 19.5, "bf16": 312.0}, "A100"),
)


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------
def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and its feature flags (empty where /proc/cpuinfo is absent)."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model is None:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model or platform.processor() or "unknown", flags


def library_versions(*names: str) -> dict[str, str]:
    """{package: version} of the named (importable) packages."""
    return {name: importlib.import_module(name).__version__ for name in names}


def describe_machine(*libraries: str) -> dict:
    """The CPU, the load when the benchmark starts, Python and the given libraries' versions."""
    model, _ = cpu_model_and_flags()
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "load_average_at_start": load_average(),
        "python": platform.python_version(),
        **library_versions(*libraries),
    }


def describe_torch() -> dict:
    """What decides a torch step's speed on this host: threads, SIMD level, oneDNN, and the GPU if any."""
    import torch

    _, flags = cpu_model_and_flags()
    info = {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_simd": sorted(flag for flag in flags if flag in CPU_SIMD_FLAGS),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    gpu_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def load_average() -> list[float]:
    """1, 5 and 15-minute load averages: on a shared machine, what else was running."""
    return [round(x, 2) for x in os.getloadavg()]


# --------------------------------------------------------------------------------------------
# Dense GEMM rate and GPU peaks
# --------------------------------------------------------------------------------------------
def sync(device: str) -> None:
    """Wait for the device's queued work, so that a host clock times it (a no-op on a CPU)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def measure_gemm(device: str, dtype_name: str, size: int, repeats: int = 3) -> list[float]:
    """FLOP/s of `torch.mm` on two size×size matrices: one value per repeat (after one warm-up)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    values = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        values.append(2 * size**3 / (time.perf_counter() - start))
    return values


def datasheet_peak(gpu_name: str | None) -> tuple[dict | None, str | None]:
    """The datasheet peaks (TFLOP/s per precision) of a GPU from its torch name, or (None, None)."""
    for needles, peaks, label in DATASHEET_PEAK_TFLOPS:
        if gpu_name and all(needle in gpu_name for needle in needles):
            return peaks, label
    return None, None


# --------------------------------------------------------------------------------------------
# Input and output
# --------------------------------------------------------------------------------------------
def read_lines(paths: Iterable[str | Path]) -> Iterator[str]:
    """The lines of text files in order, gzip-compressed (`.gz`) or not, newlines kept."""
    for path in paths:
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from handle


def command_line(module: str, argv: list[str] | None) -> str:
    """The command that reruns a benchmark module with these arguments (the process's own when None)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def finish_report(report: dict, render, out_dir: str | Path, name: str, started: float) -> dict:
    """Stamp the report with the load at the end and the wall time since `started` (perf_counter),
    then write it and its table (`render(report)`) as `write_report` does. Returns the report."""
    report.update(load_average_at_end=load_average(), wall_time_s=time.perf_counter() - started)
    write_report(report, render(report), out_dir, name)
    return report


def write_report(report: dict, table: str, out_dir: str | Path, name: str) -> None:
    """Write `<out_dir>/<name>.json` (the whole report) and `<name>.md` (its table), then print the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out_dir / f"{name}.md").write_text(table)
    print(table)
