"""experiments.gpu_rtd_vs_mlm: its planning and report in seconds (default run), and its --tiny
rehearsal end to end, the files a GPU window returns included (benchmark marker, minutes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments import gpu_rtd_vs_mlm as experiment
from experiments.gpu_rtd_vs_mlm_payload import DEVICE_RETURN_FILE_BYTES, DEVICE_RETURN_FILES, check_out_dir
from experiments.gpu_rtd_vs_mlm_report import report
from tests.conftest import build_tiny_tokenizer

GLUE_KEYS = {"cola", "sst2", "mrpc", "stsb", "rte"}
SHARED_DATA = experiment.REPO.parent / "shared" / "data"


def check_results_schema(results: Path) -> dict:
    """The issue's JSON schema, a Markdown table with every task, a PNG: returns the JSON."""
    document = json.loads((results / "gpu_rtd_vs_mlm.json").read_text())
    assert isinstance(document["device"], str) and document["device"]
    assert {run["objective"] for run in document["runs"]} == {"electra", "mlm"}
    for run in document["runs"]:
        assert isinstance(run["pretrain_tokens"], int) and isinstance(run["pretrain_flops"], float)
        assert set(run["glue"]) == GLUE_KEYS and all(isinstance(value, float) for value in run["glue"].values())
        assert isinstance(run["glue_average"], float)
        assert run["held_out"] and "generator_loss" in run["held_out"][-1]
    table = (results / "gpu_rtd_vs_mlm.md").read_text()
    assert "| CoLA | SST-2 | MRPC | STS-B | RTE | GLUE avg |" in table
    assert "| ELECTRA-Small |" in table and "| BERT-Small (masked LM) |" in table
    assert (results / "gpu_rtd_vs_mlm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return document


def test_the_masked_lm_gets_the_steps_of_equal_counted_flops(tmp_path):
    build_tiny_tokenizer().save_pretrained(str(tmp_path / "payload" / "tokenizer"))
    args = experiment.parse_args(["pretrain", "--payload_dir", str(tmp_path / "payload"), "--work_dir", str(tmp_path),
                                  "--electra_steps", "19000"])
    plan = experiment.planned_steps(args)
    assert plan["electra"]["steps"] == 19000
    # No generator: a masked LM step costs less, so it takes more steps for the same FLOPs.
    assert plan["mlm"]["steps"] > plan["electra"]["steps"]
    electra_flops = plan["electra"]["steps"] * plan["electra"]["flops_per_step"]
    assert abs(plan["mlm"]["steps"] * plan["mlm"]["flops_per_step"] - electra_flops) <= plan["mlm"]["flops_per_step"]


def test_a_slow_step_gets_fewer_steps_never_more():
    assert experiment.capped_steps(19000, steps_per_second=50.0, minutes=7) == 19000
    assert experiment.capped_steps(19000, steps_per_second=20.0, minutes=7) == 8400
    assert experiment.capped_steps(19000, steps_per_second=0.0, minutes=7) == 1


def test_a_tiny_run_never_writes_the_committed_results(tmp_path):
    with pytest.raises(SystemExit):
        experiment.parse_args(["report", "--tiny", "--results_dir", str(experiment.COMMITTED_RESULTS)])
    args = experiment.parse_args(["report", "--tiny"])
    assert experiment.TINY_SCRATCH in Path(args.results_dir).parents and args.electra_steps == 40


def test_seed_groups_cover_every_seed_once():
    args = experiment.parse_args(["finetune", "--seeds", "1", "2", "3", "4", "--seeds_per_process", "3"])
    assert experiment.seed_groups(args) == [[1, 2, 3], [4]]


def test_what_a_device_call_cannot_bring_back_is_refused(tmp_path):
    for index in range(DEVICE_RETURN_FILES + 1):
        (tmp_path / f"file{index}.json").write_text("{}")
    with pytest.raises(RuntimeError, match="at most 8"):
        check_out_dir(tmp_path)


def write_run(work: Path, objective: str, scale: float) -> None:
    """A finished objective's records as the pretrain and finetune stages write them."""
    run = work / objective
    (run / "pretrain").mkdir(parents=True)
    evals = [{"step": step, "eval/generator_loss": 7 - scale * step / 100, "eval/generator_accuracy": 0.1,
              **({"eval/discriminator_auc": 0.5 + step / 1000} if objective == "electra" else {})} for step in (100, 200)]
    (run / "pretrain" / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in evals))
    flops_per_step = 1e12 if objective == "electra" else 8e11
    record = {"objective": objective, "steps": 200, "flops_per_step": flops_per_step, "flops": 200 * flops_per_step,
              "tokens_seen": 3_000_000, "token_positions": 200 * 128 * 128, "plan": {"target_steps": 200},
              "final_eval": evals[-1], "device": "NVIDIA H200, 16 CPU cores", "finished": "2026-12-05T10:00:00",
              "tokenizer_fingerprint": "0123456789abcdef", "pretrain_args": "", "step_compilation": {},
              "preset": "small", "batch_size": 128, "max_seq_length": 128, "learning_rate": 5e-4,
              "warmup_fraction": 0.05, "adam_bias_correction": "true", "mixed_precision": "bf16",
              "representation_spread": 0.4, "replacement_probe": None}
    (run / "run.json").write_text(json.dumps(record))
    scores = {task: 50.0 + scale for task in sorted(GLUE_KEYS)}
    (run / "glue.json").write_text(json.dumps({
        "glue": scores, "glue_average": 50.0 + scale, "per_seed": {task: [50.0 + scale] * 3 for task in scores},
        "seeds": [1, 2, 3], "model_weights": {}, "finetune_args": ""}))
    (run / "attempts.jsonl").write_text(json.dumps({"stage": "pretrain", "seconds": 420.0, "command": "c"}) + "\n")


def test_the_report_of_hand_made_records(tmp_path):
    for objective, scale in (("electra", 2.0), ("mlm", 1.0)):
        write_run(tmp_path / "work", objective, scale)
    args = experiment.parse_args(["report", "--work_dir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "r")])
    report(args)
    document = check_results_schema(tmp_path / "r")
    assert [run["glue_average"] for run in document["runs"]] == [52.0, 51.0]
    assert document["flops_ratio_max_to_min"] == pytest.approx(1.25)


@pytest.mark.benchmark
@pytest.mark.skipif(not (SHARED_DATA / "corpus" / "gutenberg").is_dir(), reason="needs ../shared/data")
def test_the_tiny_rehearsal_writes_every_file_of_the_real_run(tmp_path):
    from safetensors import safe_open
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    folders = {"payload_dir": tmp_path / "payload", "work_dir": tmp_path / "work", "results_dir": tmp_path / "results",
               "out_dir": tmp_path / "out"}
    flags = [part for name, folder in folders.items() for part in (f"--{name}", str(folder))]
    assert experiment.main(["payload", "all", "--tiny", "--pretrain_minutes", "1", *flags]) == 0
    check_results_schema(tmp_path / "results")

    returned = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert len(returned) <= DEVICE_RETURN_FILES
    assert all(path.stat().st_size <= DEVICE_RETURN_FILE_BYTES for path in returned)
    # What comes back, collected on a machine that has nothing else, loads into plain transformers.
    experiment.main(["collect", "--tiny", "--from_dir", str(tmp_path / "out"), "--work_dir", str(tmp_path / "here")])
    export = tmp_path / "here" / "electra" / "export_bf16"
    assert len(list((export / "discriminator").glob("*.safetensors"))) >= 2  # split at --max_shard_size
    for kind, model_class in (("discriminator", ElectraForPreTraining), ("generator", ElectraForMaskedLM)):
        for shard in (export / kind).glob("*.safetensors"):
            with safe_open(str(shard), "pt") as handle:
                assert {str(handle.get_tensor(name).dtype) for name in handle.keys()} == {"torch.bfloat16"}
        model = model_class.from_pretrained(str(export / kind))
        assert model.num_parameters() > 0
    assert (tmp_path / "here" / "electra" / "run.json").is_file() and (tmp_path / "here" / "mlm" / "glue.json").is_file()

    # A fine-tuning window: a bare machine with the carried discriminator export and GLUE only.
    bare = tmp_path / "bare"
    shutil.copytree(export / "discriminator", bare / "work" / "electra" / "export_bf16" / "discriminator")
    shutil.copytree(tmp_path / "payload" / "data" / "glue", bare / "payload" / "data" / "glue")
    window = ["--tiny", "--objectives", "electra", "--tasks", "rte", "--payload_dir", str(bare / "payload")]
    assert experiment.main(["finetune", *window, "--work_dir", str(bare / "work"), "--out_dir", str(bare / "out")]) == 0
    experiment.main(["collect", *window, "--from_dir", str(bare / "out"), "--work_dir", str(tmp_path / "here")])
    stages = [json.loads(line)["stage"] for line in (tmp_path / "here" / "electra" / "attempts.jsonl").open()]
    assert stages.count("finetune") == 2 and "pretrain" in stages  # the earlier windows' lines are kept
    assert set(json.loads((tmp_path / "here" / "electra" / "glue.json").read_text())["glue"]) == {"rte"}
