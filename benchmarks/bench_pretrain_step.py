"""One ELECTRA pre-training step, side by side, in one run on one machine.

Variants (same model sizes, batch, sequence length, data and seed):
  naive       -- what a user composes from transformers' pieces, the way the existing PyTorch
                 ports do it: `ElectraForMaskedLM` computing vocabulary logits at every position
                 (its own loss), indexing the masked ones, Gumbel-max sampling there,
                 `ElectraForPreTraining` with its own loss, `torch.optim.AdamW`, clip 1.0,
                 a LambdaLR schedule.
  electra_hf  -- electra_hf's step as train_pretrain.py runs it: Accelerator, ElectraForRTDPretraining
                 forward, accelerator.backward, accelerator.clip_grad_norm_(1.0), ElectraAdamW step,
                 zero_grad, official schedule, the loop's detached-metric accumulation; the script's
                 attention (`electra_hf.performance.CPU_ATTENTION` on a CPU, sdpa elsewhere) and
                 compilation (on one GPU the whole step replayed as CUDA graphs, eager elsewhere:
                 `electra_hf.performance.training_compilation`).
  electra_hf_eager -- opt-in: the same without compilation (on a CPU: the same as electra_hf), to
                 show what the GPU fast path is worth.
  electra_hf_sdpa -- opt-in: the same with transformers' sdpa attention, to show what the CPU
                 attention function is worth.
  compile     -- electra_hf's step with the model wrapped by `electra_hf.performance.compile_for_training`
                 (torch.compile; opt-in: the first step compiles for minutes on a small CPU).
  compile_model, compile_model_cudagraphs -- opt-in: the whole model compiled as one graph, and
                 the same replayed as CUDA graphs (`mode="reduce-overhead"`, GPU only).
  naive_tuned_alloc -- opt-in: the naive step in a process given the library's CPU runtime settings
                 (`configure_cpu_training`, which electra_hf's variants use on a CPU), to separate
                 what the allocator setting alone is worth from the rest.

Each variant runs in its own process (so its peak memory is its own), all built and warmed up one
after the other, then timed in interleaved rounds (round r runs `--steps` steps of each variant in
a rotated order), so that a noisy, shared machine slows every variant alike. Each round starts with
`--round_warmup` untimed steps per variant: the variant that ran before has just worked for
seconds in another process (evicting this one's weights and activations from the caches, its
OpenMP threads asleep), which a training loop, stepping back to back, never sees. The machine's
dense GEMM throughput (`torch.mm` of two n×n matrices) is measured in the same run, just before
(ahead of the untimed steps) and after each variant's steps.

Useful FLOPs per step are counted explicitly from the configuration (the same for every variant):
6 · (dense matmul weights of both encoders and the discriminator head) · tokens
+ attention matmuls (QKᵀ and PV: 12 · B · T² · H per layer, forward and backward)
+ 6 · (generator head: dense H_g→E and the tied E→V projection) · masked positions.
Embedding lookups, layer norms, activations, softmax and the optimizer are not counted.

From the repository root:

    python -m benchmarks.bench_pretrain_step                       # Small + tiny, fp32 (2-core CPU: ~4 min)
    python -m benchmarks.bench_pretrain_step --presets tiny --rounds 2
    python -m benchmarks.bench_pretrain_step --variants naive electra_hf compile --presets tiny
    python -m benchmarks.bench_pretrain_step --device cuda --presets small base   # fp32 and bf16

Writes benchmarks/results/pretrain_step.{json,md} (--out_dir to change) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import time
from pathlib import Path

from benchmarks.common import (
    RESULTS_DIR,
    command_line,
    cpu_model_and_flags,
    datasheet_peak,
    describe_machine,
    describe_torch,
    finish_report,
    measure_gemm,
    usable_cpus,
)
from benchmarks.pretrain_variants import VARIANTS, build_config, useful_flops, worker

# NVIDIA DeepLearningExamples, ELECTRA-Base pre-training throughput on one A100 (AMP, sequence 128).
NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S = 955.0


# --------------------------------------------------------------------------------------------
# Device defaults
# --------------------------------------------------------------------------------------------
def bf16_support(device: str, flags: set[str], gemm_fp32: float | None, gemm_bf16: float | None) -> tuple[bool, str]:
    """Whether bf16 is natively fast on this device, and why (a sentence for the report)."""
    import torch

    if device == "cuda":
        ok = torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(0)[0] >= 8
        return ok, ("bf16 tensor cores (compute capability >= 8.0)" if ok else "this GPU has no native bf16 matmul")
    if "amx_bf16" in flags:
        return True, "the CPU has AMX-BF16"
    measured = ""
    if gemm_fp32 and gemm_bf16:
        measured = f"; measured bf16 GEMM {gemm_bf16 / 1e9:.0f} GFLOP/s vs fp32 {gemm_fp32 / 1e9:.0f} GFLOP/s"
        if gemm_bf16 > 1.2 * gemm_fp32:  # some other native path (e.g. a future ISA): trust the measurement
            return True, "bf16 GEMM measured faster than fp32" + measured
    if "avx512_bf16" in flags:
        return False, "the CPU has AVX512-BF16 (conversion/dot-product instructions) but no AMX, so bf16 matmul is not faster than fp32" + measured
    return False, "the CPU has neither AVX512-BF16 nor AMX: bf16 is emulated, many times slower than fp32" + measured


def gemm_dtype(precision: str) -> str:
    """The dense GEMM a precision's steps are compared with: fp32 steps with fp32 `torch.mm`, bf16
    (autocast) steps with bf16 `torch.mm`, the rate their matmuls run at."""
    return "float32" if precision == "fp32" else "bfloat16"


def gemm_size(device: str, dtype: str, size: int) -> int:
    """n of the n×n GEMM: bf16 on a CPU without native bf16 runs at a few GFLOP/s, so it gets at most 2048."""
    return min(size, 2048) if device == "cpu" and dtype == "bfloat16" else size


def default_steps(device: str, preset: str) -> int:
    """Timed steps per variant and round: a CPU step of ELECTRA-Small takes seconds, a GPU step milliseconds."""
    if device == "cuda":
        return 20
    return 2 if preset not in ("tiny", "mini") else 10


# --------------------------------------------------------------------------------------------
# Orchestration: one process per variant, interleaved timed rounds
# --------------------------------------------------------------------------------------------
def start_variants(args, preset: str, precision: str, variants: list[str], device: str):
    """Start one process per variant and wait for each to build and warm up before starting the
    next (the warm-ups never compete for the cores). Returns ({variant: (process, connection)},
    {variant: warm-up timings}, {variant: error of those that failed})."""
    context = mp.get_context("spawn")
    workers, info, failed = {}, {}, {}
    for variant in variants:
        spec = dict(variant=variant, preset=preset, precision=precision, device=device, attn=args.attn,
                    threads=args.threads, vocab_size=args.vocab_size, seq_len=args.seq_len,
                    batch_size=args.batch_size, num_batches=4, seed=args.seed, warmup=args.warmup)
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, spec), daemon=True)
        process.start()
        child.close()
        print(f"[{preset} {precision}] building and warming up {variant} ...", flush=True)
        try:
            ready = parent.recv()
        except EOFError:  # the process died without a word (killed, out of memory, a crash in C++)
            process.join(timeout=60)  # for its exit code
            ready = {"error": f"the {variant} process exited with code {process.exitcode} while building or warming up"}
        if "error" in ready:
            print(f"[{preset} {precision}] {variant} failed; going on without it:\n{ready['error']}", flush=True)
            failed[variant] = ready["error"]
            process.join(timeout=60)  # no-op if it already ended
            continue
        info[variant] = {"warmup_s": round(ready["warmup_s"], 2), "warmup_step_s": [round(t, 3) for t in ready["warmup_step_s"]]}
        workers[variant] = (process, parent)
    return workers, info, failed


def time_rounds(args, label: str, workers: dict, steps: int, dtype: str, gemm_log: dict, device: str):
    """`args.rounds` rounds of `steps` timed steps per variant, in a rotated order. Returns
    ({variant: step seconds}, {variant: per round, the median step and the GEMM rate around it})."""
    variants = list(workers)
    times = {v: [] for v in variants}
    # A GEMM sample right before and right after each variant's steps: shared, virtualised machines
    # switch between throughput states (e.g. a busy sibling hyper-thread), so the fraction of GEMM
    # throughput is computed per round against the GEMM the machine delivered at that moment.
    paired = {v: [] for v in variants}
    size = gemm_size(device, dtype, args.gemm_size)
    for round_index in range(args.rounds if variants else 0):
        order = variants[round_index % len(variants):] + variants[: round_index % len(variants)]
        for variant in order:
            before = measure_gemm(device, dtype, size, repeats=1)
            workers[variant][1].send(("run", (steps, args.round_warmup)))
            round_times = workers[variant][1].recv()
            after = measure_gemm(device, dtype, size, repeats=1)
            times[variant] += round_times
            gemm_log.setdefault(dtype, []).extend(before + after)
            paired[variant].append({"step_s_median": statistics.median(round_times),
                                    "gemm_flops": statistics.mean(before + after)})
        print(f"[{label}] round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{v} {statistics.median(times[v][-steps:]):.3f}s" for v in variants)
              + f"; {dtype} GEMM {statistics.median(gemm_log[dtype][-2 * len(variants):]) / 1e9:.0f} GFLOP/s", flush=True)
    return times, paired


def run_case(args, preset: str, precision: str, variants: list[str], gemm_log: dict, device: str) -> dict:
    """Every variant of one (preset, precision): built, warmed up, timed; the raw record of the case."""
    steps = args.steps if args.steps is not None else default_steps(device, preset)
    workers, info, failed = start_variants(args, preset, precision, variants, device)
    times, paired = time_rounds(args, f"{preset} {precision}", workers, steps, gemm_dtype(precision), gemm_log, device)
    for variant, (process, conn) in workers.items():
        conn.send(("stats", None))
        info[variant].update(conn.recv())
        conn.send(("stop", None))
        process.join(timeout=60)
        info[variant]["step_s"] = [round(t, 4) for t in times[variant]]
        info[variant]["rounds"] = paired[variant]
    return {"preset": preset, "precision": precision, "steps_per_round": steps, "variants": info, "failed": failed}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def summarise(case: dict, config, args, gemm_best: float, datasheet_peak: dict | None = None) -> list[dict]:
    """One result row per variant of a case: throughput, speed-up over naive, fraction of the GEMM
    rate, MFU where the datasheet peak is known, memory."""
    tokens = args.batch_size * args.seq_len
    rows = []
    naive_median = None
    for variant, data in case["variants"].items():
        step_times = data["step_s"]
        median, best = statistics.median(step_times), min(step_times)
        flops = useful_flops(config, args.batch_size, args.seq_len, data["masked_per_step"])
        row = {
            "preset": case["preset"], "precision": case["precision"], "variant": variant,
            "timed_steps": len(step_times),
            "step_s_median": median, "step_s_min": best, "step_s_max": max(step_times),
            "tokens_per_s_median": tokens / median, "tokens_per_s_best": tokens / best,
            "tokens_per_s_worst": tokens / max(step_times),
            "useful_gflop_per_step": flops["total"] / 1e9,
            "useful_flops_breakdown_gflop": {k: round(v / 1e9, 2) for k, v in flops.items()},
            "useful_gflops_median": flops["total"] / median / 1e9,
            "useful_gflops_best": flops["total"] / best / 1e9,
            # Like with like: each round's median step against the GEMM measured around it (median
            # over rounds), and the best step against the best GEMM sample of the run.
            "fraction_of_gemm_paired": statistics.median(
                flops["total"] / r["step_s_median"] / r["gemm_flops"] for r in data["rounds"]),
            "fraction_of_gemm_best": flops["total"] / best / gemm_best,
            "gemm_dtype": gemm_dtype(case["precision"]),
            "gemm_gflops_around_rounds": [round(r["gemm_flops"] / 1e9, 1) for r in data["rounds"]],
            "peak_rss_gb": data["peak_rss_bytes"] / 1e9,
            "warmup_s": data["warmup_s"],
            "final_loss": data["losses"][-1] if data["losses"] else None,
        }
        if "cuda_max_allocated_bytes" in data:
            row["cuda_max_allocated_gb"] = data["cuda_max_allocated_bytes"] / 1e9
        if datasheet_peak is not None:
            row["datasheet_peak_tflops"] = datasheet_peak[case["precision"]]
            row["mfu_datasheet"] = flops["total"] / median / (datasheet_peak[case["precision"]] * 1e12)
        row["sequences_per_s_median"] = args.batch_size / median
        if variant == "naive":
            naive_median = median
        rows.append(row)
    for row in rows:
        row["speedup_vs_naive"] = naive_median / row["step_s_median"] if naive_median else None
    return rows


def markdown_preamble(report: dict) -> list[str]:
    """The title and the paragraphs on the machine, the command and the GEMM reference."""
    m, gemm, sheet = report["machine"], report["gemm"], report.get("datasheet_peak")
    if m["device"] == "cuda":
        where = f"{m['gpu']} ({m['gpu_memory_gb']} GB, CUDA {m['cuda']}), host CPU {m['cpu_model']}"
    else:
        where = f"{m['cpu_model']}, {m['usable_cpus']} usable cores ({', '.join(m['cpu_simd'])}), {m['torch_threads']} torch threads"
    gpu_references = ""
    if gemm.get("bf16_samples_gflops") and m["device"] == "cuda":
        gpu_references += (f" Dense bf16 GEMM: best {max(gemm['bf16_samples_gflops']) / 1e3:.0f} TFLOP/s over "
                           f"{len(gemm['bf16_samples_gflops'])} samples (the denominator of bf16 rows' % of GEMM).")
    if sheet:
        gpu_references += (f" Datasheet peaks ({sheet['gpu']}, dense): fp32 {sheet['tflops']['fp32']} TFLOP/s, "
                           f"bf16 {sheet['tflops']['bf16']} TFLOP/s (the denominator of MFU).")
    bf16 = report["bf16"]
    return [
        "# ELECTRA pre-training step: naive transformers composition vs electra_hf",
        "",
        f"Machine: {where}; torch {m['torch']}, transformers {m['transformers']}, accelerate {m['accelerate']}, "
        f"Python {m['python']}. Load average at start {m['load_average_at_start']}, at end {report['load_average_at_end']}.",
        "",
        f"Command: `{report['command']}` (wall time {report['wall_time_s']:.0f} s). Batch {report['batch_size']}, "
        f"sequence {report['seq_len']} (packed, no padding), vocabulary {report['vocab_size']}, attention `{report['attn'] or 'as train_pretrain.py chooses'}`.",
        "",
        f"Dense fp32 GEMM (`torch.mm` {gemm['size']}²) measured in this run: best {gemm['fp32_best_gflops']:.0f} GFLOP/s, "
        f"median {gemm['fp32_median_gflops']:.0f} GFLOP/s, range {min(gemm['fp32_samples_gflops']):.0f}–"
        f"{max(gemm['fp32_samples_gflops']):.0f} over {len(gemm['fp32_samples_gflops'])} samples. "
        f"bf16: {bf16['reason']}" + ("." if bf16["native"] else " — not benchmarked as a win.")
        + (f" One bf16-autocast step of electra_hf: {bf16['probe_step_s']:.2f} s vs {bf16['probe_fp32_step_s']:.2f} s fp32."
           if bf16.get("probe_step_s") else "") + gpu_references,
    ]


def markdown_table(report: dict) -> list[str]:
    """One row per (preset, precision, variant)."""
    on_gpu = report["machine"]["device"] == "cuda"
    mfu = any("mfu_datasheet" in r for r in report["results"])
    step_unit, step_scale, step_digits = ("ms", 1e3, 1) if on_gpu else ("s", 1.0, 3)
    range_note = " (round means)" if on_gpu else ""  # GPU steps are timed per round, pipelined
    lines = [
        f"| preset | precision | variant | tokens/s (median) | tokens/s range{range_note} | step {step_unit} (median) | × naive | useful GFLOP/s (median) | % of GEMM: paired (best/best) |"
        + (" MFU (datasheet) |" if mfu else "") + " peak memory GB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if mfu else "") + "---:|",
    ]
    for r in report["results"]:
        memory = r.get("cuda_max_allocated_gb", r["peak_rss_gb"])
        speedup = "—" if r["speedup_vs_naive"] is None else format(r["speedup_vs_naive"], ".2f")
        lines.append(
            f"| {r['preset']} | {r['precision']} | {r['variant']} | {r['tokens_per_s_median']:,.0f} | "
            f"{r['tokens_per_s_worst']:,.0f}–{r['tokens_per_s_best']:,.0f} | {r['step_s_median'] * step_scale:.{step_digits}f} | "
            f"{speedup} | {r['useful_gflops_median']:.1f} | "
            f"{100 * r['fraction_of_gemm_paired']:.1f}% ({100 * r['fraction_of_gemm_best']:.1f}%) |"
            + (f" {100 * r['mfu_datasheet']:.1f}% |" if mfu else "") + f" {memory:.2f} |"
        )
    return lines


def markdown_notes(report: dict) -> list[str]:
    """The note, the variants that failed, and how the columns are computed."""
    lines = []
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    for case in report["raw"]:
        for variant, error in case.get("failed", {}).items():
            lines += ["", f"{case['preset']} {case['precision']} {variant} failed to build or warm up: "
                      f"`{error.strip().splitlines()[-1][:300]}` (the whole traceback is in the JSON)."]
    timed_steps = report["results"][0]["timed_steps"] if report["results"] else 0
    lines += [
        "",
        "Useful FLOPs per step are the same for every variant (the naive one computes vocabulary logits at every "
        "position, which is not counted): 6·(dense matmul weights)·tokens for both encoders and the discriminator "
        "head, the attention matmuls, and the generator head only at the masked positions. % of GEMM (paired) = "
        "useful FLOP/s of each round's median step / the GEMM FLOP/s measured just before and after those steps, "
        "median over rounds (a shared virtual machine switches between throughput states, see the GEMM samples); "
        "in parentheses: the best step against the best GEMM sample of the run. "
        "Peak memory: " + ("`torch.cuda.max_memory_allocated`." if report["machine"]["device"] == "cuda" else
                           "RSS high-water mark of the variant's own process (model, optimizer state, activations, Python, libraries).")
        + f" Timed steps per variant: {timed_steps}, in {report['rounds']} interleaved rounds after {report['warmup']} warm-up steps"
        + (f"; each round starts with {report['round_warmup']} untimed step(s) per variant (back to a steady state "
           "after the other variants ran)." if report.get("round_warmup") else "."),
    ]
    return lines


def markdown(report: dict) -> str:
    lines = markdown_preamble(report) + [""] + markdown_table(report) + nvidia_comparison(report) + markdown_notes(report)
    return "\n".join(lines) + "\n"


def nvidia_comparison(report: dict) -> list[str]:
    """Lines comparing electra_hf's ELECTRA-Base bf16 sequences/s with NVIDIA's published A100 figure."""
    # Only the variants whose training is verified on a GPU: the whole-model compile's rows may time
    # a step whose generator backward did not run (benchmarks/results/gpu_summary.md).
    rows = [r for r in report["results"] if r["preset"] == "base" and r["precision"] == "bf16"
            and r["variant"] in ("electra_hf", "compile")]
    if report["machine"]["device"] != "cuda" or not rows:
        return []
    best = max(rows, key=lambda r: r["sequences_per_s_median"])
    ratio = best["sequences_per_s_median"] / NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S
    text = (f"ELECTRA-Base, bf16, batch {report['batch_size']}: electra_hf ({best['variant']}) trains "
            f"{best['sequences_per_s_median']:,.0f} sequences/s on this {report['machine']['gpu']}; NVIDIA publishes "
            f"{NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S:.0f} sequences/s on one A100 (AMP, sequence 128): {ratio:.2f}×")
    sheet = report.get("datasheet_peak")
    if sheet:
        a100 = datasheet_peak("A100")[0]["bf16"]
        per_peak = ratio * a100 / sheet["tflops"]["bf16"]
        text += (f", or {per_peak:.2f}× per datasheet bf16 FLOP/s ({sheet['gpu']} {sheet['tflops']['bf16']:.0f} vs "
                 f"A100 {a100:.0f} TFLOP/s)")
    return ["", text + "."]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_pretrain_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "tiny"], help="electra_hf presets (small = ELECTRA-Small).")
    parser.add_argument("--variants", nargs="+", default=["naive", "electra_hf"], choices=VARIANTS)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"],
                        help="fp32 and/or bf16 (default: fp32, plus bf16 where the device supports it natively).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--attn", default=None, choices=["sdpa", "eager", "electra_hf_cpu"],
                        help="Attention of the electra_hf variants (default: train_pretrain.py's, electra_hf_cpu on a "
                             "CPU and sdpa elsewhere); naive and electra_hf_sdpa use sdpa.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per variant (compile happens here).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant per round (default on a CPU 2 for Small, 10 for tiny; 20 on a GPU).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    parser.add_argument("--round_warmup", type=int, default=1,
                        help="Untimed steps per variant at the start of each round, before its timed steps.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores).")
    parser.add_argument("--gemm_size", type=int, default=None, help="n of the n×n GEMM (default 4096 CPU, 8192 GPU).")
    parser.add_argument("--bf16_probe", action="store_true",
                        help="Where bf16 is not native, time one bf16-autocast electra_hf step to show the slowdown.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="pretrain_step", help="Output file stem.")
    parser.add_argument("--records_dir", default=None,
                        help="Also write <records_dir>/<name>.json: one flat record per (preset, precision, variant).")
    return parser.parse_args(argv)


def records(report: dict) -> list[dict]:
    """The report's results as flat records (device, model, shape, variant, tokens/s, MFU, date)."""
    machine = report["machine"]
    device = machine.get("gpu") or machine.get("cpu_model")
    date = time.strftime("%Y-%m-%d")
    return [{"device": device, "preset": row["preset"], "precision": row["precision"],
             "batch_size": report["batch_size"], "seq_len": report["seq_len"], "variant": row["variant"],
             "tokens_per_second": row["tokens_per_s_median"], "mfu": row.get("mfu_datasheet"),
             "step_s": row["step_s_median"], "speedup_vs_naive": row["speedup_vs_naive"],
             "fraction_of_gemm": row["fraction_of_gemm_paired"], "date": date, "command": report["command"]}
            for row in report["results"]]


def probe_bf16(args, cases: list[dict], device: str) -> dict:
    """One bf16-autocast electra_hf step of the last preset, next to its fp32 median step."""
    probe_args = argparse.Namespace(**{**vars(args), "rounds": 1, "steps": 1, "warmup": 1, "round_warmup": 1})
    preset = args.presets[-1]
    fp32_case = next(c for c in cases if c["preset"] == preset and c["precision"] == "fp32")
    probe = run_case(probe_args, preset, "bf16", ["electra_hf"], {}, device)
    return dict(probe_preset=preset, probe_step_s=probe["variants"]["electra_hf"]["step_s"][0],
                probe_fp32_step_s=statistics.median(fp32_case["variants"]["electra_hf"]["step_s"]))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args.threads = args.threads or usable_cpus()
    torch.set_num_threads(args.threads)
    args.gemm_size = args.gemm_size or (8192 if device == "cuda" else 4096)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # dense fp32 means fp32
    machine = {**describe_machine("transformers", "accelerate"), **describe_torch(), "device": device}
    _, flags = cpu_model_and_flags()

    gemm_log = {"float32": measure_gemm(device, "float32", args.gemm_size),
                "bfloat16": measure_gemm(device, "bfloat16", gemm_size(device, "bfloat16", args.gemm_size), repeats=2)}
    native_bf16, reason = bf16_support(device, flags, max(gemm_log["float32"]), max(gemm_log["bfloat16"]))
    precisions = args.precisions or (["fp32", "bf16"] if native_bf16 else ["fp32"])
    bf16 = {"native": native_bf16, "reason": reason, "gemm_bf16_best_gflops": max(gemm_log["bfloat16"]) / 1e9}
    print(f"machine: {machine}\nbf16: {reason}", flush=True)

    peaks, peaks_label = datasheet_peak(machine.get("gpu")) if device == "cuda" else (None, None)
    cases = [run_case(args, preset, precision, list(args.variants), gemm_log, device)
             for preset in args.presets for precision in precisions]
    results = []
    for case in cases:
        results += summarise(case, build_config(case["preset"], args.vocab_size, args.seq_len), args,
                             max(gemm_log[gemm_dtype(case["precision"])]), peaks)
    if args.bf16_probe and not native_bf16:
        bf16.update(probe_bf16(args, cases, device))

    report = {
        "command": command_line("benchmarks.bench_pretrain_step", argv),
        "machine": machine,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab_size": args.vocab_size, "attn": args.attn,
        "warmup": args.warmup, "rounds": args.rounds, "round_warmup": args.round_warmup,
        "gemm": {"size": args.gemm_size, "fp32_samples_gflops": [round(v / 1e9, 1) for v in gemm_log["float32"]],
                 "fp32_best_gflops": max(gemm_log["float32"]) / 1e9,
                 "fp32_median_gflops": statistics.median(gemm_log["float32"]) / 1e9,
                 "bf16_samples_gflops": [round(v / 1e9, 1) for v in gemm_log["bfloat16"]]},
        "datasheet_peak": {"gpu": peaks_label, "tflops": peaks} if peaks else None,
        "bf16": bf16,
        "results": results,
        "raw": cases,
    }
    finish_report(report, markdown, args.out_dir, args.name, started)
    if args.records_dir:
        Path(args.records_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.records_dir) / f"{args.name}.json").write_text(json.dumps(records(report), indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
