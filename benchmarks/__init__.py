"""Benchmarks of electra_hf, run from the repository root as modules:

    python -m benchmarks.bench_pretrain_step      # the pre-training step: naive composition vs electra_hf (CPU or GPU)
    python -m benchmarks.bench_data               # data preparation throughput (electra_hf.data)
    python -m benchmarks.bench_finetune_padding   # fine-tuning: dynamic padding vs padding to max_seq_length

Each writes `<name>.{json,md}` under benchmarks/results/ (`--out_dir` to change) and prints its table.
"""
