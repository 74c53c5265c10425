#!/usr/bin/env python
"""Process-level CPU settings for the pre-training step: do they help on this machine? (issue 6)

CPU tuning guides (PyTorch's performance guide, Intel's extension) recommend settings that can only
be chosen before the process starts, such as a different malloc (jemalloc or tcmalloc through
`LD_PRELOAD`) and OpenMP's wait policy (how long idle worker threads spin before they sleep).
Whether they help depends on the machine, so this script measures them instead of assuming it.
Every variant runs electra_hf's step (as `bench_pretrain_step.py`'s `electra_hf` variant and
`train_pretrain.py` run it) in a fresh process with its environment. The variants alternate in
rounds, with the order rotated each round, so all of them see the same drift of a shared machine.
Each variant is reported against `default` run in the same round:

- `default`: the environment as given, with `configure_cpu_training()` (glibc keeps freed memory),
  as train_pretrain.py runs;
- `glibc_returns_memory`: without `configure_cpu_training`'s allocator setting (glibc's defaults);
- `omp_spin`: `GOMP_SPINCOUNT=10000000` (GNU OpenMP: idle workers spin ~0.2 s instead of ~5 ms);
- `omp_passive`: `OMP_WAIT_POLICY=PASSIVE` (idle workers sleep at once);
- `omp_bind`: `OMP_PROC_BIND=close OMP_PLACES=cores` (each OpenMP thread pinned to one core, so the
  kernel never migrates a GEMM's thread and its cache);
- `jemalloc`, `jemalloc_no_decay`, `tcmalloc`: the allocator preloaded, where the library is
  installed (`ctypes.util.find_library`), or given with `--preload NAME=PATH`.
  `jemalloc_no_decay` sets `MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1`, so that freed pages
  are kept, like `configure_cpu_training` does for glibc.

    python benchmarks/bench_cpu_settings.py                          # ELECTRA-Small, 4 rounds
    python benchmarks/bench_cpu_settings.py --variants default omp_spin --rounds 6
    python benchmarks/bench_cpu_settings.py --preload jemalloc=/opt/lib/libjemalloc.so.2

Writes benchmarks/results/cpu_settings.{json,md} (--out_dir, --name to change).
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pretrain_step import (  # noqa: E402  (a sibling script, not a package)
    RESULTS_DIR,
    build_config,
    build_electra_hf,
    describe_machine,
    make_batches,
    write_report,
)

_RESULT_PREFIX = "CPU_SETTINGS_RESULT "
_JEMALLOC_NO_DECAY = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def candidate_variants(preloads: dict[str, str]) -> tuple[dict[str, dict], dict[str, str]]:
    """{variant: {"env": overrides, "keep_freed_memory": bool}} and {variant: why it was skipped}."""
    variants = {
        "default": {"env": {}, "keep_freed_memory": True},
        "glibc_returns_memory": {"env": {}, "keep_freed_memory": False},
        "omp_spin": {"env": {"GOMP_SPINCOUNT": "10000000"}, "keep_freed_memory": True},
        "omp_passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "keep_freed_memory": True},
        "omp_bind": {"env": {"OMP_PROC_BIND": "close", "OMP_PLACES": "cores"}, "keep_freed_memory": True},
    }
    skipped = {}
    libraries = {"jemalloc": preloads.get("jemalloc") or ctypes.util.find_library("jemalloc"),
                 "tcmalloc": preloads.get("tcmalloc") or ctypes.util.find_library("tcmalloc_minimal")
                 or ctypes.util.find_library("tcmalloc")}
    for name, path in preloads.items():
        libraries.setdefault(name, path)
    for name, path in libraries.items():
        if not path:
            skipped[name] = "library not found (install it, or pass --preload NAME=PATH)"
            continue
        preload = {"LD_PRELOAD": path}
        variants[name] = {"env": preload, "keep_freed_memory": True}
        if name == "jemalloc":
            variants["jemalloc_no_decay"] = {"env": {**preload, "MALLOC_CONF": _JEMALLOC_NO_DECAY}, "keep_freed_memory": True}
    return variants, skipped


def child(args) -> None:
    """One variant in this process: build the step, warm up, time `--steps` steps, print the times."""
    import torch

    from electra_hf.performance import configure_cpu_training

    if args.keep_freed_memory:
        configure_cpu_training()
    config = build_config(args.preset, args.vocab_size, args.seq_len)
    batches = make_batches(config, args.batch_size, args.seq_len, 4, seed=0)
    torch.manual_seed(0)
    step = build_electra_hf(config, "cpu", "fp32", "sdpa", lr=5e-4, total_steps=1_000_000, warmup=10_000,
                            compile_model=False)
    for batch in batches[:2]:
        step(batch)
    times = []
    for index in range(args.steps):
        start = time.perf_counter()
        step(batches[index % len(batches)])
        times.append(time.perf_counter() - start)
    print(_RESULT_PREFIX + json.dumps({"step_s": times, "torch_threads": torch.get_num_threads()}), flush=True)


def run_variant(args, spec: dict) -> list[float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", "--preset", args.preset,
               "--vocab_size", str(args.vocab_size), "--batch_size", str(args.batch_size),
               "--seq_len", str(args.seq_len), "--steps", str(args.steps)]
    if spec["keep_freed_memory"]:
        command.append("--keep_freed_memory")
    proc = subprocess.run(command, env={**os.environ, **spec["env"]}, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant with environment {spec['env']} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(_RESULT_PREFIX):])["step_s"]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per variant and round (after 2 warm-up steps).")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variants", nargs="*", default=None, help="Subset of the variants (default: all available).")
    parser.add_argument("--preload", nargs="*", default=[], metavar="NAME=PATH",
                        help="Extra LD_PRELOAD variants, e.g. jemalloc=/opt/lib/libjemalloc.so.2.")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="cpu_settings")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep_freed_memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for item in args.preload:
        if "=" not in item:
            parser.error(f"--preload takes NAME=PATH, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    import torch

    started = time.time()
    machine = describe_machine("cpu", torch.get_num_threads())
    variants, skipped = candidate_variants(dict(item.split("=", 1) for item in args.preload))
    if args.variants:
        unknown = [name for name in args.variants if name not in variants and name not in skipped]
        if unknown:
            raise SystemExit(f"unknown variants {unknown}; available: {sorted(variants)}")
        skipped = {name: why for name, why in skipped.items() if name in args.variants}
        variants = {name: spec for name, spec in variants.items() if name in args.variants or name == "default"}
    names = list(variants)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            print(f"round {round_index + 1}/{args.rounds}: {name} ...", flush=True)
            times[name].append(run_variant(args, variants[name]))
    rows = []
    for name in names:
        round_medians = [statistics.median(steps) for steps in times[name]]
        ratios = [mine / base for mine, base in zip(round_medians, (statistics.median(s) for s in times["default"]))]
        rows.append({"variant": name, "environment": variants[name]["env"],
                     "configure_cpu_training": variants[name]["keep_freed_memory"],
                     "step_s_median": statistics.median(s for steps in times[name] for s in steps),
                     "step_s_best": min(s for steps in times[name] for s in steps),
                     "ratio_to_default_per_round": ratios, "ratio_to_default_median": statistics.median(ratios)})
    report = {
        "command": " ".join(["python benchmarks/bench_cpu_settings.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len, "steps_per_round": args.steps,
        "rounds": args.rounds, "step_s": times, "rows": rows, "skipped": skipped,
        "wall_time_s": round(time.time() - started, 1),
    }
    write_report(report, markdown(report), args.out_dir, args.name)
    return report


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        f"# Process-level CPU settings for electra_hf's pre-training step ({report['preset']}, batch "
        f"{report['batch_size']} × {report['seq_len']}, fp32)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable cores, torch {machine['torch']}. "
        f"Command: `{report['command']}` (wall time {report['wall_time_s']:.0f} s). Each variant ran in its own "
        f"process, {report['steps_per_round']} timed steps after 2 warm-up steps, in {report['rounds']} rounds "
        "(order rotated each round). Ratio: the variant's median step over `default`'s in the same round; "
        "below 1 is faster.",
        "",
        "| variant | environment | step s (median) | step s (best) | ratio to default (median of rounds) | per round |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        environment = " ".join(f"`{key}={value}`" for key, value in row["environment"].items()) or "as given"
        if not row["configure_cpu_training"]:
            environment += " (no `configure_cpu_training`)"
        per_round = ", ".join(f"{ratio:.2f}" for ratio in row["ratio_to_default_per_round"])
        lines.append(f"| {row['variant']} | {environment} | {row['step_s_median']:.3f} | {row['step_s_best']:.3f} | "
                     f"{row['ratio_to_default_median']:.3f} | {per_round} |")
    for name, why in report["skipped"].items():
        lines.append(f"| {name} | not run: {why} | | | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
