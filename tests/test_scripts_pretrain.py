"""train_pretrain.py end to end: learning, resume equality, demo, exports, Hub stand-in, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_pretrain
from electra_hf.checkpoints import STATE_FILE, list_checkpoints
from electra_hf.modeling import ElectraForRTDPretraining

REPO = Path(__file__).resolve().parents[1]


def tiny_args(corpus: Path, output_dir: Path, cache_dir: Path, *extra: str) -> list[str]:
    return [
        "--train_files", str(corpus), "--preset", "tiny", "--vocab_size", "600", "--max_seq_length", "64",
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "16", "--learning_rate", "2e-3",
        "--num_warmup_steps", "5", "--logging_steps", "5", "--eval_steps", "20", "--max_eval_batches", "4",
        "--checkpointing_steps", "10", "--dataloader_num_workers", "0", "--output_dir", str(output_dir),
        "--cache_dir", str(cache_dir), "--validation_split_percentage", "5", "--hidden_dropout_prob", "0.1",
        *extra,
    ]


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def train_rows(rows):
    return {row["step"]: row for row in rows if "train/loss" in row}


def test_tiny_run_learns_and_exports(corpus, tmp_path):
    out = tmp_path / "run"
    results = train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "40"))
    rows = train_rows(read_metrics(out))
    first, last = rows[5], rows[40]
    # from the uniform-ish start towards unigram statistics and beyond
    assert last["train/generator_loss"] < first["train/generator_loss"] - 0.25
    assert last["train/discriminator_loss"] < first["train/discriminator_loss"] - 0.1
    assert last["train/tokens_seen"] == results["tokens_seen"] > 40 * 16 * 20
    assert results["completed_steps"] == 40
    assert {"loss", "generator_loss", "discriminator_loss", "discriminator_auc"} <= set(results["eval"])
    # resumable checkpoints, the newest kept, each with config + tokenizer + full run config
    steps = [step for step, _ in list_checkpoints(out / "checkpoints")]
    assert steps == [20, 30, 40]  # checkpoints_total_limit 3
    last_checkpoint = out / "checkpoints" / "step_00000040"
    assert json.loads((last_checkpoint / STATE_FILE).read_text())["step"] == 40
    assert json.loads((last_checkpoint / "run_config.json").read_text())["train_args"]["max_train_steps"] == 40
    # exports + card + plot
    card = (out / "export" / "discriminator" / "README.md").read_text()
    assert "optimizer steps**: 40" in card and "tokens seen" in card and str(corpus) in card
    assert (out / "export" / "loss_curves.png").stat().st_size > 10_000
    # the checkpoint reloads as the full model with the same weights as the export
    model = ElectraForRTDPretraining.from_pretrained(last_checkpoint)
    from transformers import ElectraForPreTraining

    exported = ElectraForPreTraining.from_pretrained(out / "export" / "discriminator")
    assert torch.equal(model.discriminator.electra.encoder.layer[1].output.dense.weight,
                       exported.electra.encoder.layer[1].output.dense.weight)
    assert model.generator.electra.embeddings.word_embeddings.weight is model.discriminator.electra.embeddings.word_embeddings.weight


def test_resume_reproduces_the_uninterrupted_run(corpus, tmp_path):
    cache = tmp_path / "cache"
    full = tmp_path / "full"
    train_pretrain.main(tiny_args(corpus, full, cache, "--max_train_steps", "30", "--checkpoints_total_limit", "5"))
    # An interrupted run = the state at step 10, continued in a new process-like call.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_00000010", resumed / "checkpoints" / "step_00000010")
    # an unfinished checkpoint left by a crash must be ignored by "latest"
    shutil.copytree(full / "checkpoints" / "step_00000020", resumed / "checkpoints" / "step_00000020.tmp")
    (resumed / "checkpoints" / "step_00000020.tmp" / STATE_FILE).unlink()
    train_pretrain.main(tiny_args(corpus, resumed, cache, "--max_train_steps", "30", "--resume_from_checkpoint", "latest"))
    full_rows, resumed_rows = train_rows(read_metrics(full)), train_rows(read_metrics(resumed))
    assert sorted(resumed_rows) == [15, 20, 25, 30]
    for step in (15, 20, 25, 30):
        for key in ("train/loss", "train/generator_loss", "train/discriminator_loss", "train/learning_rate", "train/tokens_seen"):
            assert resumed_rows[step][key] == pytest.approx(full_rows[step][key], rel=1e-5, abs=1e-6), (step, key)


def test_refuses_to_overwrite_a_run_without_resume(corpus, tmp_path):
    out = tmp_path / "run"
    train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "10"))
    with pytest.raises(FileExistsError, match="resume_from_checkpoint"):
        train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "10"))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(corpus, tmp_path, monkeypatch):
    original_forward = ElectraForRTDPretraining.forward
    calls = {"n": 0}

    def poisoned_forward(self, *args, **kwargs):
        out = original_forward(self, *args, **kwargs)
        calls["n"] += 1
        if self.training and calls["n"] >= 13:  # the 13th training step turns NaN
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(ElectraForRTDPretraining, "forward", poisoned_forward)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="step 13"):
        train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "40", "--eval_steps", "0"))
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [10]
    assert not (out / "export").exists()


def test_bad_inputs_are_clear_errors(corpus, tmp_path, monkeypatch):
    import electra_hf.training

    # the bf16 refusal must not depend on whether this CPU happens to have bf16 units
    monkeypatch.setattr(electra_hf.training, "cpu_supports_bf16", lambda: False)
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_pretrain.main(tiny_args(tmp_path / "missing.txt", tmp_path / "a", cache, "--max_train_steps", "2"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt"):
        train_pretrain.main(tiny_args(empty, tmp_path / "b", cache, "--max_train_steps", "2"))
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"good line\nbad \xff\xfe bytes\n")
    with pytest.raises(ValueError, match="broken.txt"):
        train_pretrain.main(tiny_args(broken, tmp_path / "c", cache, "--max_train_steps", "2"))
    small = tmp_path / "small.txt"
    small.write_text("just one short line of text.\n\nand another document.\n")
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_pretrain.main(tiny_args(small, tmp_path / "d", cache, "--max_train_steps", "2", "--vocab_size", "100",
                                      "--validation_split_percentage", "0"))
    # a config whose vocabulary disagrees with the tokenizer
    from electra_hf.configuration import ElectraPretrainingConfig

    ElectraPretrainingConfig.from_preset("tiny", vocab_size=123).save_pretrained(tmp_path / "cfg")
    with pytest.raises(ValueError, match="vocab_size 123"):
        train_pretrain.main(tiny_args(corpus, tmp_path / "e", cache, "--max_train_steps", "2", "--config_name_or_path", str(tmp_path / "cfg")))
    bf16_args = tiny_args(corpus, tmp_path / "f", cache, "--max_train_steps", "2", "--mixed_precision", "bf16")
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():  # a GPU machine: bf16 is the fast path
        assert train_pretrain.main(bf16_args)["completed_steps"] == 2
    else:
        with pytest.raises(ValueError, match="no AVX512-BF16"):
            train_pretrain.main(bf16_args)
    with pytest.raises(ValueError, match="--torch_compile_scope must be"):
        train_pretrain.main(tiny_args(corpus, tmp_path / "h", cache, "--torch_compile", "--torch_compile_scope", "everything"))
    with pytest.raises(ValueError, match="drop them or --torch_compile false"):
        train_pretrain.main(tiny_args(corpus, tmp_path / "h", cache, "--torch_compile", "false", "--torch_compile_mode",
                                      "reduce-overhead"))
    with pytest.raises(ValueError, match="hub_model_id"):
        train_pretrain.main(tiny_args(corpus, tmp_path / "g", cache, "--max_train_steps", "2", "--push_to_hub"))


def test_push_to_hub_uses_create_repo_and_upload_folder(corpus, tmp_path, monkeypatch):
    calls = []

    class StandInHfApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, **kwargs):
            calls.append(("create_repo", kwargs["repo_id"]))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs["repo_id"], sorted(os.listdir(kwargs["folder_path"]))))
            return "ok"

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", StandInHfApi)
    train_pretrain.main(tiny_args(corpus, tmp_path / "run", tmp_path / "cache", "--max_train_steps", "5",
                                  "--push_to_hub", "--hub_model_id", "me/tiny-electra", "--hub_token", "hf_test"))
    uploads = [call for call in calls if call[0] == "upload_folder"]
    assert [call[1] for call in uploads] == ["me/tiny-electra", "me/tiny-electra-generator"]
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(uploads[0][2])
    assert ("init", "hf_test") in calls


def test_demo_runs_with_no_data_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    results = train_pretrain.main(["--max_train_steps", "6", "--vocab_size", "500", "--eval_steps", "3"])
    demo = tmp_path / "runs" / "demo"
    assert results["completed_steps"] == 6
    assert (demo / "demo_corpus").is_dir() and (demo / "export" / "discriminator" / "config.json").is_file()
    run_config = json.loads((demo / "run_config.json").read_text())
    assert run_config["demo"] is True and run_config["model_args"]["preset"] == "tiny"


def test_config_file_in_place_of_flags(corpus, tmp_path):
    config = {"train_files": [str(corpus)], "preset": "tiny", "vocab_size": 600, "max_seq_length": 64,
              "per_device_train_batch_size": 8, "max_train_steps": 3, "num_warmup_steps": 1, "logging_steps": 1,
              "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache"), "dataloader_num_workers": 0}
    (tmp_path / "run.json").write_text(json.dumps(config))
    assert train_pretrain.main([str(tmp_path / "run.json")])["completed_steps"] == 3


def test_whole_model_compile_trains_and_exports_plain_weights(corpus, tmp_path):
    """--torch_compile_scope model: the losses are eager's up to rounding (the generator's too, so it
    trains); only the training step is compiled (evaluation runs the plain model, so one graph, not a
    recompile for eval mode), on batches padded to the full length; exports hold plain weights. A CPU
    run without the flags is eager."""
    from transformers import ElectraForPreTraining

    losses = {}
    for name, extra in (("eager", ()), ("compiled", ("--torch_compile_scope", "model"))):
        torch._dynamo.utils.counters.clear()
        out = tmp_path / name
        train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "4", "--logging_steps", "2",
                                      "--checkpointing_steps", "4", "--hidden_dropout_prob", "0", *extra))
        losses[name] = [row["train/generator_loss"] for row in train_rows(read_metrics(out)).values()]
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-3)  # the generator trains (its loss moves alike)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1  # the training step's; evaluation was eager
    compilation = {name: json.loads((tmp_path / name / "run_config.json").read_text())["compilation"] for name in losses}
    assert compilation == {"eager": None, "compiled": {"scope": "model"}}
    from safetensors import safe_open

    export = tmp_path / "compiled" / "export" / "discriminator"
    with safe_open(export / "model.safetensors", "pt") as saved:
        assert saved.keys() and not any("_orig_mod" in key for key in saved.keys())
    _, info = ElectraForPreTraining.from_pretrained(export, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


@pytest.mark.multiprocess
def test_two_process_cpu_run(corpus, tmp_path):
    """A real 2-process DDP run on the CPU (ACCELERATE_USE_CPU + --multi_gpu, see platform notes)."""
    out = tmp_path / "ddp"
    # No GPUs for a CPU run: on a 1-GPU machine rank 1 of this launch died in gloo's barrier, which
    # Accelerate calls with device_ids=[local rank] (observed once, torch 2.11; not re-run since).
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
               str(REPO / "train_pretrain.py"),
               *tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "10", "--per_device_train_batch_size", "8")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    run_config = json.loads((out / "run_config.json").read_text())
    assert run_config["num_processes"] == 2 and run_config["global_batch_size"] == 16
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [10]
    assert (out / "export" / "discriminator" / "model.safetensors").is_file()


def test_streaming_run(corpus, tmp_path):
    """--streaming builds examples on the fly (IterableDataset) and needs --max_train_steps."""
    lines = corpus.read_text().splitlines(keepends=True)
    validation = tmp_path / "validation.txt"
    validation.write_text("".join(lines[-400:]))
    out = tmp_path / "stream"
    tokenizer_dir = tmp_path / "tokenizer"
    from electra_hf.data import train_wordpiece_tokenizer

    train_wordpiece_tokenizer(lines, vocab_size=600).save_pretrained(tokenizer_dir)
    results = train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--max_train_steps", "6", "--streaming",
                                            "--validation_files", str(validation), "--tokenizer_name_or_path",
                                            str(tokenizer_dir), "--eval_steps", "3"))
    assert results["completed_steps"] == 6 and results["tokens_seen"] > 6 * 16 * 20
    assert "generator_loss" in results["eval"]


def test_config_file_takes_the_model_flags(corpus, tmp_path):
    """--config_name_or_path with RTD and size flags: the flags win, and what the config derived
    (the generator, the cap on masked positions) is derived again from the new values."""
    from electra_hf.configuration import ElectraPretrainingConfig

    saved = tmp_path / "config"
    ElectraPretrainingConfig.from_preset("tiny", vocab_size=600).save_pretrained(saved)
    out = tmp_path / "run"
    train_pretrain.main(tiny_args(corpus, out, tmp_path / "cache", "--config_name_or_path", str(saved),
                                  "--mask_prob", "0.3", "--max_seq_length", "128", "--generator_size_ratio", "1.0",
                                  "--max_train_steps", "2", "--eval_steps", "0", "--checkpointing_steps", "0"))
    config = json.loads((out / "run_config.json").read_text())["model_config"]
    assert config["mask_prob"] == 0.3 and config["max_seq_length"] == 128
    assert config["max_predictions_per_seq"] == int((0.3 + 0.005) * 128)  # 39, not the saved 19
    assert config["generator_config"]["hidden_size"] == config["discriminator_config"]["hidden_size"]
    with pytest.raises(ValueError, match="exceeds the 512 positions"):
        train_pretrain.main(tiny_args(corpus, tmp_path / "long", tmp_path / "cache", "--config_name_or_path",
                                      str(saved), "--max_seq_length", "1024", "--max_train_steps", "1"))


@pytest.mark.parametrize("script", ["train_pretrain", "train_glue", "train_tagging", "train_squad"])
def test_help_prints_every_flag(script):
    proc = subprocess.run([sys.executable, str(REPO / f"{script}.py"), "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--output_dir" in proc.stdout and "Traceback" not in proc.stderr


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, caplog):
    """The resumed run's RTD fields and sizes must be the checkpoint's; a field the checkpoint's
    config lacks takes this run's value with a warning."""
    import logging

    from electra_hf.configuration import ElectraPretrainingConfig
    from electra_hf.pretraining import check_resume_config

    config = ElectraPretrainingConfig.from_preset("tiny", vocab_size=100)
    config.save_pretrained(tmp_path)
    check_resume_config(tmp_path, config)
    with pytest.raises(ValueError, match="mask_with_replacement: checkpoint True, this run False"):
        check_resume_config(tmp_path, ElectraPretrainingConfig.from_preset("tiny", vocab_size=100,
                                                                           mask_with_replacement=False))
    deeper = ElectraPretrainingConfig.from_preset("tiny", vocab_size=100, num_hidden_layers=3)
    with pytest.raises(ValueError, match="discriminator_config.num_hidden_layers: checkpoint"):
        check_resume_config(tmp_path, deeper)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["mask_with_replacement"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING, logger="electra_hf.pretraining"):
        check_resume_config(tmp_path, config)
    assert "predates the config field mask_with_replacement" in caplog.text
