"""Balanced global batches: every optimizer step sees both classes in equal number.

The batch of step s is a pure function of (labels, batch size, seed, s), identical on every rank,
so resuming at step s restores the data order exactly and 1 rank and N ranks see the same global
batch (rank r takes the r-th contiguous slice). Classes are interleaved so each slice has both.
"""
from __future__ import annotations

import random
from typing import Sequence


class BalancedBatches:
    def __init__(self, desirable: Sequence[bool], batch_size: int, seed: int = 0):
        if batch_size % 2:
            raise ValueError(f"batch_size must be even, got {batch_size}")
        self.pos = [i for i, d in enumerate(desirable) if d]
        self.neg = [i for i, d in enumerate(desirable) if not d]
        self.half = batch_size // 2
        if len(self.pos) < self.half or len(self.neg) < self.half:
            raise ValueError(f"a balanced batch of {batch_size} needs {self.half} examples of each class; "
                             f"have {len(self.pos)} desirable and {len(self.neg)} undesirable")
        self.seed = seed
        # An epoch ends when the smaller class is used up; the larger class's remainder comes
        # first in a later epoch's permutation, so nothing is permanently skipped.
        self.steps_per_epoch = min(len(self.pos), len(self.neg)) // self.half

    def _perm(self, idx: list[int], epoch: int, tag: str) -> list[int]:
        out = list(idx)
        random.Random(f"{self.seed}:{epoch}:{tag}").shuffle(out)
        return out

    def batch(self, step: int) -> list[int]:
        epoch, k = divmod(step, self.steps_per_epoch)
        lo, hi = k * self.half, (k + 1) * self.half
        pos = self._perm(self.pos, epoch, "pos")[lo:hi]
        neg = self._perm(self.neg, epoch, "neg")[lo:hi]
        return [i for pair in zip(pos, neg) for i in pair]

    @staticmethod
    def rank_slice(batch: list[int], rank: int, world: int) -> list[int]:
        if len(batch) % world:
            raise ValueError(f"global batch {len(batch)} is not divisible by {world} ranks")
        m = len(batch) // world
        return batch[rank * m:(rank + 1) * m]
