"""The report of experiments.gpu_rtd_vs_mlm: gpu_rtd_vs_mlm.json, .md and .png under --results_dir.

The JSON holds {"device", "runs": [{"objective", "pretrain_tokens", "pretrain_flops", "glue": {cola,
sst2, mrpc, stsb, rte}, "glue_average", ...}], ...}; each run also carries its steps, held-out
metrics over training, per-seed scores, wall-clock and commands. The report covers the objectives
whose pre-training has finished, so that a first GPU window can report its half.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from electra_hf.plotting import read_metrics

logger = logging.getLogger("gpu_rtd_vs_mlm")

NAME = "gpu_rtd_vs_mlm"
LABELS = {"electra": "ELECTRA-Small", "mlm": "BERT-Small (masked LM)"}
TASK_LABELS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
HELD_OUT_KEYS = ("generator_loss", "generator_accuracy", "discriminator_loss", "discriminator_accuracy",
                 "discriminator_auc")


def load_runs(args) -> dict[str, dict]:
    """{objective: its records} for every objective with a finished pre-training (run.json)."""
    from experiments.gpu_rtd_vs_mlm import OBJECTIVES, run_dir

    runs = {}
    for objective in OBJECTIVES:
        folder = run_dir(args, objective)
        if not (folder / "run.json").is_file():
            continue
        run = json.loads((folder / "run.json").read_text())
        glue_file = folder / "glue.json"
        run["glue_record"] = json.loads(glue_file.read_text()) if glue_file.is_file() else None
        attempts = folder / "attempts.jsonl"
        run["attempts"] = [json.loads(line) for line in attempts.read_text().splitlines()] if attempts.is_file() else []
        run["curve"] = [held_out_point(row, run) for row in read_metrics(folder / "pretrain" / "metrics.jsonl")
                        if "eval/generator_loss" in row]
        runs[objective] = run
    if not runs:
        raise FileNotFoundError(f"report: no finished pre-training (run.json) under {args.work_dir}")
    fingerprints = {run["tokenizer_fingerprint"] for run in runs.values()}
    if len(fingerprints) > 1:
        raise ValueError(f"the runs used different tokenizers ({sorted(fingerprints)}): the comparison needs one "
                         "(carry the same payload tokenizer to every machine: payload --tokenizer_from)")
    return runs


def held_out_point(row: dict, run: dict) -> dict:
    point = {"step": row["step"], "token_positions": row["step"] * run["batch_size"] * run["max_seq_length"],
             "flops": row["step"] * run["flops_per_step"]}
    point.update({key: row[f"eval/{key}"] for key in HELD_OUT_KEYS if f"eval/{key}" in row})
    return point


def wall_seconds(run: dict) -> dict[str, float]:
    seconds: dict[str, float] = {}
    for line in run["attempts"]:
        seconds[line["stage"]] = seconds.get(line["stage"], 0.0) + line["seconds"]
    return seconds


def run_entry(objective: str, run: dict) -> dict:
    """One element of the JSON's "runs" (the issue's schema, and what lies behind it)."""
    glue = run["glue_record"] or {}
    return {
        "objective": objective, "pretrain_tokens": int(run["tokens_seen"]), "pretrain_flops": float(run["flops"]),
        "glue": glue.get("glue"), "glue_average": glue.get("glue_average"),
        "pretrain_steps": run["steps"], "pretrain_target_steps": run["plan"]["target_steps"],
        "calibrated_steps_per_second": run["plan"].get("calibrated_steps_per_second"),
        "pretrain_token_positions": run["token_positions"],
        "flops_per_step": run["flops_per_step"], "glue_per_seed": glue.get("per_seed"), "seeds": glue.get("seeds"),
        "held_out_final": run["final_eval"], "held_out": run["curve"],
        "representation_spread": run["representation_spread"], "replacement_probe": run.get("replacement_probe"),
        "wall_seconds": wall_seconds(run), "commands": sorted({line["command"] for line in run["attempts"]}),
        "device": run["device"], "finished": run["finished"], "step_compilation": run["step_compilation"],
        "pretrain_args": run["pretrain_args"], "finetune_args": glue.get("finetune_args"),
        "finetuned_weights": glue.get("model_weights"),
    }


def report(args) -> None:
    runs = load_runs(args)
    entries = [run_entry(objective, run) for objective, run in runs.items()]
    flops = [entry["pretrain_flops"] for entry in entries]
    first = next(iter(runs.values()))
    document = {"device": "; ".join(sorted({entry["device"] for entry in entries})), "runs": entries,
                "flops_ratio_max_to_min": max(flops) / min(flops), "setup": setup_of(first),
                "tokenizer_fingerprint": first["tokenizer_fingerprint"]}
    results = Path(args.results_dir)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{NAME}.json").write_text(json.dumps(document, indent=2))
    markdown = "\n".join(markdown_lines(document)) + "\n"
    (results / f"{NAME}.md").write_text(markdown)
    plot(entries, results / f"{NAME}.png")
    print(markdown)


def setup_of(run: dict) -> dict:
    keys = ("preset", "batch_size", "max_seq_length", "learning_rate", "warmup_fraction", "adam_bias_correction",
            "mixed_precision")
    return {key: run[key] for key in keys}


def markdown_lines(document: dict) -> list[str]:
    entries, setup = document["runs"], document["setup"]
    lines = ["# ELECTRA-Small vs BERT-Small at equal pre-training FLOPs (`experiments/gpu_rtd_vs_mlm.py`)", "",
             f"Machine: {document['device']}. Finished: " + ", ".join(f"{e['objective']} {e['finished']}" for e in entries)
             + ". Wall-clock: " + "; ".join(f"{e['objective']} " + ", ".join(f"{stage} {s / 60:.1f} min" for stage, s in
                                                                          e["wall_seconds"].items()) for e in entries) + ".",
             "", f"Setup: preset `{setup['preset']}`, batch {setup['batch_size']} × {setup['max_seq_length']}, LR "
             f"{setup['learning_rate']} ({setup['warmup_fraction']:.0%} warm-up, then linear decay to 0; Adam bias "
             f"correction {setup['adam_bias_correction']}), mixed precision {setup['mixed_precision']}, one tokenizer "
             f"(`{document['tokenizer_fingerprint'][:12]}`). Counted pre-training FLOPs, largest / smallest run: "
             f"{document['flops_ratio_max_to_min']:.4f}. Steps: trained (planned for equal FLOPs; fewer where "
             "--pretrain_minutes capped the run at the calibrated step rate). GLUE dev scores ×100, median of seeds: "
             "CoLA MCC, STS-B Spearman, the others accuracy.", ""]
    lines += ["| objective | steps (planned) | tokens | pre-training FLOPs | " + " | ".join(TASK_LABELS.values())
              + " | GLUE avg |", "|---|---:|---:|---:|" + "---:|" * (len(TASK_LABELS) + 1)]
    for e in entries:
        scores = [f"{e['glue'][task]:.1f}" if e["glue"] else "–" for task in TASK_LABELS]
        average = f"{e['glue_average']:.1f}" if e["glue_average"] is not None else "–"
        lines.append(f"| {LABELS[e['objective']]} | {e['pretrain_steps']:,} ({e['pretrain_target_steps']:,}) | "
                     f"{e['pretrain_tokens'] / 1e6:,.1f} M | "
                     f"{e['pretrain_flops']:.3g} | " + " | ".join(scores) + f" | {average} |")
    lines += ["", "Per seed (seeds " + ", ".join(str(e["seeds"]) for e in entries if e["seeds"]) + "):", "",
              "| objective | " + " | ".join(TASK_LABELS.values()) + " |", "|---|" + "---|" * len(TASK_LABELS)]
    for e in entries:
        if e["glue_per_seed"]:
            lines.append(f"| {LABELS[e['objective']]} | " + " | ".join(
                ", ".join(f"{value:.1f}" for value in e["glue_per_seed"][task]) for task in TASK_LABELS) + " |")
    return lines + held_out_lines(entries) + probe_lines(entries) + command_lines(entries)


def held_out_lines(entries: list[dict]) -> list[str]:
    lines = ["", "Held-out metrics over training (Gutenberg shard 05, the same 20 batches and masks each time; for "
             "the masked LM the generator columns are its own):", "",
             "| objective | step | tokens (M) | FLOPs | generator loss | generator acc | discriminator loss | "
             "discriminator acc | discriminator AUC |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in entries:
        for point in e["held_out"]:
            values = " | ".join(f"{point[key]:.3f}" if key in point else "–" for key in HELD_OUT_KEYS)
            lines.append(f"| {e['objective']} | {point['step']:,} | {point['token_positions'] / 1e6:,.1f} | "
                         f"{point['flops']:.3g} | {values} |")
    return lines


def probe_lines(entries: list[dict]) -> list[str]:
    lines = ["", "Representation spread (std across tokens of the last hidden states; ~0: a collapsed encoder): "
             + ", ".join(f"{e['objective']} {e['representation_spread']:.3g}" for e in entries) + "."]
    probe = next((e["replacement_probe"] for e in entries if e["replacement_probe"]), None)
    if probe:
        lines += ["", "What the ELECTRA discriminator detects (held-out shard 05, 256 sequences, the same masked "
                  "positions filled three ways; `experiments.rtd_vs_mlm.replacement_probe`):", "",
                  "| replacements | AUC | share among the 100 most frequent tokens |", "|---|---:|---:|"]
        lines += [f"| {kind} | {result['auc']:.3f} | {result['top100_share']:.2f} |" for kind, result in probe.items()]
    return lines


def command_lines(entries: list[dict]) -> list[str]:
    lines = ["", "Commands (every attempt, in the run's attempts.jsonl):", "", "```"]
    for e in entries:
        lines += e["commands"]
    extra = [f"{e['objective']}: --pretrain_args={e['pretrain_args']!r} --finetune_args={e['finetune_args']!r}"
             for e in entries if e["pretrain_args"] or e["finetune_args"]]
    return lines + ["```"] + (["", "Extra flags: " + "; ".join(extra)] if extra else [])


def plot(entries: list[dict], path: Path) -> None:
    """GLUE average against pre-training FLOPs, and the held-out metrics against FLOPs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (glue_axis, loss_axis, detector_axis) = plt.subplots(1, 3, figsize=(16, 4.2))
    for e in entries:
        label = LABELS[e["objective"]]
        if e["glue_average"] is not None:
            glue_axis.scatter([e["pretrain_flops"]], [e["glue_average"]], s=60, label=label)
        flops = [point["flops"] for point in e["held_out"]]
        loss_axis.plot(flops, [point.get("generator_loss") for point in e["held_out"]], marker=".", label=label)
        if e["objective"] == "electra":
            for key in ("discriminator_auc", "discriminator_accuracy"):
                detector_axis.plot(flops, [point.get(key) for point in e["held_out"]], marker=".", label=key)
    glue_axis.set(xlabel="pre-training FLOPs", ylabel="GLUE dev average (median of seeds)", title="fine-tuned")
    loss_axis.set(xlabel="pre-training FLOPs", ylabel="held-out loss at masked positions",
                  title="generator (ELECTRA) / masked LM (BERT)")
    detector_axis.set(xlabel="pre-training FLOPs", ylabel="held out", title="ELECTRA discriminator")
    for axis in (glue_axis, loss_axis, detector_axis):
        axis.grid(alpha=0.3)
        if axis.has_data():
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
