"""Crash-safe, resumable fine-tuning (electra_hf.finetuning: --checkpointing_steps, --resume).

A run interrupted after a checkpoint and resumed must give what the uninterrupted run gives:
the same loss at every optimizer step, the same evaluations, the same best-model choice and the
same final weights; finished seeds are read back, not trained again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from electra_hf import run_records
from electra_hf.arguments import FinetuningArguments
from electra_hf.checkpoints import list_checkpoints
from electra_hf.finetuning import FinetuningTask, finetune, make_collator
from electra_hf.run_records import read_run_result
from electra_hf.samplers import EpochShuffleSampler
from electra_hf.seeds import run_with_seeds
from tests.test_finetuning import GLUE_DIR, _accuracy, _args, _official_model, _sst2

needs_glue = pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "train.tsv").is_file(), reason=f"GLUE files not at {GLUE_DIR}")


class Crash(RuntimeError):
    pass


def crashing_collator(collator, after_batches: int):
    """The collator, raising once `after_batches` batches have been built (a crash mid-epoch)."""
    calls = {"n": 0}

    def collate(features):
        calls["n"] += 1
        if calls["n"] > after_batches:
            raise Crash(f"simulated crash at batch {calls['n']}")
        return collator(features)

    return collate


def _model(tiny_dir):
    torch.manual_seed(0)  # the new head's initialisation (run_with_seeds seeds before model_init)
    return _official_model(tiny_dir)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@needs_glue
@pytest.mark.parametrize("accumulation", [1, 2])
def test_resumed_run_equals_the_uninterrupted_one(tiny_dir, tokenizer, tmp_path, accumulation):
    """40 examples, batch 4: 10 micro-batches an epoch, 2 epochs, dropout on. Crash in epoch 2
    after the checkpoint at step 6 (accumulation 1) or 4 (accumulation 2); resume; compare."""
    train, dev = _sst2(tokenizer, "train", 40), _sst2(tokenizer, "dev", 24)
    common = dict(per_device_train_batch_size=4, gradient_accumulation_steps=accumulation, num_train_epochs=2,
                  logging_steps=3, eval_steps=2, metric_for_best_model="dev/accuracy")
    reference_args = _args(tmp_path / "reference", **common)
    reference = finetune(_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, reference_args), eval_datasets={"dev": dev}, compute_metrics=_accuracy), reference_args, seed=3)
    expected_weights = _weights(reference.model)

    args = _args(tmp_path / "resumed", checkpointing_steps=2, **common)
    crash_after = 26  # batches built (training and evaluation): inside epoch 2
    with pytest.raises(Crash):
        finetune(_model(tiny_dir), FinetuningTask(train, crashing_collator(make_collator(tokenizer, args), crash_after), eval_datasets={"dev": dev}, compute_metrics=_accuracy), args, seed=3)
    checkpoints = list_checkpoints(tmp_path / "resumed" / "out" / "checkpoints")
    assert len(checkpoints) == 1  # only the newest is kept
    last_step = checkpoints[0][0]  # (the collator also builds the evaluations' batches)
    assert last_step % 2 == 0 and 10 // accumulation <= last_step < 20 // accumulation  # in epoch 2
    state = json.loads((checkpoints[0][1] / "training_state.json").read_text())
    assert state["step"] == last_step and len(state["loss_history"]) == last_step
    assert (checkpoints[0][1] / "best_model_state.pt").is_file()

    resumed_args = _args(tmp_path / "resumed", checkpointing_steps=2, resume_from_checkpoint="latest", **common)
    # A fresh model: everything that matters must come from the checkpoint.
    resumed = finetune(_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, resumed_args), eval_datasets={"dev": dev}, compute_metrics=_accuracy), resumed_args, seed=3)
    assert resumed.global_step == reference.global_step == 20 // accumulation
    np.testing.assert_allclose(resumed.loss_history, reference.loss_history, rtol=1e-5, atol=1e-6)
    assert [s for s, _ in resumed.eval_history] == [s for s, _ in reference.eval_history]
    for (_, got), (_, want) in zip(resumed.eval_history, reference.eval_history):
        assert got["dev/accuracy"] == pytest.approx(want["dev/accuracy"])
    assert resumed.metrics["dev/accuracy"] == pytest.approx(reference.metrics["dev/accuracy"])
    assert resumed.metrics["train_loss"] == pytest.approx(reference.metrics["train_loss"], rel=1e-5)
    for name, value in _weights(resumed.model).items():
        torch.testing.assert_close(value, expected_weights[name], rtol=1e-5, atol=1e-6)
    # Finished: the checkpoint is gone, the run is recorded.
    assert not (tmp_path / "resumed" / "out" / "checkpoints").exists()
    assert (tmp_path / "resumed" / "out" / run_records.RUN_RESULT_FILE).is_file()


def _crashed_run(model_dir, glue_tokenizer, out_dir, after_batches: int):
    """A 6-step run on 32 SST-2 sentences (batch 4, a checkpoint every 2 steps) that crashes once
    `after_batches` batches are built; returns its training set and arguments."""
    train = _sst2(glue_tokenizer, "train", 32)
    args = _args(out_dir, checkpointing_steps=2, max_train_steps=6, per_device_train_batch_size=4)
    collator = crashing_collator(make_collator(glue_tokenizer, args), after_batches)
    with pytest.raises(Crash):
        finetune(_model(model_dir), FinetuningTask(train, collator), args, seed=1)
    return train, args


@needs_glue
def test_a_crash_mid_checkpoint_is_ignored_on_resume(tiny_dir, tokenizer, tmp_path):
    train, args = _crashed_run(tiny_dir, tokenizer, tmp_path, after_batches=5)
    root = tmp_path / "out" / "checkpoints"
    # What a crash while writing step 6 leaves behind: a staging folder without the marker.
    (root / "step_00000006.tmp").mkdir()
    (root / "step_00000006.tmp" / "model.safetensors").write_bytes(b"truncated")
    resumed_args = _args(tmp_path, checkpointing_steps=2, max_train_steps=6, per_device_train_batch_size=4, resume_from_checkpoint="latest")
    reference = finetune(_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args)), _args(tmp_path / "reference", max_train_steps=6, per_device_train_batch_size=4), seed=1)
    resumed = finetune(_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args)), resumed_args, seed=1)
    np.testing.assert_allclose(resumed.loss_history, reference.loss_history, rtol=1e-5, atol=1e-6)


@needs_glue
def test_resume_refuses_a_checkpoint_of_another_run(tiny_dir, tokenizer, tmp_path):
    train, _ = _crashed_run(tiny_dir, tokenizer, tmp_path, after_batches=3)
    other = _args(tmp_path, checkpointing_steps=2, max_train_steps=6, per_device_train_batch_size=8, resume_from_checkpoint="latest")
    with pytest.raises(ValueError, match=r"made by another run \(per_device_train_batch_size 4 there, 8 now\)"):
        finetune(_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, other)), other, seed=1)
    with pytest.raises(ValueError, match="checkpointing_steps must be"):
        FinetuningArguments(checkpointing_steps=-1)


@needs_glue
def test_finished_seeds_are_read_back_not_trained_again(tiny_dir, tokenizer, tmp_path):
    train, dev, test = _sst2(tokenizer, "train", 32), _sst2(tokenizer, "dev", 24), _sst2(tokenizer, "dev", 10)
    args = _args(tmp_path, max_train_steps=3, seeds=[1, 2], per_device_train_batch_size=8)
    scoring = dict(eval_datasets={"dev": dev}, compute_metrics=_accuracy, predict_datasets={"test": test})
    first = run_with_seeds(lambda: _official_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args), **scoring), args, run_name="SST-2")

    def must_not_train():
        raise AssertionError("a finished seed was trained again")

    resumed_args = _args(tmp_path, max_train_steps=3, seeds=[1, 2], per_device_train_batch_size=8, resume_from_checkpoint="latest")
    again = run_with_seeds(must_not_train, FinetuningTask(train, make_collator(tokenizer, args), **scoring), resumed_args, run_name="SST-2")
    assert again.median == pytest.approx(first.median)
    for got, want in zip(again.per_seed, first.per_seed):
        assert got.seed == want.seed and got.global_step == want.global_step
        assert got.loss_history == pytest.approx(want.loss_history)
        np.testing.assert_array_equal(got.predictions["test"].predictions, want.predictions["test"].predictions)
        np.testing.assert_array_equal(got.predictions["test"].label_ids, want.predictions["test"].label_ids)

    # A record made under other arguments is not silently reused.
    changed = _args(tmp_path, max_train_steps=3, seeds=[1, 2], per_device_train_batch_size=8, resume_from_checkpoint="latest", learning_rate=1e-3)
    with pytest.raises(ValueError, match=r"made by another run \(learning_rate 0.003 there, 0.001 now\)"):
        run_with_seeds(must_not_train, FinetuningTask(train, make_collator(tokenizer, args), **scoring), changed, run_name="SST-2")
    with pytest.raises(ValueError, match=r"num_train_examples 32 there, 16 now"):
        run_with_seeds(must_not_train, FinetuningTask(train.select(range(16)), make_collator(tokenizer, args), **scoring), resumed_args, run_name="SST-2")

    # One seed's record lost (as if it crashed): only that seed is trained again, and it reproduces.
    (tmp_path / "out" / "SST-2" / "seed_2" / run_records.RUN_RESULT_FILE).unlink()
    assert read_run_result(tmp_path / "out" / "SST-2" / "seed_2") is None
    calls = []

    def counting_init():
        calls.append(1)
        return _official_model(tiny_dir)

    third = run_with_seeds(counting_init, FinetuningTask(train, make_collator(tokenizer, args), **scoring), resumed_args, run_name="SST-2")
    assert len(calls) == 1
    assert third.per_seed[1].loss_history == pytest.approx(first.per_seed[1].loss_history, rel=1e-5)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=4)
    sampler.set_epoch(3)
    order = list(sampler)
    other = EpochShuffleSampler(50, seed=4)
    other.set_epoch(0)
    list(other)  # drawing earlier epochs does not change epoch 3
    other.set_epoch(3)
    assert list(other) == order and sorted(order) == list(range(50))
    other.set_epoch(4)
    assert list(other) != order
