"""train_squad.py end to end: main([...]) on a tiny ELECTRA and the real SQuAD v1.1 dev file, split by article."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .conftest import build_tiny_discriminator, load_script

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ELECTRA_HF_DATA", REPO.parent / "shared" / "data"))
SQUAD_DEV = DATA / "qa" / "squad-v1.1" / "dev-v1.1.json.gz"
pytestmark = pytest.mark.skipif(not SQUAD_DEV.is_file(), reason=f"SQuAD v1.1 dev not at {SQUAD_DEV}")

MAX_POSITIONS = 192
WINDOWS = ["--max_seq_length", "160", "--doc_stride", "48", "--max_query_length", "32"]


train_squad = load_script("train_squad")


def _squad_json() -> dict:
    with gzip.open(SQUAD_DEV, "rt", encoding="utf-8") as fh:
        return json.load(fh)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    texts = []
    for article in _squad_json()["data"][:12]:
        for paragraph in article["paragraphs"]:
            texts.append(paragraph["context"])
            texts += [qa["question"] for qa in paragraph["qas"]]
    return build_tiny_discriminator(tmp_path_factory.mktemp("tiny_squad"), texts, vocab_size=500, max_positions=MAX_POSITIONS)


def _common(tiny, out, *extra):
    return ["--model_name_or_path", str(tiny), "--output_dir", str(out), "--learning_rate", "3e-3",
            "--layer_decay", "0.8", "--per_device_train_batch_size", "16", "--disable_tqdm", "true",
            "--logging_steps", "10", *WINDOWS, *extra]


# transformers 5 removed pipeline("question-answering") (transformers.pipelines.REMOVED_TASKS), so the
# fresh process does what that pipeline did, with transformers alone: windows over the context,
# the n-best start/end pairs inside the context, the best span's characters.
PLAIN_SPAN_EXTRACTION = """
import json, sys
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer
path, examples = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
tokenizer = AutoTokenizer.from_pretrained(path)
answers = {}
for ex in examples:
    enc = tokenizer(ex["question"], ex["context"], truncation="only_second", max_length=160, stride=48, padding=True,
                    return_overflowing_tokens=True, return_offsets_mapping=True, return_tensors="pt")
    offsets = enc.pop("offset_mapping").tolist()
    enc.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        out = model(**enc)
    best_score, best_text = float("-inf"), ""
    for w in range(len(offsets)):
        length = int(enc["attention_mask"][w].sum())
        in_context = [s == 1 for s in enc.sequence_ids(w)]
        start_logits, end_logits = out.start_logits[w, :length], out.end_logits[w, :length]
        for s in start_logits.argsort(descending=True)[:20].tolist():
            for e in end_logits.argsort(descending=True)[:20].tolist():
                if in_context[s] and in_context[e] and s <= e < s + 30:
                    score = float(start_logits[s] + end_logits[e])
                    if score > best_score:
                        best_score, best_text = score, ex["context"][offsets[w][s][0]:offsets[w][e][1]]
    answers[ex["id"]] = best_text
print(json.dumps({"class": type(model).__name__, "answers": answers,
                  "electra_hf_loaded": any(m.startswith("electra_hf") for m in sys.modules)}))
"""


def test_split_by_article_two_seeds_learn_and_reload_in_plain_transformers(tiny, tmp_path):
    out = tmp_path / "squad"
    results = train_squad.main(_common(
        tiny, out, "--train_file", str(SQUAD_DEV), "--split_by_article", "40", "--seeds", "1", "2",
        "--max_train_samples", "320", "--max_eval_samples", "80", "--max_train_steps", "30"))

    from electra_hf.tasks.qa import read_squad, split_by_article, squad_v1_metrics

    train_part, eval_part = split_by_article(read_squad(SQUAD_DEV), 40)
    held_out = eval_part.select(range(80))
    assert results["num_train_examples"] == 320 and results["num_eval_examples"] == 80
    assert results["num_train_features"] > 320 and results["num_eval_features"] > 80  # long contexts: several windows
    assert results["seeds"] == [1, 2] and results["global_steps"] == [30, 30]
    for history in results["loss_history"]:  # start/end cross-entropy from ~ln(160) down
        assert np.mean(history[-5:]) < 0.85 * np.mean(history[:3])
    per_seed, median = results["per_seed"], results["median"]
    assert results["metric_keys"] == ["dev/exact_match", "dev/f1"]
    for key in results["metric_keys"]:
        assert median[key] == pytest.approx(np.median([m[key] for m in per_seed]))
        assert all(0.0 <= m[key] <= 100.0 for m in per_seed)
    assert all(m["dev/total"] == 80 and m["dev/missing"] == 0 for m in per_seed)
    assert "| dev-v1.1.json.gz" in (out / "results.md").read_text()

    # predictions.json: one answer per held-out question (articles ≥ 40 only), scoring what was reported
    for seed, metrics in zip((1, 2), per_seed):
        predictions = json.loads(Path(results["predictions"][str(seed)]).read_text())
        assert list(predictions) == held_out["id"]
        assert not set(predictions) & set(train_part["id"])
        contexts = dict(zip(held_out["id"], held_out["context"]))
        assert all(answer in contexts[qid] for qid, answer in predictions.items())
        recomputed = squad_v1_metrics(predictions, held_out)
        assert recomputed["f1"] == pytest.approx(metrics["dev/f1"])
        assert recomputed["exact_match"] == pytest.approx(metrics["dev/exact_match"])

    saved = out / "seed_1"
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["ElectraForQuestionAnswering"] and "auto_map" not in config
    # Held-out questions short enough not to be cut at --max_query_length 32 (the script cuts longer ones)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved)
    examples = [{"id": ex["id"], "question": ex["question"].lstrip(), "context": ex["context"]} for ex in held_out
                if len(tokenizer(ex["question"].lstrip(), add_special_tokens=False)["input_ids"]) <= 32][:4]
    assert len(examples) == 4
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", PLAIN_SPAN_EXTRACTION, str(saved), json.dumps(examples)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reply = json.loads(proc.stdout.strip().splitlines()[-1])
    assert reply["class"] == "ElectraForQuestionAnswering" and not reply["electra_hf_loaded"]
    seed_1_answers = json.loads(Path(results["predictions"]["1"]).read_text())
    assert reply["answers"] == {ex["id"]: seed_1_answers[ex["id"]] for ex in examples}
    assert all(reply["answers"].values())


def _v2_file(tmp_path: Path) -> Path:
    """The first three dev articles as SQuAD v2.0: every third question made unanswerable."""
    obj = _squad_json()
    obj = {"version": "v2.0", "data": obj["data"][:3]}
    count = 0
    for article in obj["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if count % 3 == 0:
                    qa["is_impossible"], qa["plausible_answers"], qa["answers"] = True, qa["answers"], []
                count += 1
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(obj))
    return path


def test_v2_with_negative_split_null_odds_and_checks(tiny, tmp_path):
    v2 = _v2_file(tmp_path)
    with pytest.raises(ValueError, match=r"v2\.json: \d+ of \d+ training questions have no answer.*"
                                         r"--version_2_with_negative"):
        train_squad.main(_common(tiny, tmp_path, "--train_file", str(v2), "--split_by_article", "2", "--max_train_steps", "1"))
    results = train_squad.main(_common(
        tiny, tmp_path / "v2", "--train_file", str(v2), "--split_by_article", "2", "--version_2_with_negative",
        "--max_train_samples", "64", "--max_eval_samples", "30", "--max_train_steps", "3", "--save_model", "false",
        "--null_score_diff_threshold", "-1000"))
    assert results["metric_keys"][:2] == ["dev/exact", "dev/f1"]
    assert {"dev/HasAns_f1", "dev/NoAns_exact"} <= set(results["metric_keys"])
    metrics = results["per_seed"][0]
    # threshold -1000: every question is answered "no answer", so exactly the unanswerable ones score
    assert metrics["dev/NoAns_exact"] == 100.0 and metrics["dev/HasAns_exact"] == 0.0
    assert metrics["dev/exact"] == pytest.approx(100.0 * metrics["dev/NoAns_total"] / metrics["dev/total"])
    seed_dir = tmp_path / "v2" / "seed_42"
    predictions = json.loads((seed_dir / "predictions.json").read_text())
    null_odds = json.loads((seed_dir / "null_odds.json").read_text())
    assert set(predictions) == set(null_odds) and len(predictions) == 30 and set(predictions.values()) == {""}


def test_official_defaults_and_bad_inputs(tiny, tmp_path):
    model_args, data_args, ft_args = train_squad.parse_args(["--model_name_or_path", str(tiny), "--train_file", "a",
                                                             "--validation_file", "b"])
    assert (ft_args.max_seq_length, ft_args.num_train_epochs, ft_args.warmup_ratio) == (512, 2.0, 0.1)
    assert (data_args.doc_stride, data_args.max_query_length, data_args.n_best_size,
            data_args.max_answer_length) == (128, 64, 20, 30)
    assert ft_args.learning_rate is None and ft_args.layer_decay is None  # per model size: 3e-4/1e-4/5e-5, 0.8/0.8/0.9

    base = ["--model_name_or_path", str(tiny), "--output_dir", str(tmp_path), "--max_train_steps", "1"]
    # the official 512 does not fit the tiny model's 192 positions
    with pytest.raises(ValueError, match=rf"--max_seq_length 512 exceeds.*max_position_embeddings \({MAX_POSITIONS}"):
        train_squad.main([*base, "--train_file", str(SQUAD_DEV), "--split_by_article", "40"])
    with pytest.raises(ValueError, match="--split_by_article splits one file"):
        train_squad.main([*base, "--train_file", str(SQUAD_DEV), "--validation_file", str(SQUAD_DEV),
                          "--split_by_article", "40"])
    with pytest.raises(ValueError, match="--validation_file"):
        train_squad.main([*base, "--train_file", str(SQUAD_DEV)])
    with pytest.raises(ValueError, match=r"--split_by_article 48 \(.*dev-v1\.1\.json\.gz\): .*48 articles"):
        train_squad.main(_common(tiny, tmp_path, "--train_file", str(SQUAD_DEV), "--split_by_article", "48"))

    # malformed files: the error names the file and the line, or the article and question
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1.1",\n "data": [\n  {"title": "T", "paragraphs": [}\n ]\n}\n')
    with pytest.raises(ValueError, match=r"broken\.json: invalid JSON at line 3"):
        train_squad.main(_common(tiny, tmp_path, "--train_file", str(broken), "--validation_file", str(SQUAD_DEV)))
    obj = {"version": "1.1", "data": _squad_json()["data"][:1]}
    del obj["data"][0]["paragraphs"][1]["qas"][2]["question"]
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match=r"missing\.json: article 0 \('Super_Bowl_50'\), paragraph 1, question 2.*"
                                         r"missing field 'question'"):
        train_squad.main(_common(tiny, tmp_path, "--train_file", str(SQUAD_DEV), "--validation_file", str(missing)))


def test_push_to_hub_sends_the_best_seed_without_its_answers(tiny, tmp_path, hub_stand_in):
    results = train_squad.main(_common(
        tiny, tmp_path / "run", "--train_file", str(SQUAD_DEV), "--split_by_article", "40", "--max_train_samples",
        "32", "--max_eval_samples", "16", "--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "me/tiny-squad"))
    pushed = hub_stand_in.uploaded("me/tiny-squad")
    files = {path.name for path in pushed.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "results.json"} <= files
    assert not files & {"predictions.json", "run_result.json"}
    card = (pushed / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "SQuAD v1.1" in card and "dev/exact_match" in card
    assert results["hub"]["selected_by"] == "dev/f1"
    assert results["metric_modules"][0]["config_name"] == "v1"


def test_hub_dataset_path(tiny, tmp_path, monkeypatch):
    """--dataset_name squad (the Hub is unreachable here: load_dataset is faked with local questions
    in the Hub's squad layout)."""
    import datasets

    from electra_hf.tasks.qa import read_squad

    local = read_squad(SQUAD_DEV)
    requested = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        requested.append((name, config, split))
        return local.select(range(0, 40) if split == "train" else range(9000, 9020))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    results = train_squad.main(_common(tiny, tmp_path, "--dataset_name", "squad", "--max_train_steps", "1",
                                       "--save_model", "false"))
    assert requested == [("squad", None, "train"), ("squad", None, "validation")]
    assert results["num_train_examples"] == 40 and results["num_eval_examples"] == 20
