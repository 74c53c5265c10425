#!/usr/bin/env python
"""How close can one ELECTRA pre-training step get to the machine's GEMM rate? (issue 6)

`bench_pretrain_step.py` reports electra_hf's step as a fraction of the dense GEMM rate of the
machine (`torch.mm` of two 4096² matrices). This script says where the rest goes and what the
fraction could be at best, in one run on one machine:

1. builds electra_hf's step exactly as `bench_pretrain_step.py`'s `electra_hf` variant does
   (Accelerator, ElectraForRTDPretraining, backward, clipping, ElectraAdamW, schedule) and times it;
2. times every aten op of one step as it runs (a `TorchDispatchMode` that records each call's
   wall time and input shapes) and splits the step into the GEMMs (`aten::mm`, `addmm`, `bmm`,
   `baddbmm`, `mv`, `addmv`), the other ops (top ones listed) and the time outside any aten op
   (Python, the autograd engine, the numba dropout masks). Not `torch.profiler`: on this machine
   it made some large elementwise backward ops (`gelu_backward`, the cross-entropy gradient's
   `mul`) 10-18x slower inside a profiled step than the same ops alone or in an unprofiled step,
   so its table pointed at work that was not there. `--compile` keeps the profiler: inductor's
   kernels bypass a dispatch mode, and one makes dynamo recompile;
3. replays every GEMM the step issued alone, with the same shapes, on contiguous operands, and
   sums their times: the step's matrix products at the speed they reach in isolation;
4. measures the 4096² GEMM rate between the timed parts.

From these:
- **reached**: useful FLOPs / median step time / GEMM rate (the number bench_pretrain_step reports);
- **ceiling**: useful FLOPs / (isolated time of the step's own GEMMs) / GEMM rate — the fraction a
  step would reach if it did nothing but its matrix products, each as fast as it runs alone.
  Small-K products (hidden 256, head size 64, the generator's hidden 64) run well below the
  4096² rate, so this is below 100% whatever the rest of the step costs.
The FLOPs the timed GEMMs executed are also summed, a check on `useful_flops`' count.

    python benchmarks/bench_step_ceiling.py                  # ELECTRA-Small, batch 32 × 128, fp32
    python benchmarks/bench_step_ceiling.py --compile         # the same with compile_for_training
    python benchmarks/bench_step_ceiling.py --preset tiny --steps 5

Writes benchmarks/results/step_ceiling_<preset>.{json,md} (--out_dir, --name to change).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pretrain_step import (  # noqa: E402  (a sibling script, not a package)
    RESULTS_DIR,
    build_config,
    build_electra_hf,
    describe_machine,
    make_batches,
    masked_per_step,
    measure_gemm,
    useful_flops,
    write_report,
)

GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::mv", "aten::addmv")


def gemm_flops(op: str, shapes: list[list[int]]) -> int:
    """Multiply-add FLOPs (2·M·K·N) of one GEMM call from its input shapes."""
    if op in ("aten::mm",):
        (m, k), (_, n) = shapes[0], shapes[1]
        return 2 * m * k * n
    if op == "aten::addmm":
        (m, k), (_, n) = shapes[1], shapes[2]
        return 2 * m * k * n
    if op == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2 * b * m * k * n
    if op == "aten::baddbmm":
        (b, m, k), (_, _, n) = shapes[1], shapes[2]
        return 2 * b * m * k * n
    if op == "aten::mv":
        m, k = shapes[0]
        return 2 * m * k
    if op == "aten::addmv":
        m, k = shapes[1]
        return 2 * m * k
    raise ValueError(op)


def replay_gemm(op: str, shapes: list[list[int]], repeats: int) -> float:
    """Median seconds of one call of `op` on fresh contiguous fp32 operands of `shapes`."""
    import torch

    tensors = [torch.randn(shape) if shape else None for shape in shapes]
    if op == "aten::mm":
        call = lambda: torch.mm(tensors[0], tensors[1])  # noqa: E731
    elif op == "aten::addmm":
        call = lambda: torch.addmm(tensors[0], tensors[1], tensors[2])  # noqa: E731
    elif op == "aten::bmm":
        call = lambda: torch.bmm(tensors[0], tensors[1])  # noqa: E731
    elif op == "aten::baddbmm":
        call = lambda: torch.baddbmm(tensors[0], tensors[1], tensors[2])  # noqa: E731
    elif op == "aten::mv":
        call = lambda: torch.mv(tensors[0], tensors[1])  # noqa: E731
    else:
        call = lambda: torch.addmv(tensors[0], tensors[1], tensors[2])  # noqa: E731
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_ops(step, batch) -> tuple[float, dict, dict, float]:
    """Run one step timing each aten op: (wall seconds, GEMM calls {(op, shapes): [count, s]},
    other ops {name: s}, GEMM seconds).

    A dispatch mode sees every op below autograd (forward, backward, optimizer) exactly once, on
    the thread that runs it, and CPU ops are synchronous, so a call's wall time is the op's time.
    Shapes: one list per positional argument, [] for a non-tensor (as `replay_gemm` takes them)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    gemms: dict = defaultdict(lambda: [0, 0.0])
    others: dict = defaultdict(float)

    class OpTimer(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            elapsed = time.perf_counter() - start
            name = f"aten::{func.overloadpacket.__name__}"
            if name in GEMM_OPS:
                shapes = tuple(tuple(a.shape) if isinstance(a, torch.Tensor) else () for a in args)
                gemms[(name, shapes)][0] += 1
                gemms[(name, shapes)][1] += elapsed
            else:
                others[name] += elapsed
            return out

    with OpTimer():
        start = time.perf_counter()
        step(batch)
        wall = time.perf_counter() - start
    gemm_seconds = sum(seconds for _, seconds in gemms.values())
    return wall, dict(gemms), dict(others), gemm_seconds


def profile_step(step, batch) -> tuple[float, dict, dict, float]:
    """`time_ops` with `torch.profiler` instead: for compiled steps, whose inductor kernels never pass
    through a dispatch mode (and a mode makes dynamo recompile). Times are the profiler's CPU time
    (GEMM calls in total, other ops by self time); see the module docstring for its distortions."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        start = time.perf_counter()
        step(batch)
        wall = time.perf_counter() - start
    gemms: dict = defaultdict(lambda: [0, 0.0])
    others: dict = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=True):
        if event.key in GEMM_OPS:
            shapes = tuple(tuple(s) for s in event.input_shapes)
            gemms[(event.key, shapes)][0] += event.count
            gemms[(event.key, shapes)][1] += event.cpu_time_total / 1e6
    for event in prof.key_averages():
        if event.key not in GEMM_OPS:
            others[event.key] += event.self_cpu_time_total / 1e6
    gemm_seconds = sum(seconds for _, seconds in gemms.values())
    return wall, dict(gemms), dict(others), gemm_seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="Timed steps (without the op timer), in two halves around the op-timed step.")
    parser.add_argument("--warmup", type=int, default=5,
                        help="Untimed steps first. The first faults in ~500k pages; in one run here steps 3-7 "
                             "still took 1.9-2.0 s against 1.5-1.7 s later.")
    parser.add_argument("--replay_repeats", type=int, default=5, help="Timed calls per distinct GEMM shape.")
    parser.add_argument("--gemm_size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true",
                        help="The step with compile_for_training (torch.compile per layer), as --torch_compile trains.")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default=None, help="Output file stem (default step_ceiling_<preset>).")
    args = parser.parse_args(argv)

    import torch

    from electra_hf.performance import configure_cpu_training

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_cpu_training()  # as train_pretrain.py does on a CPU
    machine = describe_machine("cpu", torch.get_num_threads())
    config = build_config(args.preset, args.vocab_size, args.seq_len)
    batches = make_batches(config, args.batch_size, args.seq_len, 4, args.seed)
    useful = useful_flops(config, args.batch_size, args.seq_len, masked_per_step(batches))["total"]
    torch.manual_seed(args.seed)
    step = build_electra_hf(config, "cpu", "fp32", "sdpa", lr=5e-4, total_steps=1_000_000, warmup=10_000,
                            compile_model=args.compile)

    gemm_rates: list[float] = []
    step_times: list[float] = []

    def timed_steps(count: int, offset: int) -> None:
        gemm_rates.extend(measure_gemm("cpu", "float32", args.gemm_size, repeats=1))
        for i in range(count):
            start = time.perf_counter()
            step(batches[(offset + i) % len(batches)])
            step_times.append(time.perf_counter() - start)
        gemm_rates.extend(measure_gemm("cpu", "float32", args.gemm_size, repeats=1))

    print(f"[{args.preset}] warming up ({args.warmup} steps) ...", flush=True)
    for i in range(args.warmup):
        step(batches[i % len(batches)])
    half = max(1, args.steps // 2)
    timed_steps(half, 0)
    print(f"[{args.preset}] timing the ops of one step ...", flush=True)
    timed_wall, gemms, others, gemm_seconds_in_step = (profile_step if args.compile else time_ops)(step, batches[0])
    timed_steps(max(1, args.steps - half), half)

    print(f"[{args.preset}] replaying {len(gemms)} distinct GEMM shapes alone ...", flush=True)
    isolated_seconds, executed_flops, shape_rows = 0.0, 0, []
    for (op, shapes), (count, in_step) in sorted(gemms.items(), key=lambda kv: -kv[1][1]):
        alone = replay_gemm(op, [list(s) for s in shapes], args.replay_repeats)
        flops = gemm_flops(op, [list(s) for s in shapes])
        isolated_seconds += alone * count
        executed_flops += flops * count
        shape_rows.append({"op": op, "shapes": [list(s) for s in shapes], "calls": count,
                           "in_step_s": in_step, "alone_s": alone * count,
                           "alone_gflops": flops / alone / 1e9 if alone > 0 else None})
    gemm_rates.extend(measure_gemm("cpu", "float32", args.gemm_size, repeats=2))

    step_s = statistics.median(step_times)
    gemm_rate = statistics.median(gemm_rates)
    gemm_share = gemm_seconds_in_step / timed_wall
    top_others = sorted(others.items(), key=lambda kv: -kv[1])[:12]
    outside_ops = timed_wall - gemm_seconds_in_step - sum(others.values())
    result = {
        "command": "python benchmarks/bench_step_ceiling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "preset": args.preset, "compiled": args.compile,
        "op_timer": "torch.profiler" if args.compile else "dispatch mode", "gemm_size": args.gemm_size, "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab_size": args.vocab_size,
        "useful_flops_per_step": useful,
        "executed_gemm_flops_per_step": executed_flops,
        "gemm_rate_flops": {"median": gemm_rate, "best": max(gemm_rates), "samples": gemm_rates},
        "step_s": {"median": step_s, "samples": step_times},
        "op_timed_step_s": timed_wall,
        "gemm_s_in_op_timed_step": gemm_seconds_in_step,
        "other_ops_s_in_op_timed_step": sum(others.values()),
        "outside_ops_s_in_op_timed_step": outside_ops,
        "gemm_share_of_step": gemm_share,
        "gemm_s_alone": isolated_seconds,
        "reached_fraction": useful / step_s / gemm_rate,
        "ceiling_fraction": useful / isolated_seconds / gemm_rate,
        "gemm_in_step_fraction": executed_flops / gemm_seconds_in_step / gemm_rate,
        "top_non_gemm_ops_s": top_others,
        "gemm_shapes": shape_rows,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    write_report(result, markdown(result), args.out_dir,
                 args.name or f"step_ceiling_{args.preset}" + ("_compile" if args.compile else ""))
    return result


def markdown(r: dict) -> str:
    m = r["machine"]
    rate = r["gemm_rate_flops"]
    lines = [
        f"# Ceiling of the ELECTRA pre-training step ({r['preset']}, batch {r['batch_size']} × {r['seq_len']}, fp32"
        + (", torch.compile per layer)" if r.get("compiled") else ", eager)"),
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable cores, {m['torch_threads']} torch threads; torch {m['torch']}. "
        f"Load average at start {m['load_average_at_start']}, at end {m['load_average_at_end']}.",
        f"Command: `{r['command'].strip()}` (wall time {r['wall_s']:.0f} s).",
        "",
        f"Dense fp32 GEMM ({r.get('gemm_size', 4096)}² `torch.mm`) in this run: median {rate['median'] / 1e9:.0f} GFLOP/s, "
        f"best {rate['best'] / 1e9:.0f} ({len(rate['samples'])} samples). Op times of one step from "
        + ("`torch.profiler` (compiled kernels bypass a dispatch mode)." if r.get("op_timer") == "torch.profiler"
           else "a dispatch-mode timer (each aten call's wall time; see the script's docstring for why not the profiler)."),
        "",
        "| quantity | value |",
        "|---|---:|",
        f"| useful FLOPs per step (`useful_flops`) | {r['useful_flops_per_step'] / 1e9:.1f} G |",
        f"| FLOPs the step's GEMMs executed (timed shapes) | {r['executed_gemm_flops_per_step'] / 1e9:.1f} G |",
        f"| step time (median, without the op timer) | {r['step_s']['median']:.3f} s |",
        f"| GEMM time inside the op-timed step | {r['gemm_s_in_op_timed_step']:.3f} s of {r['op_timed_step_s']:.3f} s ({100 * r['gemm_share_of_step']:.0f}%) |",
        f"| other aten ops in that step | {r['other_ops_s_in_op_timed_step']:.3f} s |",
        f"| outside any aten op (Python, autograd engine, numba dropout masks, the timer's own cost) | {r['outside_ops_s_in_op_timed_step']:.3f} s |",
        f"| the same GEMMs replayed alone | {r['gemm_s_alone']:.3f} s |",
        f"| **reached**: useful FLOP/s / GEMM rate | **{100 * r['reached_fraction']:.1f}%** |",
        f"| GEMMs inside the step: executed FLOP/s / GEMM rate | {100 * r['gemm_in_step_fraction']:.1f}% |",
        f"| **ceiling**: useful FLOPs / (GEMMs alone) / GEMM rate | **{100 * r['ceiling_fraction']:.1f}%** |",
        "",
        "Where the other ops' time goes (wall time per op in the op-timed step, top ops):",
        "",
        "| op | s |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {seconds:.3f} |" for name, seconds in r["top_non_gemm_ops_s"]]
    lines += ["", "The step's GEMM shapes, slowest first (time in the step vs replayed alone):", "",
              "| op | shapes | calls | in step s | alone s | alone GFLOP/s |", "|---|---|---:|---:|---:|---:|"]
    for row in r["gemm_shapes"][:15]:
        lines.append(f"| `{row['op']}` | {row['shapes']} | {row['calls']} | {row['in_step_s']:.3f} | {row['alone_s']:.3f} | "
                     f"{(row['alone_gflops'] or 0):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
