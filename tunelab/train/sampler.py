"""A seeded, resumable sampler: the data position is two integers (epoch, index)."""

from __future__ import annotations

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

    def _epoch_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.state.epoch)
        return torch.randperm(self.size, generator=g).tolist()

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
