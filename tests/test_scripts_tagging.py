"""train_tagging.py end to end: main([...]) on a tiny ELECTRA and the real CoNLL files (small subsets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import build_tiny_discriminator, load_script

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELECTRA_HF_DATA", REPO.parent / "shared" / "data"))
CONLL2003 = DATA / "ner" / "conll2003"
CONLL2000 = DATA / "chunking" / "conll2000"
pytestmark = pytest.mark.skipif(not (CONLL2003 / "eng.train").is_file(), reason=f"CoNLL-2003 files not at {CONLL2003}")


train_tagging = load_script("train_tagging")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    lines = (CONLL2003 / "eng.train").read_text().splitlines()[:30000]
    words = [line.split()[0] for line in lines if line.strip() and not line.startswith("-DOCSTART-")]
    texts = [" ".join(words[i:i + 50]) for i in range(0, len(words), 50)]
    return build_tiny_discriminator(tmp_path_factory.mktemp("tiny_tagging"), texts, vocab_size=400, lowercase=False)


def _common(tiny, out, *extra):
    return ["--model_name_or_path", str(tiny), "--output_dir", str(out), "--learning_rate", "3e-3",
            "--layer_decay", "0.8", "--per_device_train_batch_size", "16", "--disable_tqdm", "true",
            "--logging_steps", "8", *extra]


def _conll_sentences(path: Path, n: int) -> list[list[list[str]]]:
    """The first ``n`` sentences of a CoNLL file as lists of lines split into fields (-DOCSTART- skipped)."""
    sentences, current = [], []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if current:
                sentences.append(current)
                current = []
            if len(sentences) == n:
                break
            continue
        current.append(line.split())
    return sentences


PLAIN_PIPELINE = """
import json, sys
from transformers import AutoModelForTokenClassification, pipeline
path, text = sys.argv[1], sys.argv[2]
model = AutoModelForTokenClassification.from_pretrained(path)
ner = pipeline("token-classification", model=path, aggregation_strategy="simple", ignore_labels=[])
groups = ner(text)
print(json.dumps({"class": type(model).__name__, "id2label": model.config.id2label,
                  "electra_hf_loaded": any(m.startswith("electra_hf") for m in sys.modules),
                  "groups": [[g["entity_group"], g["word"], g["start"], g["end"]] for g in groups]}))
"""


def test_conll2003_two_seeds_learn_predict_and_reload_in_plain_transformers(tiny, tmp_path):
    out = tmp_path / "ner"
    results = train_tagging.main(_common(
        tiny, out, "--task", "conll2003", "--data_dir", str(CONLL2003), "--seeds", "1", "2",
        "--max_train_samples", "500", "--max_eval_samples", "150", "--max_predict_samples", "60",
        "--num_train_epochs", "2", "--do_predict"))

    from electra_hf.tasks.tagging import CONLL2003_LABELS

    assert results["labels"] == list(CONLL2003_LABELS) and results["tag_scheme"] == "iob1"
    assert results["seeds"] == [1, 2] and results["num_train_examples"] == 500
    assert results["global_steps"] == [64, 64]  # ceil(500 / 16) = 32 steps × 2 epochs
    assert results["num_eval_examples"] == {"dev": 150, "test": 60}
    for history in results["loss_history"]:  # the tiny model learns (mostly the O prior, but it learns)
        assert np.mean(history[-10:]) < 0.7 * np.mean(history[:3])
    per_seed, median = results["per_seed"], results["median"]
    for key in ("dev/f1", "dev/accuracy", "test/f1", "dev/PER/f1", "test/LOC/recall"):
        assert key in results["metric_keys"]
        assert median[key] == pytest.approx(np.median([m[key] for m in per_seed]))
    assert all(0.0 <= m["dev/accuracy"] <= 1.0 and m["dev/num_entities"] > 0 for m in per_seed)
    assert {"dev/MISC/precision", "dev/ORG/recall", "dev/LOC/f1"} <= set(results["metric_keys"])
    assert results["best_seed"] in (1, 2) and results["best_seed_selected_by"] == "dev/f1"
    assert json.loads((out / "results.json").read_text())["seeds"] == [1, 2]
    assert "| conll2003 | dev/f1 |" in (out / "results.md").read_text()

    # CoNLL predictions: word, gold (IOB1 converted to IOB2), prediction; one block per test sentence
    gold_sentences = _conll_sentences(CONLL2003 / "eng.testb", 60)
    from electra_hf.tasks.tagging import iob1_to_iob2

    for seed in (1, 2):
        blocks = Path(results["test_predictions"][str(seed)]).read_text().strip("\n").split("\n\n")
        assert len(blocks) == 60
        for block, gold in zip(blocks, gold_sentences):
            rows = [line.split(" ") for line in block.split("\n")]
            assert [r[0] for r in rows] == [g[0] for g in gold]
            assert [r[1] for r in rows] == iob1_to_iob2([g[-1] for g in gold])
            assert all(len(r) == 3 and r[2] in CONLL2003_LABELS for r in rows)

    # The saved model: plain transformers in a fresh process, pipeline with aggregation
    saved = out / "seed_2"
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["ElectraForTokenClassification"] and "auto_map" not in config
    text = "EU rejects German call to boycott British lamb ."
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_PIPELINE, str(saved), text], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["class"] == "ElectraForTokenClassification" and not reply["electra_hf_loaded"]
    assert list(reply["id2label"].values()) == list(CONLL2003_LABELS)
    groups = reply["groups"]  # ignore_labels=[]: O groups come back too, so the whole sentence is covered
    assert groups and all(g[0] in {"O", "PER", "ORG", "LOC", "MISC"} for g in groups)
    assert all(text[start:end].replace(" ", "") == word.replace(" ", "") for _, word, start, end in groups)
    assert "".join(g[1] for g in groups).replace(" ", "") == text.replace(" ", "")


@pytest.mark.skipif(not (CONLL2000 / "train.txt.gz").is_file(), reason="CoNLL-2000 files missing")
def test_conll2000_from_data_root_labels_derived(tiny, tmp_path):
    results = train_tagging.main(_common(
        tiny, tmp_path, "--task", "conll2000", "--data_dir", str(DATA), "--max_train_samples", "64",
        "--max_eval_samples", "32", "--max_train_steps", "2", "--save_model", "false"))
    labels = results["labels"]
    assert labels[0] == "O" and {"B-NP", "I-NP", "B-VP", "B-PP"} <= set(labels)
    assert labels.index("B-NP") + 1 == labels.index("I-NP")  # sorted by type, B- before I-
    assert results["global_steps"] == [2] and "dev/NP/f1" in results["metric_keys"]
    with pytest.raises(ValueError, match="--do_predict needs a test file.*conll2000"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2000", "--data_dir", str(DATA), "--do_predict"))


def test_explicit_files_from_yaml_and_malformed_file(tiny, tmp_path):
    # Explicit files with a tag column and scheme (IOB1 auto-detected), from a YAML config
    train = tmp_path / "train.conll"
    lines = (CONLL2003 / "eng.train").read_text().splitlines()[:400]
    train.write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.yaml"
    config.write_text("\n".join([
        f"model_name_or_path: {tiny}", f"output_dir: {tmp_path / 'yaml_run'}", f"train_file: {train}",
        f"validation_file: {CONLL2003 / 'eng.testa'}", "tag_column: 3", "tag_scheme: auto", "max_eval_samples: 20",
        "learning_rate: 0.003", "layer_decay: 0.8", "max_steps: 2", "seeds: [7]", "save_model: false",
        "disable_tqdm: true"]) + "\n")
    results = train_tagging.main([str(config)])
    assert results["tag_scheme"] == "auto" and results["seeds"] == [7] and results["global_steps"] == [2]
    assert {"B-PER", "I-PER", "I-ORG"} <= set(results["labels"])  # B-PER appears only after IOB1 → IOB2

    # --task conll2003 on its chunk column: not the fixed NER labels, so the labels come from the data
    results = train_tagging.main(_common(tiny, tmp_path / "chunks", "--task", "conll2003", "--train_file", str(train),
                                         "--validation_file", str(train), "--tag_column", "2", "--max_train_steps", "1",
                                         "--save_model", "false"))
    assert {"B-NP", "I-NP", "I-VP"} <= set(results["labels"]) and "B-PER" not in results["labels"]

    # A token line missing its tag: the error names the file and the line
    broken = lines[:30]
    bad_index = next(i for i, line in enumerate(broken) if line.strip() and not line.startswith("-DOCSTART-") and i > 10)
    broken[bad_index] = broken[bad_index].split()[0]
    bad = tmp_path / "bad.conll"
    bad.write_text("\n".join(broken) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.conll, line {bad_index + 1}: 1 column"):
        train_tagging.main(_common(tiny, tmp_path, "--train_file", str(bad), "--validation_file",
                                   str(CONLL2003 / "eng.testa"), "--max_train_steps", "1"))


def test_push_to_hub_sends_the_best_seed_without_the_run_records(tiny, tmp_path, hub_stand_in):
    results = train_tagging.main(_common(
        tiny, tmp_path / "run", "--task", "conll2003", "--data_dir", str(CONLL2003), "--max_train_samples", "32",
        "--max_eval_samples", "16", "--max_predict_samples", "8", "--max_train_steps", "1", "--do_predict",
        "--push_to_hub", "--hub_model_id", "me/tiny-ner"))
    pushed = hub_stand_in.uploaded("me/tiny-ner")
    files = {path.name for path in pushed.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "results.json", "results.md"} <= files
    assert not files & {"test_predictions.txt", "run_result.json"}
    card = (pushed / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "AutoModelForTokenClassification" in card
    assert "trust_remote_code" not in card and "| conll2003 | dev/f1 |" in card
    assert results["hub"] == {"repo_id": "me/tiny-ner", "seed": 42, "selected_by": "dev/f1", "seed_folders": []}
    assert results["metric_modules"][0]["config_name"] == "entities"


def test_bad_arguments(tiny, tmp_path):
    with pytest.raises(ValueError, match="Unknown tagging task 'conll2002'"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2002", "--data_dir", str(DATA)))
    with pytest.raises(ValueError, match="--task conll2003 needs --data_dir"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2003"))
    with pytest.raises(FileNotFoundError, match="eng.train.*--data_dir"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2003", "--data_dir", str(tmp_path)))
    with pytest.raises(ValueError, match="--tag_scheme"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2003", "--data_dir", str(DATA), "--tag_scheme", "bio"))
    with pytest.raises(ValueError, match=r"--max_seq_length 512 exceeds.*max_position_embeddings \(128"):
        train_tagging.main(_common(tiny, tmp_path, "--task", "conll2003", "--data_dir", str(DATA),
                                   "--max_seq_length", "512"))


def test_hub_dataset_path(tiny, tmp_path, monkeypatch):
    """--dataset_name (the Hub is unreachable here: load_dataset is faked with the Hub's conll2003
    layout: IOB2 ClassLabel names, 'validation' split)."""
    import datasets

    from electra_hf.tasks.tagging import CONLL2003_LABELS, read_conll

    hub_names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    requested = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        requested.append((name, config, split))
        local = read_conll(CONLL2003 / {"train": "eng.train", "validation": "eng.testa"}[split], -1,
                           tag_scheme="iob1").select(range(24))
        features = datasets.Features({"id": datasets.Value("string"),
                                      "tokens": datasets.List(datasets.Value("string")),
                                      "ner_tags": datasets.List(datasets.ClassLabel(names=hub_names))})
        data = {"id": local["id"], "tokens": local["tokens"],
                "ner_tags": [[hub_names.index(t) for t in tags] for tags in local["tags"]]}
        return datasets.Dataset.from_dict(data, features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    results = train_tagging.main(_common(tiny, tmp_path, "--dataset_name", "conll2003", "--task", "conll2003",
                                         "--max_train_steps", "1", "--save_model", "false"))
    assert requested == [("conll2003", None, "train"), ("conll2003", None, "validation")]
    assert results["labels"] == list(CONLL2003_LABELS) and results["num_train_examples"] == 24


def test_eval_recorder_picks_the_evaluation_behind_the_reported_metrics():
    from electra_hf.scripts_common import EvalRecorder

    recorder = EvalRecorder(lambda split, pred: ({"f1": pred}, f"{split}@{pred}"), ["dev", "test"])
    # seed 1: evaluated at steps 5 and 10, best kept at step 5; seed 2: final weights (one evaluation)
    for pred in (0.9, 0.5, 0.4, 0.4, 0.7, 0.6):
        recorder("dev" if len(recorder._evaluations) % 2 == 0 else "test", pred)
    runs = [SimpleNamespace(metrics={"dev/f1": 0.9, "test/f1": 0.5, "train_loss": 1.0},
                            eval_history=[(5, {"dev/f1": 0.9, "test/f1": 0.5}), (10, {"dev/f1": 0.4, "test/f1": 0.4})]),
            SimpleNamespace(metrics={"dev/f1": 0.7, "test/f1": 0.6}, eval_history=[(3, {"dev/f1": 0.7, "test/f1": 0.6})])]
    assert recorder.artifacts_per_run(runs) == [{"dev": "dev@0.9", "test": "test@0.5"},
                                                {"dev": "dev@0.7", "test": "test@0.6"}]
    with pytest.raises(RuntimeError, match="saw 6 evaluations, the runs report 2"):
        recorder.artifacts_per_run(runs[1:])
