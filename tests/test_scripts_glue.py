"""train_glue.py end to end: main([...]) on a tiny ELECTRA and real GLUE files (small subsets)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from electra_hf.metrics import GLUE_METRIC

from .conftest import GLUE_DIR, build_glue_discriminator, load_script

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "train.tsv").is_file(), reason=f"GLUE files not at {GLUE_DIR}")


train_glue = load_script("train_glue")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_glue_discriminator(tmp_path_factory.mktemp("tiny_glue"), sst2_sentences=399, vocab_size=300)


def _common(tiny, out, *extra):
    return ["--model_name_or_path", str(tiny), "--data_dir", str(GLUE_DIR), "--output_dir", str(out),
            "--learning_rate", "3e-3", "--layer_decay", "0.8", "--max_seq_length", "64",
            "--per_device_train_batch_size", "16", "--disable_tqdm", "true", "--logging_steps", "5", *extra]


def test_main_three_tasks_seeds_median_and_submission(tiny, tmp_path):
    out = tmp_path / "run"
    results = train_glue.main(_common(
        tiny, out, "--task_name", "sst2,stsb,rte", "--seeds", "1", "2", "--max_train_samples", "48",
        "--max_eval_samples", "40", "--max_predict_samples", "30", "--num_train_epochs", "1", "--do_predict"))
    assert list(results["tasks"]) == ["SST-2", "STS-B", "RTE"]
    sst2, stsb, rte = (results["tasks"][n] for n in ("SST-2", "STS-B", "RTE"))
    assert sst2["seeds"] == [1, 2] and len(sst2["per_seed"]) == 2
    assert sst2["median"]["dev/accuracy"] == pytest.approx(np.median([m["dev/accuracy"] for m in sst2["per_seed"]]))
    assert set(stsb["metric_keys"]) == {"dev/pearson", "dev/spearmanr"}
    # STS-B trains on swapped pairs too: 48 → 96 examples, 6 steps of 16; SST-2 is single-sentence
    assert stsb["num_train_examples"] == 96 and stsb["global_steps"] == [6, 6]
    assert sst2["num_train_examples"] == 48 and rte["num_train_examples"] == 48
    avg = results["glue_average"]
    expected = np.mean([100 * sst2["median"]["dev/accuracy"], 100 * stsb["median"]["dev/spearmanr"],
                        100 * rte["median"]["dev/accuracy"]])
    assert avg["average"] == pytest.approx(expected) and not avg["complete"]
    # files
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["tasks"]["RTE"]["seeds"] == [1, 2]
    table = (out / "results.md").read_text()
    assert "| SST-2 | dev/accuracy |" in table and "GLUE average" in table
    for name, labels in (("SST-2.tsv", {"0", "1"}), ("RTE.tsv", {"entailment", "not_entailment"}), ("STS-B.tsv", None)):
        lines = (out / "submission" / name).read_text().splitlines()
        assert lines[0] == "index\tprediction" and len(lines) == 31
        values = [line.split("\t")[1] for line in lines[1:]]
        if labels:
            assert set(values) <= labels
        else:
            assert all(0.0 <= float(v) <= 5.0 for v in values)
    assert (out / "SST-2" / "seed_2" / "model.safetensors").is_file()


def test_main_hf_head_from_yaml_config(tiny, tmp_path):
    out = tmp_path / "yaml_run"
    config = tmp_path / "config.yaml"
    config.write_text("\n".join([
        f"model_name_or_path: {tiny}", f"data_dir: {GLUE_DIR}", f"output_dir: {out}", "task_name: mrpc",
        "head: hf", "learning_rate: 0.003", "layer_decay: 0.8", "max_steps: 3", "seeds: [5]",
        "max_train_samples: 32", "max_eval_samples: 16", "max_seq_length: 64", "swap_pairs: false", "disable_tqdm: true",
    ]) + "\n")
    results = train_glue.main([str(config)])
    mrpc = results["tasks"]["MRPC"]
    assert mrpc["num_train_examples"] == 32 and mrpc["global_steps"] == [3]
    assert set(mrpc["median"]) >= {"dev/accuracy", "dev/f1"}
    saved = json.loads((out / "MRPC" / "seed_5" / "config.json").read_text())
    assert saved["architectures"] == ["ElectraForSequenceClassification"] and "auto_map" not in saved


def test_official_lr_comes_from_model_size(tiny, tmp_path):
    results = train_glue.main(["--model_name_or_path", str(tiny), "--data_dir", str(GLUE_DIR), "--output_dir",
                               str(tmp_path), "--task_name", "wnli", "--model_size", "small", "--max_train_steps", "1",
                               "--max_train_samples", "16", "--max_eval_samples", "8", "--save_model", "false",
                               "--disable_tqdm", "true"])
    assert (results["learning_rate"], results["layer_decay"]) == (3e-4, 0.8)


def test_bad_inputs(tiny, tmp_path):
    common = ["--data_dir", str(GLUE_DIR), "--output_dir", str(tmp_path), "--max_train_steps", "1", "--learning_rate", "1e-3",
              "--layer_decay", "0.8"]
    mismatched = build_glue_discriminator(tmp_path / "mismatch", sst2_sentences=399, vocab_size=300,
                                          model_vocab_size=1000)
    with pytest.raises(ValueError, match=r"Tokenizer vocabulary \(\d+ tokens.*vocab_size \(1000"):
        train_glue.main(["--model_name_or_path", str(mismatched), "--task_name", "rte", *common])
    with pytest.raises(ValueError, match="AX.*MNLI"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "ax", *common])
    with pytest.raises(ValueError, match="Unknown GLUE task 'colaa'"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "colaa", *common])
    with pytest.raises(FileNotFoundError, match=r"QQP.*train\.tsv.*--data_dir"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "qqp", *common])
    with pytest.raises(ValueError, match="--data_dir"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "rte", "--output_dir", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--max_seq_length 512 exceeds.*max_position_embeddings \(128"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "rte", *common, "--max_seq_length", "512"])
    with pytest.raises(ValueError, match="--head"):
        train_glue.main(["--model_name_or_path", str(tiny), "--task_name", "rte", "--head", "pooler", *common])


def test_push_to_hub_one_repository_per_task(tiny, tmp_path, hub_stand_in):
    results = train_glue.main(_common(tiny, tmp_path, "--task_name", "rte,wnli", "--max_train_steps", "1",
                                      "--max_train_samples", "16", "--max_eval_samples", "8", "--push_to_hub",
                                      "--hub_model_id", "me/tiny-glue"))
    for task, repo in (("RTE", "me/tiny-glue-rte"), ("WNLI", "me/tiny-glue-wnli")):
        assert results["tasks"][task]["hub"]["repo_id"] == repo
        card = (hub_stand_in.uploaded(repo) / "README.md").read_text()
        assert f"**GLUE {task}**" in card and f"the GLUE TSV files under {GLUE_DIR}" in card
        assert f"| {task} | dev/accuracy |" in card
    assert results["tasks"]["RTE"]["metric_modules"] == [{"module": GLUE_METRIC, "config_name": "rte"}]


def test_resolve_discriminator_path_passes_hub_ids_through():
    from electra_hf.scripts_common import resolve_discriminator_path

    assert resolve_discriminator_path("google/electra-small-discriminator") == "google/electra-small-discriminator"


def test_main_hub_dataset_path(tiny, tmp_path, monkeypatch):
    """--dataset_name nyu-mll/glue (the Hub is unreachable here: load_dataset is faked with the
    Hub's layout for RTE: ClassLabel names, 'validation' split)."""
    import datasets

    from electra_hf.tasks.glue import load_glue_split_from_tsv

    requested = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        requested.append((name, config, split))
        local = load_glue_split_from_tsv("RTE", GLUE_DIR, {"validation": "dev"}.get(split, split)).select(range(20))
        features = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["entailment", "not_entailment"]),
                                      "idx": datasets.Value("int32")})
        return datasets.Dataset.from_dict(local.to_dict(), features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    results = train_glue.main(["--model_name_or_path", str(tiny), "--dataset_name", "nyu-mll/glue", "--task_name", "rte",
                               "--output_dir", str(tmp_path), "--max_train_steps", "1", "--learning_rate", "1e-3",
                               "--layer_decay", "0.8", "--save_model", "false", "--disable_tqdm", "true"])
    assert requested == [("nyu-mll/glue", "rte", "train"), ("nyu-mll/glue", "rte", "validation")]
    assert results["tasks"]["RTE"]["num_train_examples"] == 20
