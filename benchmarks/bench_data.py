"""Throughput of ELECTRA pre-training data preparation (electra_hf.data).

Measures, for each worker count, with a fresh cache directory each time:
  read   -- load_raw_datasets: read + validate the text files into the cached line format;
  build  -- build_pretraining_datasets: tokenisation + the official example builder + save;
and reports lines/s and tokens/s (tokens = tokens in the built examples, [CLS]/[SEP] included).
The tokenizer (WordPiece, vocab 30522 by default) is trained once beforehand on the first
--tokenizer_lines lines and is not timed.

From the repository root:

    python -m benchmarks.bench_data                       # all 6 Gutenberg shards, 1 and 2 workers
    python -m benchmarks.bench_data --max_files 1 --max_lines 50000 --num_proc 1

Writes benchmarks/results/data_prep.{json,md} (and prints the table). Everything large (caches,
the tokenizer) goes to a temporary directory outside the repository (--work_dir to choose).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.common import GUTENBERG_DIR, RESULTS_DIR, command_line, describe_machine, read_lines, write_report


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus_dir", default=str(GUTENBERG_DIR), help="Directory of *.txt.gz shards.")
    parser.add_argument("--max_files", type=int, default=None, help="Use only the first N shards.")
    parser.add_argument("--max_lines", type=int, default=None,
                        help="Use only the first N lines (written to a temporary file first).")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2], help="Worker counts to measure.")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--tokenizer_lines", type=int, default=200_000, help="Lines the tokenizer is trained on.")
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--work_dir", default=None, help="Scratch directory (default: a new temporary one).")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR), help="Where data_prep.{json,md} are written.")
    return parser.parse_args(argv)


def describe_data_machine() -> dict:
    """The machine, the libraries that tokenise, and the settings that decide their thread use."""
    return {
        **describe_machine("datasets", "tokenizers", "transformers"),
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM"),
        "RAYON_NUM_THREADS": os.environ.get("RAYON_NUM_THREADS"),
    }


def train_tokenizer(files: list[str], vocab_size: int, lines: int):
    """A WordPiece tokenizer trained on the first `lines` lines of `files` (the blank ones skipped),
    and the seconds it took."""
    from electra_hf.data import train_wordpiece_tokenizer

    start = time.perf_counter()
    texts = (line.strip() for line in itertools.islice(read_lines(files), lines))
    tokenizer = train_wordpiece_tokenizer((text for text in texts if text), vocab_size=vocab_size, show_progress=False)
    return tokenizer, time.perf_counter() - start


def measure(inputs: list[str], tokenizer, num_proc: int, max_seq_length: int, cache: Path) -> dict:
    """Read and build the examples of `inputs` with `num_proc` workers into an empty `cache`: times,
    rates and the examples' statistics."""
    import pyarrow.compute as pc

    from electra_hf.data import PretrainingDataArguments, build_pretraining_datasets, describe_examples, load_raw_datasets

    shutil.rmtree(cache, ignore_errors=True)
    data_args = PretrainingDataArguments(
        train_files=inputs, validation_split_percentage=0, cache_dir=str(cache),
        preprocessing_num_workers=num_proc, max_seq_length=max_seq_length,
    )
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    raw = load_raw_datasets(data_args)
    t1 = time.perf_counter()
    examples = build_pretraining_datasets(data_args, tokenizer, raw)
    t2 = time.perf_counter()
    stats = describe_examples(examples["train"], max_seq_length)
    rows = len(raw["train"])
    documents = int(pc.sum(pc.equal(raw["train"].with_format("arrow")[:]["text"], "")).as_py())  # blank lines
    lines = rows - documents
    read_s, build_s, total_s = t1 - t0, t2 - t1, t2 - t0
    del raw, examples
    shutil.rmtree(cache, ignore_errors=True)
    return {
        "num_proc": num_proc,
        "lines": lines,
        "documents": documents,
        "examples": stats["num_examples"],
        "tokens": stats["num_tokens"],
        "read_seconds": round(read_s, 2),
        "build_seconds": round(build_s, 2),
        "total_seconds": round(total_s, 2),
        "build_tokens_per_s": round(stats["num_tokens"] / build_s),
        "build_lines_per_s": round(lines / build_s),
        "total_tokens_per_s": round(stats["num_tokens"] / total_s),
        "total_lines_per_s": round(lines / total_s),
        "load_average_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "stats": stats,
    }


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        "# Data preparation throughput (electra_hf.data)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, load average at start "
        f"{machine['load_average_at_start']} (shared machine: expect noise)  ",
        f"Input: {len(result['inputs'])} file(s), {result['input_bytes_on_disk'] / 1e6:.1f} MB on disk; "
        f"WordPiece vocab {result['vocab_size']}, max_seq_length {result['max_seq_length']}",
        "",
        "| workers | lines | examples | tokens | read s | build s | total s "
        "| build tokens/s | build lines/s | total tokens/s | load avg before/after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['num_proc']} | {r['lines']:,} | {r['examples']:,} | {r['tokens']:,} | {r['read_seconds']} | "
            f"{r['build_seconds']} | {r['total_seconds']} | {r['build_tokens_per_s']:,} | {r['build_lines_per_s']:,} | "
            f"{r['total_tokens_per_s']:,} | {r['load_average_1min_before_after']} |"
        )
    lines += [
        "",
        "read = read + UTF-8 validation into the cached line format; build = tokenisation + example builder + "
        "save_to_disk; tokens include [CLS]/[SEP]. Tokenisation dominates (~85% of build time). With 1 worker the "
        "tokenizers library still uses every core inside encode_batch; workers forked after the tokenizer was "
        "trained in the parent tokenise single-threaded, so 2 workers on 2 cores is not 2x. The machine is shared "
        "(see the load averages): compare runs with that in mind.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    from datasets import disable_progress_bars

    disable_progress_bars()  # keep the log readable; the numbers are what matter
    files = sorted(str(path) for path in Path(args.corpus_dir).glob("*.txt.gz"))
    if not files:
        raise FileNotFoundError(f"No *.txt.gz file in {args.corpus_dir}")
    files = files[: args.max_files] if args.max_files else files
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="electra_bench_data_"))
    work.mkdir(parents=True, exist_ok=True)
    machine = describe_data_machine()
    print(f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} usable CPUs "
          f"(load average {machine['load_average_at_start']})", flush=True)

    inputs = files
    if args.max_lines:
        sliced = work / "sliced.txt"
        with open(sliced, "w", encoding="utf-8") as out:
            out.writelines(itertools.islice(read_lines(files), args.max_lines))
        inputs = [str(sliced)]
    tokenizer, tokenizer_seconds = train_tokenizer(files, args.vocab_size, args.tokenizer_lines)
    print(f"Tokenizer: vocab {len(tokenizer)} trained on {args.tokenizer_lines} lines in {tokenizer_seconds:.1f} s",
          flush=True)

    runs = []
    for num_proc in args.num_proc:
        runs.append(measure(inputs, tokenizer, num_proc, args.max_seq_length, work / f"cache_np{num_proc}"))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "stats"}), flush=True)

    result = {
        "benchmark": "electra_hf.data: read + tokenise + build ELECTRA examples",
        "command": command_line("benchmarks.bench_data", argv),
        "inputs": ([f"first {args.max_lines} lines of {len(files)} shard(s)"] if args.max_lines
                   else [os.path.relpath(f, Path.cwd()) for f in inputs]),
        "input_bytes_on_disk": sum(os.path.getsize(f) for f in inputs),
        "max_seq_length": args.max_seq_length,
        "vocab_size": len(tokenizer),
        "tokenizer_train_lines": args.tokenizer_lines,
        "tokenizer_train_seconds": round(tokenizer_seconds, 2),
        "machine": machine,
        "runs": runs,
    }
    write_report(result, markdown(result), args.out_dir, "data_prep")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
