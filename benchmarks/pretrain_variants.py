"""The pre-training step variants bench_pretrain_step compares, what they train on, the useful
FLOPs of a step, and the process each variant runs in."""

from __future__ import annotations

import resource
import time

from benchmarks.common import sync

VARIANTS = ("naive", "naive_tuned_alloc", "electra_hf", "electra_hf_eager", "electra_hf_sdpa", "compile",
            "compile_model", "compile_model_cudagraphs")
# How each compiled variant calls `compile_for_training`.
COMPILE_VARIANTS = {
    "compile": {},  # every layer and embedding block compiled (the default scope)
    "compile_model": {"scope": "model"},  # the whole model as one graph (forward + backward)
    "compile_model_cudagraphs": {"scope": "model", "mode": "reduce-overhead"},  # ... replayed as CUDA graphs
}
# The variants that run transformers' sdpa attention whatever --attn says.
SDPA_VARIANTS = ("naive", "naive_tuned_alloc", "electra_hf_sdpa")
IGNORE_INDEX = -100
# Special token ids of the BERT uncased vocabulary (the collator only needs these and the size).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103


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


def masked_per_step(batches: list[dict]) -> float:
    """Mean number of masked positions (labels ≠ -100) per batch: the generator head's rows."""
    return sum(int((b["labels"] != IGNORE_INDEX).sum()) for b in batches) / len(batches)


# --------------------------------------------------------------------------------------------
# Data: packed full-length examples through the library's collator (identical for every variant)
# --------------------------------------------------------------------------------------------
class SpecialIds:
    """What DataCollatorForElectra needs from a tokenizer: the special ids and the vocabulary size."""

    def __init__(self, vocab_size: int):
        self.pad_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = PAD_ID, CLS_ID, SEP_ID, MASK_ID
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size


def make_batches(config, batch_size: int, seq_len: int, count: int, seed: int) -> list[dict]:
    """`count` batches of random ids in the pre-training layout, masked by the library's collator."""
    import torch

    from electra_hf.collator import DataCollatorForElectra

    collator = DataCollatorForElectra(
        SpecialIds(config.vocab_size), mask_prob=config.mask_prob, mask_token_prob=config.mask_token_prob,
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
    from accelerate import Accelerator
    from transformers import AutoModel

    from electra_hf.optimization import ElectraAdamW, build_scheduler, parameter_groups
    from electra_hf.performance import compile_for_training, training_attn_implementation

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


def build_step(spec: dict, config, device: str):
    """The training step of `spec["variant"]` (a function of one batch that returns the loss)."""
    from electra_hf.performance import training_compilation

    variant = spec["variant"]
    attn = "sdpa" if variant in SDPA_VARIANTS else spec["attn"]
    arguments = dict(config=config, device=device, precision=spec["precision"], attn=attn, lr=5e-4,
                     total_steps=1_000_000, warmup=10_000)
    if variant.startswith("naive"):
        return build_naive(**arguments)
    if variant in COMPILE_VARIANTS:
        compilation = COMPILE_VARIANTS[variant]
    elif variant == "electra_hf":  # train_pretrain.py's default: the fast path on one GPU, eager elsewhere
        compilation = training_compilation(None, device) or False
    else:  # electra_hf_eager, electra_hf_sdpa
        compilation = False
    return build_electra_hf(**arguments, compile_model=compilation)


# --------------------------------------------------------------------------------------------
# One variant's process
# --------------------------------------------------------------------------------------------
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


class TimedSteps:
    """A variant's step on its batches: runs steps on request and returns their times."""

    def __init__(self, step, batches: list[dict], device: str):
        self.step, self.batches, self.device = step, batches, device
        self.steps_run = 0  # warm-up, untimed and timed: what the bookkeeping is checked against
        self.losses: list[float] = []  # the last loss of each request

    def next_batch(self) -> dict:
        batch = self.batches[self.steps_run % len(self.batches)]
        self.steps_run += 1
        return batch

    def run(self, n: int, untimed: int = 0) -> list[float]:
        """Seconds of each of `n` timed steps, after `untimed` steps that bring the variant back to a
        steady state (another process has just had the machine). On a GPU the steps run pipelined
        and each gets their mean."""
        for _ in range(untimed):
            self.step(self.next_batch())
        if self.device == "cuda":
            mean, loss = pipelined_seconds(self.step, self.batches, n, self.steps_run)
            self.steps_run += n
            self.losses.append(float(loss.detach()))
            return [mean] * n
        times = []
        for _ in range(n):
            batch = self.next_batch()
            sync(self.device)
            start = time.perf_counter()
            loss = self.step(batch)
            sync(self.device)
            times.append(time.perf_counter() - start)
        self.losses.append(float(loss.detach()))  # one host sync per request, outside the timed region
        return times


def build_timed_steps(spec: dict, device: str) -> TimedSteps:
    """The variant's step on its batches (moved to the device), with the same seed for every variant."""
    import torch

    config = build_config(spec["preset"], spec["vocab_size"], spec["seq_len"])
    batches = make_batches(config, spec["batch_size"], spec["seq_len"], spec["num_batches"], spec["seed"])
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    torch.manual_seed(spec["seed"])
    steps = TimedSteps(build_step(spec, config, device), batches, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return steps


def worker(conn, spec: dict) -> None:
    """One variant in its own process (so that its peak memory is its own): build, warm up, then
    serve requests from the parent: ("run", (steps, untimed)), ("stats", None), ("stop", None)."""
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
        steps = build_timed_steps(spec, device)
        start = time.perf_counter()
        warmup_times = steps.run(spec["warmup"])
    except Exception:  # noqa: BLE001 -- the parent reports the variant as failed and goes on
        import traceback

        conn.send({"error": traceback.format_exc()})
        conn.close()
        return
    conn.send({"ready": True, "warmup_s": time.perf_counter() - start, "warmup_step_s": warmup_times})
    while True:
        command, argument = conn.recv()
        if command == "run":
            conn.send(steps.run(*argument))
        elif command == "stats":
            stats = {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                     "baseline_rss_bytes": baseline_rss, "losses": steps.losses,
                     "masked_per_step": masked_per_step(steps.batches), "steps_run": steps.steps_run}
            if device == "cuda":
                stats["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
            conn.send(stats)
        else:
            conn.close()
            return
