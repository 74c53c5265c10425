#!/usr/bin/env python
"""CPU dropout masks, side by side (issue 6): the compiled kernel, the numpy path, torch's own.

For every mask shape of an ELECTRA-Small pre-training step (batch 32 × 128: the hidden states and
attention probabilities of both networks), one run times, interleaved:
  compiled  -- `electra_hf.modeling.dropout_scale_mask` with the numba kernel (the default);
  numpy     -- the same function's numpy path (the same masks, bit for bit);
  torch     -- `torch.empty(shape).bernoulli_(1 - p)`, what torch's CPU dropout draws its mask with.
It prints the median milliseconds per mask and the total per step (each shape × the number of
dropout sites of that shape in one step), and writes benchmarks/results/dropout_mask.{json,md}.

    python benchmarks/bench_dropout_mask.py
    python benchmarks/bench_dropout_mask.py --repeats 5 --name smoke --out_dir /tmp/x
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pretrain_step import RESULTS_DIR, describe_machine, write_report  # noqa: E402

# (name, shape, dropout sites of that shape per ELECTRA-Small step)
SMALL_STEP_MASKS = (
    ("discriminator attention probabilities", (32, 4, 128, 128), 12),
    ("discriminator hidden states", (32, 128, 256), 24),  # attention output and FFN output per layer
    ("generator attention probabilities", (32, 1, 128, 128), 12),
    ("generator hidden states", (32, 128, 64), 24),
    ("embeddings (both networks, size 128)", (32, 128, 128), 2),
)


def time_masks(shape, p: float, repeats: int) -> dict[str, float]:
    import torch

    from electra_hf import modeling

    kernel = modeling.dropout_kernel()
    variants = {
        "compiled": lambda: modeling.dropout_scale_mask(torch.Size(shape), p),
        "numpy": lambda: modeling.dropout_scale_mask(torch.Size(shape), p),
        "torch": lambda: torch.empty(shape).bernoulli_(1 - p),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(repeats + 1):  # the first round warms up (and compiles the kernel)
        for name, make in variants.items():
            modeling.sfc64_dropout_bytes = None if name == "numpy" else kernel
            start = time.perf_counter()
            make()
            if index:
                times[name].append(time.perf_counter() - start)
    modeling.sfc64_dropout_bytes = kernel
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--p", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="dropout_mask")
    args = parser.parse_args(argv)

    import torch

    from electra_hf import modeling

    if modeling.dropout_kernel() is None:
        raise SystemExit("numba is not installed: there is no compiled kernel to compare (pip install numba)")
    modeling.configure_cpu_training()
    started = time.time()
    machine = describe_machine("cpu", torch.get_num_threads())
    rows = []
    for name, shape, sites in SMALL_STEP_MASKS:
        ms = time_masks(shape, args.p, args.repeats)
        rows.append({"mask": name, "shape": list(shape), "sites_per_step": sites, "ms": ms})
    totals = {variant: sum(row["ms"][variant] * row["sites_per_step"] for row in rows) for variant in ("compiled", "numpy", "torch")}
    report = {
        "command": " ".join(["python benchmarks/bench_dropout_mask.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine, "p": args.p, "repeats": args.repeats, "rows": rows,
        "ms_per_step": totals, "wall_time_s": round(time.time() - started, 1),
    }
    lines = [
        "# CPU dropout masks of one ELECTRA-Small step (batch 32 × 128)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable cores, torch {machine['torch']}. "
        f"Command: `{report['command']}` (wall time {report['wall_time_s']:.0f} s); p = {args.p}, median of "
        f"{args.repeats} interleaved draws per shape.",
        "",
        "`compiled` and `numpy` are `electra_hf.modeling.dropout_scale_mask` with and without the numba kernel "
        "(the same masks, bit for bit); `torch` is `bernoulli_`, which torch's CPU dropout uses.",
        "",
        "| mask | shape | sites per step | compiled ms | numpy ms | torch ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ms = row["ms"]
        lines.append(f"| {row['mask']} | {tuple(row['shape'])} | {row['sites_per_step']} | {ms['compiled']:.2f} | "
                     f"{ms['numpy']:.2f} | {ms['torch']:.2f} |")
    lines.append(f"| **per step** | | {sum(row['sites_per_step'] for row in rows)} | **{totals['compiled']:.0f}** | **{totals['numpy']:.0f}** | **{totals['torch']:.0f}** |")
    write_report(report, "\n".join(lines) + "\n", args.out_dir, args.name)
    return report


if __name__ == "__main__":
    main()
