"""Training orders that are pure functions of (seed, epoch): a resumed run sees the order the
uninterrupted one saw, and every process sees the same order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random order that is a pure function of (seed, epoch), identical on every process.

    Unlike a DataLoader's ``shuffle=True`` with one generator (whose epoch-k order depends on the
    k earlier epochs having been drawn in the same process), a run resumed in the middle of
    epoch k sees exactly the order the uninterrupted run saw. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, num_examples: int, seed: int = 0):
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_examples

    def epoch_generator(self) -> torch.Generator:
        """This epoch's random generator, seeded with seed + epoch."""
        return torch.Generator().manual_seed(self.seed + self.epoch)

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.num_examples, generator=self.epoch_generator()).tolist()


class LengthGroupedSampler(EpochShuffleSampler):
    """Random order, but examples of similar length end up in the same batch (less padding).

    Indices are shuffled (seed + epoch, identical on every process), cut into mega-batches of
    ``mega_batch_mult × batch_size``, each sorted by length (longest first), then batches are
    shuffled so that lengths are not visited in order. Call :meth:`set_epoch` each epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, mega_batch_mult: int = 50):
        super().__init__(len(lengths), seed)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.mega_batch_mult = mega_batch_mult

    def __iter__(self) -> Iterator[int]:
        generator = self.epoch_generator()
        order = torch.randperm(self.num_examples, generator=generator).tolist()
        mega = self.mega_batch_mult * self.batch_size
        batches = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start:start + mega], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        # Keep the very last (possibly short) batch last so that BatchSampler cuts the same batches.
        head, tail = batches[:-1], batches[-1:]
        perm = torch.randperm(len(head), generator=generator).tolist()
        for batch in [head[i] for i in perm] + tail:
            yield from batch
