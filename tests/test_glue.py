"""Tests of electra_hf.tasks.glue: loaders (real files + official-format MNLI/QQP), metrics,
GLUE average, submission files, errors."""

from __future__ import annotations

import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from electra_hf.tasks import glue
from electra_hf.tasks.glue import (
    GLUE_AVERAGE_TASKS,
    GLUE_TASKS,
    GlueDataError,
    add_swapped_pairs,
    compute_glue_metrics,
    get_glue_task,
    glue_average,
    load_glue_split,
    resolve_task_names,
    write_glue_submission,
)

GLUE_DIR = Path(os.environ.get("ELECTRA_HF_GLUE_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"))
needs_glue = pytest.mark.skipif(not (GLUE_DIR / "CoLA" / "dev.tsv").is_file(), reason=f"GLUE files not at {GLUE_DIR}")

# (task, split) → (rows, label counts by class id or None for unlabeled / regression, first sentence1 prefix)
# Row counts: shared/data/README.md (= official sizes); label counts: counted with awk on the files.
REAL_SPLITS = {
    ("CoLA", "train"): (8551, {1: 6023, 0: 2528}, "Our friends won't buy this analysis"),
    ("CoLA", "dev"): (1043, {1: 721, 0: 322}, "The sailors rode the breeze clear of the rocks."),
    ("CoLA", "test"): (1063, None, "Bill whistled past the house."),
    ("SST-2", "train"): (67349, {1: 37569, 0: 29780}, "hide new secretions from the parental units "),
    ("SST-2", "dev"): (872, {1: 444, 0: 428}, "it 's a charming and often affecting journey . "),
    ("SST-2", "test"): (1821, None, "uneasy mishmash of styles and genres ."),
    ("MRPC", "train"): (3668, {1: 2474, 0: 1194}, "Amrozi accused his brother"),
    ("MRPC", "dev"): (408, {1: 279, 0: 129}, "He said the foodservice pie business"),
    ("MRPC", "test"): (1725, None, "PCCW 's chief operating officer"),
    ("STS-B", "train"): (5749, None, "A plane is taking off."),
    ("STS-B", "dev"): (1500, None, "A man with a hard hat is dancing."),
    ("STS-B", "test"): (1379, None, "A girl is styling her hair."),
    ("QNLI", "dev"): (5463, {0: 2702, 1: 2761}, "What came into force after the new constitution was herald?"),
    ("QNLI", "test"): (5463, None, "What organization is devoted to Jihad against Israel?"),
    ("RTE", "train"): (2490, {0: 1249, 1: 1241}, "No Weapons of Mass Destruction Found in Iraq Yet."),
    ("RTE", "dev"): (277, {0: 146, 1: 131}, "Dana Reeve, the widow of the actor Christopher Reeve"),
    ("RTE", "test"): (3000, None, "Mangla was summoned after Madhumita's sister"),
    ("WNLI", "train"): (635, {0: 323, 1: 312}, "I stuck a pin through a carrot."),
    ("WNLI", "dev"): (71, {0: 40, 1: 31}, "The drain is clogged with hair."),
    ("WNLI", "test"): (146, None, "Maude and Dora had seen the trains"),
    ("AX", "test"): (1104, None, "The cat sat on the mat."),
}


@needs_glue
@pytest.mark.parametrize("task_name, split", sorted(REAL_SPLITS))
def test_real_files(task_name, split):
    rows, label_counts, first = REAL_SPLITS[(task_name, split)]
    task = get_glue_task(task_name)
    ds = load_glue_split(task, GLUE_DIR, split)
    assert len(ds) == rows
    expected_columns = ["sentence1", "sentence2", "label", "idx"] if task.is_pair else ["sentence1", "label", "idx"]
    assert ds.column_names == expected_columns
    assert ds[0]["sentence1"].startswith(first)
    assert all(isinstance(s, str) and s.strip() for s in ds["sentence1"])
    if task.is_pair:
        assert all(isinstance(s, str) and s.strip() for s in ds["sentence2"])
    labels = ds["label"]
    labeled = not split.startswith("test")
    if not labeled:
        assert set(labels) == {-1}
    elif task.is_regression:
        assert min(labels) == 0.0 and max(labels) == 5.0
        assert np.mean(labels) == pytest.approx(2.36391 if split == "dev" else np.mean(labels), abs=1e-4)
    else:
        assert dict(Counter(labels)) == label_counts
    assert ds["idx"] == list(range(rows))  # index columns here are 0..N-1 (or row numbers)


@needs_glue
def test_real_file_details():
    # MRPC's BOM does not leak into the data; pairs are in file order.
    mrpc = load_glue_split("MRPC", GLUE_DIR, "dev")
    assert mrpc[0]["sentence2"].startswith('" The foodservice pie business does not fit')
    # STS-B: score is the 10th column.
    stsb = load_glue_split("STS-B", GLUE_DIR, "dev")
    assert stsb[0]["sentence2"] == "A man wearing a hard hat is dancing." and stsb[0]["label"] == 5.0
    # CoLA dev without trailing newline: last row intact.
    cola = load_glue_split("CoLA", GLUE_DIR, "dev")
    assert cola[-1]["sentence1"] == "John talked to Bill about himself." and cola[-1]["label"] == 1
    # A task folder works as data_dir too.
    assert len(load_glue_split("RTE", GLUE_DIR / "RTE", "dev")) == 277


def test_table_is_complete():
    assert list(GLUE_TASKS) == ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE", "WNLI", "AX"]
    assert GLUE_AVERAGE_TASKS == ("CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE")
    files = [f for t in GLUE_TASKS.values() for _, f in t.submissions]
    assert files == ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                     "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"]
    assert {n for n, t in GLUE_TASKS.items() if t.num_train_epochs == 10} == {"RTE", "STS-B"}
    assert {n for n, t in GLUE_TASKS.items() if t.train_on_swapped_pairs} == {"MRPC", "STS-B"}
    assert GLUE_TASKS["MNLI"].eval_splits == ("dev_matched", "dev_mismatched")
    assert GLUE_TASKS["STS-B"].is_regression and GLUE_TASKS["STS-B"].label_scale == 5.0
    assert GLUE_TASKS["AX"].predicted_by == "MNLI" and not GLUE_TASKS["AX"].trainable


def test_task_names():
    assert get_glue_task("sst2").name == "SST-2"
    assert get_glue_task("STS-B").name == get_glue_task("stsb").name == "STS-B"
    assert get_glue_task("diagnostic").name == "AX"
    assert [t.name for t in resolve_task_names("all")] == list(GLUE_AVERAGE_TASKS[:6]) + ["QNLI", "RTE", "WNLI"]
    assert [t.name for t in resolve_task_names("rte, cola")] == ["RTE", "CoLA"]
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst3'"):
        get_glue_task("sst3")


# ---------------------------------------------------------------------------- MNLI / QQP (official format)
MNLI_TRAIN_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                     "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label")
MNLI_DEV_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                   "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\t"
                   "gold_label")
MNLI_TEST_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                    "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")


def _parse(s):
    return "( " + " ".join(s.split()) + " )"


def _mnli_row(i, s1, s2, labels):
    return "\t".join([str(i), str(1000 + i), f"{1000 + i}e", "fiction", _parse(s1), _parse(s2), "(ROOT)", "(ROOT)",
                      s1, s2, *labels])


@pytest.fixture
def mnli_dir(tmp_path):
    root = tmp_path / "glue" / "MNLI"
    root.mkdir(parents=True)
    train = [MNLI_TRAIN_HEADER,
             _mnli_row(0, 'He said "hello to me.', "He spoke.", ["entailment", "entailment"]),
             _mnli_row(1, "The cat sleeps.", "The cat runs.", ["neutral", "contradiction"]),
             _mnli_row(2, "It rains.", "It may be sunny.", ["neutral", "neutral"])]
    (root / "train.tsv").write_text("\n".join(train) + "\n", encoding="utf-8")
    dev = [MNLI_DEV_HEADER, _mnli_row(7, "A b.", "C d.", ["entailment"] * 4 + ["neutral", "entailment"]),
           _mnli_row(8, "E f.", "G h.", ["contradiction"] * 5 + ["contradiction"])]
    for name in ("dev_matched", "dev_mismatched"):
        (root / f"{name}.tsv").write_text("\n".join(dev), encoding="utf-8")  # no trailing newline
    test = [MNLI_TEST_HEADER, _mnli_row(0, "X y.", "Z.", [])[:-1], _mnli_row(1, "Q r.", "S.", [])[:-1]]
    for name in ("test_matched", "test_mismatched"):
        (root / f"{name}.tsv").write_text("\n".join(test) + "\n", encoding="utf-8")
    return tmp_path / "glue"


def test_mnli_official_format(mnli_dir):
    train = load_glue_split("MNLI", mnli_dir, "train")
    assert len(train) == 3
    # quote character kept verbatim (quoting disabled, as the official loaders)
    assert train[0]["sentence1"] == 'He said "hello to me.'
    assert train["label"] == [1, 0, 2]  # gold_label (last column): entailment, contradiction, neutral
    assert GLUE_TASKS["MNLI"].label_list == ("contradiction", "entailment", "neutral")
    dev = load_glue_split("MNLI", mnli_dir, "dev_mismatched")
    assert dev["label"] == [1, 0] and dev["idx"] == [7, 8] and dev["sentence2"] == ["C d.", "G h."]
    test = load_glue_split("MNLI", mnli_dir, "test_matched")
    assert test["label"] == [-1, -1] and test["sentence1"] == ["X y.", "Q r."]


@pytest.fixture
def qqp_dir(tmp_path):
    root = tmp_path / "glue" / "QQP"
    root.mkdir(parents=True)
    header = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
    rows = ['402555\t536040\t536041\tHow do I fix a "broken heart?\tHow can I get over a breakup?\t1',
            "360472\t364011\t490273\tWhat is 2+2?\tWhat is the capital of France?\t0"]
    (root / "train.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    (root / "dev.tsv").write_text("\n".join([header, rows[1]]) + "\n", encoding="utf-8")
    (root / "test.tsv").write_text("id\tquestion1\tquestion2\n0\tIs it?\tIs it not?\n1\tWhy?\tWhy not?\n", encoding="utf-8")
    return tmp_path / "glue"


def test_qqp_official_format(qqp_dir):
    train = load_glue_split("QQP", qqp_dir, "train")
    assert train["label"] == [1, 0] and train["idx"] == [402555, 360472]
    assert train[0]["sentence1"] == 'How do I fix a "broken heart?'
    test = load_glue_split("qqp", qqp_dir, "test")
    assert test["sentence2"] == ["Is it not?", "Why not?"] and test["idx"] == [0, 1] and test["label"] == [-1, -1]


# ---------------------------------------------------------------------------- bad input
def test_missing_file_names_path_and_flag(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"RTE.*train\.tsv.*--data_dir"):
        load_glue_split("RTE", tmp_path, "train")


def test_missing_column(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\thypothesis\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(GlueDataError, match=r"dev\.tsv.*missing column.*'sentence2'"):
        load_glue_split("RTE", tmp_path, "dev")


def test_wrong_number_of_fields_names_file_and_line(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\tc\tentailment\n")
    with pytest.raises(GlueDataError, match=r"dev\.tsv, line 3: 5 fields, expected 4.*--skip_malformed_rows"):
        load_glue_split("RTE", tmp_path, "dev")
    with pytest.warns(UserWarning, match="skipped 1 malformed"):
        ds = load_glue_split("RTE", tmp_path, "dev", skip_malformed_rows=True)
    assert len(ds) == 1


def test_unknown_label_names_value_file_and_line(tmp_path):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text("gj04\t1\t\tGood.\ngj04\t2\t*\tBad.\n")
    with pytest.raises(GlueDataError, match=r"train\.tsv, line 2: unknown label value '2'.*\['0', '1'\]"):
        load_glue_split("CoLA", tmp_path, "train")
    (tmp_path / "STS-B").mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    (tmp_path / "STS-B" / "dev.tsv").write_text(header + "0\tg\tf\ty\t0\tn\tn\tA.\tB.\thigh\n")
    with pytest.raises(GlueDataError, match=r"line 2: label 'high' is not a number"):
        load_glue_split("STS-B", tmp_path, "dev")


def test_no_source_given():
    with pytest.raises(ValueError, match="--data_dir"):
        load_glue_split("RTE", None, "dev")


# ---------------------------------------------------------------------------- Hub path (offline: faked)
def test_hub_path_maps_columns_and_label_order(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, cache_dir=None):
        calls.append((name, config, split))
        features = datasets.Features({
            "premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
            "idx": datasets.Value("int32")})
        return datasets.Dataset.from_dict(
            {"premise": ["a", "b", "c"], "hypothesis": ["x", "y", "z"], "label": [0, 1, 2], "idx": [0, 1, 2]},
            features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_glue_split("MNLI", None, "dev_mismatched", dataset_name="nyu-mll/glue")
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    assert ds.column_names == ["sentence1", "sentence2", "label", "idx"]
    names = GLUE_TASKS["MNLI"].label_list
    assert [names[i] for i in ds["label"]] == ["entailment", "neutral", "contradiction"]


# ---------------------------------------------------------------------------- swapped pairs
def test_add_swapped_pairs():
    import datasets

    ds = datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["x", "y"], "label": [1, 0], "idx": [0, 1]})
    out = add_swapped_pairs(ds)
    assert out["sentence1"] == ["a", "b", "x", "y"] and out["sentence2"] == ["x", "y", "a", "b"]
    assert out["label"] == [1, 0, 1, 0]


# ---------------------------------------------------------------------------- metrics vs hand-computed
def test_accuracy_f1_mcc_by_hand():
    preds = [1, 1, 0, 1, 0, 0, 1, 0]
    refs = [1, 0, 0, 1, 1, 0, 1, 1]
    tp, tn, fp, fn = 3, 2, 1, 2
    assert glue.accuracy(preds, refs) == pytest.approx(5 / 8)
    assert glue.f1_binary(preds, refs) == pytest.approx(2 * tp / (2 * tp + fp + fn))  # 6/9
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 4/sqrt(240)
    assert glue.matthews_correlation(preds, refs) == pytest.approx(mcc)
    assert mcc == pytest.approx(0.2581988897)


def test_pearson_spearman_by_hand():
    x, y = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 5.0, 9.0]
    # mean x 2.5, mean y 5; dx = (-1.5,-.5,.5,1.5), dy = (-3,-1,0,4): cov 4.5+.5+0+6 = 11
    r = 11 / math.sqrt(5.0 * (9 + 1 + 0 + 16))
    assert glue.pearson(x, y) == pytest.approx(r)
    # Spearman with a tie: ranks of y = (1, 2, 3.5, 5, 3.5)
    a, b = [1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 6.0, 7.0, 8.0, 7.0]
    ra, rb = np.array([1, 2, 3, 4, 5.0]), np.array([1, 2, 3.5, 5, 3.5])
    rho = ((ra - 3) * (rb - 3)).sum() / math.sqrt(((ra - 3) ** 2).sum() * ((rb - 3) ** 2).sum())
    assert glue.spearman(a, b) == pytest.approx(rho)
    assert rho == pytest.approx(8 / math.sqrt(10 * 9.5))  # products -2·-2 + -1·-1 + 0 + 1·2 + 2·.5 = 8
    assert math.isnan(glue.pearson([1, 1, 1], [1, 2, 3]))  # constant predictions: undefined


def test_compute_glue_metrics_per_task():
    logits = np.array([[2.0, -1.0], [0.1, 0.3], [0.0, 5.0], [3.0, 1.0]])  # argmax 0, 1, 1, 0
    out = compute_glue_metrics("MRPC", logits, [0, 1, 0, 0])
    assert out == {"accuracy": pytest.approx(0.75), "f1": pytest.approx(2 / 3)}
    assert set(compute_glue_metrics("CoLA", [0, 1, 1, 0], [0, 1, 0, 0])) == {"matthews_correlation", "accuracy"}
    sts = compute_glue_metrics("STS-B", np.array([[0.1], [0.5], [0.4]]), [0.2, 0.9, 0.5])
    assert sts["spearmanr"] == pytest.approx(1.0) and 0 < sts["pearson"] < 1
    with pytest.raises(ValueError, match="unlabeled"):
        compute_glue_metrics("RTE", [0, 1], [-1, -1])
    with pytest.raises(ValueError, match="3 predictions but 2 references"):
        compute_glue_metrics("RTE", [0, 1, 1], [0, 1])


def test_glue_average_as_paper():
    # The official ELECTRA-Small (OWT) dev numbers average to 80.36 over 8 tasks (no WNLI).
    scores = {"CoLA": ("dev", "matthews_correlation", 0.568), "SST-2": ("dev", "accuracy", 0.883),
              "MRPC": ("dev", "accuracy", 0.874), "STS-B": ("dev", "spearmanr", 0.868),
              "QQP": ("dev", "accuracy", 0.883), "MNLI": ("dev_matched", "accuracy", 0.789),
              "QNLI": ("dev", "accuracy", 0.879), "RTE": ("dev", "accuracy", 0.685)}
    results = {task: {f"{split}/{metric}": value, f"{split}/other": 0.0} for task, (split, metric, value) in scores.items()}
    results["WNLI"] = {"dev/accuracy": 0.1}
    results["MNLI"]["dev_mismatched/accuracy"] = 0.0  # mismatched is not in the average
    avg = glue_average(results)
    assert avg["average"] == pytest.approx(80.3625) and avg["complete"] and avg["missing"] == []
    assert "WNLI" not in avg["per_task"]
    partial = glue_average({"RTE": {"dev/accuracy": 0.6}, "CoLA": {"dev/matthews_correlation": 0.4}})
    assert partial["average"] == pytest.approx(50.0) and not partial["complete"] and "MNLI" in partial["missing"]


# ---------------------------------------------------------------------------- submission files
def test_submission_files(tmp_path):
    rng = np.random.default_rng(0)
    written = []
    for task in GLUE_TASKS.values():
        for split, _ in task.submissions:
            n = 7
            preds = rng.normal(size=(n, 1)) * 4 + 2.5 if task.is_regression else rng.normal(size=(n, task.num_labels))
            written.append(write_glue_submission(task, preds, tmp_path, indices=range(100, 100 + n), split=split))
    assert sorted(p.name for p in written) == sorted(
        ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv", "QNLI.tsv",
         "RTE.tsv", "WNLI.tsv", "AX.tsv"])
    allowed = {"CoLA": {"0", "1"}, "SST-2": {"0", "1"}, "MRPC": {"0", "1"}, "QQP": {"0", "1"}, "WNLI": {"0", "1"},
               "MNLI-m": {"entailment", "neutral", "contradiction"}, "MNLI-mm": {"entailment", "neutral", "contradiction"},
               "AX": {"entailment", "neutral", "contradiction"}, "QNLI": {"entailment", "not_entailment"},
               "RTE": {"entailment", "not_entailment"}}
    for path in written:
        lines = path.read_text().splitlines()
        assert lines[0] == "index\tprediction"
        assert len(lines) == 8
        indices, values = zip(*(line.split("\t") for line in lines[1:]))
        assert indices == tuple(str(i) for i in range(100, 107))
        if path.stem == "STS-B":
            floats = [float(v) for v in values]
            assert all(0.0 <= v <= 5.0 for v in floats)
        else:
            assert set(values) <= allowed[path.stem], path.name


def test_submission_label_names_exact(tmp_path):
    path = write_glue_submission("MNLI", [0, 1, 2], tmp_path, split="test_mismatched")
    assert path.name == "MNLI-mm.tsv"
    assert path.read_text() == "index\tprediction\n0\tcontradiction\n1\tentailment\n2\tneutral\n"
    path = write_glue_submission("STS-B", [-0.5, 2.25, 7.0], tmp_path)
    assert path.read_text() == "index\tprediction\n0\t0.000\n1\t2.250\n2\t5.000\n"
    with pytest.raises(ValueError, match="several test splits"):
        write_glue_submission("MNLI", [0], tmp_path)
    with pytest.raises(ValueError, match="2 predictions but 1 indices"):
        write_glue_submission("RTE", [0, 1], tmp_path, indices=[5])
