"""Does train_pretrain.py keep up with its own step? The loop's optimizer steps per second (data
loading, collation, logging, checkpoints included; the train check's fast run, steady state) against
the bare step's (bench_pretrain_step's electra_hf variant, same model, batch and precision).

    python -m benchmarks.loop_check --train_check benchmarks/results/gpu/train_check.json \\
        --bench benchmarks/results/gpu/small_bf16_b128.json --out benchmarks/results/gpu/loop.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loop_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_check", required=True, help="train_check.json (its fast run's metrics are read).")
    parser.add_argument("--bench", required=True, help="bench_pretrain_step's records (--records_dir output).")
    parser.add_argument("--variant", default="electra_hf")
    parser.add_argument("--target", type=float, default=0.9, help="The loop's steps/s as a fraction of the bare step's.")
    parser.add_argument("--out", required=True)
    return parser.parse_args(argv)


def loop_steps_per_second(train_check: dict) -> float:
    """Median steps/s of the fast run's second half (compilation and warm-up excluded)."""
    metrics = Path(train_check["runs"]["fast"]["command"].split("--output_dir ")[1].split()[0]) / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    rates = [row["train/steps_per_second"] for row in rows if "train/steps_per_second" in row]
    return statistics.median(rates[len(rates) // 2:])


def main(argv=None) -> dict:
    args = parse_args(argv)
    train_check = json.loads(Path(args.train_check).read_text())
    record = next(r for r in json.loads(Path(args.bench).read_text()) if r["variant"] == args.variant)
    shape = {key: train_check[key] for key in ("preset", "precision", "batch_size", "seq_len")}
    if shape != {key: record[key] for key in shape}:
        raise ValueError(f"the train check ran {shape}, the benchmark {({key: record[key] for key in shape})}: "
                         "compare the same model, precision and batch")
    loop = loop_steps_per_second(train_check)
    bare = 1.0 / record["step_s"]
    result = {"device": record["device"], "preset": record["preset"], "precision": record["precision"],
              "batch_size": record["batch_size"], "seq_len": record["seq_len"], "variant": "train_pretrain.py loop",
              "loop_steps_per_second": loop, "bare_step_steps_per_second": bare, "fraction_of_bare_step": loop / bare,
              "target": args.target, "passed": loop / bare >= args.target, "date": time.strftime("%Y-%m-%d")}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
