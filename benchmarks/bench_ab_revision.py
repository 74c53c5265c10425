#!/usr/bin/env python
"""The library's pre-training step now vs at a git revision, alternating steps in one process.

A change that saves 3% cannot be seen by comparing two runs on a shared machine whose speed moves
by ±10% from minute to minute. This script builds electra_hf's step (as `bench_pretrain_step.py`'s
`electra_hf` variant: model, backward, clipping, ElectraAdamW, schedule, the loop's metric
bookkeeping) twice in one process: from the working tree, and from the package as it was at
`--baseline` (extracted with `git archive` into a temporary directory and imported under another
name). The two steps then alternate (ABBA order) on the same batches, so that both see the same
machine. It reports each one's median and best step and the median of the per-pair ratios, and
writes benchmarks/results/ab_revision.{json,md}.

    python benchmarks/bench_ab_revision.py --baseline 95f2103             # ELECTRA-Small, 12 pairs
    python benchmarks/bench_ab_revision.py --baseline HEAD --preset tiny --pairs 4
    python benchmarks/bench_ab_revision.py --baseline HEAD --compile      # torch.compile vs eager
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pretrain_step import (  # noqa: E402
    RESULTS_DIR,
    build_config,
    describe_machine,
    library_step,
    make_batches,
    write_report,
)

REPO = Path(__file__).resolve().parents[1]


def import_revision(revision: str, into: Path):
    """The `electra_hf` package at `revision`, imported as `electra_hf_baseline`; its commit id."""
    commit = subprocess.run(["git", "rev-parse", revision], cwd=REPO, check=True, capture_output=True, text=True).stdout.strip()
    archive = into / "package.tar"
    subprocess.run(["git", "archive", "--output", str(archive), commit, "electra_hf"], cwd=REPO, check=True)
    with tarfile.open(archive) as handle:
        handle.extractall(into, filter="data")
    (into / "electra_hf").rename(into / "electra_hf_baseline")
    sys.path.insert(0, str(into))
    baseline = importlib.import_module("electra_hf_baseline")
    # Importing it registered its classes with the Auto* factories under the same model types:
    # give those back to the working tree's package.
    from transformers import AutoConfig, AutoModel

    from electra_hf.configuration import ElectraPretrainingConfig
    from electra_hf.modeling import ElectraForRTDPretraining

    AutoConfig.register(ElectraPretrainingConfig.model_type, ElectraPretrainingConfig, exist_ok=True)
    AutoModel.register(ElectraPretrainingConfig, ElectraForRTDPretraining, exist_ok=True)
    return baseline, commit


def build_step(package, config_dict: dict, attn: str, compile_model: bool = False):
    """electra_hf's step (`library_step`: bench_pretrain_step's `electra_hf` variant without Accelerate),
    built from the modules of `package`; with `compile_model`, through its `compile_for_training`."""
    import torch

    modeling = importlib.import_module(f"{package}.modeling")
    optimization = importlib.import_module(f"{package}.optimization")
    configuration = importlib.import_module(f"{package}.configuration")
    config = configuration.ElectraPretrainingConfig(**config_dict)
    torch.manual_seed(0)
    model = modeling.ElectraForRTDPretraining(config)
    model.set_attn_implementation(attn)
    optimizer = optimization.ElectraAdamW(optimization.parameter_groups(model, 0.01), lr=2e-4, betas=(0.9, 0.999), eps=1e-6)
    scheduler = optimization.build_scheduler("electra", optimizer, 10, 1000)
    if compile_model:
        home = "performance" if importlib.util.find_spec(f"{package}.performance") else "modeling"
        model = importlib.import_module(f"{package}.{home}").compile_for_training(model)
    model.train()
    return library_step(model, optimizer, scheduler)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="HEAD", help="Git revision to compare the working tree with.")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--pairs", type=int, default=12, help="Timed pairs (ABBA order), after 2 warm-up steps each.")
    parser.add_argument("--compile", action="store_true",
                        help="Compile the working tree's step (compile_for_training); the baseline stays eager. "
                             "With --baseline HEAD: torch.compile against eager, same code.")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="ab_revision")
    args = parser.parse_args(argv)

    import torch

    from electra_hf.performance import configure_cpu_training

    configure_cpu_training()
    started = time.time()
    machine = describe_machine("cpu", torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        _, commit = import_revision(args.baseline, Path(tmp))
        config = build_config(args.preset, args.vocab_size, args.seq_len)
        config_dict = {key: value for key, value in config.to_dict().items()
                       if key not in ("transformers_version", "model_type", "architectures", "auto_map")}
        steps = {"working tree" + (" (compiled)" if args.compile else ""): build_step("electra_hf", config_dict, args.attn, args.compile),
                 f"baseline {commit[:7]}": build_step("electra_hf_baseline", config_dict, args.attn)}
        batches = make_batches(config, args.batch_size, args.seq_len, 4, seed=0)
        for step in steps.values():
            for batch in batches[:2]:
                step(batch)
        names = list(steps)
        times: dict[str, list[float]] = {name: [] for name in names}
        for index in range(args.pairs):
            for name in names if index % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                steps[name](batches[index % len(batches)])
                times[name].append(time.perf_counter() - start)
    ratios = [new / old for new, old in zip(times[names[0]], times[names[1]])]
    report = {
        "command": " ".join(["python benchmarks/bench_ab_revision.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine, "baseline_commit": commit, "preset": args.preset, "batch_size": args.batch_size,
        "seq_len": args.seq_len, "pairs": args.pairs, "compiled_working_tree": args.compile, "step_s": times,
        "median_ratio_working_tree_to_baseline": statistics.median(ratios), "wall_time_s": round(time.time() - started, 1),
    }
    lines = [
        f"# electra_hf's pre-training step: {names[0]} vs {commit[:7]} ({args.preset}, batch {args.batch_size} × {args.seq_len}, fp32)",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable cores, torch {machine['torch']}. "
        f"Command: `{report['command']}` (wall time {report['wall_time_s']:.0f} s). {args.pairs} pairs of steps, "
        "alternating in one process (ABBA), after 2 warm-up steps each.",
        "",
        "| code | step s (median) | step s (best) |",
        "|---|---:|---:|",
    ]
    for name in names:
        lines.append(f"| {name} | {statistics.median(times[name]):.3f} | {min(times[name]):.3f} |")
    lines += ["", f"Median of the per-pair ratios ({names[0]} / baseline): **{statistics.median(ratios):.3f}**."]
    write_report(report, "\n".join(lines) + "\n", args.out_dir, args.name)
    return report


if __name__ == "__main__":
    main()
