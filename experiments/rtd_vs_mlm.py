#!/usr/bin/env python
"""ELECTRA (replaced token detection) vs BERT-style masked LM at equal pre-training compute.

One command reruns everything; every stage is resumable (a finished stage is skipped, an
interrupted pre-training resumes from its latest checkpoint):

    python -m experiments.rtd_vs_mlm --budget_minutes 60 --seeds 1 2 3        # the full experiment
    python -m experiments.rtd_vs_mlm --budget_minutes 2 --seeds 1 --tasks rte,mrpc --tag smoke

(from the repository root, whose train_pretrain.py and train_glue.py it runs).

Stages
1. calibrate: the two objectives' training steps are timed side by side (alternating rounds) on
   this machine, so that both get the same wall-clock budget (their step costs differ); the FLOPs each run uses are counted
   with `electra_hf.flops` (not assumed).
2. pre-train both objectives with the same encoder (the discriminator-sized network), tokenizer,
   data (Gutenberg shards 00-04; shard 05 held out for evaluation), batch, schedule and masking
   budget; checkpoints at 25%, 50%, 75% and 100% of the budget.
3. fine-tune every checkpoint at 25/50/100% with train_glue.py on the GLUE tasks that have a
   train split here (CoLA, SST-2, MRPC, STS-B, RTE), identical settings, median over seeds.
4. report: Markdown table and JSON (per task, GLUE average, FLOPs, held-out pre-training
   losses) and a plot of GLUE average vs pre-training FLOPs, under experiments/results/.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import train_glue
import train_pretrain
from electra_hf.configuration import ElectraPretrainingConfig
from electra_hf.flops import pretraining_flops_per_step
from electra_hf.plotting import read_metrics
from electra_hf.tasks.glue import resolve_task_names
from electra_hf.checkpoints import list_checkpoints

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("rtd_vs_mlm")
OBJECTIVES = ("electra", "mlm")
BUDGET_POINTS = (0.25, 0.5, 1.0)
# Held-out sentences (GLUE-like) for the collapse check in the report.
SPREAD_TEXTS = ["the movie was wonderful and moving .", "a dull , lifeless and boring film .",
                "it is raining in london today , said the man .", "she opened the door and walked into the garden ."]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m experiments.rtd_vs_mlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared_dir", default=str(REPO.parent / "shared" / "data"), help="The shared data folder.")
    parser.add_argument("--work_dir", default=str(REPO / "experiments" / "runs"), help="Checkpoints and caches (not committed).")
    parser.add_argument("--results_dir", default=str(REPO / "experiments" / "results"), help="Committed tables, JSON, plot.")
    parser.add_argument("--tag", default="rtd_vs_mlm", help="Name of this experiment's files.")
    parser.add_argument("--budget_minutes", type=float, default=60.0, help="Pre-training wall-clock per objective.")
    parser.add_argument("--preset", default="mini", help="Encoder size (both objectives use the discriminator size).")
    parser.add_argument("--vocab_size", type=int, default=30522)
    add_pretraining_arguments(parser, batch_size=64, warmup_fraction=0.1)
    parser.add_argument("--tasks", default="cola,sst2,mrpc,stsb,rte")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--finetune_learning_rate", type=float, default=3e-4)
    parser.add_argument("--finetune_layer_decay", type=float, default=0.8)
    parser.add_argument("--max_finetune_samples", type=int, default=4000, help="Cap per task (time).")
    parser.add_argument("--finetune_epochs", type=float, default=None, help="Default: the GLUE table's (3; 10 RTE/STS-B).")
    parser.add_argument("--calibration_steps", type=int, default=3, help="Timed steps per objective and round.")
    parser.add_argument("--notes", default="", help="A paragraph appended to the report (how the machine was shared).")
    parser.add_argument("--calibration_rounds", type=int, default=5, help="Alternating rounds (electra, mlm, ...).")
    parser.add_argument("--calibrate_only", action="store_true",
                        help="Time the two steps (calibration.json) and stop: the first step of a run with --objectives.")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES),
                        help="Pre-train and fine-tune only these (comma-separated). To use two cores as two "
                             "one-thread processes, one per objective: after calibration.json exists, run "
                             "`--objectives electra` and `--objectives mlm` side by side, then the command without "
                             "--objectives, which finds both finished and writes the report. The step counts come "
                             "from the calibration, so how the runs share the machine changes wall-clock, not compute.")
    return parser.parse_args(argv)


def add_pretraining_arguments(parser, batch_size: int, warmup_fraction: float) -> None:
    """The flags of both objectives' pre-training that pretrain_argv reads (this experiment's and
    experiments.gpu_rtd_vs_mlm's)."""
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--warmup_fraction", type=float, default=warmup_fraction,
                        help="Warm-up as a share of the run, which then decays linearly to zero (ELECTRA's schedule).")
    parser.add_argument("--adam_bias_correction", default="true", choices=["true", "false"],
                        help="Pre-training Adam with bias correction (true). The official optimizer has none, which with "
                             "its 10k warm-up steps is harmless; with a budget of a few hundred steps the first updates "
                             "are ~3x the learning rate, enough to collapse both encoders "
                             "(experiments/results/rtd_vs_mlm_10min_collapsed.md).")
    parser.add_argument("--mlm_mask_token_prob", type=float, default=0.8, help="The masked LM: 80/10/10.")
    parser.add_argument("--mlm_random_token_prob", type=float, default=0.1)
    parser.add_argument("--train_shards", default="00,01,02,03,04")
    parser.add_argument("--eval_shard", default="05")


def pretrain_argv(args, objective: str, output_dir: Path, max_steps: int, extra=(), loader_workers: int = 1,
                  preprocessing_workers: int = 2, evaluations: int = 8) -> list[str]:
    """train_pretrain.py's arguments for one objective of the comparison: held-out metrics
    `evaluations` times over the run, a checkpoint at every quarter; `extra` flags come last."""
    corpus = Path(args.shared_dir) / "corpus" / "gutenberg"
    train_files = [str(corpus / f"gutenberg_{shard}.txt.gz") for shard in args.train_shards.split(",")]
    argv = [
        "--train_files", *train_files, "--validation_files", str(corpus / f"gutenberg_{args.eval_shard}.txt.gz"),
        "--preset", args.preset, "--objective", objective, "--vocab_size", str(args.vocab_size),
        "--max_seq_length", str(args.max_seq_length), "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
        "--max_train_steps", str(max_steps), "--num_warmup_steps", str(max(1, int(args.warmup_fraction * max_steps))),
        "--logging_steps", str(max(1, max_steps // 50)), "--eval_steps", str(max(1, max_steps // evaluations)),
        "--max_eval_batches", "20", "--checkpointing_steps", str(max(1, max_steps // 4)),
        "--checkpoints_total_limit", "0", "--output_dir", str(output_dir), "--cache_dir", str(Path(args.work_dir) / "data_cache"),
        "--dataloader_num_workers", str(loader_workers), "--preprocessing_num_workers", str(preprocessing_workers),
        "--seed", "0",
        # Gutenberg puts a blank line between paragraphs (and between books): taken as document
        # boundaries, they make most examples short and single-segment; pack across them instead.
        "--blanks_separate_docs", "false", "--adam_bias_correction", args.adam_bias_correction, *extra,
    ]
    if objective == "mlm":
        argv += ["--mask_token_prob", str(args.mlm_mask_token_prob), "--random_token_prob", str(args.mlm_random_token_prob)]
    return argv


def calibrate(args, work: Path) -> dict[str, float]:
    """Tokens/s of each objective's training step on this machine, measured side by side.

    Both models are built in this process exactly as train_pretrain.py builds them (same argv),
    warmed up, then timed in alternating rounds (electra, mlm, electra, mlm, ...) on the same
    random batch shape; each objective's rate is its median step. Alternating makes the *ratio*
    robust to other load on a shared machine, and the ratio is what makes the budgets equal.
    Data loading is not timed (prefetching workers keep up with the step, see benchmarks/).
    """
    record = work / "calibration.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        return {objective: saved[objective] for objective in OBJECTIVES}
    import statistics

    import torch

    from electra_hf.modeling import ElectraForRTDPretraining
    from electra_hf.optimization import ElectraAdamW
    from electra_hf.performance import configure_cpu_training

    configure_cpu_training()
    batch_size, seq_len = args.batch_size, args.max_seq_length
    generator = torch.Generator().manual_seed(0)
    steps = {}
    for objective in OBJECTIVES:
        model_args, data_args, _ = train_pretrain.parse_args(pretrain_argv(args, objective, work / "unused", 1))
        config = train_pretrain.build_config(model_args, data_args, args.vocab_size)
        model = ElectraForRTDPretraining(config).train()
        optimizer = ElectraAdamW(model.parameters(), lr=args.learning_rate)
        n = config.max_predictions_per_seq
        input_ids = torch.randint(5, args.vocab_size, (batch_size, seq_len), generator=generator)
        labels = torch.full_like(input_ids, -100)
        for row in range(batch_size):
            positions = torch.randperm(seq_len - 2, generator=generator)[:n] + 1
            labels[row, positions] = input_ids[row, positions]
        batch = dict(input_ids=input_ids, labels=labels, attention_mask=torch.ones_like(input_ids),
                     token_type_ids=torch.zeros_like(input_ids))

        def step(model=model, optimizer=optimizer, batch=batch):
            model(**batch).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # warm-up
        steps[objective] = step
    times: dict[str, list[float]] = {objective: [] for objective in OBJECTIVES}
    for _ in range(args.calibration_rounds):
        for objective in OBJECTIVES:
            started = time.perf_counter()
            for _ in range(args.calibration_steps):
                steps[objective]()
            times[objective].append((time.perf_counter() - started) / args.calibration_steps)
    rates = {objective: batch_size * seq_len / statistics.median(values) for objective, values in times.items()}
    record.write_text(json.dumps({**rates, "step_seconds": times, "batch_size": batch_size, "seq_len": seq_len},
                                 indent=2))
    return rates


def pretrain(args, work: Path, objective: str, tokens_per_second: float) -> dict:
    out = work / f"pretrain_{objective}"
    done = out / "results.json"
    tokens_per_step = args.batch_size * args.max_seq_length * 0.97  # packed examples are ~97% full
    max_steps = max(8, int(args.budget_minutes * 60 * tokens_per_second / tokens_per_step))
    if not done.is_file():
        started = time.perf_counter()
        extra = ["--resume_from_checkpoint", "latest"] if (out / "checkpoints").is_dir() else []
        train_pretrain.main(pretrain_argv(args, objective, out, max_steps, extra))
        (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - started:.1f}\n")
    results = json.loads(done.read_text())
    config = ElectraPretrainingConfig.from_pretrained(list_checkpoints(out / "checkpoints")[-1][1])
    steps = results["completed_steps"]
    flops_per_step = pretraining_flops_per_step(config, args.batch_size, args.max_seq_length)
    return {"output_dir": out, "max_steps": steps, "flops_per_step": flops_per_step, "config": config,
            "wall_seconds": float((out / "wall_seconds.txt").read_text()) if (out / "wall_seconds.txt").is_file() else None,
            "eval": results["eval"]}


def finetune_key(args) -> str:
    """A short hash of the fine-tuning settings: runs with other settings get their own folders."""
    import hashlib

    settings = [args.tasks, args.seeds, args.finetune_learning_rate, args.finetune_layer_decay,
                args.max_finetune_samples, args.finetune_epochs]
    return hashlib.sha1(json.dumps(settings).encode()).hexdigest()[:8]


def finetune(args, work: Path, objective: str, checkpoint: Path, fraction: float) -> dict:
    out = work / f"glue_{objective}_{int(fraction * 100)}_{finetune_key(args)}"
    done = out / "results.json"
    if not done.is_file():
        argv = [
            "--model_name_or_path", str(checkpoint), "--task_name", args.tasks, "--data_dir", str(Path(args.shared_dir) / "glue"),
            "--output_dir", str(out), "--seeds", *map(str, args.seeds), "--learning_rate", str(args.finetune_learning_rate),
            "--layer_decay", str(args.finetune_layer_decay), "--max_train_samples", str(args.max_finetune_samples),
            "--save_model", "false",
            "--resume_from_checkpoint", "latest",  # an interrupted stage keeps its finished (task, seed) runs
        ]
        if args.finetune_epochs is not None:
            argv += ["--num_train_epochs", str(args.finetune_epochs)]
        train_glue.main(argv)
    return json.loads(done.read_text())


def representation_spread(checkpoint: Path, texts: list[str]) -> float:
    """Mean over hidden dimensions of the std across tokens of the encoder's last hidden states:
    ~0 means a collapsed encoder (the same vector for every token of every input)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from electra_hf.export import finetuning_checkpoint

    path = finetuning_checkpoint(str(checkpoint))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    tokens = hidden[batch["attention_mask"].bool()]  # (real tokens, hidden)
    return float(tokens.std(0).mean())


def held_out_rows(tokenizer, path: Path, num_sequences: int, length: int):
    """The first `num_sequences` × `length` token ids of a gzipped text (blank lines skipped, no
    special tokens), as `num_sequences` rows."""
    import gzip

    import torch

    ids: list[int] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                ids += tokenizer(line.strip(), add_special_tokens=False)["input_ids"]
            if len(ids) >= num_sequences * length:
                break
    return torch.tensor(ids[: num_sequences * length]).view(num_sequences, length)


def replacement_weights(stream, tokenizer, top_k: int):
    """Sampling weights of the `unigram` and `uniform` replacements ({kind: weights over the
    vocabulary}; special tokens are never drawn) and the mask of the `top_k` most frequent tokens
    of `stream`."""
    import torch

    counts = torch.bincount(stream.flatten(), minlength=len(tokenizer)).double()
    top = torch.zeros(len(tokenizer), dtype=torch.bool)
    top[counts.topk(top_k).indices] = True
    special = torch.tensor(tokenizer.all_special_ids)
    uniform_weights = torch.ones(len(tokenizer), dtype=torch.double)
    uniform_weights[special] = 0
    unigram_weights = counts.clone()
    unigram_weights[special] = 0
    return {"unigram": unigram_weights, "uniform": uniform_weights}, top


def replacement_probe(args, checkpoint: Path, num_sequences: int = 256, batch_size: int = 32, seed: int = 0,
                      top_k: int = 100) -> dict:
    """What the ELECTRA discriminator of `checkpoint` can detect, on held-out text (the eval shard).

    The same masked positions (the pre-training collator's) are filled three ways, and the
    discriminator's AUC (replaced vs original, over real tokens) is measured for each:
    - `generator`: the checkpoint's own generator samples (what it was trained on);
    - `unigram`: tokens drawn from the held-out text's unigram distribution: frequent words, like
      the samples of a weak generator, but placed without any context;
    - `uniform`: tokens drawn uniformly from the vocabulary: mostly rare sub-words, the easiest case.
    A discriminator that separates `uniform` but not `unigram` has learnt what rare tokens look
    like, not what fits a context. `top100_share` is the share of the replacements that are among
    the `top_k` (100) most frequent held-out tokens. Returns {kind: {"auc", "replaced_share", "top100_share"}}.
    """
    import torch
    from sklearn.metrics import roc_auc_score
    from transformers import AutoTokenizer

    from electra_hf.collator import DataCollatorForElectra
    from electra_hf.modeling import ElectraForRTDPretraining

    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    model = ElectraForRTDPretraining.from_pretrained(str(checkpoint)).eval()
    config = model.config
    path = Path(args.shared_dir) / "corpus" / "gutenberg" / f"gutenberg_{args.eval_shard}.txt.gz"
    stream = held_out_rows(tokenizer, path, num_sequences, args.max_seq_length - 2)
    draw_weights, top100 = replacement_weights(stream, tokenizer, top_k)
    collator = DataCollatorForElectra(tokenizer, mask_prob=config.mask_prob, mask_token_prob=config.mask_token_prob,
                                      random_token_prob=config.random_token_prob,
                                      max_predictions_per_seq=config.max_predictions_per_seq,
                                      max_seq_length=args.max_seq_length, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    kinds = ("generator", "unigram", "uniform")
    scores = {k: [] for k in kinds}
    labels = {k: [] for k in kinds}
    top_hits = {k: [0, 0] for k in kinds}
    torch.manual_seed(seed)
    with torch.no_grad():
        for start in range(0, num_sequences, batch_size):
            rows = stream[start : start + batch_size]
            features = [{"input_ids": torch.cat([torch.tensor([tokenizer.cls_token_id]), row,
                                                 torch.tensor([tokenizer.sep_token_id])])} for row in rows]
            batch = collator(features)
            out = model(**batch)
            masked = batch["labels"] != -100
            original = torch.where(masked, batch["labels"], batch["input_ids"])
            real = batch["attention_mask"].bool()
            inputs = {"generator": out.discriminator_input_ids}
            for kind, weights in draw_weights.items():
                drawn = torch.multinomial(weights, original.numel(), replacement=True, generator=generator).view_as(original)
                inputs[kind] = torch.where(masked, drawn, original)
            for kind in kinds:
                replaced = inputs[kind] != original
                logits = (out.discriminator_logits if kind == "generator" else model.discriminator(
                    input_ids=inputs[kind], attention_mask=batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids")).logits)
                scores[kind].append(logits[real].float())
                labels[kind].append(replaced[real])
                top_hits[kind][0] += int((replaced & top100[inputs[kind]]).sum())
                top_hits[kind][1] += int(replaced.sum())
    result = {}
    for kind in kinds:
        y = torch.cat(labels[kind]).numpy()
        result[kind] = {"auc": float(roc_auc_score(y, torch.cat(scores[kind]).numpy())),
                        "replaced_share": float(y.mean()),
                        "top100_share": top_hits[kind][0] / max(top_hits[kind][1], 1)}
    return result


def glue_table(args, runs: dict, glue: dict) -> tuple[list[dict], list[str]]:
    """One row per (objective, budget point): steps, FLOPs, representation spread, GLUE scores.
    Returns the rows (for the JSON and the plot) and the Markdown table."""
    tasks = [task.name for task in resolve_task_names(args.tasks)]
    rows = []
    table = ["| objective | budget | steps | pre-training FLOPs | representation spread | " + " | ".join(tasks)
             + " | GLUE avg |", "|" + "---|" * (6 + len(tasks))]
    for objective in OBJECTIVES:
        for fraction in BUDGET_POINTS:
            result = glue[(objective, fraction)]
            steps = int(round(runs[objective]["max_steps"] * fraction))
            flops = steps * runs[objective]["flops_per_step"]
            scores = {name: result["glue_average"]["per_task"].get(name, float("nan")) for name in tasks}  # ×100 already
            average = result["glue_average"]["average"]
            rows.append({"objective": objective, "budget_fraction": fraction, "steps": steps, "flops": flops,
                         "scores": scores, "glue_average": average,
                         "representation_spread": runs[objective]["spread"].get(fraction)})
            spread = runs[objective]["spread"].get(fraction, float("nan"))
            table.append(f"| {objective} | {int(fraction * 100)}% | {steps} | {flops:.3g} | {spread:.3g} | "
                         + " | ".join(f"{scores[name]:.1f}" for name in tasks) + f" | {average:.1f} |")
    return rows, table


def held_out_tables(args, runs: dict) -> tuple[list[str], dict[str, list[dict]]]:
    """The held-out pre-training metrics at the end and over training; returns the Markdown lines and
    {objective: the metrics rows with an evaluation} (the plot's curves)."""
    lines = ["", "Held-out (Gutenberg shard 05) pre-training metrics at the end:", "",
             "| objective | generator loss | generator acc | discriminator loss | discriminator acc | discriminator AUC |",
             "|---|---|---|---|---|---|"]
    for objective in OBJECTIVES:
        ev = runs[objective]["eval"]
        lines.append(f"| {objective} | {ev.get('generator_loss', float('nan')):.3f} | {ev.get('generator_accuracy', float('nan')):.3f} | "
                     f"{ev.get('discriminator_loss', float('nan')):.4f} | {ev.get('discriminator_accuracy', float('nan')):.3f} | "
                     f"{ev.get('discriminator_auc', float('nan')):.3f} |")
    lines += ["", "Held-out metrics over training (every 1/8 of each run; 20 batches of shard 05):", "",
              "| objective | step | tokens | generator loss | generator acc | discriminator AUC |",
              "|---|---:|---:|---:|---:|---:|"]
    curves = {}
    for objective in OBJECTIVES:
        rows_seen = [row for row in read_metrics(runs[objective]["output_dir"] / "metrics.jsonl") if "eval/generator_loss" in row]
        curves[objective] = rows_seen
        for row in rows_seen:
            tokens = row["step"] * args.batch_size * args.max_seq_length
            lines.append(f"| {objective} | {row['step']} | {tokens / 1e6:.1f} M | {row['eval/generator_loss']:.3f} | "
                         f"{row['eval/generator_accuracy']:.3f} | {row.get('eval/discriminator_auc', float('nan')):.3f} |")
    return lines, curves


def timing_and_probe_lines(args, runs: dict) -> list[str]:
    """The pre-training wall-clock, the notes, the replacement probe's table and the spread's definition."""
    lines = ["", "Pre-training wall-clock: " + ", ".join(
        f"{o} {runs[o]['wall_seconds'] / 60:.1f} min ({runs[o]['max_steps']} steps)" for o in OBJECTIVES
        if runs[o]["wall_seconds"] is not None) + "; steps fixed in advance from the side-by-side calibration "
        "(`calibration.json`), so a busier machine stretches the wall-clock, not the compute."]
    if args.notes:
        lines += ["", args.notes]
    if "probe" in runs["electra"]:
        lines += ["", "What the ELECTRA discriminator detects (held-out shard, 256 sequences, the same masked "
                  "positions filled three ways; `replacement_probe`): AUC of replaced vs original, and the share "
                  "of replacements that are among the 100 most frequent held-out tokens.", "",
                  "| budget | generator samples: AUC | top-100 share | unigram draws: AUC | top-100 share "
                  "| uniform draws: AUC | top-100 share |", "|---|---:|---:|---:|---:|---:|---:|"]
        for fraction, probe in runs["electra"]["probe"].items():
            lines.append(f"| {int(fraction * 100)}% | " + " | ".join(
                f"{probe[k]['auc']:.3f} | {probe[k]['top100_share']:.2f}" for k in ("generator", "unigram", "uniform")) + " |")
    lines += ["", "Representation spread: mean over hidden dimensions of the std across tokens of the encoder's "
              "last hidden states on four held-out sentences (~0: a collapsed encoder, the same vector everywhere)."]
    return lines


def plot(args, rows: list[dict], curves: dict[str, list[dict]], path: Path) -> None:
    """GLUE average vs pre-training FLOPs, next to the held-out pre-training metrics over tokens."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axis, curve_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for objective, label in (("electra", "ELECTRA (RTD)"), ("mlm", "masked LM")):
        points = [(row["flops"], row["glue_average"]) for row in rows if row["objective"] == objective]
        axis.plot(*zip(*points), marker="o", label=label)
        steps = [row["step"] * args.batch_size * args.max_seq_length / 1e6 for row in curves[objective]]
        curve_axis.plot(steps, [row["eval/generator_loss"] for row in curves[objective]], marker=".",
                        label=f"{label}: generator / MLM loss")
        if objective == "electra":
            twin = curve_axis.twinx()
            twin.plot(steps, [row["eval/discriminator_auc"] for row in curves[objective]], color="tab:red", marker=".",
                      linestyle="--", label="ELECTRA: discriminator AUC")
            twin.set_ylabel("discriminator AUC (held out)")
            twin.set_ylim(0.4, 1.0)
            twin.legend(loc="upper right")
    axis.set_xlabel("pre-training FLOPs")
    axis.set_ylabel("GLUE dev average (median of seeds)")
    axis.set_title(f"{args.tag}: {args.preset} encoder, equal wall-clock")
    axis.grid(alpha=0.3)
    axis.legend()
    curve_axis.set_xlabel("pre-training tokens (M)")
    curve_axis.set_ylabel("held-out loss")
    curve_axis.set_title("held-out pre-training metrics (shard 05)")
    curve_axis.grid(alpha=0.3)
    curve_axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def report(args, runs: dict, glue: dict, results_dir: Path) -> None:
    """`<tag>.md`, `<tag>.json` and `<tag>.png` under `results_dir`, and the report printed."""
    rows, table = glue_table(args, runs, glue)
    held_out, curves = held_out_tables(args, runs)
    held_out += timing_and_probe_lines(args, runs)
    setup = (f"Setup: preset `{args.preset}`, vocab {args.vocab_size}, seq {args.max_seq_length}, batch {args.batch_size}, "
             f"LR {args.learning_rate} ({args.warmup_fraction:.0%} warm-up, Adam bias correction {args.adam_bias_correction}), "
             f"{args.budget_minutes} min of pre-training per objective; fine-tuning LR "
             f"{args.finetune_learning_rate}, layer decay {args.finetune_layer_decay}, ≤{args.max_finetune_samples} training "
             f"examples per task, seeds {args.seeds} (median). GLUE scores: CoLA MCC, STS-B Spearman, others accuracy (dev).")
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / f"{args.tag}.md").write_text("\n".join([f"# {args.tag}", "", setup, "", *table, *held_out]) + "\n")
    (results_dir / f"{args.tag}.json").write_text(json.dumps({"args": vars(args), "rows": rows,
                                                              "held_out": {o: runs[o]["eval"] for o in OBJECTIVES},
                                                              "replacement_probe": {str(f): v for f, v in runs["electra"].get("probe", {}).items()},
                                                              "wall_seconds": {o: runs[o]["wall_seconds"] for o in OBJECTIVES}},
                                                             indent=2, default=str))
    plot(args, rows, curves, results_dir / f"{args.tag}.png")
    print("\n".join([setup, "", *table, *held_out]))


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    work = Path(args.work_dir) / args.tag
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    objectives = [name.strip() for name in args.objectives.split(",") if name.strip()]
    unknown = sorted(set(objectives) - set(OBJECTIVES))
    if unknown or not objectives:
        raise SystemExit(f"--objectives {args.objectives!r}: choose from {', '.join(OBJECTIVES)}")
    if set(objectives) != set(OBJECTIVES) and not (work / "calibration.json").is_file():
        # Two one-objective processes calibrating at once would time each other's load.
        raise SystemExit(f"--objectives {args.objectives!r} needs {work / 'calibration.json'}: run the calibration "
                         "first (--calibrate_only, or the command without --objectives, which calibrates before it trains)")
    rates = calibrate(args, work)
    logger.info("calibrated tokens/s: %s", rates)
    if args.calibrate_only:
        return
    runs = {objective: pretrain(args, work, objective, rates[objective]) for objective in objectives}
    glue = {}
    for objective in objectives:
        checkpoints = dict(list_checkpoints(runs[objective]["output_dir"] / "checkpoints"))
        max_steps = runs[objective]["max_steps"]
        runs[objective]["spread"] = {}
        for fraction in BUDGET_POINTS:
            step = min(checkpoints, key=lambda s: abs(s - fraction * max_steps))
            glue[(objective, fraction)] = finetune(args, work, objective, checkpoints[step], fraction)
            runs[objective]["spread"][fraction] = representation_spread(checkpoints[step], SPREAD_TEXTS)
            if objective == "electra":
                runs[objective].setdefault("probe", {})[fraction] = replacement_probe(args, checkpoints[step])
    if set(objectives) != set(OBJECTIVES):
        logger.info("%s done; the command without --objectives writes the report once both are", objectives)
        return
    report(args, runs, glue, Path(args.results_dir))
    logger.info("experiment done in %.1f min", (time.perf_counter() - started) / 60)


if __name__ == "__main__":
    main()
