#!/usr/bin/env python
"""ELECTRA-Small against BERT-Small at equal, counted pre-training FLOPs, on one GPU.

Both objectives train the paper's Small encoder (hidden 256, 12 layers; ELECTRA's generator a
quarter of its width) with one tokenizer, the same data (Gutenberg shards 00-04; shard 05 held
out), batch (128 × 128), learning rate (5e-4) and schedule (warm-up, then linear decay to zero at
the run's end). ELECTRA trains --electra_steps steps (or fewer: --pretrain_minutes caps a run at
what the calibrated step does in that time); the masked LM (BERT-Small) trains the steps whose
FLOPs, counted by `electra_hf.flops`, equal --electra_steps of ELECTRA's. Each discriminator (the
masked LM's encoder) is then fine-tuned on CoLA, SST-2, MRPC, STS-B and RTE with train_glue.py's
official recipe, one process per task and seed group side by side on the GPU; the report takes
the median over seeds.

    python -m experiments.gpu_rtd_vs_mlm payload                 # here: what the GPU machine needs
    python -m experiments.gpu_rtd_vs_mlm prepare pretrain export --objectives electra --out_dir $OUT
    python -m experiments.gpu_rtd_vs_mlm finetune --objectives electra --finetune_weights export_bf16 --out_dir $OUT
    python -m experiments.gpu_rtd_vs_mlm collect --from_dir FOLDER   # here: what a device call brought back
    python -m experiments.gpu_rtd_vs_mlm report
    python -m experiments.gpu_rtd_vs_mlm payload all --tiny      # the whole command on a CPU in minutes

(from the repository root). Stages run in the order below, whatever order they are named in. A
finished stage is skipped; an interrupted pre-training resumes from its latest checkpoint; an
interrupted fine-tuning keeps its finished (task, seeds) runs.

  payload   corpus shards, GLUE train/dev files, a WordPiece tokenizer trained once on the training
            shards (every run uses this one: training one is not reproducible) and the wheels the
            GPU image lacks, into --payload_dir (git-ignored; the device call carries it)
  prepare   the pre-training examples from the payload's corpus, on all the machine's cores
  pretrain  per objective: (with --pretrain_minutes) a calibration run that times the step, then
            train_pretrain.py, then the representation spread and, for ELECTRA, the replacement
            probe of experiments.rtd_vs_mlm
  export    per objective: the pre-trained networks as bf16 safetensors in shards of at most
            --max_shard_size
  finetune  per objective: train_glue.py, one process per (task, seed group), --finetune_processes at once
  collect   what a device call brought back (records, export shards) into --work_dir
  report    JSON, Markdown table and plot under --results_dir, for the objectives that have results

`all` is prepare, pretrain, export, finetune and report. With --out_dir (a device call's $OUT) each
command leaves records.tar.gz there, and the export stage the weight shards; --deadline_minutes
stops a command in time to leave them. A --tiny run keeps everything under
experiments/runs/gpu_rtd_vs_mlm_tiny/ unless told otherwise, and refuses to write experiments/results/.
Flags for train_pretrain.py (--generator_size_ratio, --mask_prob, --sampling_method, ...) go in
--pretrain_args="...", flags for train_glue.py in --finetune_args="..."; the runs record them.
docs/experiments.md holds the plan for an H200: the device calls, their carry lists and timeouts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OBJECTIVES = ("electra", "mlm")
STAGES = ("payload", "prepare", "pretrain", "export", "finetune", "collect", "report")
ALL_STAGES = ("prepare", "pretrain", "export", "finetune", "report")
# --tiny: the whole command on a CPU in minutes, every file written as on the GPU.
TINY_SETTINGS = {
    "preset": "tiny", "vocab_size": 2000, "batch_size": 8, "electra_steps": 40, "evaluations": 4,
    "train_shards": "00,01", "corpus_lines": 3000, "mixed_precision": "no", "dataloader_num_workers": 0,
    "preprocessing_num_workers": 2, "wheels": "false", "finetune_processes": 2, "max_shard_size": "400KB",
    "seeds_per_process": 3, "eval_lines": 3000, "calibration_steps": 8, "finetune_weights": "export_bf16",
    "finetune_args": "--model_size small --max_train_samples 64 --max_eval_samples 64 --num_train_epochs 1",
}
TINY_SCRATCH = REPO / "experiments" / "runs" / "gpu_rtd_vs_mlm_tiny"
COMMITTED_RESULTS = REPO / "experiments" / "results"
COMMAND = "python -m experiments.gpu_rtd_vs_mlm"

logger = logging.getLogger("gpu_rtd_vs_mlm")


class DeadlineReached(BaseException):
    """--deadline_minutes passed (a BaseException, so that no `except Exception` in a loop keeps going)."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m experiments.gpu_rtd_vs_mlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", choices=[*STAGES, "all"], help="What to do (see above).")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="Comma-separated: electra, mlm.")
    parser.add_argument("--tiny", action="store_true", help="A CPU rehearsal of minutes: "
                        + ", ".join(f"{key} {value}" for key, value in TINY_SETTINGS.items()) + " (flags given win).")
    parser.add_argument("--payload_dir", default=None,
                        help="What travels to the GPU machine; its data/ is what every stage reads. Default: "
                             "experiments/runs/gpu_payload (git-ignored, so that a device call carries the parts it names).")
    parser.add_argument("--source_dir", default=str(REPO.parent / "shared" / "data"),
                        help="payload: where the corpus (corpus/gutenberg) and GLUE (glue/) are copied from.")
    parser.add_argument("--corpus_lines", type=int, default=None, help="payload: only the first N lines of each training shard.")
    parser.add_argument("--eval_lines", type=int, default=60_000,
                        help="payload: the first N lines of the held-out shard (60k lines, about 0.7 M tokens, hold "
                             "the evaluations' 20 batches and the probe's 256 sequences in 1.2 MB instead of 6.4).")
    parser.add_argument("--tokenizer_from", default=None,
                        help="payload: copy this tokenizer folder (e.g. an earlier run's export) instead of training one.")
    parser.add_argument("--wheels", default="true", choices=["true", "false"],
                        help="payload: download the wheels the GPU image lacks (datasets, dill, multiprocess, evaluate).")
    parser.add_argument("--work_dir", default=None, help="Runs, checkpoints, caches and collected exports (git-ignored). "
                        "Default: experiments/runs/gpu_rtd_vs_mlm.")
    parser.add_argument("--results_dir", default=None, help="report: where files go. Default: experiments/results; "
                        f"with --tiny, {TINY_SCRATCH.relative_to(REPO)}/results (a --tiny run never writes experiments/results).")
    parser.add_argument("--out_dir", default=None, help="A device call's $OUT: records, export shards.")
    parser.add_argument("--from_dir", default=None, help="collect: the folder of files a device call brought back.")
    parser.add_argument("--deadline_minutes", type=float, default=None,
                        help="Stop after this long (the command's records still go to --out_dir); rerun to continue.")
    add_pretraining_options(parser)
    add_finetuning_options(parser)
    args = parser.parse_args(argv)
    if args.tiny:
        apply_tiny_settings(args, argv if argv is not None else sys.argv[1:])
    set_default_folders(args)
    if args.tiny and is_within(Path(args.results_dir), COMMITTED_RESULTS):
        parser.error(f"--tiny writes rehearsal numbers: give a --results_dir outside {COMMITTED_RESULTS}")
    args.shared_dir = str(Path(args.payload_dir) / "data")  # rtd_vs_mlm's helpers read the corpus from here
    args.objective_list = [name.strip() for name in args.objectives.split(",") if name.strip()]
    unknown = sorted(set(args.objective_list) - set(OBJECTIVES))
    if unknown or not args.objective_list:
        parser.error(f"--objectives {args.objectives!r}: choose from {', '.join(OBJECTIVES)}")
    named = set(args.stages) | (set(ALL_STAGES) if "all" in args.stages else set())
    args.stage_list = [stage for stage in STAGES if stage in named]
    if "collect" in args.stage_list and not args.from_dir:
        parser.error("collect needs --from_dir")
    return args


def apply_tiny_settings(args, argv: list[str]) -> None:
    given = {arg.split("=")[0].lstrip("-") for arg in argv if arg.startswith("--")}
    for name, value in TINY_SETTINGS.items():
        if name not in given:
            setattr(args, name, value)


def set_default_folders(args) -> None:
    """The folders not given: under experiments/runs/ (git-ignored); a --tiny run's all in its scratch folder."""
    if args.tiny:
        defaults = {"payload_dir": TINY_SCRATCH / "payload", "work_dir": TINY_SCRATCH / "work",
                    "results_dir": TINY_SCRATCH / "results"}
    else:
        defaults = {"payload_dir": REPO / "experiments" / "runs" / "gpu_payload",
                    "work_dir": REPO / "experiments" / "runs" / "gpu_rtd_vs_mlm", "results_dir": COMMITTED_RESULTS}
    for name, folder in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, str(folder))


def is_within(path: Path, folder: Path) -> bool:
    return path.resolve() == folder.resolve() or folder.resolve() in path.resolve().parents


def add_pretraining_options(parser: argparse.ArgumentParser) -> None:
    from experiments.rtd_vs_mlm import add_pretraining_arguments

    group = parser.add_argument_group("pre-training (both objectives)")
    group.add_argument("--preset", default="small", help="The encoder (the masked LM is the discriminator's size).")
    group.add_argument("--vocab_size", type=int, default=30522, help="payload: the tokenizer's vocabulary.")
    # 5% warm-up: the paper's 10k steps are 1% of 1M; 5% of a 19k-step run is about 1k steps.
    add_pretraining_arguments(group, batch_size=128, warmup_fraction=0.05)
    group.add_argument("--electra_steps", type=int, default=19_000,
                       help="ELECTRA's optimizer steps: 19k × 128 × 128 = 311 M token positions, about 302 M tokens at "
                            "the packing's 97%% fill. The masked LM gets the steps of equal counted FLOPs.")
    group.add_argument("--pretrain_minutes", type=float, default=None,
                       help="Cap each pre-training at what the machine's measured step rate does in this many minutes: "
                            "a calibration run of --calibration_steps steps times the step first, then the run gets "
                            "min(its planned steps, minutes × steps/s), its schedule scaled to those steps.")
    group.add_argument("--reserve_minutes", type=float, default=1.5,
                       help="With --deadline_minutes: the time a run needs besides its training steps (compilation, "
                            "evaluations, checkpoints, export, records); the steps get what is left, at most --pretrain_minutes.")
    group.add_argument("--calibration_steps", type=int, default=200,
                       help="Steps of the calibration run (the first fifth, compilation included, is not timed).")
    group.add_argument("--evaluations", type=int, default=16, help="Held-out evaluations over each run.")
    group.add_argument("--mixed_precision", default="bf16", help="no | bf16 | fp16.")
    group.add_argument("--dataloader_num_workers", type=int, default=8,
                       help="Masking runs in these processes (at 70 steps/s each of 8 makes a batch in 110 ms).")
    group.add_argument("--preprocessing_num_workers", type=int, default=os.cpu_count() or 1)
    group.add_argument("--pretrain_args", default="", help="More train_pretrain.py flags, for both objectives.")
    group.add_argument("--max_shard_size", default="15MB", help="export: the largest safetensors shard.")


def add_finetuning_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--tasks", default="cola,sst2,mrpc,stsb,rte")
    group.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    group.add_argument("--finetune_processes", type=int, default=15, help="train_glue.py processes at once.")
    group.add_argument("--seeds_per_process", type=int, default=1,
                       help="Seeds one train_glue.py process runs one after the other (more: fewer process starts).")
    group.add_argument("--finetune_weights", default="pretrain", choices=["pretrain", "export_bf16"],
                       help="pretrain: the run's fp32 export; export_bf16: the bf16 export (what comes back from the "
                            "pre-training's machine and is carried to the fine-tuning's), converted to fp32 first.")
    group.add_argument("--finetune_args", default="", help="More train_glue.py flags.")


# --------------------------------------------------------------------------------------------
# Pre-training
# --------------------------------------------------------------------------------------------
def run_dir(args, objective: str) -> Path:
    return Path(args.work_dir) / objective


def pretraining_argv(args, objective: str, output_dir: Path, max_steps: int) -> list[str]:
    """train_pretrain.py's arguments: the CPU experiment's, with the payload's tokenizer, this
    machine's workers, the precision and --pretrain_args."""
    from experiments.rtd_vs_mlm import pretrain_argv

    extra = ["--tokenizer_name_or_path", str(Path(args.payload_dir) / "tokenizer"),
             "--mixed_precision", args.mixed_precision, *shlex.split(args.pretrain_args)]
    return pretrain_argv(args, objective, output_dir, max_steps, extra, loader_workers=args.dataloader_num_workers,
                         preprocessing_workers=args.preprocessing_num_workers, evaluations=args.evaluations)


def planned_steps(args) -> dict[str, dict]:
    """{objective: {"steps", "flops_per_step"}}: ELECTRA's --electra_steps, and the masked LM's
    steps of equal counted FLOPs (both models built from the configs their runs use)."""
    import train_pretrain
    from electra_hf.flops import pretraining_flops_per_step
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(Path(args.payload_dir) / "tokenizer")))
    flops = {}
    for objective in OBJECTIVES:
        model_args, data_args, _ = train_pretrain.parse_args(pretraining_argv(args, objective, Path("unused"), 1))
        config = train_pretrain.build_config(model_args, data_args, vocab_size)
        flops[objective] = pretraining_flops_per_step(config, args.batch_size, args.max_seq_length)
    mlm_steps = round(args.electra_steps * flops["electra"] / flops["mlm"])
    return {"electra": {"steps": args.electra_steps, "flops_per_step": flops["electra"]},
            "mlm": {"steps": mlm_steps, "flops_per_step": flops["mlm"]}}


def prepare(args) -> None:
    """The examples of both objectives (one data set: the masking happens in the loader), cached
    where train_pretrain.py finds them."""
    from experiments.gpu_rtd_vs_mlm_payload import verify_payload

    import train_pretrain
    from electra_hf import data as electra_data

    record = Path(args.work_dir) / "prepare.json"
    if record.is_file():
        logger.info("prepare: done before (%s)", record)
        return
    verify_payload(Path(args.payload_dir))
    started = time.perf_counter()
    _, data_args, _ = train_pretrain.parse_args(pretraining_argv(args, "electra", Path(args.work_dir) / "unused", 1))
    tokenizer, examples = electra_data.prepare_pretraining_data(data_args)
    summary = {split: electra_data.describe_examples(dataset, args.max_seq_length) for split, dataset in examples.items()}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"seconds": round(time.perf_counter() - started, 1), "workers":
                                  args.preprocessing_num_workers, "examples": summary}, indent=2))
    logger.info("prepare: %s in %.0f s", summary, time.perf_counter() - started)


def pretrain(args, objective: str) -> None:
    """train_pretrain.py for the planned steps, capped by --pretrain_minutes at the calibrated rate
    (resumed from the latest checkpoint if there is one), then the run's record: steps, counted
    FLOPs, tokens, machine, collapse check, probe."""
    import train_pretrain

    run, out = run_dir(args, objective), run_dir(args, objective) / "pretrain"
    if (run / "run.json").is_file():
        logger.info("pretrain %s: done before (%s)", objective, run / "run.json")
        return
    plan = fitted_plan(args, objective)
    if not (out / "results.json").is_file():
        argv = pretraining_argv(args, objective, out, plan["steps"])
        if (out / "checkpoints").is_dir():
            argv += ["--resume_from_checkpoint", "latest"]
        with attempt(run, "pretrain"):
            train_pretrain.main(argv)
    write_run_record(args, objective, plan)


def fitted_plan(args, objective: str) -> dict:
    """The objective's planned steps (planned_steps), and with --pretrain_minutes the steps the
    calibrated rate does in that time if fewer; kept in <run>/plan.json so that a resumed run keeps
    its schedule."""
    record = run_dir(args, objective) / "plan.json"
    if record.is_file():
        return json.loads(record.read_text())
    plan = {**planned_steps(args)[objective], "pretrain_minutes": args.pretrain_minutes}
    plan["target_steps"] = plan["steps"]
    if args.pretrain_minutes:
        plan["calibrated_steps_per_second"] = calibrate(args, objective)
        plan["training_minutes"] = training_minutes(args)
        plan["steps"] = capped_steps(plan["target_steps"], plan["calibrated_steps_per_second"], plan["training_minutes"])
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(plan, indent=2))
    logger.info("pretrain %s: %d steps planned (target %d)", objective, plan["steps"], plan["target_steps"])
    return plan


def training_minutes(args) -> float:
    """--pretrain_minutes, or less when --deadline_minutes leaves less after --reserve_minutes (the
    run's compilation, evaluations, checkpoints, export and records)."""
    if not args.deadline_minutes:
        return args.pretrain_minutes
    left = args.deadline_minutes - (time.monotonic() - args.started) / 60 - args.reserve_minutes
    return max(0.0, min(args.pretrain_minutes, left))


def capped_steps(target_steps: int, steps_per_second: float, minutes: float) -> int:
    """The planned steps, or the steps `minutes` of training at `steps_per_second` do if fewer."""
    return max(1, min(target_steps, int(steps_per_second * minutes * 60)))


def calibrate(args, objective: str) -> float:
    """Optimizer steps per second of train_pretrain.py's step on this machine: a run of
    --calibration_steps steps with the real run's flags, timed by its own logs (the median window
    after the first fifth of the steps, which holds the compilation)."""
    import statistics

    import train_pretrain
    from electra_hf.plotting import read_metrics

    out = run_dir(args, objective) / "calibration"
    steps = max(2, args.calibration_steps)
    window = max(1, steps // 10)
    argv = pretraining_argv(args, objective, out, steps) + [
        "--logging_steps", str(window), "--eval_steps", "0", "--checkpointing_steps", "0", "--overwrite_output_dir", "true"]
    with attempt(run_dir(args, objective), "calibrate"):
        train_pretrain.main(argv)
    rates = [row["train/steps_per_second"] for row in read_metrics(out / "metrics.jsonl")
             if "train/steps_per_second" in row and row["step"] > steps // 5]
    if not rates:
        raise RuntimeError(f"calibration of {objective}: no timed window in {out / 'metrics.jsonl'}")
    logger.info("calibration %s: %.2f steps/s over %d windows", objective, statistics.median(rates), len(rates))
    return statistics.median(rates)


def write_run_record(args, objective: str, plan: dict) -> None:
    """run.json: what the report needs from a finished pre-training."""
    from experiments.rtd_vs_mlm import SPREAD_TEXTS, replacement_probe, representation_spread

    from electra_hf.checkpoints import list_checkpoints
    from electra_hf.data.tokenizer import plain_backend, tokenizer_fingerprint
    from transformers import AutoTokenizer

    run, out = run_dir(args, objective), run_dir(args, objective) / "pretrain"
    results = json.loads((out / "results.json").read_text())
    run_config = json.loads((out / "run_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    steps = results["completed_steps"]
    record = {
        "objective": objective, "steps": steps, "flops_per_step": plan["flops_per_step"],
        "flops": steps * plan["flops_per_step"], "tokens_seen": results["tokens_seen"], "plan": plan,
        "token_positions": steps * args.batch_size * args.max_seq_length, "final_eval": results["eval"],
        "device": machine_description(), "finished": datetime.datetime.now().isoformat(timespec="seconds"),
        "tokenizer_fingerprint": tokenizer_fingerprint(plain_backend(tokenizer)),
        "pretrain_args": args.pretrain_args, "model_config": run_config["model_config"],
        "step_compilation": run_config.get("compilation"),  # what build_run chose (None: eager)
        "mixed_precision": args.mixed_precision, "preset": args.preset, "batch_size": args.batch_size,
        "max_seq_length": args.max_seq_length, "learning_rate": args.learning_rate,
        "warmup_fraction": args.warmup_fraction, "adam_bias_correction": args.adam_bias_correction,
        "representation_spread": representation_spread(out / "export", SPREAD_TEXTS),
    }
    if objective == "electra":
        record["replacement_probe"] = replacement_probe(args, list_checkpoints(out / "checkpoints")[-1][1])
    (run / "run.json").write_text(json.dumps(record, indent=2))
    logger.info("pretrain %s: %d steps, %.3g FLOPs, %.1f M tokens; held out %s", objective, steps, record["flops"],
                record["tokens_seen"] / 1e6, results["eval"])


def machine_description() -> str:
    import platform

    import torch

    cores = f"{os.cpu_count()} CPU cores"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)}, {cores}, torch {torch.__version__}"
    return f"CPU only ({platform.machine()}, {cores}), torch {torch.__version__}"


class attempt:
    """Appends one line per command to <run>/attempts.jsonl: the stage, its wall-clock, the command
    line and whether it finished (the report sums the time of every attempt)."""

    def __init__(self, run: Path, stage: str):
        self.path, self.stage = run / "attempts.jsonl", stage

    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind, error, trace):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = {"stage": self.stage, "seconds": round(time.perf_counter() - self.started, 1), "finished": kind is None,
                "ended": datetime.datetime.now().isoformat(timespec="seconds"), "device": machine_description(),
                "command": " ".join([COMMAND, *map(shlex.quote, sys.argv[1:])])}
        with self.path.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        return False


# --------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------
def seed_groups(args) -> list[list[int]]:
    """The seeds in runs of --seeds_per_process, one train_glue.py process each."""
    size = max(1, args.seeds_per_process)
    return [args.seeds[start:start + size] for start in range(0, len(args.seeds), size)]


def seeds_folder(root: Path, task_config: str, seeds: list[int]) -> Path:
    return root / f"{task_config}_seed{'-'.join(map(str, seeds))}"


def finetune_jobs(args, objective: str) -> list[tuple[str, list[int], Path]]:
    """(task, seeds, output folder) of every fine-tuning process still to run, the longest first
    (training examples × epochs, swapped pairs counted), so that the long ones start while processes are free."""
    from electra_hf.tasks.glue import resolve_task_names

    glue_dir = Path(args.shared_dir) / "glue"

    def cost(task) -> float:
        train_file = glue_dir / dict(task.layouts)["train"].files[0]
        rows = sum(1 for _ in train_file.open(encoding="utf-8"))
        return rows * task.num_train_epochs * (2 if task.train_on_swapped_pairs else 1)

    tasks = sorted(resolve_task_names(args.tasks), key=cost, reverse=True)
    root = run_dir(args, objective) / "finetune"
    jobs = [(task.name, seeds, seeds_folder(root, task.hub_config, seeds)) for task in tasks for seeds in seed_groups(args)]
    return [job for job in jobs if not (job[2] / "results.json").is_file()]


def finetune(args, objective: str) -> None:
    """Every (task, seed group) as its own train_glue.py process, --finetune_processes at a time,
    then glue.json: the per-seed scores, their medians and the GLUE average."""
    run = run_dir(args, objective)
    weights = run / "pretrain" / "export" if args.finetune_weights == "pretrain" else fp32_copy_of_bf16_export(run)
    if not weights.is_dir():
        raise FileNotFoundError(f"finetune {objective}: {weights} does not exist (run the pretrain stage first)")
    jobs = finetune_jobs(args, objective)
    if jobs:
        with attempt(run, "finetune"):
            run_processes(args, [job_command(args, weights, *job) for job in jobs])
    write_glue_record(args, objective)


def fp32_copy_of_bf16_export(run: Path) -> Path:
    """<run>/export_bf16_in_fp32/: the bf16 export's encoder (discriminator or masked LM) in fp32,
    so that fine-tuning from it trains fp32 weights (from_pretrained keeps a checkpoint's bf16)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, ElectraForPreTraining

    copy = run / "export_bf16_in_fp32"
    kinds = [kind for kind in ("discriminator", "mlm") if (run / "export_bf16" / kind / "config.json").is_file()]
    if not kinds:
        raise FileNotFoundError(f"{run / 'export_bf16'} holds no discriminator or mlm export (run the export "
                                "stage, or collect what a device call brought back)")
    kind = kinds[0]
    if not (copy / kind / "config.json").is_file():
        model_class = ElectraForPreTraining if kind == "discriminator" else AutoModelForMaskedLM
        model = model_class.from_pretrained(str(run / "export_bf16" / kind), dtype=torch.float32)
        model.save_pretrained(str(copy / kind))
        AutoTokenizer.from_pretrained(str(run / "export_bf16" / kind)).save_pretrained(str(copy / kind))
    return copy


def job_command(args, weights: Path, task: str, seeds: list[int], output_dir: Path) -> tuple[list[str], Path]:
    argv = [sys.executable, str(REPO / "train_glue.py"), "--model_name_or_path", str(weights), "--task_name", task,
            "--data_dir", str(Path(args.shared_dir) / "glue"), "--seeds", *map(str, seeds), "--output_dir", str(output_dir),
            "--save_model", "false", "--disable_tqdm", "true", "--resume_from_checkpoint", "latest",
            *shlex.split(args.finetune_args)]
    return argv, output_dir / "train_glue.log"


def run_processes(args, commands: list[tuple[list[str], Path]]) -> None:
    """Run the commands, at most --finetune_processes at a time, each logging to its file; stop
    them all at the deadline; raise if any failed (naming its log)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // args.finetune_processes)),
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    waiting, running, failed = list(commands), [], []
    try:
        while waiting or running:
            while waiting and len(running) < args.finetune_processes:
                argv, log = waiting.pop(0)
                log.parent.mkdir(parents=True, exist_ok=True)
                with log.open("w") as handle:
                    running.append((subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=env), log))
                logger.info("started %s (log: %s)", log.parent.name, log)
            time.sleep(1)
            for process, log in [item for item in running if item[0].poll() is not None]:
                running.remove((process, log))
                if process.returncode:
                    failed.append(f"{log} (exit status {process.returncode})")
                logger.info("%s: exit status %d; %d running, %d waiting", log.parent.name, process.returncode,
                            len(running), len(waiting))
    finally:
        for process, _ in running:
            process.terminate()
        for process, _ in running:
            process.wait()
    if failed:
        raise RuntimeError("train_glue.py failed: " + "; ".join(failed))


def write_glue_record(args, objective: str) -> None:
    """glue.json from the (task, seed) runs' results.json: per task the median over seeds of every
    metric, the per-seed scores and the weights fine-tuned; the GLUE average of the medians."""
    from electra_hf.seeds import median_metrics
    from electra_hf.tasks.glue import glue_average, resolve_task_names

    root = run_dir(args, objective) / "finetune"
    medians, per_seed, weights = {}, {}, {}
    for task in resolve_task_names(args.tasks):
        runs = [json.loads((seeds_folder(root, task.hub_config, seeds) / "results.json").read_text())
                for seeds in seed_groups(args)]
        metrics = [scores for result in runs for scores in result["tasks"][task.name]["per_seed"]]
        medians[task.name] = median_metrics(metrics)
        per_seed[task.hub_config] = [100 * m[task.average_key] for m in metrics]
        weights[task.hub_config] = sorted({result["model_weights"] for result in runs})
    average = glue_average(medians)
    scores = {task.hub_config: average["per_task"][task.name] for task in resolve_task_names(args.tasks)}
    record = {"glue": scores, "glue_average": average["average"], "per_seed": per_seed, "seeds": args.seeds,
              "medians": medians, "model_weights": weights, "finetune_args": args.finetune_args}
    (run_dir(args, objective) / "glue.json").write_text(json.dumps(record, indent=2))
    logger.info("finetune %s: %s, average %.2f", objective, scores, average["average"])


# --------------------------------------------------------------------------------------------
def arm_deadline(minutes: float) -> None:
    def stop(signum, frame):
        raise DeadlineReached(f"--deadline_minutes {minutes} reached")

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(max(1, int(minutes * 60)))


def run_stage(args, stage: str) -> None:
    from experiments import gpu_rtd_vs_mlm_payload as payload
    from experiments.gpu_rtd_vs_mlm_report import report

    per_objective = {"pretrain": pretrain, "export": payload.export, "finetune": finetune}
    if stage in per_objective:
        for objective in args.objective_list:
            per_objective[stage](args, objective)
    else:
        {"payload": payload.build_payload, "prepare": prepare, "collect": payload.collect, "report": report}[stage](args)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.started = time.monotonic()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.deadline_minutes:
        arm_deadline(args.deadline_minutes)
    status, stage = 0, None
    try:
        for stage in args.stage_list:
            logger.info("== %s", stage)
            run_stage(args, stage)
    except DeadlineReached as stop:
        logger.error("%s during %s: rerun the same command to continue", stop, stage)
        status = 3
    finally:
        signal.alarm(0)
        if args.out_dir:
            from experiments.gpu_rtd_vs_mlm_payload import pack_records

            pack_records(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
