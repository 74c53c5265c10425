"""Does the fast path train? train_pretrain.py twice from one initialisation on real text, eager and
fast, compared window by window; and one step's gradients, compiled against eager.

    python -m benchmarks.train_check --train_file corpus.txt.gz                 # on a GPU: Small, bf16, batch 128
    python -m benchmarks.train_check --train_file corpus.txt.gz --rehearse      # a CPU: tiny, a few minutes

The two runs share the data, the tokenizer, the masks and the initial weights (the same seed);
dropout and the generator's samples come from other random streams (compiled graphs draw their own
numbers), so the curves agree within a tolerance, not bit for bit. Passed when:
- every logging window's generator and discriminator losses of the fast run lie within
  `--tolerance` (relative, with an absolute floor) of the eager run's;
- both losses fall in both runs (last window below the first by `--min_drop`);
- on one batch with dropout off and eager random numbers, the compiled step's gradients equal the
  eager step's (relative difference ≤ 1e-3) and no parameter is left without a gradient.
It also reports the loop's throughput (`train/tokens_per_second`, steady state) next to each run.

Writes `<out_dir>/train_check.json` ({"device", "steps", "passed", ...}) and `train_check.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", required=True, help="Real text (plain or .gz; blank lines separate paragraphs).")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--logging_steps", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.05, help="Relative difference allowed per window.")
    parser.add_argument("--min_drop", type=float, default=0.1, help="Relative fall of each loss, first to last window.")
    parser.add_argument("--rehearse", action="store_true", help="CPU sizes: tiny preset, batch 16 × 64, vocabulary 2,000.")
    parser.add_argument("--fast_flags", default="", help="Flags that select the fast path (default: none, the script's "
                        "own default; a CPU rehearsal passes '--torch_compile true --torch_compile_scope model').")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR / "gpu"))
    parser.add_argument("--work_dir", default=None, help="Runs and the data cache (default: <out_dir>/train_check_runs).")
    return parser.parse_args(argv)


def run_shape(args) -> dict:
    """The model and batch of both runs: ELECTRA-Small at the paper's batch, or tiny on a CPU."""
    if args.rehearse:
        return {"preset": "tiny", "vocab_size": 2000, "seq_len": 64, "batch_size": 16, "precision": "fp32"}
    return {"preset": "small", "vocab_size": 30522, "seq_len": 128, "batch_size": 128, "precision": "bf16"}


def run_arguments(args, output_dir: Path, cache_dir: Path) -> list[str]:
    shape = run_shape(args)
    size = ["--preset", shape["preset"], "--vocab_size", str(shape["vocab_size"]), "--max_seq_length",
            str(shape["seq_len"]), "--per_device_train_batch_size", str(shape["batch_size"]),
            "--mixed_precision", "bf16" if shape["precision"] == "bf16" else "no"]
    if not args.rehearse:
        size += ["--dataloader_num_workers", "4"]
    return [*size, "--train_files", args.train_file, "--blanks_separate_docs", "false", "--seed", "0",
            "--max_train_steps", str(args.steps), "--num_warmup_steps", str(max(1, args.steps // 10)),
            "--learning_rate", "1e-3" if args.rehearse else "5e-4", "--logging_steps", str(args.logging_steps),
            "--eval_steps", "0", "--checkpointing_steps", "0",
            "--validation_split_percentage", "0", "--cache_dir", str(cache_dir), "--output_dir", str(output_dir),
            "--overwrite_output_dir"]


def train(args, name: str, extra: list[str], work: Path) -> dict:
    """One train_pretrain.py run in its own process; its training rows and wall time."""
    output_dir = work / name
    command = [sys.executable, str(REPO / "train_pretrain.py"), *run_arguments(args, output_dir, work / "cache"), *extra]
    print(f"== {name}: {shlex.join(command)}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in rows if "train/loss" in row]
    steady = [row["train/tokens_per_second"] for row in train_rows[len(train_rows) // 2:]]
    return {"rows": train_rows, "wall_s": time.perf_counter() - started, "command": shlex.join(command),
            "tokens_per_second_steady": statistics.median(steady) if steady else None}


def compare_windows(eager: list[dict], fast: list[dict], tolerance: float, min_drop: float) -> dict:
    """Per logging window and loss: the two runs' values and whether they agree; whether each falls."""
    windows, agree = [], True
    for e, f in zip(eager, fast):
        window = {"step": e["step"]}
        for loss in ("train/generator_loss", "train/discriminator_loss"):
            allowed = max(tolerance * abs(e[loss]), 0.01)
            ok = abs(f[loss] - e[loss]) <= allowed
            agree &= ok
            window[loss] = {"eager": e[loss], "fast": f[loss], "allowed": allowed, "ok": ok}
        windows.append(window)
    falls = {f"{run}/{loss}": rows[-1][loss] < (1 - min_drop) * rows[0][loss]
             for run, rows in (("eager", eager), ("fast", fast))
             for loss in ("train/generator_loss", "train/discriminator_loss")}
    return {"windows": windows, "agree": agree and len(eager) == len(fast) > 0, "falls": falls}


def gradient_check(args) -> dict:
    """One batch, dropout off, eager random numbers: the fast path's gradients against eager's."""
    import torch

    from benchmarks.pretrain_variants import build_config, make_batches
    from electra_hf.modeling import ElectraForRTDPretraining
    from electra_hf.performance import compare_compiled_gradients, training_compilation

    device = "cuda" if torch.cuda.is_available() else "cpu"
    preset, batch_size, seq_len = ("tiny", 8, 64) if args.rehearse else ("small", 32, 128)
    config = build_config(preset, 2000 if args.rehearse else 30522, seq_len).with_overrides(
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    compilation = training_compilation(None, torch.device(device)) or {"scope": "model"}
    batch = {k: v.to(device) for k, v in make_batches(config, batch_size, seq_len, 1, seed=0)[0].items()}

    def build():
        torch.manual_seed(0)
        return ElectraForRTDPretraining(config).to(device).train()

    report = compare_compiled_gradients(build, batch, compilation)
    passed = all(r["largest_relative_difference"] <= 1e-3 and not r["parameters_without_gradient"] for r in report.values())
    return {"compilation": compilation, "losses": report, "passed": passed}


def plot(eager: list[dict], fast: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for axis, loss in zip(axes, ("train/generator_loss", "train/discriminator_loss")):
        for name, rows in (("eager", eager), ("fast path", fast)):
            axis.plot([row["step"] for row in rows], [row[loss] for row in rows], marker=".", label=name)
        axis.set_xlabel("optimizer step")
        axis.set_title(loss.split("/")[1].replace("_", " "))
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    out_dir = Path(args.out_dir)
    work = Path(args.work_dir or out_dir / "train_check_runs")
    eager = train(args, "eager", ["--torch_compile", "false"], work)
    fast = train(args, "fast", shlex.split(args.fast_flags), work)
    comparison = compare_windows(eager["rows"], fast["rows"], args.tolerance, args.min_drop)
    gradients = gradient_check(args)
    passed = comparison["agree"] and all(comparison["falls"].values()) and gradients["passed"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    report = {"device": device, "steps": args.steps, "passed": passed, "date": time.strftime("%Y-%m-%d"), **run_shape(args),
              "tolerance": {"relative": args.tolerance, "absolute_floor": 0.01, "min_drop": args.min_drop},
              "losses_agree": comparison["agree"], "losses_fall": comparison["falls"], "gradients": gradients,
              "windows": comparison["windows"],
              "runs": {name: {k: v for k, v in run.items() if k != "rows"} for name, run in (("eager", eager), ("fast", fast))}}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train_check.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(eager["rows"], fast["rows"], out_dir / "train_check.png")
    print(json.dumps({k: report[k] for k in ("device", "steps", "passed", "losses_agree", "losses_fall")}, indent=2))
    return report


if __name__ == "__main__":
    main()
