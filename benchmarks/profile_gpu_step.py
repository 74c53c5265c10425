"""Where one electra_hf pre-training step spends its time on a GPU.

For one preset, precision and batch size, on the step bench_pretrain_step.py times (`library_step`:
forward, backward, clipping, ElectraAdamW, schedule, metric bookkeeping):

1. host syncs: `torch.cuda.set_sync_debug_mode("warn")` during one step, each with the line of
   electra_hf / transformers / torch code that caused it;
2. the step time, pipelined as bench_pretrain_step.py times it on a GPU (20 steps, one sync at
   the end: what a training loop without per-step `.item()` gets), in `--rounds` rounds that
   alternate the two kinds of batch of point 4;
3. torch.profiler over 3 steps: CUDA kernels per step and their summed time, against the unprofiled
   pipelined step (the GPU's busy share; the rest is the GPU waiting for the host to launch work)
   and against the profiled step (the profiler slows the host), the kernels and the host-side ops
   that take longest;
4. all of the above for the batch as the collator returns it and with its `attention_mask` removed
   (packed batches have no padding), to show what the mask costs.

    python benchmarks/profile_gpu_step.py --preset small --precision bf16 --batch_size 32
    python benchmarks/profile_gpu_step.py --preset base --precision bf16 --batch_size 128 --compile compile_model

Writes benchmarks/results/gpu_step_profile_<preset>_<precision>_b<batch>[_<compile variant>].{json,md}.
Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_pretrain_step as bench  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ANNOTATION = re.compile(r"^[\w.]+#")  # e.g. "Optimizer.step#ElectraAdamW.step"; kernels read "void f<...>(...)"


def sync_sites(step, batch) -> list[dict]:
    """Run one step with CUDA sync warnings on; return each sync with the code line that caused it."""
    import torch

    found = []

    def record(message, category, filename, lineno, file=None, line=None):
        if "prototype feature" in str(message):  # set_sync_debug_mode's own warning, not a sync
            return
        frames = [f for f in traceback.extract_stack()[:-1]
                  if not f.filename.endswith(("warnings.py", "profile_gpu_step.py"))]
        ours = [f for f in frames if any(k in f.filename for k in ("electra_hf", "transformers", "accelerate", "torch"))]
        site = ours[-1] if ours else (frames[-1] if frames else None)
        caller = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in (ours or frames)[-4:]]
        found.append({"message": str(message)[:200], "site": f"{site.filename}:{site.lineno}" if site else "?",
                      "stack": caller})

    with warnings.catch_warnings():  # restores showwarning and the filters on exit
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step(batch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    return found


def pipelined_ms(step, batches, n: int = 20) -> float:
    """Mean milliseconds per step over `n` steps queued back to back, one sync at the end."""
    return 1e3 * bench.pipelined_seconds(step, batches, n)[0]


def interleaved_timing(step, sections: dict, rounds: int) -> dict:
    """Per section, the pipelined step of each round; the sections alternate (order rotated) so that
    a drifting machine slows them alike."""
    labels = list(sections)
    per_round = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[: r % len(labels)]:
            per_round[label].append(pipelined_ms(step, sections[label]))
    return {label: {"pipelined_ms_rounds": [round(v, 3) for v in values], "pipelined_median_ms": statistics.median(values)}
            for label, values in per_round.items()}


def profile_steps(step, batches, steps: int = 3, top: int = 15) -> dict:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        torch.cuda.synchronize()
        wall = (time.perf_counter() - start) / steps
    # Device-side events, less the profiler's user annotations mirrored on the GPU timeline (e.g.
    # "Optimizer.step#ElectraAdamW.step", a host range, not a kernel).
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA
               and not getattr(e, "is_user_annotation", False) and not ANNOTATION.match(e.name)]
    kernel_us = sum(e.time_range.elapsed_us() for e in kernels)  # one stream: the sum is the busy time
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e.name, []).append(e.time_range.elapsed_us())
    top_kernels = sorted(((sum(v) / steps / 1e3, len(v) / steps, k) for k, v in by_name.items()), reverse=True)[:top]
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top, max_name_column_width=60)
    return {
        "profiled_wall_ms_per_step": 1e3 * wall,
        "kernels_per_step": len(kernels) / steps,
        "kernel_ms_per_step": kernel_us / steps / 1e3,
        "gpu_busy_share_of_profiled_step": (kernel_us / steps / 1e3) / (1e3 * wall),
        "top_kernels": [{"ms_per_step": round(ms, 3), "calls_per_step": calls, "name": name[:120]}
                        for ms, calls, name in top_kernels],
        "host_ops_table": table,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--compile", default="none", choices=["none", *bench.COMPILE_VARIANTS],
                        help="Eager (none) or one of bench_pretrain_step.py's compiled variants.")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="Interleaved timing rounds of 20 steps per batch kind.")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("profile_gpu_step.py needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False
    started = time.perf_counter()
    config = bench.build_config(args.preset, args.vocab_size, args.seq_len)
    batches = bench.make_batches(config, args.batch_size, args.seq_len, 4, seed=0)
    batches = [{k: v.to("cuda") for k, v in b.items()} for b in batches]
    unmasked = [{k: v for k, v in b.items() if k != "attention_mask"} for b in batches]
    torch.manual_seed(0)
    step = bench.build_electra_hf(config, "cuda", args.precision, args.attn, lr=5e-4, total_steps=1_000_000,
                                  warmup=10_000,
                                  compile_model=bench.COMPILE_VARIANTS.get(args.compile, False))
    report: dict = {"command": "python " + " ".join([os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else list(argv))),
                    "machine": bench.describe_machine("cuda", torch.get_num_threads()),
                    "preset": args.preset, "precision": args.precision, "batch_size": args.batch_size,
                    "seq_len": args.seq_len, "compile": args.compile}
    flops = bench.useful_flops(config, args.batch_size, args.seq_len, bench.masked_per_step(batches))["total"]
    report["useful_gflop_per_step"] = flops / 1e9
    sections = {"with_attention_mask": batches, "without_attention_mask": unmasked}
    for label, data in sections.items():
        section: dict = {}
        try:
            for i in range(args.warmup):
                step(data[i % len(data)])
            torch.cuda.synchronize()
            section["host_syncs"] = sync_sites(step, data[0])
        except Exception:  # noqa: BLE001 -- report what broke, keep the other section
            section["error"] = traceback.format_exc()
        report[label] = section
    working = {label: data for label, data in sections.items() if "error" not in report[label]}
    try:
        for label, timing in (interleaved_timing(step, working, args.rounds) if working else {}).items():
            timing["useful_tflops_pipelined"] = flops / (timing["pipelined_median_ms"] / 1e3) / 1e12
            report[label]["timing"] = timing
    except Exception:  # noqa: BLE001 -- e.g. out of memory: report it in every section, write the report
        for label in working:
            report[label]["error"] = traceback.format_exc()
        working = {}
    for label, data in working.items():
        section = report[label]
        try:
            section["profile"] = profile_steps(step, data)
            section["profile"]["gpu_busy_share_of_unprofiled_step"] = (
                section["profile"]["kernel_ms_per_step"] / section["timing"]["pipelined_median_ms"])
        except Exception:  # noqa: BLE001
            section["error"] = traceback.format_exc()
        print(label, json.dumps({k: v for k, v in section.items() if k != "profile"}, indent=1, default=str)[:3000], flush=True)
        if "profile" in section:
            print(section["profile"]["host_ops_table"], flush=True)
    report["max_memory_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
    report["wall_time_s"] = time.perf_counter() - started
    name = f"gpu_step_profile_{args.preset}_{args.precision}_b{args.batch_size}" + ("" if args.compile == "none" else f"_{args.compile}")
    bench.write_report(report, markdown(report), args.out_dir, name)
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [f"# One electra_hf pre-training step on {m.get('gpu', 'a GPU')}: {report['preset']}, {report['precision']}, "
             f"batch {report['batch_size']}, sequence {report['seq_len']}" + ("" if report["compile"] == "none" else f", {report['compile']}"),
             "", f"Command: `{report['command']}` ({report['wall_time_s']:.0f} s); torch {m['torch']}, transformers "
             f"{m['transformers']}. Useful work: {report['useful_gflop_per_step']:.1f} GFLOP per step. "
             f"Peak memory allocated: {report['max_memory_allocated_gb']:.2f} GB."
             + (f" Note: {report['note']}" if report.get("note") else ""), ""]
    labels = ("with_attention_mask", "without_attention_mask")
    alternating = all("timing" in report.get(label, {}) for label in labels)
    for label in labels:
        section = report.get(label, {})
        lines += [f"## Batch {label.replace('_', ' ')}", ""]
        if "error" in section:
            lines += ["```", section["error"][-1500:], "```", ""]
            continue
        t, p = section["timing"], section["profile"]
        if "pipelined_ms_rounds" in t:
            step_line = (f"- Step: {t['pipelined_median_ms']:.2f} ms, median of {len(t['pipelined_ms_rounds'])} rounds of 20 "
                         f"pipelined steps{' alternating with the other batch kind' if alternating else ''} (rounds: "
                         f"{', '.join(f'{v:.1f}' for v in t['pipelined_ms_rounds'])} ms): "
                         f"{t['useful_tflops_pipelined']:.1f} useful TFLOP/s.")
        else:  # the first run's format: one synced and one pipelined measurement, sections not interleaved
            step_line = (f"- Step: {t['synced_median_ms']:.2f} ms median synchronised after each step, {t['pipelined_mean_ms']:.2f} ms "
                         f"pipelined (20 steps, one sync): {t['useful_tflops_pipelined']:.1f} useful TFLOP/s. One measurement "
                         "each, and this section ran after the other, not interleaved with it.")
        pipelined = t.get("pipelined_median_ms", t.get("pipelined_mean_ms"))
        busy_profiled = p.get("gpu_busy_share_of_profiled_step", p.get("gpu_busy_share"))
        lines += [
            step_line,
            f"- Host syncs in one step: {len(section['host_syncs'])}"
            + "".join(f"\n  - `{s['site']}` ({' ← '.join(reversed(s['stack']))})" for s in section["host_syncs"]),
            f"- Profiled: {p['kernels_per_step']:.0f} CUDA kernels per step, {p['kernel_ms_per_step']:.2f} ms of kernel time: "
            f"the GPU is busy {100 * p['kernel_ms_per_step'] / pipelined:.0f}% of the unprofiled {pipelined:.1f} ms step "
            f"({100 * busy_profiled:.0f}% of the profiled {p['profiled_wall_ms_per_step']:.1f} ms step; the profiler slows the host).",
            "", "| kernel | ms per step | calls per step |", "|---|---:|---:|",
        ]
        lines += [f"| `{k['name'][:90]}` | {k['ms_per_step']:.3f} | {k['calls_per_step']:.0f} |" for k in p["top_kernels"]]
        lines += [""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
