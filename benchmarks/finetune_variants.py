"""The fine-tuning variants bench_finetune_padding compares (FinetuningArguments switches),
the padding each gives a batch and an epoch, and one variant's training step as finetune() runs it."""

from __future__ import annotations

import math
import time

#: variant name → the FinetuningArguments switches it sets.
VARIANTS: dict[str, dict] = {
    "dynamic": dict(pad_to_max_length=False, group_by_length=False, pad_to_multiple_of=None),
    "pad_to_max": dict(pad_to_max_length=True, group_by_length=False, pad_to_multiple_of=None),
    "group_by_length": dict(pad_to_max_length=False, group_by_length=True, pad_to_multiple_of=None),
    "pad_to_multiple_of_8": dict(pad_to_max_length=False, group_by_length=False, pad_to_multiple_of=8),
}
DEFAULT_VARIANTS = ("dynamic", "pad_to_max", "group_by_length", "pad_to_multiple_of_8")
BASELINE = "pad_to_max"  # the speed-ups are over this variant


# --------------------------------------------------------------------------------------------
# Padding
# --------------------------------------------------------------------------------------------
def padded_length(lengths: list[int], spec: dict, max_seq_length: int) -> int:
    """Padded length of one batch of examples with these token counts, for a variant."""
    if spec["pad_to_max_length"]:
        return max_seq_length
    longest = max(lengths)
    multiple = spec["pad_to_multiple_of"]
    return longest if not multiple else int(math.ceil(longest / multiple) * multiple)


def epoch_padding(lengths: list[int], spec: dict, batch_size: int, max_seq_length: int, seed: int, accelerator,
                  keep_first: int = 0) -> dict:
    """Padding over the first epoch of the variant's batch order (no model run): the index batches
    of a DataLoader built and `accelerator.prepare`d as finetune() builds the training loader
    (same sampler, same seed, same length), so they are the batches the variant trains on."""
    import torch
    from torch.utils.data import DataLoader

    from electra_hf.samplers import LengthGroupedSampler

    indices = list(range(len(lengths)))
    if spec["group_by_length"]:
        loader = DataLoader(indices, batch_size=batch_size, sampler=LengthGroupedSampler(lengths, batch_size, seed=seed))
    else:
        loader = DataLoader(indices, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    widths = []
    real = padded = 0
    batches = 0
    for index_batch in accelerator.prepare(loader):
        batch = [lengths[int(i)] for i in index_batch]
        width = padded_length(batch, spec, max_seq_length)
        widths.append(width)
        real += sum(batch)
        padded += width * len(batch)
        batches += 1
    return {
        "padded_length_first_batches": widths[:keep_first],
        "batches": batches,
        "tokens_computed": padded,
        "real_tokens": real,
        "padding_tokens_per_batch": (padded - real) / batches,
        "computed_tokens_per_batch": padded / batches,
        "padding_fraction": (padded - real) / padded,
    }


# --------------------------------------------------------------------------------------------
# One variant: the library's loop, step by step
# --------------------------------------------------------------------------------------------
class Variant:
    """Model, optimizer, scheduler and prepared DataLoader of one variant, built as finetune()
    builds them, and its training step (the body of finetune()'s loop)."""

    def __init__(self, name: str, spec: dict, model_config, model_class, dataset, tokenizer, accelerator,
                 args, total_steps: int):
        import torch

        from electra_hf.arguments import FinetuningArguments
        from electra_hf.finetuning import build_optimizer, resolve_learning_rate_and_layer_decay, resolve_model_size
        from electra_hf.optimization import build_scheduler

        self.name, self.spec = name, spec
        self.ft_args = FinetuningArguments(
            output_dir=args.work_dir, per_device_train_batch_size=args.batch_size, max_seq_length=args.max_seq_length,
            max_train_steps=total_steps, save_model=False, disable_tqdm=True, report_to=[],
            model_size=None if resolve_model_size(model_config) else "small",  # tiny preset: borrow Small's LR
            **spec,
        )
        torch.manual_seed(args.seed)  # the same initial weights for every variant
        model = model_class(model_config)
        # train_glue.py requests no attention implementation: record the one transformers picks.
        self.attn_implementation = model.get_correct_attn_implementation(None)
        self.parameters = sum(p.numel() for p in model.parameters())
        learning_rate, layer_decay = resolve_learning_rate_and_layer_decay(self.ft_args, model.config)
        self.learning_rate, self.layer_decay = learning_rate, layer_decay
        optimizer = build_optimizer(model, self.ft_args, learning_rate, layer_decay)
        loader, self.sampler = self.training_loader(dataset, tokenizer, args)
        self.model, self.optimizer, self.loader = accelerator.prepare(model, optimizer, loader)
        self.scheduler = build_scheduler(self.ft_args.lr_scheduler_type, self.optimizer,
                                         int(total_steps * self.ft_args.warmup_ratio), total_steps)
        self.accelerator = accelerator
        self.step_loss = torch.zeros((), device=accelerator.device)
        self.loss_history: list = []
        self.epoch, self.iterator = 0, None
        self.model.train()
        self.batch_log: list[dict] = []  # per timed step: padded length, real tokens
        self.step_times: list[float] = []
        self.data_times: list[float] = []
        self.cpu_times: list[float] = []  # process CPU seconds (all threads) per timed step

    def training_loader(self, dataset, tokenizer, args):
        """The training DataLoader as finetune() builds it (the variant's collator, shuffled with the
        seed or grouped by length) and its LengthGroupedSampler, if any. `dataset` holds only the
        tokenizer's columns and the label."""
        import torch
        from torch.utils.data import DataLoader

        from electra_hf.finetuning import make_collator
        from electra_hf.samplers import LengthGroupedSampler

        loader_kwargs = dict(batch_size=args.batch_size, collate_fn=make_collator(tokenizer, self.ft_args),
                             num_workers=self.ft_args.dataloader_num_workers)
        if self.ft_args.group_by_length:
            lengths = [len(ids) for ids in dataset["input_ids"]]
            sampler = LengthGroupedSampler(lengths, args.batch_size, seed=args.seed)
            return DataLoader(dataset, sampler=sampler, **loader_kwargs), sampler
        generator = torch.Generator().manual_seed(args.seed)
        return DataLoader(dataset, shuffle=True, generator=generator, **loader_kwargs), None

    def next_batch(self):
        """The loader's next batch; at the end of an epoch, the next epoch's first (reshuffled, as
        finetune() does)."""
        while True:
            if self.iterator is None:
                if self.sampler is not None:
                    self.sampler.set_epoch(self.epoch)
                if hasattr(self.loader, "set_epoch"):
                    self.loader.set_epoch(self.epoch)
                self.iterator = iter(self.loader)
            try:
                return next(self.iterator)
            except StopIteration:
                self.iterator, self.epoch = None, self.epoch + 1

    def step(self) -> tuple[float, float, dict]:
        """One optimizer step; returns (seconds, seconds spent fetching the batch, the batch)."""
        import torch

        accelerator, model, optimizer = self.accelerator, self.model, self.optimizer
        cpu_start = time.process_time()
        start = time.perf_counter()
        batch = self.next_batch()
        fetched = time.perf_counter()
        with accelerator.accumulate(model):
            outputs = model(**batch)
            loss = outputs["loss"]
            accelerator.backward(loss)
            self.step_loss += loss.detach().float()
            if accelerator.sync_gradients and self.ft_args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), self.ft_args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.optimizer_step_was_skipped:
            self.scheduler.step()
        self.loss_history.append(self.step_loss / 1)
        self.step_loss = torch.zeros((), device=accelerator.device)
        end = time.perf_counter()
        self.last_cpu_seconds = time.process_time() - cpu_start
        return end - start, fetched - start, batch

    def run(self, steps: int, timed: bool) -> None:
        """`steps` optimizer steps; timed ones log their seconds, CPU seconds and batch shape."""
        for _ in range(steps):
            seconds, data_seconds, batch = self.step()
            if timed:
                mask = batch["attention_mask"]
                self.step_times.append(seconds)
                self.cpu_times.append(self.last_cpu_seconds)
                self.data_times.append(data_seconds)
                self.batch_log.append({"examples": int(mask.shape[0]), "padded_length": int(mask.shape[1]),
                                       "real_tokens": int(mask.sum())})
