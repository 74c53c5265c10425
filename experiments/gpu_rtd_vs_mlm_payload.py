"""What travels between this machine and the GPU machine for experiments.gpu_rtd_vs_mlm.

To the GPU machine, `build_payload` (the `payload` stage) gathers into --payload_dir, which the
device call names in `carry`:
    data/corpus/gutenberg/gutenberg_<shard>.txt.gz   the training shards and the held-out one
    data/glue/<Task>/{train,dev}.tsv                  the GLUE tasks' training and dev files
    tokenizer/                                        WordPiece, trained once on the training shards
    whl/                                              datasets, dill, multiprocess, evaluate for CPython 3.12
    manifest.json                                     every file's size and SHA-256, the tokenizer's fingerprint
Back from it, in a device call's $OUT (at most 8 files of at most 16 MiB, at most 2 folders down):
    records.tar.gz                      per objective of the command its small files: records, metrics, logs,
                                        plots, and its bf16 export but the weights (configs, shard index,
                                        tokenizer, model card) (`pack_records`)
    <objective>_<kind>/*.safetensors    the bf16 export's shards (`export`): ELECTRA's discriminator (2 shards
                                        at Small) and generator (1), the masked LM's network (2)
`collect` puts them back together under --work_dir.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

logger = logging.getLogger("gpu_rtd_vs_mlm")

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20
DEVICE_CARRY_LIMIT = 64 * MIB  # the working tree and the carried paths together
DEVICE_RETURN_FILES, DEVICE_RETURN_FILE_BYTES = 8, 16 * MIB
# What the GPU image lacks for these stages (its tokenizers, pyarrow, pandas and the rest serve).
PAYLOAD_WHEELS = ("datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "evaluate==0.4.6")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
RECORD_SUFFIXES = {".json", ".jsonl", ".md", ".png", ".log", ".txt"}
RECORD_SKIPPED_FOLDERS = {"checkpoints", "export_bf16", "export_bf16_in_fp32", "tokenizer", "data_cache"}
RECORDS = "records.tar.gz"


# --------------------------------------------------------------------------------------------
# To the GPU machine
# --------------------------------------------------------------------------------------------
def build_payload(args) -> None:
    payload = Path(args.payload_dir)
    corpus = Path(args.source_dir) / "corpus" / "gutenberg"
    for shard in sorted(set(args.train_shards.split(",")) | {args.eval_shard}):
        lines = args.eval_lines if shard == args.eval_shard else args.corpus_lines
        copy_shard(corpus / f"gutenberg_{shard}.txt.gz", payload / "data" / "corpus" / "gutenberg", lines)
    copy_glue(Path(args.source_dir) / "glue", payload / "data" / "glue", args.tasks)
    write_tokenizer(args, payload / "tokenizer")
    if args.wheels == "true":
        (payload / "whl").mkdir(parents=True, exist_ok=True)
        platforms = [flag for platform in WHEEL_PLATFORMS for flag in ("--platform", platform)]
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(payload / "whl"),
                        *PAYLOAD_WHEELS], check=True)
    manifest = write_manifest(payload)
    tree = working_tree_bytes()
    total = manifest["total_bytes"] + tree
    logger.info("payload %s: %.1f MiB; with the working tree (%.1f MiB) a device call carries %.1f of %d MiB",
                payload, manifest["total_bytes"] / MIB, tree / MIB, total / MIB, DEVICE_CARRY_LIMIT // MIB)
    if total > DEVICE_CARRY_LIMIT:
        raise RuntimeError(f"the payload and the working tree come to {total / MIB:.1f} MiB, over the device call's "
                           f"{DEVICE_CARRY_LIMIT // MIB} MiB: carry fewer shards (--train_shards) or --corpus_lines")


def copy_shard(source: Path, folder: Path, lines: int | None) -> None:
    """The gzipped shard as it is, or its first `lines` lines."""
    if not source.is_file():
        raise FileNotFoundError(f"corpus shard {source} does not exist (--source_dir {source.parents[2]})")
    folder.mkdir(parents=True, exist_ok=True)
    if lines is None:
        shutil.copyfile(source, folder / source.name)
        return
    with gzip.open(source, "rt", encoding="utf-8") as reader, gzip.open(folder / source.name, "wt", encoding="utf-8") as writer:
        for number, line in enumerate(reader):
            if number >= lines:
                break
            writer.write(line)


def copy_glue(source: Path, destination: Path, tasks: str) -> None:
    """The training and dev files of each task, in the GLUE layout train_glue.py's --data_dir reads."""
    from electra_hf.tasks.glue import resolve_task_names

    for task in resolve_task_names(tasks):
        for split in ("train", *task.eval_splits):
            candidates = dict(task.layouts)[split].files
            found = next((relative for relative in candidates if (source / relative).is_file()), None)
            if found is None:
                raise FileNotFoundError(f"GLUE {task.name} {split}: none of {candidates} under {source}")
            (destination / found).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / found, destination / found)


def write_tokenizer(args, folder: Path) -> None:
    """The tokenizer of every run: kept when the payload has one, copied from --tokenizer_from, or
    trained on the payload's training shards (the runs' own data arguments)."""
    from experiments.rtd_vs_mlm import pretrain_argv

    import train_pretrain
    from electra_hf import data as electra_data
    from transformers import AutoTokenizer

    if (folder / "tokenizer_config.json").is_file():
        logger.info("payload: keeping the tokenizer in %s (every run and machine must use the same one)", folder)
        return
    if args.tokenizer_from:
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_from)
    else:
        argv = pretrain_argv(args, "electra", Path(args.work_dir) / "unused", 1,
                             preprocessing_workers=args.preprocessing_num_workers)
        _, data_args, _ = train_pretrain.parse_args(argv)
        tokenizer = electra_data.load_or_train_tokenizer(data_args, electra_data.load_raw_datasets(data_args))
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(str(staging))
    staging.rename(folder)


def tokenizer_fingerprint_of(folder: Path) -> str:
    from electra_hf.data.tokenizer import plain_backend, tokenizer_fingerprint
    from transformers import AutoTokenizer

    return tokenizer_fingerprint(plain_backend(AutoTokenizer.from_pretrained(str(folder))))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(payload: Path) -> dict:
    files = {str(path.relative_to(payload)): {"bytes": path.stat().st_size, "sha256": sha256(path)}
             for path in sorted(payload.rglob("*")) if path.is_file() and path.name != "manifest.json"}
    manifest = {"files": files, "total_bytes": sum(entry["bytes"] for entry in files.values()),
                "tokenizer_fingerprint": tokenizer_fingerprint_of(payload / "tokenizer")}
    (payload / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def verify_payload(payload: Path) -> None:
    """Every data and tokenizer file of the manifest, present and unchanged."""
    manifest_file = payload / "manifest.json"
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{manifest_file} does not exist: build the payload here first "
                                "(python -m experiments.gpu_rtd_vs_mlm payload) and carry it")
    for name, entry in json.loads(manifest_file.read_text())["files"].items():
        if name.startswith(("data/", "tokenizer/")) and (not (payload / name).is_file() or sha256(payload / name) != entry["sha256"]):
            raise ValueError(f"payload file {payload / name} is missing or differs from {manifest_file}")


def working_tree_bytes() -> int:
    """What a device call sends besides the carried paths: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((REPO / name).stat().st_size for name in listed if name and (REPO / name).is_file())


# --------------------------------------------------------------------------------------------
# Back from the GPU machine
# --------------------------------------------------------------------------------------------
def export(args, objective: str) -> None:
    """<run>/export_bf16/<kind>/: each pre-trained network (ELECTRA: discriminator and generator;
    masked LM: mlm) as bf16 safetensors in shards of at most --max_shard_size, with its tokenizer
    and model card; with --out_dir, the shards and the rest there too."""
    import torch
    from transformers import AutoTokenizer, ElectraForMaskedLM, ElectraForPreTraining

    from electra_hf.export import EXPORT_KINDS

    run = Path(args.work_dir) / objective
    source, destination = run / "pretrain" / "export", run / "export_bf16"
    if not (destination / "export.json").is_file():
        kinds = [kind for kind in EXPORT_KINDS if (source / kind / "config.json").is_file()]
        if not kinds:
            raise FileNotFoundError(f"export {objective}: no pre-trained export in {source} (run the pretrain stage)")
        staging = destination.with_name(destination.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        summary = {}
        for kind in kinds:
            model_class = ElectraForPreTraining if kind == "discriminator" else ElectraForMaskedLM
            model = model_class.from_pretrained(str(source / kind)).to(torch.bfloat16)
            model.save_pretrained(str(staging / kind), max_shard_size=args.max_shard_size)
            AutoTokenizer.from_pretrained(str(source / kind)).save_pretrained(str(staging / kind))
            shutil.copyfile(source / kind / "README.md", staging / kind / "README.md")
            summary[kind] = {"class": model_class.__name__, "dtype": "bfloat16", "parameters": model.num_parameters(),
                             "files": {p.name: p.stat().st_size for p in sorted((staging / kind).iterdir())}}
        (staging / "export.json").write_text(json.dumps(summary, indent=2))
        shutil.rmtree(destination, ignore_errors=True)
        staging.rename(destination)
    logger.info("export %s: %s", objective, destination)
    if args.out_dir:
        copy_export_out(destination, Path(args.out_dir), objective)


def copy_export_out(export: Path, out: Path, objective: str) -> None:
    """The export's weight shards into <out>/<objective>_<kind>/ (the rest travels in the records)."""
    for shard in sorted(export.glob("*/*.safetensors")):
        folder = out / f"{objective}_{shard.parent.name}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shard, folder / shard.name)
    check_out_dir(out)


def record_files(run: Path) -> list[Path]:
    """The run's small files: no checkpoints, weights, caches or tokenizers; of an export only its plot."""
    kept = []
    for path in sorted(run.rglob("*")):
        parts = set(path.relative_to(run).parts)
        if (path.is_file() and path.suffix in RECORD_SUFFIXES and not parts & RECORD_SKIPPED_FOLDERS
                and ("export" not in parts or path.suffix == ".png")):
            kept.append(path)
    return kept


def pack_records(args) -> None:
    """<out_dir>/records.tar.gz: for every objective of the command that has a run, its record files
    and its bf16 export without the weights, under <objective>/; the data preparation's prepare.json."""
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir)
    with tarfile.open(out / RECORDS, "w:gz") as tar:
        for objective in args.objective_list:
            run = work / objective
            export_metadata = [path for path in sorted((run / "export_bf16").rglob("*"))
                               if path.is_file() and path.suffix != ".safetensors"]
            for path in record_files(run) + export_metadata:
                tar.add(path, arcname=str(path.relative_to(work)))
        if (work / "prepare.json").is_file():
            tar.add(work / "prepare.json", arcname="prepare.json")
    check_out_dir(out)


def check_out_dir(out: Path) -> None:
    """The device call's limits on what comes back: raise naming what would not."""
    files = [path for path in out.rglob("*") if path.is_file()]
    problems = [f"{len(files)} files (at most {DEVICE_RETURN_FILES})"] if len(files) > DEVICE_RETURN_FILES else []
    for path in files:
        relative = path.relative_to(out)
        if path.stat().st_size > DEVICE_RETURN_FILE_BYTES:
            problems.append(f"{relative}: {path.stat().st_size / MIB:.1f} MiB (at most 16)")
        if len(relative.parts) > 3 or not all(re.fullmatch(r"[A-Za-z0-9._-]+", part) for part in relative.parts):
            problems.append(f"{relative}: too deep or a name the device call does not bring back")
    if problems:
        raise RuntimeError(f"{out} holds what a device call cannot bring back: " + "; ".join(problems))


def collect(args) -> None:
    """What a device call brought back (--from_dir: records.tar.gz and the export shards) into --work_dir."""
    source, work = Path(args.from_dir), Path(args.work_dir)
    if not (source / RECORDS).is_file():
        raise FileNotFoundError(f"collect: no {RECORDS} in {source}")
    work.mkdir(parents=True, exist_ok=True)
    # Each machine starts bare, so a later window's attempts.jsonl holds only its own commands: keep
    # the earlier windows' lines too.
    earlier = {path: path.read_text().splitlines() for path in work.glob("*/attempts.jsonl")}
    with tarfile.open(source / RECORDS) as tar:
        tar.extractall(work, filter="data")
    for path, lines in earlier.items():
        brought = path.read_text().splitlines()
        path.write_text("".join(line + "\n" for line in lines + [line for line in brought if line not in lines]))
    for shard in sorted(source.glob("*_*/*.safetensors")):
        objective, _, kind = shard.parent.name.partition("_")
        target = work / objective / "export_bf16" / kind
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shard, target / shard.name)
    logger.info("collect: %s → %s", source, work)
