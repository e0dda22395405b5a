"""Seeded, resumable samplers: the data position is two integers (epoch, index).

:class:`ResumableSampler` walks a seeded permutation per epoch; :class:`LengthGroupedSampler`
reorders that permutation so that the rows of one batch have similar lengths (less padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch


@dataclass
class SamplerState:
    epoch: int = 0
    index: int = 0


class ResumableSampler:
    """Yields dataset indices epoch after epoch, each epoch a permutation seeded by (seed, epoch).

    Because the permutation depends only on (seed, epoch), a resumed run that restores
    ``state`` continues with exactly the items the uninterrupted run would have seen.

    With several processes (``world`` > 1) every rank walks the same shared order: ``take(n)``
    draws ``n * world`` indices and returns the ``rank``-th slice of ``n``. The state is then the
    same on every rank, and a step of N processes with micro-batch ``n`` trains on exactly the
    items of one process with micro-batch ``N * n``, so a checkpoint resumes under any process
    count with the same global batch.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, *, rank: int = 0, world: int = 1):
        if size == 0:
            raise ValueError("empty dataset")
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside a world of {world}")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world = rank, world
        self.state = SamplerState()
        self._order: list[int] | None = None

    def _epoch_generator(self) -> torch.Generator:
        """The generator of this epoch's order: seeded by (seed, epoch) only, so resume replays it."""
        return torch.Generator().manual_seed(self.seed * 100_003 + self.state.epoch)

    def _epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=self._epoch_generator()).tolist()

    def take(self, n: int) -> list[int]:
        """The next ``n`` indices of this rank (all ranks advance by ``n * world``)."""
        drawn = self._draw(n * self.world)
        return drawn[self.rank * n : (self.rank + 1) * n]

    def _draw(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            if self._order is None:
                self._order = self._epoch_order()
            out.append(self._order[self.state.index])
            self.state.index += 1
            if self.state.index == self.size:
                self.state = SamplerState(self.state.epoch + 1, 0)
                self._order = None
        return out

    def state_dict(self) -> dict:
        return asdict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state = SamplerState(**state)
        self._order = None


class LengthGroupedSampler(ResumableSampler):
    """A :class:`ResumableSampler` whose batches hold rows of similar length (``training.group_by_length``).

    Padding to the longest row of a micro-batch wastes compute on every shorter row: with
    answers from a few words to hundreds of tokens, most of a random batch of 8 is padding.
    As in the length-grouped sampler of transformers' Trainer, each epoch's seeded permutation
    is cut into mega-batches of ``mega_batches`` global batches (``batch_size x world`` rows);
    each mega-batch is sorted by length (longest first) and cut into global batches, and the
    order of those batches is shuffled with the same generator. The randomness left is which
    rows share a mega-batch and the batch order; the order still depends only on (seed, epoch),
    so resume and the rank split (every rank takes its slice of the same global batch) work as
    in the parent class. Batches stay aligned with the grouping while the dataset size is a
    multiple of the global batch; otherwise a batch straddling an epoch boundary mixes lengths.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        seed: int,
        batch_size: int,
        *,
        rank: int = 0,
        world: int = 1,
        mega_batches: int = 50,
    ):
        super().__init__(len(lengths), seed, shuffle=True, rank=rank, world=world)
        if batch_size < 1 or mega_batches < 1:
            raise ValueError("batch_size and mega_batches must be >= 1")
        self.lengths = list(lengths)
        self.group = batch_size * world
        self.mega = self.group * mega_batches

    def _epoch_order(self) -> list[int]:
        g = self._epoch_generator()  # the parent's permutation, then the batch shuffle, from one generator
        order = torch.randperm(self.size, generator=g).tolist()
        out: list[int] = []
        for start in range(0, self.size, self.mega):
            ranked = sorted(order[start : start + self.mega], key=lambda i: -self.lengths[i])  # stable
            batches = [ranked[i : i + self.group] for i in range(0, len(ranked), self.group)]
            for b in torch.randperm(len(batches), generator=g).tolist():
                out += batches[b]
        return out
