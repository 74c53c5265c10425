"""Fine-tuning throughput on SST-2: dynamic padding vs padding every batch to max_seq_length.

Variants (same model, batch, max_seq_length, data, seed; FinetuningArguments switches as
train_glue.py takes them):
  dynamic            -- the library default: examples tokenized without padding, batches padded
                        to their longest example by `make_collator` (DataCollatorWithPadding).
  pad_to_max         -- `--pad_to_max_length`: examples padded to max_seq_length (128) when
                        tokenized, batches stacked by `make_collator` (default_data_collator).
  group_by_length    -- dynamic padding + `--group_by_length` (LengthGroupedSampler: examples of
                        similar length share a batch).
  pad_to_multiple_of_8 -- dynamic padding rounded up to a multiple of 8 (`--pad_to_multiple_of 8`).

What is timed is one optimizer step of the library's fine-tuning loop (`electra_hf.finetuning.
finetune`), replicated statement by statement so that single steps can be timed and the variants
interleaved: fetch the next batch from the accelerate-prepared DataLoader (collation included),
forward (`outputs["loss"]`), `accelerator.backward`, clip to 1.0, ElectraAdamW step (the
library's `build_optimizer`: layer-wise LR decay groups), `zero_grad`, scheduler step, the
detached loss accumulation. The model is the head train_glue.py uses by default (`--head
official`: dropout + linear on [CLS], `electra_hf.heads`; `--head hf` for transformers'
ElectraForSequenceClassification) on a randomly initialised discriminator of the preset's size
(throughput does not depend on the weights). Torch threads are left at the machine default
(`--threads` to set them), and no process-wide CPU setting is applied (train_glue.py applies none).

The data is the real SST-2 training set, read by `electra_hf.tasks.glue.load_glue_split` and
tokenized as train_glue.py does, with a WordPiece tokenizer trained first (not timed) by
`electra_hf.data.train_wordpiece_tokenizer` on the first `--tokenizer_lines` lines of the
Gutenberg corpus (books, as BERT's/ELECTRA's vocabulary; `--tokenizer_source sst2` trains it on
the SST-2 sentences instead). The model's vocabulary is `--vocab_size` (30522, as ELECTRA-Small)
whatever the tokenizer's size. Every variant draws its batches with the same seed, so `dynamic`
and `pad_to_max` see the same examples in the same order.

Each variant is built and warmed up (`--warmup` untimed steps), then timed in `--repeats`
interleaved rounds: round r runs `--steps` steps of every variant, by default alternating one step
at a time (A B C D, B C D A, ...; `--interleave block` runs each variant's steps in a row), so
that a noisy, shared machine slows every variant alike; examples/s is the median over rounds, and
the speed-up over `pad_to_max` is also given paired (median over rounds of the per-round ratio).
Padding is counted on the timed batches (padded tokens = batch × padded length − attention-mask
ones) and, without running the model, over one full epoch of each variant's batch order.

From the repository root:

    python -m benchmarks.bench_finetune_padding               # Small, 30 steps × 3 rounds (about 15 min on 2 cores)
    python -m benchmarks.bench_finetune_padding --quick       # 15-40 s smoke (tiny preset, 2 steps × 2)
    python -m benchmarks.bench_finetune_padding --variants dynamic pad_to_max --steps 10
    OMP_WAIT_POLICY=PASSIVE python -m benchmarks.bench_finetune_padding   # on a machine other processes also use

On a machine shared with other busy processes, torch's default thread count plus OpenMP's default
spin-waiting makes every parallel op wait for a descheduled partner thread: steps get 10-20x
slower, by a fixed cost per op that hides the padding effect. Set OMP_WAIT_POLICY=PASSIVE (or
--threads 1) there; the environment's threading variables are recorded with the results.

Writes benchmarks/results/finetune_padding.{json,md} (--out_dir / --name to change) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import shlex
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.common import (
    GUTENBERG_DIR,
    REPO,
    RESULTS_DIR,
    SHARED_DATA,
    command_line,
    describe_machine,
    describe_torch,
    finish_report,
    read_lines,
)
from benchmarks.finetune_variants import BASELINE, DEFAULT_VARIANTS, VARIANTS, Variant, epoch_padding

DEFAULT_GLUE_DIR = SHARED_DATA / "glue"
# Threading settings from the environment: OMP_WAIT_POLICY decides how fast a step is on a shared machine.
THREADING_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------
def describe_finetuning_machine() -> dict:
    """The machine, the libraries of a fine-tuning step, and the threading settings it ran under."""
    return {
        **describe_machine("datasets", "tokenizers", "transformers", "accelerate"),
        **describe_torch(),
        "env": {name: os.environ[name] for name in THREADING_VARIABLES if name in os.environ},
    }


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def iter_corpus_lines(corpus_dir: Path):
    """The non-blank lines of the corpus shards, stripped."""
    files = sorted(corpus_dir.glob("*.txt.gz"))
    if not files:
        raise FileNotFoundError(f"No *.txt.gz shard in {corpus_dir} (use --tokenizer_source sst2)")
    return (line.strip() for line in read_lines(files) if line.strip())


def train_tokenizer(args, sentences: list[str]):
    """A WordPiece tokenizer trained on the SST-2 sentences or the corpus (`--tokenizer_source`), and
    a description of what it was trained on and how long it took."""
    from electra_hf.data import train_wordpiece_tokenizer

    if args.tokenizer_source == "sst2":
        texts, source = iter(sentences), f"SST-2 train sentences ({len(sentences)})"
    else:
        texts = itertools.islice(iter_corpus_lines(Path(args.corpus_dir)), args.tokenizer_lines)
        source = f"first {args.tokenizer_lines} non-blank lines of {os.path.relpath(args.corpus_dir, REPO)}"
    start = time.perf_counter()
    tokenizer = train_wordpiece_tokenizer(texts, vocab_size=args.vocab_size, show_progress=False)
    return tokenizer, {"source": source, "requested_vocab_size": args.vocab_size, "vocab_size": len(tokenizer),
                       "train_seconds": round(time.perf_counter() - start, 2)}


def tokenize(dataset, tokenizer, max_seq_length: int, pad_to_max_length: bool):
    """As train_glue.py's `_tokenize` for a single-sentence task (SST-2), keeping the label."""

    def encode(batch):
        return tokenizer(batch["sentence1"], truncation=True, max_length=max_seq_length,
                         padding="max_length" if pad_to_max_length else False)

    remove = [c for c in dataset.column_names if c != "label"]
    return dataset.map(encode, batched=True, remove_columns=remove)


def length_stats(lengths: list[int], max_seq_length: int) -> dict:
    """Distribution of the tokenized lengths: what decides how much padding to max_seq_length costs."""
    ordered = sorted(lengths)

    def pct(p: float) -> int:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "examples": len(lengths),
        "mean": statistics.fmean(lengths),
        "median": statistics.median(lengths),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": ordered[-1],
        "min": ordered[0],
        "truncated_fraction": sum(n >= max_seq_length for n in lengths) / len(lengths),
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def summarise(variants: dict[str, Variant], rounds: dict[str, list[dict]], epoch: dict[str, dict]) -> list[dict]:
    """One result row per variant: examples/s over rounds, padding of the timed batches and of an
    epoch, and the speed-up over pad_to_max (also paired round by round)."""
    rows = []
    for name, variant in variants.items():
        per_round = rounds[name]
        throughput = [r["examples"] / r["seconds"] for r in per_round]
        log = variant.batch_log
        computed = [b["examples"] * b["padded_length"] for b in log]
        padding = [c - b["real_tokens"] for c, b in zip(computed, log)]
        total_seconds = sum(variant.step_times)
        row = {
            "variant": name,
            "switches": variant.spec,
            "timed_steps": len(variant.step_times),
            "examples_per_s_median": statistics.median(throughput),
            "examples_per_s_per_round": [round(x, 3) for x in throughput],
            "examples_per_s_min": min(throughput),
            "examples_per_s_max": max(throughput),
            "step_s_median": statistics.median(variant.step_times),
            "data_s_mean": statistics.fmean(variant.data_times),
            # CPU seconds the process used per wall second during the steps (at most the thread count;
            # lower when other processes take the cores)
            "cpu_utilisation": sum(variant.cpu_times) / total_seconds,
            "mean_padded_length": statistics.fmean(b["padded_length"] for b in log),
            "mean_computed_tokens_per_batch": statistics.fmean(computed),
            "mean_padding_tokens_per_batch": statistics.fmean(padding),
            "padding_fraction": sum(padding) / sum(computed),
            "real_tokens_per_s": sum(b["real_tokens"] for b in log) / total_seconds,
            "computed_tokens_per_s": sum(computed) / total_seconds,
            "epoch": epoch[name],
            "final_loss": float(variant.loss_history[-1]) if variant.loss_history else None,
        }
        rows.append(row)
    if BASELINE in rounds:
        base = {r["round"]: r["examples"] / r["seconds"] for r in rounds[BASELINE]}
        base_median = statistics.median(base.values())
        for row in rows:
            mine = {r["round"]: r["examples"] / r["seconds"] for r in rounds[row["variant"]]}
            row["speedup_vs_pad_to_max"] = row["examples_per_s_median"] / base_median
            row["speedup_vs_pad_to_max_paired"] = statistics.median(mine[k] / base[k] for k in mine)
    return rows


def short_command(command: str) -> str:
    """The command with the text of --notes elided (the notes are listed under the table)."""
    words, out, in_notes = shlex.split(command), [], False
    for word in words:
        if word.startswith("--") and not any(c.isspace() for c in word):  # a flag, not a note's text
            in_notes = word == "--notes"
            out.append(word + (" …" if in_notes else ""))
        elif not in_notes:
            out.append(word)
    return shlex.join(out).replace("'--notes …'", "--notes …")


def markdown(report: dict) -> str:
    m, t, s = report["machine"], report["tokenizer"], report["sst2_lengths"]
    lines = [
        "# Fine-tuning throughput on SST-2: dynamic padding vs padding to max_seq_length",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable cores, {m['torch_threads']} torch threads "
        f"({'set by --threads' if report['threads_set'] else 'default'})"
        + "".join(f", {k}={v}" for k, v in m.get("env", {}).items()) + "; "
        f"torch {m['torch']}, transformers {m['transformers']}, accelerate {m['accelerate']}, Python {m['python']}. "
        f"Load average at start {m['load_average_at_start']}, at end {report['load_average_at_end']}.",
        "",
        f"Command: `{short_command(report['command'])}` (wall time {report['wall_time_s']:.0f} s).",
        "",
        f"Model: `{report['model']['class']}` (head `{report['model']['head']}`) on a randomly initialised "
        f"`{report['model']['preset']}` discriminator ({report['model']['parameters'] / 1e6:.1f} M parameters, "
        f"vocabulary {report['model']['vocab_size']}, attention `{report['model']['attn_implementation']}`), "
        f"fp32, batch {report['batch_size']}, max_seq_length {report['max_seq_length']}, ElectraAdamW with "
        f"layer-wise LR decay (lr {report['model']['learning_rate']:g}, decay {report['model']['layer_decay']:g}), "
        f"clipping 1.0, linear schedule.",
        "",
        f"Data: SST-2 train ({s['examples']:,} sentences), WordPiece tokenizer (vocab {t['vocab_size']:,}) trained on "
        f"{t['source']}. Tokenized length with [CLS]/[SEP]: mean {s['mean']:.1f}, median {s['median']:g}, "
        f"p90 {s['p90']}, p99 {s['p99']}, max {s['max']} ({100 * s['truncated_fraction']:.2f}% reach {report['max_seq_length']}).",
        "",
        f"Timed: {report['steps']} steps × {report['repeats']} interleaved rounds per variant after {report['warmup']} "
        f"warm-up steps, variants alternating " + ("one step at a time" if report["interleave"] == "step" else
                                                   "in blocks of steps") +
        "; examples/s = median over rounds (range = slowest–fastest round).",
        "",
        "| variant | examples/s (median) | range | × pad_to_max (paired) | step s (median) | mean padded length (epoch) "
        "| padding tokens / batch | padding % | epoch: padding tokens / batch | epoch: padding % | epoch tokens vs pad_to_max "
        "| est. epoch min | CPU use |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base_epoch = next((r["epoch"]["tokens_computed"] for r in report["results"] if r["variant"] == BASELINE), None)
    for r in report["results"]:
        speed = (f"{r['speedup_vs_pad_to_max']:.2f} ({r['speedup_vs_pad_to_max_paired']:.2f})"
                 if "speedup_vs_pad_to_max" in r else "—")
        epoch_ratio = f"{r['epoch']['tokens_computed'] / base_epoch:.2f}" if base_epoch else "—"
        est_minutes = report["sst2_lengths"]["examples"] / r["examples_per_s_median"] / 60
        lines.append(
            f"| {r['variant']} | {r['examples_per_s_median']:.1f} | {r['examples_per_s_min']:.1f}–{r['examples_per_s_max']:.1f} "
            f"| {speed} | {r['step_s_median']:.3f} | {r['mean_padded_length']:.1f} ({r['epoch']['computed_tokens_per_batch'] / report['batch_size']:.1f}) "
            f"| {r['mean_padding_tokens_per_batch']:,.0f} "
            f"| {100 * r['padding_fraction']:.1f}% | {r['epoch']['padding_tokens_per_batch']:,.0f} "
            f"| {100 * r['epoch']['padding_fraction']:.1f}% | {epoch_ratio} | {est_minutes:.1f} | {r['cpu_utilisation']:.2f} |"
        )
    lines += [
        "",
        "Padding tokens / batch = batch × padded length − real tokens (attention-mask ones), i.e. the share of the "
        "encoder's compute spent on [PAD]; 'padding tokens / batch' and 'padding %' are over the timed batches, the "
        "'epoch' columns over one full epoch of the variant's batch order (computed from the lengths, no model run). "
        "'Epoch tokens vs pad_to_max' = tokens the encoder processes per epoch relative to padding to "
        f"{report['max_seq_length']}. × pad_to_max: median examples/s ratio; in parentheses the median of the "
        "per-round ratios (every round runs all variants, interleaved). Est. epoch min = SST-2 train size / "
        "median examples/s (one epoch; the paper's recipe runs 3). CPU use = process CPU seconds per wall second "
        "during the variant's steps (at most the torch thread count; lower when other processes take the cores).",
    ]
    if report.get("finetune_check"):
        lines += ["", "Cross-check with the library's `finetune()` itself (one call per variant, "
                  f"max_steps {report['steps']}, runtime includes its first step):", "",
                  "| variant | examples/s from finetune()'s train_steps_per_second |", "|---|---:|"]
        for name, value in report["finetune_check"].items():
            lines.append(f"| {name} | {value:.1f} |")
    if report["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_finetune_padding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--preset", default=None, help="electra_hf preset of the discriminator (default small; tiny with --quick).")
    parser.add_argument("--head", default="official", choices=["official", "hf"],
                        help="official: electra_hf.heads (train_glue.py's default); hf: ElectraForSequenceClassification.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=30522, help="Model vocabulary (and the tokenizer's target size).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant per round (default 30; --quick 2).")
    parser.add_argument("--repeats", type=int, default=None, help="Interleaved rounds (default 3; --quick 2).")
    parser.add_argument("--warmup", type=int, default=None, help="Untimed steps per variant first (default 3; --quick 1).")
    parser.add_argument("--interleave", default="step", choices=["step", "block"],
                        help="step: within a round, variants alternate one step at a time (A B C A B C ...); "
                             "block: each runs its --steps steps in a row (A×n B×n C×n), rotated per round.")
    parser.add_argument("--quick", action="store_true",
                        help="A short smoke run: tiny preset, 2 steps × 2 rounds, 4,000 examples, small tokenizer.")
    parser.add_argument("--glue_dir", default=str(DEFAULT_GLUE_DIR), help="GLUE folder (original TSV layout).")
    parser.add_argument("--max_train_samples", type=int, default=None, help="Only the first N SST-2 examples.")
    parser.add_argument("--tokenizer_source", default="gutenberg", choices=["gutenberg", "sst2"])
    parser.add_argument("--corpus_dir", default=str(GUTENBERG_DIR))
    parser.add_argument("--tokenizer_lines", type=int, default=None,
                        help="Gutenberg lines the tokenizer is trained on (default 200,000; --quick 20,000).")
    parser.add_argument("--finetune_check", action="store_true",
                        help="Also run the library's finetune() for --steps steps per variant and report its throughput.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: left at torch's default for the machine, as train_glue.py does).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--notes", nargs="*", default=[], help="Free-text notes stored in the results.")
    parser.add_argument("--work_dir", default=None, help="Scratch directory (default: a new temporary one).")
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="finetune_padding", help="Output file stem.")
    args = parser.parse_args(argv)
    defaults = dict(preset=("tiny", "small"), steps=(2, 30), repeats=(2, 3), warmup=(1, 3),
                    tokenizer_lines=(20_000, 200_000), max_train_samples=(4000, None))
    for key, (quick, full) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    return args


def load_sst2(args, task):
    """SST-2's training split, the tokenizer trained for it, the split tokenized as each padding
    mode needs ({pad_to_max_length: dataset}), and the tokenized lengths."""
    from electra_hf.scripts_common import first_n
    from electra_hf.tasks.glue import load_glue_split

    raw = first_n(load_glue_split(task, args.glue_dir, "train"), args.max_train_samples)
    tokenizer, tokenizer_info = train_tokenizer(args, list(raw["sentence1"]))
    print(f"tokenizer: {tokenizer_info}", flush=True)
    tokenized = {False: tokenize(raw, tokenizer, args.max_seq_length, False)}
    if any(VARIANTS[v]["pad_to_max_length"] for v in args.variants):
        tokenized[True] = tokenize(raw, tokenizer, args.max_seq_length, True)
    lengths = [len(ids) for ids in tokenized[False]["input_ids"]]
    return tokenizer, tokenizer_info, tokenized, lengths


def classifier(args, task):
    """(config, class) of the sequence classifier train_glue.py builds with `--head`, on a
    discriminator of the preset's size."""
    from transformers import ElectraForSequenceClassification

    from electra_hf.configuration import ElectraPretrainingConfig
    from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification
    from electra_hf.scripts_common import plain_encoder_config

    config = ElectraPretrainingConfig.from_preset(args.preset, vocab_size=args.vocab_size,
                                                  max_seq_length=args.max_seq_length)
    base = config.discriminator_config
    labels = dict(num_labels=task.num_labels, id2label=dict(enumerate(task.label_list)),
                  label2id={n: i for i, n in enumerate(task.label_list)}, problem_type="single_label_classification")
    if args.head == "official":
        return ElectraOfficialHeadConfig.from_electra_config(base, **labels), ElectraOfficialHeadForSequenceClassification
    return plain_encoder_config(base, **labels), ElectraForSequenceClassification


def interleaved_schedule(names: list[str], steps: int, round_index: int, interleave: str) -> list[tuple[str, int]]:
    """(variant, steps) in the order round `round_index` runs them."""
    if interleave == "block":  # A×steps, B×steps, ... (rotated start per round)
        shift = round_index % len(names)
        return [(name, steps) for name in names[shift:] + names[:shift]]
    # A B C D, B C D A, ...: one step at a time (robust to load that changes within seconds)
    return [(names[(round_index + i + j) % len(names)], 1) for i in range(steps) for j in range(len(names))]


def run_rounds(args, variants: dict[str, Variant]) -> dict[str, list[dict]]:
    """`args.repeats` interleaved rounds of `args.steps` timed steps per variant; per variant and
    round: seconds, CPU seconds, examples and the load."""
    rounds: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.repeats):
        before = {name: len(v.step_times) for name, v in variants.items()}
        for name, count in interleaved_schedule(names, args.steps, r, args.interleave):
            variants[name].run(count, timed=True)
        for name, variant in variants.items():
            rounds[name].append({
                "round": r, "seconds": sum(variant.step_times[before[name]:]),
                "cpu_seconds": sum(variant.cpu_times[before[name]:]),
                "examples": sum(b["examples"] for b in variant.batch_log[before[name]:]),
                "load_average_1min": round(os.getloadavg()[0], 2),
            })
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(
            f"{n} {rounds[n][-1]['examples'] / rounds[n][-1]['seconds']:.1f} ex/s" for n in names), flush=True)
    return rounds


def finetune_throughput(args, variants: dict[str, Variant], model_config, model_class, tokenized, tokenizer,
                        accelerator) -> dict[str, float]:
    """Examples/s of the library's finetune() itself, `--steps` steps per variant (a cross-check)."""
    import torch

    from electra_hf.finetuning import FinetuningTask, finetune, make_collator

    throughput = {}
    for name, variant in variants.items():
        torch.manual_seed(args.seed)
        model = model_class(model_config)
        check_args = dataclasses.replace(variant.ft_args, max_train_steps=args.steps, logging_steps=0)
        task = FinetuningTask(tokenized[variant.spec["pad_to_max_length"]], make_collator(tokenizer, check_args))
        out = finetune(model, task, check_args, accelerator=accelerator, seed=args.seed)
        throughput[name] = out.metrics["train_steps_per_second"] * args.batch_size
        print(f"[{name}] finetune(): {throughput[name]:.1f} examples/s", flush=True)
    return throughput


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the tokenizer is used before DataLoader forks
    import datasets
    import torch

    from electra_hf.arguments import FinetuningArguments
    from electra_hf.training import build_accelerator
    from electra_hf.tasks.glue import get_glue_task

    datasets.disable_progress_bars()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="electra_bench_finetune_")
    machine = describe_finetuning_machine()
    print(f"machine: {machine}", flush=True)
    task = get_glue_task("sst-2")
    tokenizer, tokenizer_info, tokenized, lengths = load_sst2(args, task)
    sst2_lengths = length_stats(lengths, args.max_seq_length)
    print(f"SST-2 tokenized lengths: {sst2_lengths}", flush=True)
    model_config, model_class = classifier(args, task)

    accelerator = build_accelerator(FinetuningArguments(output_dir=args.work_dir))  # one per process, as train_glue.py
    total_steps = args.warmup + args.steps * args.repeats
    variants: dict[str, Variant] = {}
    epoch: dict[str, dict] = {}
    for name in args.variants:
        spec = VARIANTS[name]
        variants[name] = Variant(name, spec, model_config, model_class, tokenized[spec["pad_to_max_length"]],
                                 tokenizer, accelerator, args, total_steps)
        epoch[name] = epoch_padding(lengths, spec, args.batch_size, args.max_seq_length, args.seed, accelerator,
                                    keep_first=total_steps)
        t0 = time.perf_counter()
        variants[name].run(args.warmup, timed=False)
        print(f"[{name}] built and warmed up ({args.warmup} steps, {time.perf_counter() - t0:.1f} s); "
              f"epoch padding {100 * epoch[name]['padding_fraction']:.1f}%", flush=True)
    rounds = run_rounds(args, variants)
    finetune_check = (finetune_throughput(args, variants, model_config, model_class, tokenized, tokenizer, accelerator)
                      if args.finetune_check else {})

    first = next(iter(variants.values()))
    notes = list(args.notes) + [
        "Variants are interleaved (" + ("one step of each in turn" if args.interleave == "step" else
                                        "every round runs each variant's steps back to back, in a rotated order")
        + "), so load from other processes slows them alike: the ratios are more reliable than the absolute examples/s.",
    ]
    report = {
        "benchmark": "fine-tuning throughput on SST-2: dynamic padding vs padding to max_seq_length",
        "command": command_line("benchmarks.bench_finetune_padding", argv),
        "machine": machine,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length,
        "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup, "seed": args.seed,
        "interleave": args.interleave, "threads_set": args.threads,
        "model": {"preset": args.preset, "head": args.head, "class": model_class.__name__,
                  "parameters": first.parameters, "vocab_size": args.vocab_size,
                  "attn_implementation": first.attn_implementation,
                  "learning_rate": first.learning_rate, "layer_decay": first.layer_decay},
        "tokenizer": tokenizer_info,
        "sst2_lengths": sst2_lengths,
        "results": summarise(variants, rounds, epoch),
        "rounds": rounds,
        "step_s": {name: [round(t, 4) for t in v.step_times] for name, v in variants.items()},
        "padded_lengths": {name: [b["padded_length"] for b in v.batch_log] for name, v in variants.items()},
        "finetune_check": finetune_check,
        "notes": notes,
    }
    return finish_report(report, markdown, args.out_dir, args.name, started)


if __name__ == "__main__":
    main()
