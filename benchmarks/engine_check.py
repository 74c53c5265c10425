"""train_pretrain.py under FSDP and under DeepSpeed ZeRO-2, one process each: a few steps with a
checkpoint, a resume that continues them, and an export that plain transformers loads.

    python -m benchmarks.engine_check --train_file corpus.txt.gz --out benchmarks/results/gpu/engines.json
    python -m benchmarks.engine_check --train_file corpus.txt.gz --out /tmp/engines.json --rehearse   # a CPU

On a CPU Accelerate cannot run FSDP and train_pretrain.py refuses it with that reason: the rehearsal
records the refusal as the expected outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENGINES = {"fsdp": "fsdp_full_shard.yaml", "deepspeed_zero2": "deepspeed_zero2.yaml"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_file", required=True)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--rehearse", action="store_true", help="CPU sizes (tiny preset, fp32).")
    parser.add_argument("--work_dir", default="/tmp/engine_check")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def launch(config: str, output_dir: Path, args, steps: int, extra: list[str]) -> subprocess.CompletedProcess:
    size = (["--preset", "tiny", "--vocab_size", "2000", "--max_seq_length", "64", "--per_device_train_batch_size", "8"]
            if args.rehearse else ["--preset", "small", "--per_device_train_batch_size", "64"])
    precision = "no" if args.rehearse else "bf16"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}",
               "--num_processes", "1", "--mixed_precision", precision, "train_pretrain.py", *size,
               "--train_files", args.train_file, "--blanks_separate_docs", "false", "--validation_split_percentage", "0",
               "--max_train_steps", str(steps), "--num_warmup_steps", "2", "--logging_steps", "5",
               "--checkpointing_steps", "5", "--cache_dir", str(Path(args.work_dir) / "cache"),
               "--output_dir", str(output_dir), "--dataloader_num_workers", "0", *extra]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def export_loads(folder: Path) -> dict:
    """Load the exported discriminator with transformers alone, in a fresh process."""
    code = ("import json, sys; from transformers import AutoModelForPreTraining, AutoModelForSequenceClassification;"
            "m, info = AutoModelForPreTraining.from_pretrained(sys.argv[1], output_loading_info=True);"
            "AutoModelForSequenceClassification.from_pretrained(sys.argv[1], num_labels=2);"
            "print(json.dumps({k: sorted(v) for k, v in info.items() if isinstance(v, (list, set))}))")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        return {"loads": False, "error": proc.stderr[-1500:]}
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"loads": not info.get("missing_keys") and not info.get("unexpected_keys"), "loading_info": info}


def check_engine(name: str, args) -> dict:
    output_dir = Path(args.work_dir) / name
    first = launch(ENGINES[name], output_dir, args, 10, ["--overwrite_output_dir"])
    if first.returncode:
        refused = "FSDP" in first.stderr and "CPU" in first.stderr
        return {"passed": args.rehearse and name == "fsdp" and refused,
                "outcome": "refused on a CPU (expected)" if refused else "failed", "error": first.stderr[-2000:]}
    resumed = launch(ENGINES[name], output_dir, args, 15, ["--resume_from_checkpoint", "latest"])
    metrics = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    steps = sorted({row["step"] for row in metrics if "train/loss" in row})
    result = {"first_run_ok": True, "resume_ok": resumed.returncode == 0, "logged_steps": steps,
              "resumed_from_step_10": "resumed from" in resumed.stderr and "step 10" in resumed.stderr,
              "export": export_loads(output_dir / "export" / "discriminator") if resumed.returncode == 0 else None}
    if resumed.returncode:
        result["error"] = resumed.stderr[-2000:]
    result["passed"] = bool(result["resume_ok"] and steps[-1] == 15 and result["export"] and result["export"]["loads"])
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    engines = {name: check_engine(name, args) for name in args.engines}
    report = {"device": device, "date": time.strftime("%Y-%m-%d"), "engines": engines,
              "passed": all(e["passed"] for e in engines.values())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({name: {k: v for k, v in e.items() if k != "error"} for name, e in engines.items()}, indent=2))
    return report


if __name__ == "__main__":
    main()
