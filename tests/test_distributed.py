"""Scale-out, verified on the CPU with 2 real processes (gloo): DDP, DeepSpeed ZeRO-2/3, FSDP.

How the runs are launched (see ../shared/platform-notes.md and docs/scaling.md): DDP
with `accelerate launch --config_file accelerate_configs/cpu_ddp_2proc.yaml` (the default-run
tests), `torchrun --nproc_per_node 2` and `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu`
(slow test); DeepSpeed with the repository's deepspeed_zero{2,3}.yaml as the README gives them
(no --mixed_precision on a CPU). FSDP does not run on a CPU through Accelerate: its config is
parsed and its plugin built, and the launch is shown to be refused. Default run: the DDP tests
and the in-process checks (~1.5 min); `-m slow`: DeepSpeed, the fine-tuning script, the
refused launches (~6 min).

The runs go through a small harness (HARNESS below) that calls `train_pretrain.main` after
installing test-only instruments, switched on by environment variables:

- ELECTRA_TEST_RECORD=<dir>: every collator call appends, per process, the dataset indices of
  its examples, the positions it masked and a fingerprint of the process's global RNG state.
- ELECTRA_TEST_FULL_LENGTH=1: keep only full-length training examples, and draw distinct masked
  positions (every row then has the same number of tokens and of masked positions, so the mean
  over one process's half of a global batch, averaged over the processes, is exactly the mean
  over the global batch).
- ELECTRA_TEST_PER_EXAMPLE_MASKS=1: masks drawn per example from (seed, epoch, example index)
  instead of (seed, process, epoch, batch index): the same example gets the same mask whatever
  the number of processes (the library draws per process, which is correct but not comparable).
- ELECTRA_TEST_GREEDY=1: the generator's samples are its argmax (the model samples from the
  process's global RNG, whose draws depend on the batch shape).
- ELECTRA_TEST_TIES=<file>: each full state dict Accelerate gathers (DeepSpeed exports and
  checkpoints) is checked for the generator/discriminator embedding ties.

With all of them and dropout 0, a 2-process run must follow the 1-process run with the same
global batch step for step (to floating-point tolerance); that is the DDP equality below.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import torch

from tests.conftest import GLUE_DIR, build_glue_discriminator
from tests.test_scripts_pretrain import REPO, read_metrics, tiny_args

from electra_hf import training
from electra_hf.arguments import PretrainingArguments
from electra_hf.checkpoints import STATE_FILE, list_checkpoints

CONFIGS = REPO / "accelerate_configs"
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(not HAS_DEEPSPEED, reason="pip install 'electra_hf[deepspeed]'")


def zero_launches(test):
    """Marks a test that launches 2 CPU processes under DeepSpeed ZeRO-2 and ZeRO-3 (its `stage`
    argument): multiprocess, slow, skipped without DeepSpeed."""
    for mark in (pytest.mark.parametrize("stage", [2, 3]), needs_deepspeed, pytest.mark.slow, pytest.mark.multiprocess):
        test = mark(test)
    return test

HARNESS = r'''
import hashlib, json, os, sys
import torch
import train_pretrain
from electra_hf import data as electra_data, modeling
from electra_hf.collator import DataCollatorForElectra

env = os.environ.get
record_dir = env("ELECTRA_TEST_RECORD")


class Indexed(torch.utils.data.Dataset):
    """The examples, each tagged with its index in the data set the sampler draws from."""

    def __init__(self, dataset, keep):
        self.dataset, self.keep = dataset, keep

    def __len__(self):
        return len(self.keep)

    def __getitem__(self, index):
        return {**self.dataset[int(self.keep[index])], "example_index": index}


original_build = electra_data.build_pretraining_datasets


def build(args, tokenizer, raw):
    datasets = original_build(args, tokenizer, raw)
    out = {}
    for split, dataset in datasets.items():
        keep = list(range(len(dataset)))
        if split == "train" and env("ELECTRA_TEST_FULL_LENGTH"):
            keep = [i for i, ids in enumerate(dataset["input_ids"]) if len(ids) == args.max_seq_length]
        out[split] = Indexed(dataset, keep)
    if record_dir:
        with open(os.path.join(record_dir, "sizes.json"), "w") as handle:
            json.dump({split: len(dataset) for split, dataset in out.items()}, handle)
    return out


electra_data.build_pretraining_datasets = build
original_call = DataCollatorForElectra.__call__


def per_example_masks(self, features, indices):
    batch = self.pad(features)
    ids, labels = batch["input_ids"].clone(), torch.full_like(batch["input_ids"], -100)
    for row, index in enumerate(indices):
        n = int(batch["attention_mask"][row].sum())
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
        masked, row_labels = self.mask_tokens(batch["input_ids"][row:row + 1, :n],
                                              batch["attention_mask"][row:row + 1, :n], generator=generator)
        ids[row, :n], labels[row, :n] = masked[0], row_labels[0]
    batch["input_ids"], batch["labels"] = ids, labels
    return batch


def call(self, features):
    if env("ELECTRA_TEST_FULL_LENGTH"):
        self.mask_with_replacement = False  # distinct draws: the same number of masked positions in every row
    features = [dict(f) for f in features]
    indices = [f.pop("example_index") for f in features]
    if env("ELECTRA_TEST_PER_EXAMPLE_MASKS"):
        batch = per_example_masks(self, features, indices)
    else:
        batch = original_call(self, features)
    if record_dir:
        selected = [torch.nonzero(row != -100).flatten().tolist() for row in batch["labels"]]
        # What the library's collator (keyed by seed, process, epoch, batch) draws for this batch;
        # its own generator only, so recording it changes nothing.
        library = original_call(self, [dict(f) for f in features]) if env("ELECTRA_TEST_PER_EXAMPLE_MASKS") else batch
        library_selected = [torch.nonzero(row != -100).flatten().tolist() for row in library["labels"]]
        rng = hashlib.sha1(torch.get_rng_state().numpy().tobytes()).hexdigest()[:16]
        with open(os.path.join(record_dir, f"rank{self.process_index}.jsonl"), "a") as handle:
            handle.write(json.dumps({"seed": self.seed, "epoch": self.epoch, "indices": indices, "selected": selected,
                                     "library_selected": library_selected, "rng": rng}) + "\n")
    return batch


DataCollatorForElectra.__call__ = call
if env("ELECTRA_TEST_GREEDY"):
    modeling.categorical_sample = lambda log_probs, *args, **kwargs: log_probs.argmax(-1)
    modeling.gumbel_sample = lambda logits, *args, **kwargs: logits.argmax(-1)

ties_file = env("ELECTRA_TEST_TIES")
if ties_file:
    from accelerate import Accelerator

    original_get_state_dict = Accelerator.get_state_dict

    def get_state_dict(self, model, unwrap=True):
        state_dict = original_get_state_dict(self, model, unwrap)
        if self.is_main_process:
            module = self.unwrap_model(model)
            emb = "electra.embeddings.word_embeddings.weight"
            row = {
                "ties": {t: bool(torch.equal(state_dict[t], state_dict[s])) for t, s in module.all_tied_weights_keys.items()},
                "same_parameter": module.generator.get_parameter(emb) is module.discriminator.get_parameter(emb),
                "shapes": {k: list(v.shape) for k, v in state_dict.items() if "word_embeddings" in k},
                "word_embeddings_sum": float(state_dict["discriminator." + emb].double().sum()),
            }
            with open(ties_file, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        return state_dict

    Accelerator.get_state_dict = get_state_dict

if __name__ == "__main__":
    train_pretrain.main(sys.argv[1:])
'''


# train_glue.py as shipped, optionally killed on every process right after its first checkpoint.
GLUE_HARNESS = r'''
import os, runpy, sys
from electra_hf import finetuning

if os.environ.get("ELECTRA_TEST_CRASH_AFTER_CHECKPOINT"):
    original = finetuning.save_checkpoint

    def save_then_crash(*args, **kwargs):
        original(*args, **kwargs)
        os._exit(17)  # a killed job right after its first checkpoint: no cleanup, on every process

    finetuning.save_checkpoint = save_then_crash
sys.argv[0] = os.path.join(os.environ["ELECTRA_TEST_REPO"], "train_glue.py")
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_harness(tmp_path: Path) -> Path:
    path = tmp_path / "harness.py"
    path.write_text(HARNESS)
    return path


def base_env(**extra: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "ELECTRA_TEST_REPO": str(REPO), "PYTHONPATH": str(REPO)}
    env.pop("WORLD_SIZE", None)
    env.update(extra)
    return env


def launch(script: Path, args: list[str], cwd: Path, processes: int = 2, config: str | None = None,
           env: dict | None = None, timeout: int = 600, check: bool = True, mixed_precision: str | None = "no",
           launch_args: tuple[str, ...] = (), torchrun: bool = False) -> subprocess.CompletedProcess:
    """`accelerate launch` with 2 real CPU processes (DDP by default, or a config's engine); 1 process: plain
    python; `torchrun=True`: torchrun --nproc_per_node (the script then picks DDP over gloo itself)."""
    env = base_env(**(env or {}))
    if processes == 1:
        command = [sys.executable, str(script), *args]
    elif torchrun:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                   "--master_port", str(free_port()), str(script), *args]
    else:
        launcher = [sys.executable, "-m", "accelerate.commands.launch"]
        if config is None:
            env["ACCELERATE_USE_CPU"] = "1"
            launcher += ["--multi_gpu", "--num_machines", "1", "--dynamo_backend", "no"]
        else:  # from the repository root: the configs name their DeepSpeed JSON by a relative path
            launcher += ["--config_file", str(CONFIGS / config)]
            cwd = REPO
        precision = ["--mixed_precision", mixed_precision] if mixed_precision else []
        command = [*launcher, "--num_processes", str(processes), *precision, *launch_args,
                   "--main_process_port", str(free_port()), str(script), *args]
    # On a timeout (a hung collective) the launcher *and* every worker are killed: the workers may
    # run in sessions of their own, so they are found by a mark in their environment; output goes to
    # files, which a stray process cannot keep open the way it keeps a pipe.
    env["ELECTRA_TEST_LAUNCH"] = mark = uuid.uuid4().hex
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True, cwd=cwd, start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_marked_processes(mark)
            proc.wait()
            err.seek(0)
            pytest.fail(f"timed out after {timeout}s: {' '.join(command)}\n{err.read()[-6000:]}")
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)
    if check:
        assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-6000:]}"
    return result


def kill_marked_processes(mark: str) -> None:
    """SIGKILL every process whose environment holds ELECTRA_TEST_LAUNCH=mark (Linux /proc)."""
    needle = f"ELECTRA_TEST_LAUNCH={mark}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def read_records(record_dir: Path, rank: int, seed: int) -> list[dict]:
    lines = (record_dir / f"rank{rank}.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if row["seed"] == seed]


def metrics_by_step(output_dir: Path) -> dict[int, dict]:
    """metrics.jsonl rows merged per step (train and eval rows of a step are separate lines)."""
    rows: dict[int, dict] = {}
    for row in read_metrics(output_dir):
        rows.setdefault(row["step"], {}).update(row)
    return rows


def assert_rows_close(reference: dict[int, dict], other: dict[int, dict], steps, keys, rel: float, abs_: float = 1e-7):
    for step in steps:
        for key in keys:
            assert other[step][key] == pytest.approx(reference[step][key], rel=rel, abs=abs_), (step, key)


# ------------------------------------------------------------------------------------------
# DDP
# ------------------------------------------------------------------------------------------
DDP_STEPS = 10
# Per step: equal global batches (16), 10 steps over the ~100 full-length examples among the first
# 200 = all of epoch 0 (6 steps; drop_last drops < 16 examples) and a few of epoch 1; an evaluation over the
# whole validation split (72 examples, 4.5 global batches: Accelerate pads the last one) at steps
# 5 and 10; a checkpoint at step 5.
DDP_ARGS = ["--max_train_samples", "200", "--max_train_steps", str(DDP_STEPS), "--logging_steps", "1",
            "--eval_steps", "5", "--max_eval_batches", "1000", "--checkpointing_steps", "5",
            "--hidden_dropout_prob", "0", "--attention_probs_dropout_prob", "0"]
COMPARABLE = {"ELECTRA_TEST_FULL_LENGTH": "1", "ELECTRA_TEST_PER_EXAMPLE_MASKS": "1", "ELECTRA_TEST_GREEDY": "1"}
TRAIN_KEYS = ["train/loss", "train/generator_loss", "train/discriminator_loss", "train/generator_accuracy",
              "train/discriminator_accuracy", "train/learning_rate", "train/tokens_seen"]
EVAL_KEYS = ["eval/loss", "eval/generator_loss", "eval/discriminator_loss", "eval/generator_accuracy",
             "eval/discriminator_accuracy", "eval/discriminator_recall", "eval/examples"]


@pytest.fixture(scope="module")
def ddp_runs(corpus, tmp_path_factory):
    """The same run on 1 process (batch 16) and on 2 DDP processes (8 each), comparable (see module doc)."""
    root = tmp_path_factory.mktemp("ddp")
    harness = write_harness(root)
    runs = {}
    for processes, batch in ((1, "16"), (2, "8")):
        record = root / f"record{processes}"
        record.mkdir()
        out = root / f"run{processes}"
        start = time.perf_counter()
        launch(harness, tiny_args(corpus, out, root / "cache", *DDP_ARGS, "--per_device_train_batch_size", batch,
                                  "--per_device_eval_batch_size", batch),
               root, processes=processes, config="cpu_ddp_2proc.yaml" if processes == 2 else None,
               env={**COMPARABLE, "ELECTRA_TEST_RECORD": str(record)})
        runs[processes] = {"out": out, "record": record, "seconds": time.perf_counter() - start}
    runs["root"], runs["harness"], runs["corpus"] = root, harness, corpus
    return runs


@pytest.mark.multiprocess
def test_ddp_two_processes_follow_one_process(ddp_runs):
    """Same global batch and seed: a 2-process run's losses, eval metrics and tokens equal the
    1-process run's at every step (fp tolerance), through an epoch boundary."""
    run_config = json.loads((ddp_runs[2]["out"] / "run_config.json").read_text())
    # the documented config (use_cpu: true, which the multi-GPU launcher ignores) gives real DDP
    assert run_config["num_processes"] == 2 and run_config["distributed_type"] == "MULTI_CPU"
    assert run_config["global_batch_size"] == 16
    one, two = metrics_by_step(ddp_runs[1]["out"]), metrics_by_step(ddp_runs[2]["out"])
    assert sorted(one) == sorted(two) == list(range(1, DDP_STEPS + 1))
    assert one[DDP_STEPS]["train/epoch"] == two[DDP_STEPS]["train/epoch"] == 1
    # observed: relative differences ~1e-7 (summation order); learning happens (not a constant)
    assert_rows_close(one, two, range(1, DDP_STEPS + 1), TRAIN_KEYS, rel=1e-5)
    assert two[DDP_STEPS]["train/generator_loss"] < two[1]["train/generator_loss"] - 0.05
    # precision/recall are ratios averaged per process, not over the global batch: close, not equal
    for step in (5, 10):
        assert_rows_close(one, two, [step], EVAL_KEYS, rel=1e-5)
        assert two[step]["eval/discriminator_auc"] == pytest.approx(one[step]["eval/discriminator_auc"], abs=1e-4)
        # every validation example counted once: 72, although the 2 processes evaluated 80 (padded)
        assert two[step]["eval/examples"] == 72


@pytest.mark.multiprocess
def test_ddp_shards_each_global_batch_and_epoch_once(ddp_runs):
    """Each global batch of the 2-process run is the 1-process run's batch, split in two; each
    example of an epoch is seen exactly once; the two processes draw different randomness."""
    seed = 42
    single = read_records(ddp_runs[1]["record"], 0, seed)
    ranks = [read_records(ddp_runs[2]["record"], rank, seed) for rank in (0, 1)]
    # the loader fetches one batch ahead: DDP_STEPS trained batches + 1 fetched, per process
    assert len(single) == len(ranks[0]) == len(ranks[1]) == DDP_STEPS + 1
    epoch0 = []
    for step in range(DDP_STEPS):
        halves = [ranks[0][step]["indices"], ranks[1][step]["indices"]]
        assert len(halves[0]) == len(halves[1]) == 8
        assert not set(halves[0]) & set(halves[1])
        assert sorted(halves[0] + halves[1]) == sorted(single[step]["indices"]), step
        assert ranks[0][step]["epoch"] == ranks[1][step]["epoch"] == single[step]["epoch"]
        if single[step]["epoch"] == 0:
            epoch0 += halves[0] + halves[1]
    # the whole of epoch 0: every example once, except fewer than one global batch (drop_last)
    size = json.loads((ddp_runs[2]["record"] / "sizes.json").read_text())["train"]
    assert len(epoch0) == len(set(epoch0)) == (size // 16) * 16 and size - len(epoch0) < 16
    assert 0 < len(epoch0) < DDP_STEPS * 16  # the run crossed into epoch 1
    # epoch 1 starts a new order of the same examples
    first_of_epoch1 = single[len(epoch0) // 16]
    assert first_of_epoch1["epoch"] == 1 and set(first_of_epoch1["indices"]) <= set(range(size))
    assert first_of_epoch1["indices"] != single[0]["indices"]
    # Per-process randomness. Masks: the collator keys them by process index; with full-length rows
    # identical streams would select the same positions, independent ones overlap ~ 9/61.
    overlaps = [len(set(a) & set(b)) / len(a)
                for step in range(DDP_STEPS)
                for a, b in zip(ranks[0][step]["library_selected"], ranks[1][step]["library_selected"])]
    assert sum(overlaps) / len(overlaps) < 0.4
    # Dropout and generator sampling: each process's global RNG is its own (seed + process index).
    assert all(ranks[0][step]["rng"] != ranks[1][step]["rng"] for step in range(DDP_STEPS))


@pytest.mark.multiprocess
def test_ddp_checkpoint_written_once_and_resumed_by_two_processes(ddp_runs):
    out = ddp_runs[2]["out"]
    checkpoints = out / "checkpoints"
    assert [step for step, _ in list_checkpoints(checkpoints)] == [5, 10]
    assert not list(checkpoints.glob("*.tmp"))
    files = sorted(path.name for path in (checkpoints / "step_00000005").iterdir())
    # one copy of the model and optimizer (DDP: main process), one RNG state per process
    assert [name for name in files if name.endswith((".safetensors", ".bin"))] == ["model.safetensors", "optimizer.bin"]
    assert {"random_states_0.pkl", "random_states_1.pkl", STATE_FILE, "config.json"} <= set(files)
    state = json.loads((checkpoints / "step_00000005" / STATE_FILE).read_text())
    assert state["step"] == 5 and state["batches_into_epoch"] == 5
    # one metrics row per step and kind (only the main process writes)
    lines = read_metrics(out)
    assert len(lines) == DDP_STEPS + 2
    # a new 2-process launch resumes from the step-5 checkpoint and continues the same run
    resumed = ddp_runs["root"] / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(checkpoints / "step_00000005", resumed / "checkpoints" / "step_00000005")
    launch(ddp_runs["harness"],
           tiny_args(ddp_runs["corpus"], resumed, ddp_runs["root"] / "cache", *DDP_ARGS, "--per_device_train_batch_size",
                     "8", "--per_device_eval_batch_size", "8", "--resume_from_checkpoint", "latest"),
           ddp_runs["root"], config="cpu_ddp_2proc.yaml", env=COMPARABLE)
    full, again = metrics_by_step(out), metrics_by_step(resumed)
    assert sorted(again) == list(range(6, DDP_STEPS + 1))
    assert_rows_close(full, again, range(6, DDP_STEPS + 1), TRAIN_KEYS, rel=1e-6)
    assert_rows_close(full, again, [10], EVAL_KEYS, rel=1e-6)


@pytest.mark.multiprocess
def test_resume_on_another_number_of_processes_needs_the_same_global_batch(ddp_runs, tmp_path):
    """The 2-process step-5 checkpoint, resumed by 1 process with the same global batch (16),
    continues the 1-process run; another global batch is refused before any data is read."""
    import train_pretrain

    resumed = tmp_path / "one"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(ddp_runs[2]["out"] / "checkpoints" / "step_00000005", resumed / "checkpoints" / "step_00000005")
    args = [*DDP_ARGS, "--per_device_eval_batch_size", "16", "--resume_from_checkpoint", "latest"]
    with pytest.raises(ValueError, match="global batch of 16 sequences .* this run's is 8"):
        train_pretrain.main(tiny_args(ddp_runs["corpus"], resumed, tmp_path / "no_cache", *args,
                                      "--per_device_train_batch_size", "8"))
    assert not (tmp_path / "no_cache").exists()
    launch(ddp_runs["harness"], tiny_args(ddp_runs["corpus"], resumed, ddp_runs["root"] / "cache", *args,
                                          "--per_device_train_batch_size", "16"),
           tmp_path, processes=1, env=COMPARABLE)
    one, again = metrics_by_step(ddp_runs[1]["out"]), metrics_by_step(resumed)
    assert sorted(again) == list(range(6, DDP_STEPS + 1))
    assert_rows_close(one, again, range(6, DDP_STEPS + 1), TRAIN_KEYS, rel=1e-5)
    assert_rows_close(one, again, [10], EVAL_KEYS, rel=1e-5)

@pytest.mark.multiprocess
@pytest.mark.slow
def test_ddp_resume_with_the_library_masks_and_dropout(corpus, tmp_path):
    """The real collator (masks keyed by process) and dropout on: a 2-process run resumed from its
    step-5 checkpoint is the uninterrupted run, bit for bit (per-process RNG states restored)."""
    harness = write_harness(tmp_path)
    args = ["--max_train_samples", "200", "--max_train_steps", "10", "--logging_steps", "1", "--eval_steps", "5",
            "--max_eval_batches", "2", "--checkpointing_steps", "5", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    # started with torchrun (the README's equivalent launcher), resumed with ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
    launch(harness, tiny_args(corpus, full, tmp_path / "cache", *args), tmp_path, torchrun=True)
    assert json.loads((full / "run_config.json").read_text())["distributed_type"] == "MULTI_CPU"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000005", resumed / "checkpoints" / "step_00000005")
    launch(harness, tiny_args(corpus, resumed, tmp_path / "cache", *args, "--resume_from_checkpoint", "latest"), tmp_path)
    reference, again = metrics_by_step(full), metrics_by_step(resumed)
    assert sorted(again) == list(range(6, 11))
    assert_rows_close(reference, again, range(6, 11), TRAIN_KEYS + ["train/discriminator_precision"], rel=1e-6)
    assert_rows_close(reference, again, [10], EVAL_KEYS + ["eval/discriminator_auc"], rel=1e-6)



@pytest.mark.multiprocess
@pytest.mark.slow
def test_ddp_with_compiled_layers_trains(corpus, tmp_path):
    """--torch_compile_scope layers under DDP: the layers of the model inside the DDP wrapper are
    compiled in place, and the run trains."""
    out = tmp_path / "compiled"
    launch(write_harness(tmp_path), tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "3",
                                              "--per_device_train_batch_size", "8", "--torch_compile_scope", "layers"),
           tmp_path)
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["compilation"] == {"scope": "layers"} and run_config["distributed_type"] == "MULTI_CPU"
    assert sorted(metrics_by_step(out))[-1] == 3


# ------------------------------------------------------------------------------------------
# DeepSpeed
# ------------------------------------------------------------------------------------------
@zero_launches
def test_deepspeed_pretraining_saves_resumes_exports(corpus, tmp_path, stage):
    """ZeRO-2/3 with the repository's configs, 2 processes: trains, checkpoints, resumes exactly;
    the tied embeddings stay one parameter; the exports hold the full weights and load with
    plain transformers (equal to DeepSpeed's own zero_to_fp32 consolidation)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from safetensors.torch import load_file
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    from electra_hf.modeling import ElectraForRTDPretraining

    harness, config = write_harness(tmp_path), f"deepspeed_zero{stage}.yaml"
    args = ["--max_train_samples", "200", "--max_train_steps", "6", "--logging_steps", "1", "--eval_steps", "3",
            "--max_eval_batches", "2", "--checkpointing_steps", "3", "--per_device_train_batch_size", "8",
            "--per_device_eval_batch_size", "8"]
    full, resumed, ties = tmp_path / "full", tmp_path / "resumed", tmp_path / "ties.jsonl"
    # the README command as is (no --mixed_precision: the configs carry none, the JSON's "auto" → fp32)
    launch(harness, tiny_args(corpus, full, tmp_path / "cache", *args), tmp_path, config=config,
           env={"ELECTRA_TEST_TIES": str(ties)}, timeout=400, mixed_precision=None)
    run_config = json.loads((full / "run_config.json").read_text())
    assert run_config["distributed_type"] == "DEEPSPEED" and run_config["num_processes"] == 2
    # ties: one parameter in the engine; equal in every gathered state dict; and trained
    rows = [json.loads(line) for line in ties.read_text().splitlines()]
    assert rows and all(all(row["ties"].values()) and row["same_parameter"] for row in rows)
    assert all(shape == [600, 64] for row in rows for shape in row["shapes"].values())  # not ZeRO-3 stubs
    assert len({row["word_embeddings_sum"] for row in rows}) > 1
    # resume from the step-3 checkpoint in a new 2-process launch
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000003", resumed / "checkpoints" / "step_00000003")
    launch(harness, tiny_args(corpus, resumed, tmp_path / "cache", *args, "--resume_from_checkpoint", "latest"),
           tmp_path, config=config, timeout=400, mixed_precision=None)
    reference, again = metrics_by_step(full), metrics_by_step(resumed)
    assert sorted(again) == [4, 5, 6]
    assert_rows_close(reference, again, [4, 5, 6], TRAIN_KEYS, rel=1e-6)
    assert_rows_close(reference, again, [6], EVAL_KEYS, rel=1e-6)
    # exports: complete, plain transformers, equal to DeepSpeed's consolidation of its own shards
    last = full / "checkpoints" / "step_00000006"
    assert (last / "pytorch_model").is_dir() and (last / "model.safetensors").is_file()
    discriminator, info = ElectraForPreTraining.from_pretrained(full / "export" / "discriminator", output_loading_info=True)
    generator, generator_info = ElectraForMaskedLM.from_pretrained(full / "export" / "generator", output_loading_info=True)
    assert not any(info.values()) and not any(generator_info.values())
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(last))
    for name, tensor in discriminator.state_dict().items():
        if f"discriminator.{name}" in consolidated:
            assert torch.equal(tensor, consolidated[f"discriminator.{name}"].to(tensor.dtype)), name
    assert torch.equal(generator.electra.embeddings.word_embeddings.weight,
                       discriminator.electra.embeddings.word_embeddings.weight)
    assert torch.equal(generator.electra.encoder.layer[0].output.dense.weight,
                       consolidated["generator.electra.encoder.layer.0.output.dense.weight"])
    # the checkpoint folder loads as the full model (fine-tuning starts from it), ties restored
    model = ElectraForRTDPretraining.from_pretrained(last)
    assert torch.equal(model.discriminator.electra.encoder.layer[1].output.dense.weight,
                       discriminator.electra.encoder.layer[1].output.dense.weight)
    assert model.generator.electra.embeddings.word_embeddings.weight is model.discriminator.electra.embeddings.word_embeddings.weight
    assert len(load_file(last / "model.safetensors")) > 0


needs_glue = pytest.mark.skipif(not (GLUE_DIR / "RTE" / "train.tsv").is_file(), reason=f"GLUE files not at {GLUE_DIR}")


@pytest.fixture(scope="module")
def tiny_discriminator(tmp_path_factory):
    return build_glue_discriminator(tmp_path_factory.mktemp("tiny_glue"), sst2_sentences=399, vocab_size=300)


def glue_args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(model), "--data_dir", str(GLUE_DIR), "--output_dir", str(out), "--task_name",
            "rte", "--learning_rate", "3e-3", "--layer_decay", "0.8", "--max_seq_length", "64",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8", "--disable_tqdm", "true",
            "--logging_steps", "2", "--max_train_samples", "48", "--max_eval_samples", "40", "--num_train_epochs", "1",
            *extra]


@zero_launches
@needs_glue
def test_glue_deepspeed_trains_two_seeds_and_saves_full_models(tiny_discriminator, tmp_path, stage):
    """train_glue.py as shipped under ZeRO-2/3 with 2 CPU processes: two seeds (two prepare() calls
    on one Accelerator), dev metrics, complete saved models."""
    from safetensors.torch import load_file
    from transformers import ElectraForPreTraining, ElectraForSequenceClassification

    out = tmp_path / "glue"
    launch(REPO / "train_glue.py", glue_args(tiny_discriminator, out, "--seeds", "1", "2", "--head", "hf"), tmp_path,
           config=f"deepspeed_zero{stage}.yaml", timeout=400)
    results = json.loads((out / "results.json").read_text())
    rte = results["tasks"]["RTE"]
    assert rte["seeds"] == [1, 2] and all(0 <= m["dev/accuracy"] <= 1 for m in rte["per_seed"])
    # 48 examples, 8 per device × 2 processes: 3 optimizer steps per epoch, the global batch (16)
    assert rte["global_steps"] == [3, 3]
    base = ElectraForPreTraining.from_pretrained(tiny_discriminator)
    for seed in (1, 2):
        model, info = ElectraForSequenceClassification.from_pretrained(out / "RTE" / f"seed_{seed}", output_loading_info=True)
        assert not any(info.values())
        # the model's own parameter names (not the legacy LayerNorm.gamma/beta a ZeRO-3 build used to save)
        assert set(load_file(out / "RTE" / f"seed_{seed}" / "model.safetensors")) == set(model.state_dict())
        trained = model.electra.encoder.layer[0].attention.self.query.weight
        assert trained.shape == (32, 32) and not torch.equal(trained, base.electra.encoder.layer[0].attention.self.query.weight)


@zero_launches
@needs_glue
def test_glue_deepspeed_killed_and_resumed_equals_uninterrupted(tiny_discriminator, tmp_path, stage):
    """ZeRO-2/3, 2 CPU processes, 2 epochs (6 optimizer steps), checkpoints every 2 steps, the best
    dev accuracy kept (gathered under ZeRO-3): a launch killed right after its first checkpoint,
    relaunched with --resume, gives the uninterrupted launch's losses, metrics and saved weights."""
    from safetensors.torch import load_file

    harness = tmp_path / "glue_harness.py"
    harness.write_text(GLUE_HARNESS)
    # Lowest accuracy "best": with ties (an untrained model predicting one class) the step-2 weights
    # are put back at the end, through the ZeRO-3 gather/re-partition path.
    extra = ("--seeds", "1", "--head", "hf", "--num_train_epochs", "2", "--checkpointing_steps", "2", "--eval_steps",
             "2", "--metric_for_best_model", "dev/accuracy", "--greater_is_better", "false")
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    config = f"deepspeed_zero{stage}.yaml"
    first = launch(REPO / "train_glue.py", glue_args(tiny_discriminator, reference, *extra), tmp_path, config=config,
                   timeout=400)
    assert "kept the weights of step 2" in first.stderr
    killed = launch(harness, glue_args(tiny_discriminator, resumed, *extra), tmp_path, config=config, timeout=400,
                    env={"ELECTRA_TEST_CRASH_AFTER_CHECKPOINT": "1"}, check=False)
    assert killed.returncode != 0
    assert [step for step, _ in list_checkpoints(resumed / "RTE" / "seed_1" / "checkpoints")] == [2]
    assert not (resumed / "results.json").exists()
    # The best weights so far, gathered into the checkpoint (all of them, also under ZeRO-3).
    step_2 = torch.load(resumed / "RTE" / "seed_1" / "checkpoints" / "step_00000002" / "best_model_state.pt")
    launch(REPO / "train_glue.py", glue_args(tiny_discriminator, resumed, *extra, "--resume_from_checkpoint", "latest"), tmp_path,
           config=config, timeout=400)

    want = json.loads((reference / "RTE" / "seed_1" / "run_result.json").read_text())
    got = json.loads((resumed / "RTE" / "seed_1" / "run_result.json").read_text())
    assert got["global_step"] == want["global_step"] == 6
    assert got["loss_history"] == pytest.approx(want["loss_history"], rel=1e-5, abs=1e-6)
    assert [step for step, _ in got["eval_history"]] == [2, 4, 6]
    assert got["metrics"]["dev/accuracy"] == pytest.approx(want["metrics"]["dev/accuracy"])
    assert not (resumed / "RTE" / "seed_1" / "checkpoints").exists()
    want_weights = load_file(reference / "RTE" / "seed_1" / "model.safetensors")
    got_weights = load_file(resumed / "RTE" / "seed_1" / "model.safetensors")
    assert sorted(got_weights) == sorted(want_weights)
    for name, value in want_weights.items():
        torch.testing.assert_close(got_weights[name], value, rtol=1e-5, atol=1e-6)
        # what was saved at the end are the step-2 weights put back (not the step-6 ones)
        torch.testing.assert_close(got_weights[name], step_2[name].float(), rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------
# FSDP
# ------------------------------------------------------------------------------------------
@pytest.mark.multiprocess
def test_fsdp_config_parses_and_builds_the_plugin():
    """FSDP cannot run on the CPU through Accelerate (see test_impossible_launches_are_refused), so
    the config is checked for what it would do on GPUs: FSDP2, full shard, one unit per ElectraLayer."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from transformers.models.electra.modeling_electra import ElectraLayer

    from electra_hf.configuration import ElectraPretrainingConfig
    from electra_hf.modeling import ElectraForRTDPretraining

    config = load_config_from_file(str(CONFIGS / "fsdp_full_shard.yaml"))
    assert config.distributed_type == DistributedType.FSDP and config.mixed_precision == "bf16"
    fsdp = config.fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
        auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"], transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"],
        state_dict_type=fsdp["fsdp_state_dict_type"], cpu_ram_efficient_loading=fsdp["fsdp_cpu_ram_efficient_loading"],
        activation_checkpointing=fsdp["fsdp_activation_checkpointing"], cpu_offload=fsdp["fsdp_offload_params"])
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.state_dict_type.name == "SHARDED_STATE_DICT"
    model = ElectraForRTDPretraining(ElectraPretrainingConfig.from_preset("tiny", vocab_size=100))
    plugin.set_auto_wrap_policy(model)
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {ElectraLayer}
    layers = [m for m in model.modules() if isinstance(m, ElectraLayer)]
    assert len(layers) == model.config.generator_config.num_hidden_layers + model.config.discriminator_config.num_hidden_layers


# ------------------------------------------------------------------------------------------
# Impossible setups: refused before training, with the reason
# ------------------------------------------------------------------------------------------
def fake_deepspeed_accelerator(ds_config: dict, num_processes: int = 2):
    from types import SimpleNamespace

    return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds_config)),
                           num_processes=num_processes)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_auto_values_come_from_the_flags(stage):

    ds_config = json.loads((CONFIGS / f"ds_zero{stage}.json").read_text())
    args = PretrainingArguments(per_device_train_batch_size=8, gradient_accumulation_steps=2,
                                               max_grad_norm=0.5)
    training.configure_deepspeed(fake_deepspeed_accelerator(ds_config), args)
    assert ds_config["train_micro_batch_size_per_gpu"] == 8 and ds_config["gradient_accumulation_steps"] == 2
    assert ds_config["train_batch_size"] == 32 and ds_config["gradient_clipping"] == 0.5
    if stage == 3:
        assert ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("change, match", [
    ({"train_micro_batch_size_per_gpu": 4}, r"train_micro_batch_size_per_gpu=4 but --per_device_train_batch_size gives 8"),
    ({"gradient_accumulation_steps": 4}, r"gradient_accumulation_steps=4 but --gradient_accumulation_steps gives 1"),
    ({"train_batch_size": 64}, r"train_batch_size=64 but .* gives 16"),
    ({"gradient_clipping": 0.3}, r"gradient_clipping=0.3 but --max_grad_norm gives 1.0"),
    ({"zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": False}}, r"exports need"),
    ({"optimizer": {"type": "AdamW"}}, r"builds its own"),
])
def test_deepspeed_config_contradicting_the_flags_is_refused(change, match):

    ds_config = {**json.loads((CONFIGS / "ds_zero2.json").read_text()), **change}
    args = PretrainingArguments(per_device_train_batch_size=8)
    with pytest.raises(ValueError, match=match):
        training.configure_deepspeed(fake_deepspeed_accelerator(ds_config), args)


def test_deepspeed_json_precision_is_checked_like_the_flag():
    from electra_hf.training import cpu_supports_bf16

    ds_config = {**json.loads((CONFIGS / "ds_zero2.json").read_text()), "bf16": {"enabled": True}}
    args = PretrainingArguments(per_device_train_batch_size=8)
    if cpu_supports_bf16():
        training.configure_deepspeed(fake_deepspeed_accelerator(ds_config), args, use_cpu=True)
    else:
        with pytest.raises(ValueError, match="bf16"):
            training.configure_deepspeed(fake_deepspeed_accelerator(ds_config), args, use_cpu=True)
    ds_config = {**json.loads((CONFIGS / "ds_zero2.json").read_text()), "fp16": {"enabled": True}}
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        training.configure_deepspeed(fake_deepspeed_accelerator(ds_config), args, use_cpu=True)


@pytest.mark.parametrize("name", sorted(path.name for path in CONFIGS.glob("*.yaml")))
def test_every_accelerate_config_parses(name):
    """Each config loads with Accelerate's own loader; the DeepSpeed ones point at an existing JSON
    (relative to the repository root) and carry no mixed_precision (Accelerate rejects it there)."""
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert "num_processes" in raw and raw["num_machines"] >= 1
    if config.distributed_type.value == "DEEPSPEED":
        assert "mixed_precision" not in raw
        ds_file = REPO / raw["deepspeed_config"]["deepspeed_config_file"]
        ds = json.loads(ds_file.read_text())
        assert all(ds[key] == "auto" for key in ("train_batch_size", "train_micro_batch_size_per_gpu",
                                                 "gradient_accumulation_steps", "gradient_clipping"))
        assert ds["bf16"]["enabled"] == "auto" and "optimizer" not in ds and "scheduler" not in ds
        assert ds["zero_optimization"]["stage"] == (3 if "zero3" in name else 2)

def test_launches_that_would_not_train_together_are_refused(monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    with pytest.raises(RuntimeError, match="no distributed training.*ACCELERATE_USE_CPU=1"):
        training.check_distributed_setup(SimpleNamespace(distributed_type=DistributedType.NO))
    training.check_distributed_setup(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(RuntimeError, match="FSDP was requested.*never on the CPU"):
        training.check_distributed_setup(SimpleNamespace(distributed_type=DistributedType.MULTI_CPU))


@pytest.mark.multiprocess
@pytest.mark.slow
def test_impossible_launches_are_refused_before_training(corpus, tmp_path):
    """Real launches that cannot work here stop with the reason before any data or training."""
    args = lambda name: tiny_args(corpus, tmp_path / name, tmp_path / "cache", "--max_train_steps", "2")  # noqa: E731
    script = REPO / "train_pretrain.py"
    cases = [
        # FSDP on the CPU: Accelerate would silently run DDP (or unsynchronised copies)
        ("fsdp", dict(config="fsdp_full_shard.yaml"), "FSDP was requested"),
        # a GPU precision on the CPU
        ("fp16", dict(config="deepspeed_zero2.yaml", mixed_precision="fp16"), "--mixed_precision fp16 needs a GPU"),
    ]
    from electra_hf.training import cpu_supports_bf16

    if not cpu_supports_bf16():  # the README's GPU command (bf16) on a CPU without native bf16
        cases.append(("bf16", dict(config="deepspeed_zero2.yaml", mixed_precision="bf16"),
                      "--mixed_precision bf16 was requested"))
    if HAS_DEEPSPEED:
        bad = {**json.loads((CONFIGS / "ds_zero2.json").read_text()), "train_micro_batch_size_per_gpu": 4}
        (tmp_path / "bad_ds.json").write_text(json.dumps(bad))
        cases.append(("ds_batch", dict(config="deepspeed_zero2.yaml",
                                       launch_args=("--deepspeed_config_file", str(tmp_path / "bad_ds.json"))),
                      "train_micro_batch_size_per_gpu=4 but --per_device_train_batch_size gives 16"))
    for name, options, message in cases:
        result = launch(script, args(name), tmp_path, check=False, timeout=300, **options)
        assert result.returncode != 0 and message in result.stderr, (name, result.stderr[-3000:])
        assert not (tmp_path / name / "checkpoints").exists()
