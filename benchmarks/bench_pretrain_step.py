#!/usr/bin/env python
"""One ELECTRA pre-training step, side by side, in one run on one machine.

Variants (same model sizes, batch, sequence length, data and seed):
  naive       -- what a user composes from transformers' pieces, the way the existing PyTorch
                 ports do it: `ElectraForMaskedLM` computing vocabulary logits at every position
                 (its own loss), indexing the masked ones, Gumbel-max sampling there,
                 `ElectraForPreTraining` with its own loss, `torch.optim.AdamW`, clip 1.0,
                 a LambdaLR schedule.
  electra_hf  -- electra_hf's step as train_pretrain.py runs it: Accelerator, ElectraForRTDPretraining
                 forward, accelerator.backward, accelerator.clip_grad_norm_(1.0), ElectraAdamW step,
                 zero_grad, official schedule, the loop's detached-metric accumulation; the script's
                 attention (`electra_hf.performance.CPU_ATTENTION` on a CPU, sdpa elsewhere).
  electra_hf_sdpa -- opt-in: the same with transformers' sdpa attention, to show what the CPU
                 attention function is worth.
  compile     -- electra_hf's step with the model wrapped by `electra_hf.performance.compile_for_training`
                 (torch.compile; opt-in: the first step compiles for minutes on a small CPU).
  naive_tuned_alloc -- opt-in: the naive step in a process given the library's CPU runtime settings
                 (`configure_cpu_training`, which electra_hf's variants use on a CPU), to separate
                 what the allocator setting alone is worth from the rest.

Each variant runs in its own process (so its peak memory is its own), all built and warmed up one
after the other, then timed in interleaved rounds (round r runs `--steps` steps of each variant in
a rotated order), so that a noisy, shared machine slows every variant alike. Each round starts with
`--round_warmup` untimed steps per variant: the variant that ran before has just worked for
seconds in another process (evicting this one's weights and activations from the caches, its
OpenMP threads asleep), which a training loop, stepping back to back, never sees. The machine's
dense GEMM throughput (`torch.mm` of two n×n matrices) is measured in the same run, just before
(ahead of the untimed steps) and after each variant's steps.

Useful FLOPs per step are counted explicitly from the configuration (the same for every variant):
6 · (dense matmul weights of both encoders and the discriminator head) · tokens
+ attention matmuls (QKᵀ and PV: 12 · B · T² · H per layer, forward and backward)
+ 6 · (generator head: dense H_g→E and the tied E→V projection) · masked positions.
Embedding lookups, layer norms, activations, softmax and the optimizer are not counted.

    python benchmarks/bench_pretrain_step.py                       # Small + tiny, fp32 (2-core CPU: ~4 min)
    python benchmarks/bench_pretrain_step.py --presets tiny --rounds 2
    python benchmarks/bench_pretrain_step.py --variants naive electra_hf compile --presets tiny
    python benchmarks/bench_pretrain_step.py --device cuda --presets small base   # fp32 and bf16

Writes benchmarks/results/pretrain_step.{json,md} (--out_dir to change) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
VARIANTS = ("naive", "naive_tuned_alloc", "electra_hf", "electra_hf_sdpa", "compile", "compile_model",
            "compile_model_cudagraphs")
# How each compiled variant calls `compile_for_training`.
COMPILE_VARIANTS = {
    "compile": {},  # every layer and embedding block compiled (the default scope)
    "compile_model": {"scope": "model"},  # the whole model as one graph (forward + backward)
    "compile_model_cudagraphs": {"scope": "model", "mode": "reduce-overhead"},  # ... replayed as CUDA graphs
}
IGNORE_INDEX = -100
# Special token ids of the BERT uncased vocabulary (the collator only needs these and the size).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103


# --------------------------------------------------------------------------------------------
# Machine
# --------------------------------------------------------------------------------------------
def cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return model, flags


def describe_machine(device: str, threads: int) -> dict:
    import accelerate
    import torch
    import transformers

    model, flags = cpu_model_and_flags()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_simd": sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_fp16")),
        "torch_threads": threads,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "device": device,
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    gpu_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def measure_gemm(device: str, dtype_name: str, size: int, repeats: int = 3) -> list[float]:
    """FLOP/s of `torch.mm` on two size×size matrices: one value per repeat (after one warm-up)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    values = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        values.append(2 * size**3 / (time.perf_counter() - start))
    return values


# NVIDIA datasheet peaks in TFLOP/s, dense (no 2:4 sparsity): "fp32" on the CUDA cores (this benchmark
# turns TF32 off: fp32 means fp32), "bf16" on the tensor cores. The denominator of the usual MFU.
DATASHEET_PEAK_TFLOPS = (
    # (substrings all in torch's device name, {precision: TFLOP/s}, datasheet name)
    (("H200",), {"fp32": 66.9, "bf16": 989.4}, "H200 SXM"),
    (("H100", "PCIe"), {"fp32": 51.2, "bf16": 756.0}, "H100 PCIe"),
    (("H100", "NVL"), {"fp32": 60.0, "bf16": 835.0}, "H100 NVL"),
    (("H100",), {"fp32": 66.9, "bf16": 989.4}, "H100 SXM"),
    (("A100",), {"fp32": 19.5, "bf16": 312.0}, "A100"),
)
# NVIDIA DeepLearningExamples, ELECTRA-Base pre-training throughput on one A100 (AMP, sequence 128).
NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S = 955.0


def datasheet_peak(gpu_name: str | None) -> tuple[dict | None, str | None]:
    """The datasheet peaks (TFLOP/s per precision) of a GPU from its torch name, or (None, None)."""
    for needles, peaks, label in DATASHEET_PEAK_TFLOPS:
        if gpu_name and all(needle in gpu_name for needle in needles):
            return peaks, label
    return None, None


def write_report(report: dict, table: str, out_dir: str | Path, name: str) -> None:
    """Write `<out_dir>/<name>.json` (the whole report) and `<name>.md` (its table), then print the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / f"{name}.md").write_text(table)
    print(table)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def bf16_support(device: str, flags: set[str], gemm_fp32: float | None, gemm_bf16: float | None) -> tuple[bool, str]:
    """Whether bf16 is natively fast on this device, and why (a sentence for the report)."""
    import torch

    if device == "cuda":
        ok = torch.cuda.is_bf16_supported() and torch.cuda.get_device_capability(0)[0] >= 8
        return ok, ("bf16 tensor cores (compute capability >= 8.0)" if ok else "this GPU has no native bf16 matmul")
    if "amx_bf16" in flags:
        return True, "the CPU has AMX-BF16"
    measured = ""
    if gemm_fp32 and gemm_bf16:
        measured = f"; measured bf16 GEMM {gemm_bf16 / 1e9:.0f} GFLOP/s vs fp32 {gemm_fp32 / 1e9:.0f} GFLOP/s"
        if gemm_bf16 > 1.2 * gemm_fp32:  # some other native path (e.g. a future ISA): trust the measurement
            return True, "bf16 GEMM measured faster than fp32" + measured
    if "avx512_bf16" in flags:
        return False, "the CPU has AVX512-BF16 (conversion/dot-product instructions) but no AMX, so bf16 matmul is not faster than fp32" + measured
    return False, "the CPU has neither AVX512-BF16 nor AMX: bf16 is emulated, many times slower than fp32" + measured


# --------------------------------------------------------------------------------------------
# Model sizes and useful FLOPs
# --------------------------------------------------------------------------------------------
def build_config(preset: str, vocab_size: int, seq_len: int):
    from electra_hf.configuration import ElectraPretrainingConfig

    return ElectraPretrainingConfig.from_preset(preset, vocab_size=vocab_size, max_seq_length=seq_len)


def useful_flops(config, batch_size: int, seq_len: int, masked_per_step: float) -> dict:
    """Matmul FLOPs one training step needs (forward + backward = 3 × forward), per part."""
    tokens = batch_size * seq_len

    def encoder_weights(c) -> int:
        per_layer = 4 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * c.intermediate_size  # Q,K,V,O + FFN
        projection = c.embedding_size * c.hidden_size if c.embedding_size != c.hidden_size else 0
        return c.num_hidden_layers * per_layer + projection

    def attention(c) -> int:  # QKᵀ and P·V: 2 · 2·T²·H per sequence and layer, × 3 for fwd + bwd
        return 3 * 4 * batch_size * seq_len * seq_len * c.hidden_size * c.num_hidden_layers

    disc, gen = config.discriminator_config, config.generator_config
    parts = {
        "discriminator_dense": 6 * tokens * (encoder_weights(disc) + disc.hidden_size * disc.hidden_size + disc.hidden_size),
        "discriminator_attention": attention(disc),
    }
    if config.objective == "electra":
        parts["generator_dense"] = 6 * tokens * encoder_weights(gen)
        parts["generator_attention"] = attention(gen)
        parts["generator_head_at_masked"] = 6 * masked_per_step * (gen.hidden_size * gen.embedding_size + gen.embedding_size * gen.vocab_size)
    parts["total"] = sum(parts.values())
    return parts


# --------------------------------------------------------------------------------------------
# Data: packed full-length examples through the library's collator (identical for every variant)
# --------------------------------------------------------------------------------------------
class _SpecialIds:
    """What DataCollatorForElectra needs from a tokenizer: the special ids and the vocabulary size."""

    def __init__(self, vocab_size: int):
        self.pad_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = PAD_ID, CLS_ID, SEP_ID, MASK_ID
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size


def make_batches(config, batch_size: int, seq_len: int, count: int, seed: int) -> list[dict]:
    import torch

    from electra_hf.collator import DataCollatorForElectra

    collator = DataCollatorForElectra(
        _SpecialIds(config.vocab_size), mask_prob=config.mask_prob, mask_token_prob=config.mask_token_prob,
        random_token_prob=config.random_token_prob, max_predictions_per_seq=config.max_predictions_per_seq,
        max_seq_length=seq_len, seed=seed,
    )
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        features = []
        for _ in range(batch_size):
            ids = torch.randint(MASK_ID + 1, config.vocab_size, (seq_len,), generator=generator)
            split = int(torch.randint(2, seq_len - 2, (1,), generator=generator))
            ids[0], ids[split], ids[-1] = CLS_ID, SEP_ID, SEP_ID  # [CLS] A [SEP] B [SEP], packed to full length
            types = torch.zeros(seq_len, dtype=torch.long)
            types[split + 1 :] = 1
            features.append({"input_ids": ids, "token_type_ids": types})
        batches.append(collator(features))
    return batches


# --------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------
def build_naive(config, device: str, precision: str, attn: str, lr: float, total_steps: int, warmup: int):
    """transformers' pieces composed as the existing PyTorch ports do."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoModelForPreTraining

    generator = AutoModelForMaskedLM.from_config(config.generator_config, attn_implementation=attn)
    discriminator = AutoModelForPreTraining.from_config(config.discriminator_config, attn_implementation=attn)
    # Share all embeddings (and the generator's output layer), as the official code and the ports do.
    generator.electra.embeddings = discriminator.electra.embeddings
    generator.generator_lm_head.weight = discriminator.electra.embeddings.word_embeddings.weight
    generator.to(device).train()
    discriminator.to(device).train()
    params = list({id(p): p for p in [*generator.parameters(), *discriminator.parameters()]}.values())
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: max(0.0, 1 - step / total_steps) * min(1.0, step / warmup))
    autocast = precision == "bf16"
    gumbel = torch.distributions.Gumbel(torch.tensor(0.0, device=device), torch.tensor(1.0, device=device))

    def step(batch):
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=autocast):
            masked = batch["labels"] != IGNORE_INDEX
            original = torch.where(masked, batch["labels"], batch["input_ids"])
            gen_out = generator(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                token_type_ids=batch["token_type_ids"], labels=batch["labels"])
            with torch.no_grad():
                masked_logits = gen_out.logits[masked].float()  # (masked tokens, V)
                sampled = (masked_logits + gumbel.sample(masked_logits.shape)).argmax(dim=-1)
                corrupted = original.clone()
                corrupted[masked] = sampled
                replaced = (corrupted != original).long()
            disc_out = discriminator(input_ids=corrupted, attention_mask=batch["attention_mask"],
                                     token_type_ids=batch["token_type_ids"], labels=replaced)
            loss = gen_out.loss + config.discriminator_loss_weight * disc_out.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        return loss

    return step


def build_electra_hf(config, device: str, precision: str, attn: str, lr: float, total_steps: int, warmup: int,
                     compile_model: bool | dict):
    """The library's step, as train_pretrain.py runs it. `compile_model`: False, True (default
    `compile_for_training`) or that function's keyword arguments."""
    import torch
    from accelerate import Accelerator

    from transformers import AutoModel

    from electra_hf.performance import compile_for_training, training_attn_implementation
    from electra_hf.optimization import ElectraAdamW, build_scheduler, parameter_groups

    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if precision == "bf16" else "no")
    model = AutoModel.from_config(config, attn_implementation=training_attn_implementation(attn, device == "cpu"))
    optimizer = ElectraAdamW(parameter_groups(model, 0.01), lr=lr, betas=(0.9, 0.999), eps=1e-6)
    scheduler = build_scheduler("electra", optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    if compile_model is not False:
        model = compile_for_training(model, **(compile_model if isinstance(compile_model, dict) else {}))
    model.train()
    return library_step(model, optimizer, scheduler, accelerator.backward, accelerator.clip_grad_norm_, accelerator.device)


def library_step(model, optimizer, scheduler, backward=None, clip_grad_norm=None, device="cpu"):
    """The work of one train_pretrain.py step: forward, backward, clipping to 1.0, optimizer and
    schedule steps, and the loop's metric bookkeeping (no host sync). `backward(loss)` and
    `clip_grad_norm(parameters, max_norm)` default to plain torch's."""
    import torch

    backward = backward or (lambda loss: loss.backward())
    clip_grad_norm = clip_grad_norm or torch.nn.utils.clip_grad_norm_
    window = torch.zeros(8, device=device)

    def step(batch):
        out = model(**batch)
        backward(out.loss)
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        detached = [out.loss, out.generator_loss, out.generator_accuracy, out.discriminator_loss,
                    out.discriminator_accuracy, out.discriminator_precision, out.discriminator_recall]
        window[:7] += torch.stack([value.detach().float() for value in detached])
        window[7] += 1
        return out.loss

    return step


def worker(conn, spec: dict) -> None:
    """One variant in its own process: build, warm up, then time steps on request."""
    import torch

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (bf16 runs use autocast)
    if device == "cpu" and spec["variant"] != "naive":
        # The library's CPU process settings (allocator; see configure_cpu_training), as a training
        # script using electra_hf applies them at start-up.
        from electra_hf.performance import configure_cpu_training

        configure_cpu_training()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    try:
        run, spec_losses, batches = _build_and_warm_up(conn, spec, device)
    except Exception:  # noqa: BLE001 -- the parent reports the variant as failed and goes on
        import traceback

        conn.send({"error": traceback.format_exc()})
        conn.close()
        return
    while True:
        command, arg = conn.recv()
        if command == "run":
            conn.send(run(*arg))
        elif command == "stats":
            stats = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                     "baseline_rss_bytes": baseline_rss, "losses": spec_losses}
            if device == "cuda":
                stats["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            stats["masked_per_step"] = masked_per_step(batches)
            stats["steps_run"] = run.steps_run()  # warm-up, untimed and timed: checks the bookkeeping
            conn.send(stats)
        else:
            conn.close()
            return


def masked_per_step(batches: list[dict]) -> float:
    """Mean number of masked positions (labels ≠ -100) per batch: the generator head's rows."""
    return sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches) / len(batches)


def pipelined_seconds(step, batches: list[dict], n: int, first: int = 0):
    """(mean seconds per step, last loss) of `n` CUDA steps queued back to back, as a training loop
    runs them: the host waits once, at the end (a sync after every step would leave the GPU idle
    while the host launches the next step's first kernels). Batches cycle from index `first`."""
    sync("cuda")
    start = time.perf_counter()
    for i in range(n):
        loss = step(batches[(first + i) % len(batches)])
    sync("cuda")
    return (time.perf_counter() - start) / n, loss


def _build_and_warm_up(conn, spec: dict, device: str):
    import torch

    config = build_config(spec["preset"], spec["vocab_size"], spec["seq_len"])
    batches = make_batches(config, spec["batch_size"], spec["seq_len"], spec["num_batches"], spec["seed"])
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    torch.manual_seed(spec["seed"])
    attn = "sdpa" if spec["variant"] in ("naive", "naive_tuned_alloc", "electra_hf_sdpa") else spec["attn"]
    common = dict(config=config, device=device, precision=spec["precision"], attn=attn, lr=5e-4,
                  total_steps=1_000_000, warmup=10_000)
    if spec["variant"].startswith("naive"):
        step = build_naive(**common)
    else:
        step = build_electra_hf(**common, compile_model=COMPILE_VARIANTS.get(spec["variant"], False))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    counter = 0

    def run(n: int, untimed: int = 0) -> list[float]:
        nonlocal counter
        for _ in range(untimed):  # back in a steady state after another process had the machine
            step(batches[counter % len(batches)])
            counter += 1
        if device == "cuda":  # pipelined; each step gets the mean
            mean, loss = pipelined_seconds(step, batches, n, counter)
            counter += n
            spec_losses.append(float(loss.detach()))
            return [mean] * n
        times = []
        for _ in range(n):
            batch = batches[counter % len(batches)]
            counter += 1
            sync(device)
            start = time.perf_counter()
            loss = step(batch)
            sync(device)
            times.append(time.perf_counter() - start)
        spec_losses.append(float(loss.detach()))  # one host sync per request, outside the timed region
        return times

    spec_losses: list[float] = []
    run.steps_run = lambda: counter
    start = time.perf_counter()
    warmup_times = run(spec["warmup"])
    conn.send({"ready": True, "warmup_s": time.perf_counter() - start, "warmup_step_s": warmup_times})
    return run, spec_losses, batches


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------
def gemm_dtype(precision: str) -> str:
    """The dense GEMM a precision's steps are compared with: fp32 steps with fp32 `torch.mm`, bf16
    (autocast) steps with bf16 `torch.mm`, the rate their matmuls run at."""
    return "float32" if precision == "fp32" else "bfloat16"


def gemm_size(device: str, dtype: str, size: int) -> int:
    """n of the n×n GEMM: bf16 on a CPU without native bf16 runs at a few GFLOP/s, so it gets at most 2048."""
    return min(size, 2048) if device == "cpu" and dtype == "bfloat16" else size


def default_steps(device: str, preset: str) -> int:
    """Timed steps per variant and round: a CPU step of ELECTRA-Small takes seconds, a GPU step milliseconds."""
    if device == "cuda":
        return 20
    return 2 if preset not in ("tiny", "mini") else 10


def run_case(args, preset: str, precision: str, variants: list[str], gemm_log: dict, device: str) -> dict:
    context = mp.get_context("spawn")
    steps = args.steps if args.steps is not None else default_steps(device, preset)
    dtype = gemm_dtype(precision)
    workers, info, failed = {}, {}, {}
    for variant in variants:
        spec = dict(variant=variant, preset=preset, precision=precision, device=device, attn=args.attn,
                    threads=args.threads, vocab_size=args.vocab_size, seq_len=args.seq_len,
                    batch_size=args.batch_size, num_batches=4, seed=args.seed, warmup=args.warmup)
        parent, child = context.Pipe()
        process = context.Process(target=worker, args=(child, spec), daemon=True)
        process.start()
        child.close()
        print(f"[{preset} {precision}] building and warming up {variant} ...", flush=True)
        try:
            ready = parent.recv()  # sequential warm-ups: the variants never compete for the cores
        except EOFError:  # the process died without a word (killed, out of memory, a crash in C++)
            process.join(timeout=60)  # for its exit code
            ready = {"error": f"the {variant} process exited with code {process.exitcode} while building or warming up"}
        if "error" in ready:
            print(f"[{preset} {precision}] {variant} failed; going on without it:\n{ready['error']}", flush=True)
            failed[variant] = ready["error"]
            process.join(timeout=60)  # no-op if it already ended
            continue
        info[variant] = {"warmup_s": round(ready["warmup_s"], 2), "warmup_step_s": [round(t, 3) for t in ready["warmup_step_s"]]}
        workers[variant] = (process, parent)
    variants = [v for v in variants if v in workers]
    times = {v: [] for v in variants}
    # A GEMM sample right before and right after each variant's steps: shared, virtualised machines
    # switch between throughput states (e.g. a busy sibling hyper-thread), so the fraction of GEMM
    # throughput is computed per round against the GEMM the machine delivered at that moment.
    paired = {v: [] for v in variants}
    for round_index in range(args.rounds if variants else 0):
        order = variants[round_index % len(variants):] + variants[: round_index % len(variants)]
        for variant in order:
            before = measure_gemm(device, dtype, gemm_size(device, dtype, args.gemm_size), repeats=1)
            workers[variant][1].send(("run", (steps, args.round_warmup)))
            round_times = workers[variant][1].recv()
            after = measure_gemm(device, dtype, gemm_size(device, dtype, args.gemm_size), repeats=1)
            times[variant] += round_times
            gemm_log.setdefault(dtype, []).extend(before + after)
            paired[variant].append({"step_s_median": statistics.median(round_times),
                                    "gemm_flops": statistics.mean(before + after)})
        print(f"[{preset} {precision}] round {round_index + 1}/{args.rounds}: "
              + ", ".join(f"{v} {statistics.median(times[v][-steps:]):.3f}s" for v in variants)
              + f"; {dtype} GEMM {statistics.median(gemm_log[dtype][-2 * len(variants):]) / 1e9:.0f} GFLOP/s", flush=True)
    for variant, (process, conn) in workers.items():
        conn.send(("stats", None))
        info[variant].update(conn.recv())
        conn.send(("stop", None))
        process.join(timeout=60)
        info[variant]["step_s"] = [round(t, 4) for t in times[variant]]
        info[variant]["rounds"] = paired[variant]
    return {"preset": preset, "precision": precision, "steps_per_round": steps, "variants": info, "failed": failed}


def summarise(case: dict, config, args, gemm_best: float, datasheet_peak: dict | None = None) -> list[dict]:
    tokens = args.batch_size * args.seq_len
    rows = []
    naive_median = None
    for variant, data in case["variants"].items():
        step_times = data["step_s"]
        median, best = statistics.median(step_times), min(step_times)
        flops = useful_flops(config, args.batch_size, args.seq_len, data["masked_per_step"])
        row = {
            "preset": case["preset"], "precision": case["precision"], "variant": variant,
            "timed_steps": len(step_times),
            "step_s_median": median, "step_s_min": best, "step_s_max": max(step_times),
            "tokens_per_s_median": tokens / median, "tokens_per_s_best": tokens / best,
            "tokens_per_s_worst": tokens / max(step_times),
            "useful_gflop_per_step": flops["total"] / 1e9,
            "useful_flops_breakdown_gflop": {k: round(v / 1e9, 2) for k, v in flops.items()},
            "useful_gflops_median": flops["total"] / median / 1e9,
            "useful_gflops_best": flops["total"] / best / 1e9,
            # Like with like: each round's median step against the GEMM measured around it (median
            # over rounds), and the best step against the best GEMM sample of the run.
            "fraction_of_gemm_paired": statistics.median(
                flops["total"] / r["step_s_median"] / r["gemm_flops"] for r in data["rounds"]),
            "fraction_of_gemm_best": flops["total"] / best / gemm_best,
            "gemm_dtype": gemm_dtype(case["precision"]),
            "gemm_gflops_around_rounds": [round(r["gemm_flops"] / 1e9, 1) for r in data["rounds"]],
            "peak_rss_gb": data["peak_rss_bytes"] / 1e9,
            "warmup_s": data["warmup_s"],
            "final_loss": data["losses"][-1] if data["losses"] else None,
        }
        if "cuda_max_allocated_bytes" in data:
            row["cuda_max_allocated_gb"] = data["cuda_max_allocated_bytes"] / 1e9
        if datasheet_peak is not None:
            row["datasheet_peak_tflops"] = datasheet_peak[case["precision"]]
            row["mfu_datasheet"] = flops["total"] / median / (datasheet_peak[case["precision"]] * 1e12)
        row["sequences_per_s_median"] = args.batch_size / median
        if variant == "naive":
            naive_median = median
        rows.append(row)
    for row in rows:
        row["speedup_vs_naive"] = naive_median / row["step_s_median"] if naive_median else None
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    if m["device"] == "cuda":
        where = f"{m['gpu']} ({m['gpu_memory_gb']} GB, CUDA {m['cuda']}), host CPU {m['cpu_model']}"
    else:
        where = f"{m['cpu_model']}, {m['usable_cpus']} usable cores ({', '.join(m['cpu_simd'])}), {m['torch_threads']} torch threads"
    gemm = report["gemm"]
    sheet = report.get("datasheet_peak")
    gpu_references = ""
    if gemm.get("bf16_samples_gflops") and m["device"] == "cuda":
        gpu_references += (f" Dense bf16 GEMM: best {max(gemm['bf16_samples_gflops']) / 1e3:.0f} TFLOP/s over "
                           f"{len(gemm['bf16_samples_gflops'])} samples (the denominator of bf16 rows' % of GEMM).")
    if sheet:
        gpu_references += (f" Datasheet peaks ({sheet['gpu']}, dense): fp32 {sheet['tflops']['fp32']} TFLOP/s, "
                           f"bf16 {sheet['tflops']['bf16']} TFLOP/s (the denominator of MFU).")
    lines = [
        "# ELECTRA pre-training step: naive transformers composition vs electra_hf",
        "",
        f"Machine: {where}; torch {m['torch']}, transformers {m['transformers']}, accelerate {m['accelerate']}, "
        f"Python {m['python']}. Load average at start {m['load_average_at_start']}, at end {report['load_average_at_end']}.",
        "",
        f"Command: `{report['command']}` (wall time {report['wall_time_s']:.0f} s). Batch {report['batch_size']}, "
        f"sequence {report['seq_len']} (packed, no padding), vocabulary {report['vocab_size']}, attention `{report['attn'] or 'as train_pretrain.py chooses'}`.",
        "",
        f"Dense fp32 GEMM (`torch.mm` {gemm['size']}²) measured in this run: best {gemm['fp32_best_gflops']:.0f} GFLOP/s, "
        f"median {gemm['fp32_median_gflops']:.0f} GFLOP/s, range {min(gemm['fp32_samples_gflops']):.0f}–"
        f"{max(gemm['fp32_samples_gflops']):.0f} over {len(gemm['fp32_samples_gflops'])} samples. "
        f"bf16: {report['bf16']['reason']}" + ("." if report["bf16"]["native"] else " — not benchmarked as a win.")
        + (f" One bf16-autocast step of electra_hf: {report['bf16']['probe_step_s']:.2f} s vs {report['bf16']['probe_fp32_step_s']:.2f} s fp32."
           if report["bf16"].get("probe_step_s") else "") + gpu_references,
    ]
    mfu = any("mfu_datasheet" in r for r in report["results"])
    step_unit, step_scale = ("ms", 1e3) if m["device"] == "cuda" else ("s", 1.0)
    range_note = " (round means)" if m["device"] == "cuda" else ""  # GPU steps are timed per round, pipelined
    lines += [
        "",
        f"| preset | precision | variant | tokens/s (median) | tokens/s range{range_note} | step {step_unit} (median) | × naive | useful GFLOP/s (median) | % of GEMM: paired (best/best) |"
        + (" MFU (datasheet) |" if mfu else "") + " peak memory GB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if mfu else "") + "---:|",
    ]
    for r in report["results"]:
        memory = r.get("cuda_max_allocated_gb", r["peak_rss_gb"])
        step = f"{r['step_s_median'] * step_scale:.{1 if step_unit == 'ms' else 3}f}"
        lines.append(
            f"| {r['preset']} | {r['precision']} | {r['variant']} | {r['tokens_per_s_median']:,.0f} | "
            f"{r['tokens_per_s_worst']:,.0f}–{r['tokens_per_s_best']:,.0f} | {step} | "
            f"{'—' if r['speedup_vs_naive'] is None else format(r['speedup_vs_naive'], '.2f')} | {r['useful_gflops_median']:.1f} | "
            f"{100 * r['fraction_of_gemm_paired']:.1f}% ({100 * r['fraction_of_gemm_best']:.1f}%) |"
            + (f" {100 * r['mfu_datasheet']:.1f}% |" if mfu else "") + f" {memory:.2f} |"
        )
    lines += nvidia_comparison(report)
    if report.get("note"):
        lines += ["", f"Note: {report['note']}"]
    for case in report["raw"]:
        for variant, error in case.get("failed", {}).items():
            lines += ["", f"{case['preset']} {case['precision']} {variant} failed to build or warm up: "
                      f"`{error.strip().splitlines()[-1][:300]}` (the whole traceback is in the JSON)."]
    lines += [
        "",
        "Useful FLOPs per step are the same for every variant (the naive one computes vocabulary logits at every "
        "position, which is not counted): 6·(dense matmul weights)·tokens for both encoders and the discriminator "
        "head, the attention matmuls, and the generator head only at the masked positions. % of GEMM (paired) = "
        "useful FLOP/s of each round's median step / the GEMM FLOP/s measured just before and after those steps, "
        "median over rounds (a shared virtual machine switches between throughput states, see the GEMM samples); "
        "in parentheses: the best step against the best GEMM sample of the run. "
        "Peak memory: " + ("`torch.cuda.max_memory_allocated`." if m["device"] == "cuda" else
                           "RSS high-water mark of the variant's own process (model, optimizer state, activations, Python, libraries).")
        + f" Timed steps per variant: {report['results'][0]['timed_steps'] if report['results'] else 0}, in "
        f"{report['rounds']} interleaved rounds after {report['warmup']} warm-up steps"
        + (f"; each round starts with {report['round_warmup']} untimed step(s) per variant (back to a steady state "
           "after the other variants ran)." if report.get("round_warmup") else "."),
    ]
    return "\n".join(lines) + "\n"


def nvidia_comparison(report: dict) -> list[str]:
    """Lines comparing electra_hf's ELECTRA-Base bf16 sequences/s with NVIDIA's published A100 figure."""
    # Only variants whose training was checked on a GPU: the whole-model compile lost the generator's
    # gradient on CUDA with torch 2.11 before a fix (see benchmarks/results/gpu_summary.md).
    rows = [r for r in report["results"] if r["preset"] == "base" and r["precision"] == "bf16"
            and r["variant"] in ("electra_hf", "compile")]
    if report["machine"]["device"] != "cuda" or not rows:
        return []
    best = max(rows, key=lambda r: r["sequences_per_s_median"])
    ratio = best["sequences_per_s_median"] / NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S
    text = (f"ELECTRA-Base, bf16, batch {report['batch_size']}: electra_hf ({best['variant']}) trains "
            f"{best['sequences_per_s_median']:,.0f} sequences/s on this {report['machine']['gpu']}; NVIDIA publishes "
            f"{NVIDIA_ELECTRA_BASE_A100_SEQ_PER_S:.0f} sequences/s on one A100 (AMP, sequence 128): {ratio:.2f}×")
    sheet = report.get("datasheet_peak")
    if sheet:
        a100 = datasheet_peak("A100")[0]["bf16"]
        per_peak = ratio * a100 / sheet["tflops"]["bf16"]
        text += (f", or {per_peak:.2f}× per datasheet bf16 FLOP/s ({sheet['gpu']} {sheet['tflops']['bf16']:.0f} vs "
                 f"A100 {a100:.0f} TFLOP/s)")
    return ["", text + "."]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small", "tiny"], help="electra_hf presets (small = ELECTRA-Small).")
    parser.add_argument("--variants", nargs="+", default=["naive", "electra_hf"], choices=VARIANTS)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precisions", nargs="+", default=None, choices=["fp32", "bf16"],
                        help="fp32 and/or bf16 (default: fp32, plus bf16 where the device supports it natively).")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--attn", default=None, choices=["sdpa", "eager", "electra_hf_cpu"],
                        help="Attention of the electra_hf variants (default: train_pretrain.py's, electra_hf_cpu on a "
                             "CPU and sdpa elsewhere); naive and electra_hf_sdpa use sdpa.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed steps per variant (compile happens here).")
    parser.add_argument("--steps", type=int, default=None, help="Timed steps per variant per round (default on a CPU 2 for Small, 10 for tiny; 20 on a GPU).")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds.")
    parser.add_argument("--round_warmup", type=int, default=1,
                        help="Untimed steps per variant at the start of each round, before its timed steps.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores).")
    parser.add_argument("--gemm_size", type=int, default=None, help="n of the n×n GEMM (default 4096 CPU, 8192 GPU).")
    parser.add_argument("--bf16_probe", action="store_true",
                        help="Where bf16 is not native, time one bf16-autocast electra_hf step to show the slowdown.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", default=str(RESULTS_DIR))
    parser.add_argument("--name", default="pretrain_step", help="Output file stem.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started = time.perf_counter()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.threads = args.threads or usable
    torch.set_num_threads(args.threads)
    args.gemm_size = args.gemm_size or (8192 if device == "cuda" else 4096)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # dense fp32 means fp32
    machine = describe_machine(device, args.threads)
    _, flags = cpu_model_and_flags()

    gemm_fp32 = measure_gemm(device, "float32", args.gemm_size)
    gemm_bf16 = measure_gemm(device, "bfloat16", gemm_size(device, "bfloat16", args.gemm_size), repeats=2)
    native_bf16, reason = bf16_support(device, flags, max(gemm_fp32), max(gemm_bf16))
    precisions = args.precisions or (["fp32", "bf16"] if native_bf16 else ["fp32"])
    bf16 = {"native": native_bf16, "reason": reason, "gemm_bf16_best_gflops": max(gemm_bf16) / 1e9}
    print(f"machine: {machine}\nbf16: {reason}", flush=True)

    gemm_log = {"float32": list(gemm_fp32), "bfloat16": list(gemm_bf16)}
    peaks, peaks_label = datasheet_peak(machine.get("gpu"))
    results, cases = [], []
    for preset in args.presets:
        config = build_config(preset, args.vocab_size, args.seq_len)
        for precision in precisions:
            case = run_case(args, preset, precision, list(args.variants), gemm_log, device)
            cases.append(case)
    gemm_peak, gemm_median = max(gemm_log["float32"]), statistics.median(gemm_log["float32"])
    for case in cases:
        results += summarise(case, build_config(case["preset"], args.vocab_size, args.seq_len), args,
                             max(gemm_log[gemm_dtype(case["precision"])]), peaks)

    if args.bf16_probe and not native_bf16:
        probe_args = argparse.Namespace(**{**vars(args), "rounds": 1, "steps": 1, "warmup": 1, "round_warmup": 1})
        preset = args.presets[-1]
        fp32_case = next(c for c in cases if c["preset"] == preset and c["precision"] == "fp32")
        probe = run_case(probe_args, preset, "bf16", ["electra_hf"], {}, device)
        bf16.update(probe_preset=preset, probe_step_s=probe["variants"]["electra_hf"]["step_s"][0],
                    probe_fp32_step_s=statistics.median(fp32_case["variants"]["electra_hf"]["step_s"]))

    report = {
        "command": "python " + " ".join([os.path.relpath(__file__)] + (sys.argv[1:] if argv is None else list(argv))),
        "machine": machine,
        "batch_size": args.batch_size, "seq_len": args.seq_len, "vocab_size": args.vocab_size, "attn": args.attn,
        "warmup": args.warmup, "rounds": args.rounds, "round_warmup": args.round_warmup,
        "gemm": {"size": args.gemm_size, "fp32_samples_gflops": [round(v / 1e9, 1) for v in gemm_log["float32"]],
                 "fp32_best_gflops": gemm_peak / 1e9, "fp32_median_gflops": gemm_median / 1e9,
                 "bf16_samples_gflops": [round(v / 1e9, 1) for v in gemm_log["bfloat16"]]},
        "datasheet_peak": {"gpu": peaks_label, "tflops": peaks} if peaks else None,
        "bf16": bf16,
        "results": results,
        "raw": cases,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "wall_time_s": time.perf_counter() - started,
    }
    write_report(report, markdown(report), args.out_dir, args.name)
    return report


if __name__ == "__main__":
    main()
