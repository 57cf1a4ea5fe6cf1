"""Data order that can be resumed mid-epoch, sharded across processes like DistributedSampler.

The stream of one process is a pure function of (seed, rank, world size, position): epoch e shuffles
the dataset with a generator seeded by (seed, e), pads it to a multiple of the world size and gives
rank r every world_size-th index from r (DistributedSampler's scheme). Resuming at step s simply starts
the stream at position s * batch_size, so no sampler state needs saving and DistributedSampler's
"restart the epoch" behaviour does not replay samples after a crash.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


def epoch_permutation(size: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator()
    generator.manual_seed(seed * 100_003 + epoch)  # distinct, reproducible order per epoch
    return torch.randperm(size, generator=generator).tolist()


class ResumableShardSampler(Sampler):
    """Endless (epoch, index) keys for `SegmentationDataset`, from `start` samples into this rank's stream."""

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.size, self.seed, self.rank, self.world_size, self.start = size, seed, rank, world_size, start
        self.per_rank = math.ceil(size / world_size)

    def shard(self, epoch: int) -> list[int]:
        order = epoch_permutation(self.size, self.seed, epoch)
        padding = self.per_rank * self.world_size - self.size
        order += (order * math.ceil(padding / self.size + 1))[:padding]  # repeat, as DistributedSampler pads
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            for index in self.shard(epoch)[offset:]:
                yield epoch, index
            epoch, offset = epoch + 1, 0
