"""Tests of electra_hf.finetuning (the shared loop) and electra_hf.heads on a tiny ELECTRA
(a WordPiece vocabulary trained here on GLUE sentences, hidden 32, 2 layers)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from electra_hf.arguments import FinetuningArguments
from electra_hf.finetuning import FinetuningTask, finetune, make_collator, resolve_learning_rate_and_layer_decay
from electra_hf.samplers import LengthGroupedSampler
from electra_hf.seeds import median_metrics, run_with_seeds
from electra_hf.training import build_accelerator

from .conftest import GLUE_DIR

pytestmark = pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "train.tsv").is_file(), reason=f"GLUE files not at {GLUE_DIR}")
REPO = Path(__file__).resolve().parents[1]


def _sst2(tokenizer, split: str, n: int, max_length: int = 64, padding: bool | str = False):
    from electra_hf.tasks.glue import load_glue_split

    ds = load_glue_split("SST-2", GLUE_DIR, split).select(range(n))
    return ds.map(lambda b: tokenizer(b["sentence1"], truncation=True, max_length=max_length, padding=padding),
                  batched=True, remove_columns=["sentence1", "idx"])


def _official_model(tiny_dir, num_labels=2):
    from transformers import AutoConfig

    from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification

    config = ElectraOfficialHeadConfig.from_electra_config(AutoConfig.from_pretrained(tiny_dir), num_labels=num_labels)
    return ElectraOfficialHeadForSequenceClassification.from_pretrained(tiny_dir, config=config)


def _accuracy(split, prediction):
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def _args(tmp_path, **overrides):
    base = dict(output_dir=str(tmp_path / "out"), learning_rate=3e-3, layer_decay=0.8, per_device_train_batch_size=16,
                per_device_eval_batch_size=16, num_train_epochs=1, logging_steps=5, disable_tqdm=True,
                save_model=False)
    base.update(overrides)
    return FinetuningArguments(**base)


# ---------------------------------------------------------------------------- learning
def test_training_loss_falls(tiny_dir, tokenizer, tmp_path):
    train = _sst2(tokenizer, "train", 64)  # a random-init tiny encoder: it can at least fit 64 sentences
    args = _args(tmp_path, learning_rate=5e-3, num_train_epochs=8, per_device_train_batch_size=8)
    result = finetune(_official_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args), eval_datasets={"dev": _sst2(tokenizer, "dev", 64)}, compute_metrics=_accuracy), args, seed=0)
    losses = result.loss_history
    assert result.global_step == len(losses) == 8 * 8
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.5 * first, (first, last)  # measured: 0.69 → 0.06
    assert 0.0 <= result.metrics["dev/accuracy"] <= 1.0
    assert math.isfinite(result.metrics["train_loss"])


def test_gradient_accumulation_counts_optimizer_steps(tiny_dir, tokenizer, tmp_path):
    train = _sst2(tokenizer, "train", 10)  # batch 2 → 5 micro-batches → ceil(5/2) = 3 optimizer steps per epoch
    args = _args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, num_train_epochs=2,
                 warmup_ratio=0.0)
    accelerator = build_accelerator(args)
    result = finetune(_official_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args)), args, accelerator=accelerator, seed=1)
    assert result.global_step == 6 and len(result.loss_history) == 6
    optimizer = accelerator._optimizers[0]
    any_param = next(p for p in result.model.parameters())
    assert optimizer.optimizer.state[any_param]["step"].item() == 6
    assert optimizer.param_groups[-1]["lr"] == pytest.approx(0.0)  # linear decay reached 0 exactly at the end
    accelerator.free_memory()


def test_max_steps_and_official_schedule(tiny_dir, tokenizer, tmp_path):
    train = _sst2(tokenizer, "train", 64)
    args = _args(tmp_path, max_train_steps=3, lr_scheduler_type="electra", adam_bias_correction=False, weight_decay=0.01,
                 official_layer_decay_off_by_one=True)
    result = finetune(_official_model(tiny_dir), FinetuningTask(train, make_collator(tokenizer, args)), args, seed=2)
    assert result.global_step == 3


def test_evaluation_counts_each_example_once_in_order(tiny_dir, tokenizer, tmp_path):
    dev = _sst2(tokenizer, "dev", 37)  # 37 = 2 full batches of 16 + 5
    args = _args(tmp_path, max_train_steps=1)
    seen = {}

    def record(split, prediction):
        seen[split] = prediction
        return {"n": len(prediction.label_ids)}

    result = finetune(_official_model(tiny_dir), FinetuningTask(_sst2(tokenizer, "train", 16), make_collator(tokenizer, args), eval_datasets={"dev": dev}, compute_metrics=record, predict_datasets={"test": dev.remove_columns("label")}), args)
    assert result.metrics["dev/n"] == 37
    assert seen["dev"].predictions.shape == (37, 2)
    assert seen["dev"].label_ids.tolist() == dev["label"]
    assert result.predictions["test"].predictions.shape == (37, 2) and result.predictions["test"].label_ids is None
    np.testing.assert_allclose(result.predictions["test"].predictions, seen["dev"].predictions, atol=1e-6)


@pytest.mark.multiprocess
def test_evaluation_under_two_processes_counts_each_example_once(tiny_dir, tmp_path):
    script = tmp_path / "eval2.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, torch
        from accelerate import Accelerator
        from datasets import Dataset
        from transformers import AutoTokenizer, DataCollatorWithPadding
        from electra_hf.finetuning import predict
        from electra_hf.heads import ElectraOfficialHeadConfig, ElectraOfficialHeadForSequenceClassification
        from transformers import AutoConfig
        tok = AutoTokenizer.from_pretrained({str(tiny_dir)!r})
        cfg = ElectraOfficialHeadConfig.from_electra_config(AutoConfig.from_pretrained({str(tiny_dir)!r}), num_labels=2)
        model = ElectraOfficialHeadForSequenceClassification.from_pretrained({str(tiny_dir)!r}, config=cfg)
        texts = ["word " * (1 + i % 7) for i in range(37)]  # 37 examples, ragged lengths
        ds = Dataset.from_dict({{"label": list(range(37))}}).add_column("t", texts)
        ds = ds.map(lambda b: tok(b["t"]), batched=True, remove_columns=["t"])
        acc = Accelerator(cpu=True)
        loader = acc.prepare(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=DataCollatorWithPadding(tok)))
        out = predict(acc.prepare(model), loader, acc, disable_tqdm=True)
        if acc.is_main_process:
            json.dump({{"labels": out.label_ids.tolist(), "n": int(out.predictions.shape[0]),
                       "procs": acc.num_processes}}, open(os.environ["OUT_JSON"], "w"))
    """))
    out_json = tmp_path / "out.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "OUT_JSON": str(out_json)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(out_json.read_text())
    assert out["procs"] == 2
    assert out["n"] == 37 and out["labels"] == list(range(37))  # no duplicates from even batches, original order


# ---------------------------------------------------------------------------- seeds and median
def test_median_metrics_by_hand():
    runs = [{"a": 0.5, "b": 1.0}, {"a": 0.9, "b": float("nan")}, {"a": 0.7, "b": 3.0, "only_here": 1.0}]
    assert median_metrics(runs) == {"a": 0.7, "b": 2.0}
    assert median_metrics([{"a": 1.0}, {"a": 4.0}]) == {"a": 2.5}
    assert median_metrics([]) == {}


def test_run_with_seeds_reports_median(tiny_dir, tokenizer, tmp_path):
    args = _args(tmp_path, max_train_steps=4, seeds=[3, 4, 5], save_model=True)
    outcome = run_with_seeds(lambda: _official_model(tiny_dir), FinetuningTask(_sst2(tokenizer, "train", 64), make_collator(tokenizer, args), eval_datasets={"dev": _sst2(tokenizer, "dev", 48)}, compute_metrics=_accuracy, tokenizer=tokenizer), args, run_name="SST-2")
    assert outcome.seeds == [3, 4, 5]
    values = [r.metrics["dev/accuracy"] for r in outcome.per_seed]
    assert outcome.median["dev/accuracy"] == pytest.approx(float(np.median(values)))
    assert len({tuple(r.loss_history) for r in outcome.per_seed}) == 3  # different seeds, different runs
    for seed in (3, 4, 5):
        assert (tmp_path / "out" / "SST-2" / f"seed_{seed}" / "model.safetensors").is_file()
        assert (tmp_path / "out" / "SST-2" / f"seed_{seed}" / "tokenizer_config.json").is_file()
    assert all(r.model is None for r in outcome.per_seed)
    best = outcome.best_seed("dev/accuracy")
    assert best.metrics["dev/accuracy"] == max(values)


def test_same_seed_reproduces(tiny_dir, tokenizer, tmp_path):
    args = _args(tmp_path, max_train_steps=3, seeds=[7, 7])
    outcome = run_with_seeds(lambda: _official_model(tiny_dir), FinetuningTask(_sst2(tokenizer, "train", 48), make_collator(tokenizer, args)), args)
    assert outcome.per_seed[0].loss_history == outcome.per_seed[1].loss_history


def test_best_model_selection_with_eval_steps(tiny_dir, tokenizer, tmp_path):
    args = _args(tmp_path, max_train_steps=6, eval_steps=2, metric_for_best_model="dev/accuracy")
    result = finetune(_official_model(tiny_dir), FinetuningTask(_sst2(tokenizer, "train", 64), make_collator(tokenizer, args), eval_datasets={"dev": _sst2(tokenizer, "dev", 48)}, compute_metrics=_accuracy), args, seed=0)
    assert [step for step, _ in result.eval_history] == [2, 4, 6]
    best = max(m["dev/accuracy"] for _, m in result.eval_history)
    assert result.metrics["dev/accuracy"] == best
    with pytest.raises(ValueError, match="eval_steps"):
        FinetuningArguments(metric_for_best_model="dev/accuracy")


# ---------------------------------------------------------------------------- pieces
def test_learning_rate_and_layer_decay_by_size():
    from types import SimpleNamespace

    args = FinetuningArguments()
    assert resolve_learning_rate_and_layer_decay(args, SimpleNamespace(hidden_size=256)) == (3e-4, 0.8)
    assert resolve_learning_rate_and_layer_decay(args, SimpleNamespace(hidden_size=768)) == (1e-4, 0.8)
    assert resolve_learning_rate_and_layer_decay(args, SimpleNamespace(hidden_size=1024)) == (5e-5, 0.9)
    assert resolve_learning_rate_and_layer_decay(FinetuningArguments(model_size="large"),
                                                 SimpleNamespace(hidden_size=32)) == (5e-5, 0.9)
    assert resolve_learning_rate_and_layer_decay(FinetuningArguments(learning_rate=1e-3, layer_decay=1.0),
                                                 SimpleNamespace(hidden_size=32)) == (1e-3, 1.0)
    with pytest.raises(ValueError, match="--model_size"):
        resolve_learning_rate_and_layer_decay(args, SimpleNamespace(hidden_size=32))
    with pytest.raises(ValueError, match="model_size"):
        FinetuningArguments(model_size="huge")


def test_defaults_are_the_papers():
    args = FinetuningArguments()
    assert (args.warmup_ratio, args.per_device_train_batch_size, args.max_seq_length, args.max_grad_norm) == (0.1, 32, 128, 1.0)
    assert (args.adam_epsilon, args.adam_beta1, args.adam_beta2, args.weight_decay) == (1e-6, 0.9, 0.999, 0.0)
    assert args.seeds == [42] and FinetuningArguments().seeds is not args.seeds  # no shared mutable default


def test_length_grouped_sampler():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47] * 4
    sampler = LengthGroupedSampler(lengths, batch_size=4, seed=0, mega_batch_mult=8)
    order = list(sampler)
    assert sorted(order) == list(range(len(lengths)))
    batches = [order[i:i + 4] for i in range(0, len(order), 4)]
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) <= 3  # every batch is all short or all long
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch
    sampler.set_epoch(0)
    assert list(sampler) == order  # deterministic (identical on every process)


def test_group_by_length_and_static_padding_train(tiny_dir, tokenizer, tmp_path):
    args = _args(tmp_path, max_train_steps=2, group_by_length=True)
    assert finetune(_official_model(tiny_dir), FinetuningTask(_sst2(tokenizer, "train", 32), make_collator(tokenizer, args)), args).global_step == 2
    args = _args(tmp_path, max_train_steps=2, pad_to_max_length=True)
    padded = _sst2(tokenizer, "train", 32, padding="max_length")
    assert finetune(_official_model(tiny_dir), FinetuningTask(padded, make_collator(tokenizer, args)), args).global_step == 2


def test_missing_tracker_is_an_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(ValueError, match="tensorboard package is not installed"):
        build_accelerator(FinetuningArguments(output_dir=str(tmp_path), report_to=["tensorboard"]))


# ---------------------------------------------------------------------------- heads and reloading
def test_official_head_architecture_and_losses(tiny_dir):
    model = _official_model(tiny_dir, num_labels=3).eval()
    assert [n for n, _ in model.named_children()] == ["electra", "dropout", "classifier"]
    assert model.classifier.in_features == 32 and model.classifier.out_features == 3
    assert model.dropout.p == 0.1
    ids = torch.tensor([[2, 10, 11, 3], [2, 12, 3, 0]])
    mask = (ids != 0).long()
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3)
    cls = model.electra(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
    torch.testing.assert_close(out.logits, model.classifier(cls))  # one linear layer on [CLS]
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, torch.tensor([0, 2])))
    reg = _official_model(tiny_dir, num_labels=1).eval()
    out = reg(input_ids=ids, attention_mask=mask, labels=torch.tensor([0.2, 0.8]))
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), torch.tensor([0.2, 0.8])))
    # the encoder weights come from the discriminator checkpoint
    from transformers import ElectraForPreTraining

    disc = ElectraForPreTraining.from_pretrained(tiny_dir)
    torch.testing.assert_close(model.electra.encoder.layer[1].output.dense.weight, disc.electra.encoder.layer[1].output.dense.weight)


def _reload_in_subprocess(model_dir: Path, ids: torch.Tensor, trust_remote_code: bool) -> np.ndarray:
    code = textwrap.dedent(f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(model_dir)!r}, trust_remote_code={trust_remote_code}).eval()
        assert not any(m.startswith("electra_hf") for m in sys.modules), "electra_hf was imported"
        with torch.no_grad():
            logits = model(input_ids=torch.tensor({ids.tolist()})).logits
        print("LOGITS" + json.dumps(logits.tolist()))
        print("CLASS" + type(model).__name__)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          cwd=str(model_dir.parent))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    logits = json.loads(next(l for l in lines if l.startswith("LOGITS"))[6:])
    return np.asarray(logits), next(l for l in lines if l.startswith("CLASS"))[5:]


@pytest.mark.parametrize("head", ["official", "hf"])
def test_finetuned_model_reloads_with_auto_class(tiny_dir, tokenizer, tmp_path, head):
    from transformers import AutoModelForSequenceClassification, ElectraForSequenceClassification

    import electra_hf.heads  # noqa: F401  (registration)

    if head == "official":
        model = _official_model(tiny_dir)
    else:
        model = ElectraForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    args = _args(tmp_path, max_train_steps=3, save_model=True)
    result = finetune(model, FinetuningTask(_sst2(tokenizer, "train", 32), make_collator(tokenizer, args), tokenizer=tokenizer), args, output_dir=str(tmp_path / head))
    saved = Path(result.output_dir)
    ids = torch.tensor([[2, 40, 41, 42, 3], [2, 50, 51, 52, 3]])
    trained = result.model.eval()
    with torch.no_grad():
        expected = trained(input_ids=ids).logits.numpy()
    reloaded = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    assert type(reloaded) is type(trained)
    with torch.no_grad():
        np.testing.assert_array_equal(reloaded(input_ids=ids).logits.numpy(), expected)
    # A plain-transformers process (no electra_hf): the stock head directly, the official head via
    # the code copied next to the weights (trust_remote_code).
    # The subprocess runs one thread, which orders float reductions differently: equal to rounding.
    logits, class_name = _reload_in_subprocess(saved, ids, trust_remote_code=(head == "official"))
    np.testing.assert_allclose(logits.astype(np.float32), expected, rtol=1e-5, atol=1e-6)
    assert class_name == type(trained).__name__
    if head == "official":
        assert (saved / "heads.py").is_file()
